"""The ``entrepot`` command line: :mod:`.commands` (server, registries, rules, credential sets),
:mod:`.vault` (vaults, secrets, grants) and :mod:`.tokens` (API tokens), registered on one typer
app."""

from entrepot.cli import tokens as _tokens  # noqa: F401  (registers the token commands)
from entrepot.cli import vault as _vault  # noqa: F401  (registers the vault commands)
from entrepot.cli.commands import app, main

__all__ = ["app", "main"]
