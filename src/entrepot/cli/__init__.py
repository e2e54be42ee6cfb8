"""The ``entrepot`` command line: :mod:`.commands` (server, registries, rules, credential sets)
and :mod:`.vault` (vaults, secrets, grants), registered on one typer app."""

from entrepot.cli import vault as _vault  # noqa: F401  (registers the vault commands)
from entrepot.cli.commands import app, main

__all__ = ["app", "main"]
