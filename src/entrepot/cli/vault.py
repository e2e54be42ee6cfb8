"""``entrepot vault ...`` and ``entrepot secret ...``: the built-in vault over the management API.

Registered on :data:`entrepot.cli.app` when :mod:`entrepot.cli` is imported. Secret values are
write-only: read from a file or standard input, never taken on the command line, never shown.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from entrepot.cli.commands import (
    DEFAULT_RESOURCE_GROUP,
    DEFAULT_SUBSCRIPTION,
    PLAIN_HELP,
    Columns,
    OutputFormat,
    OutputOpt,
    Row,
    Target,
    _text,
    app,
    client_command,
    emit,
    fail,
    make_client,
    server_errors,
)

if TYPE_CHECKING:
    from entrepot.mgmt.vault import VaultClient

vault_app = typer.Typer(
    help="Manage the built-in secret vault (vaults and access grants).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=PLAIN_HELP,
)
secret_app = typer.Typer(
    help="Manage secrets of the built-in vault. Values are write-only: never shown.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=PLAIN_HELP,
)
app.add_typer(vault_app, name="vault")
app.add_typer(secret_app, name="secret")

VaultArg = Annotated[str, typer.Argument(help="Name of the vault.")]
SecretArg = Annotated[str, typer.Argument(help="Name of the secret.")]
PrincipalOpt = Annotated[
    str,
    typer.Option("--principal", help="principalId of the reader (a credential set's identity)."),
]
PermissionOpt = Annotated[str, typer.Option("--permission", help="Permission (only: get).")]


def _vault_row(item: dict[str, Any]) -> Row:
    return [_text(item.get("name")), _text(item.get("vaultUri")), _text(item.get("created"))]


def _secret_row(item: dict[str, Any]) -> Row:
    return [
        _text(item.get("name")),
        _text(item.get("version")),
        _text(item.get("enabled")),
        _text(item.get("created")),
        _text(item.get("versionlessId")),
    ]


def _grant_row(item: dict[str, Any]) -> Row:
    return [
        _text(item.get("principalId")),
        _text(item.get("permission")),
        _text(item.get("created")),
    ]


VAULT_COLUMNS: Columns = (["Name", "Vault URI", "Created"], _vault_row)
SECRET_COLUMNS: Columns = (["Name", "Version", "Enabled", "Created", "Identifier"], _secret_row)
GRANT_COLUMNS: Columns = (["Principal", "Permission", "Created"], _grant_row)


@contextmanager
def vault_session() -> Iterator[VaultClient]:
    """A vault client for the server, with server errors reported as ``error: ...``."""
    from entrepot.mgmt.vault import VaultClient

    target = Target(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, OutputFormat.json)
    client, conn = make_client(target)
    with server_errors(conn):
        yield VaultClient(client)


@vault_app.command("create")
@client_command
def vault_create(vault: VaultArg, output: OutputOpt = OutputFormat.json) -> None:
    """Create a vault (no error if it exists)."""
    with vault_session() as client:
        emit(client.create_vault(vault), output, VAULT_COLUMNS)


@vault_app.command("list")
@client_command
def vault_list(output: OutputOpt = OutputFormat.json) -> None:
    """List the vaults."""
    with vault_session() as client:
        emit(client.list_vaults(), output, VAULT_COLUMNS)


@vault_app.command("delete")
@client_command
def vault_delete(vault: VaultArg) -> None:
    """Delete a vault with all its secrets and grants."""
    with vault_session() as client:
        client.delete_vault(vault)


@vault_app.command("grant")
@client_command
def vault_grant(
    vault: VaultArg,
    principal: PrincipalOpt,
    permission: PermissionOpt = "get",
    output: OutputOpt = OutputFormat.json,
) -> None:
    """Let a principal read the vault's secrets (az keyvault set-policy ... get)."""
    with vault_session() as client:
        emit(client.grant(vault, principal, permission), output, GRANT_COLUMNS)


@vault_app.command("revoke")
@client_command
def vault_revoke(
    vault: VaultArg,
    principal: PrincipalOpt,
    permission: PermissionOpt = "get",
) -> None:
    """Remove a grant."""
    with vault_session() as client:
        client.revoke(vault, principal, permission)


@vault_app.command("grant-list")
@client_command
def vault_grant_list(vault: VaultArg, output: OutputOpt = OutputFormat.json) -> None:
    """List the grants of a vault."""
    with vault_session() as client:
        emit(client.list_grants(vault), output, GRANT_COLUMNS)


@secret_app.command("set")
@client_command
def secret_set(
    vault: VaultArg,
    name: SecretArg,
    value_file: Annotated[
        Path | None,
        typer.Option(
            "--value-file",
            help="File holding the value ('-' for stdin). Default: stdin, or a hidden prompt "
            "on a terminal.",
            dir_okay=False,
            allow_dash=True,
        ),
    ] = None,
    content_type: Annotated[str | None, typer.Option("--content-type")] = None,
    output: OutputOpt = OutputFormat.json,
) -> None:
    """Store a new version of a secret. The value is never taken from the command line."""
    if value_file is not None and str(value_file) != "-":
        try:
            value = value_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(
                f"cannot read --value-file {value_file}: {getattr(exc, 'strerror', None) or exc}", 2
            )
    elif sys.stdin.isatty() and value_file is None:
        value = typer.prompt("Secret value", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read()
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if not value:
        fail("the secret value is empty", 2)
    with vault_session() as client:
        emit(client.set_secret(vault, name, value, content_type), output, SECRET_COLUMNS)


@secret_app.command("list")
@client_command
def secret_list(vault: VaultArg, output: OutputOpt = OutputFormat.json) -> None:
    """List the secrets of a vault (newest version of each; metadata only)."""
    with vault_session() as client:
        emit(client.list_secrets(vault), output, SECRET_COLUMNS)


@secret_app.command("show")
@client_command
def secret_show(
    vault: VaultArg,
    name: SecretArg,
    version: Annotated[
        str | None, typer.Option("--version", help="A version (default: newest).")
    ] = None,
    versions: Annotated[bool, typer.Option("--versions", help="List every version.")] = False,
    output: OutputOpt = OutputFormat.json,
) -> None:
    """Show a secret's metadata (never its value)."""
    with vault_session() as client:
        if versions:
            emit(client.list_secret_versions(vault, name), output, SECRET_COLUMNS)
        else:
            emit(client.show_secret(vault, name, version), output, SECRET_COLUMNS)


@secret_app.command("delete")
@client_command
def secret_delete(vault: VaultArg, name: SecretArg) -> None:
    """Delete a secret (all versions)."""
    with vault_session() as client:
        client.delete_secret(vault, name)
