"""``entrepot token ...``: API tokens, over the management API (``/entrepot/tokens``).

Registered on :data:`entrepot.cli.app` when :mod:`entrepot.cli` is imported. Every command but
``rotate-admin --data-dir`` talks to a running server with an admin token, found as the other
commands find theirs (``ENTREPOT_TOKEN``, else ``<data_dir>/admin-token``).

A token's secret is printed once, by ``create``, ``rotate`` and ``rotate-admin`` (in
``"value"``; with ``-o table`` in the ``Value`` column), and a note on stderr says to store it;
``list`` and ``show`` never print one (the server does not have them: it keeps SHA-256 digests).

``rotate-admin --data-dir DIR`` works without a server and without a token: it opens the
database of that data dir (``--config``/``ENTREPOT_CONFIG``/``ENTREPOT_DATABASE_URL`` may name
another database, e.g. PostgreSQL), gives the ``admin`` token a new secret (re-creating it if it
was revoked) and writes it to ``DIR/admin-token`` with mode 0600. It is the way back in for
someone who lost the admin token but can read the data dir. A running server accepts the new
token at once and refuses the old one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from entrepot.cli.commands import (
    DEFAULT_RESOURCE_GROUP,
    DEFAULT_SUBSCRIPTION,
    Columns,
    ConfigOpt,
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
from entrepot.config import Config, load_config
from entrepot.errors import ConfigError

if TYPE_CHECKING:
    from entrepot.management.tokens import IssuedToken
    from entrepot.mgmt.tokens import TokenClient

token_app = typer.Typer(
    help="Manage API tokens: admin tokens (management APIs) and pull tokens (/v2/ pulls).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(token_app, name="token")

NameArg = Annotated[str, typer.Argument(help="Name of the token.")]
OFFLINE_ACTOR = "entrepot token rotate-admin"
SHOWN_ONCE = "note: this is the only time the token is shown; store it now."


def _token_row(item: dict[str, Any]) -> Row:
    return [
        _text(item.get("name")),
        _text(item.get("role")),
        _text(item.get("created")),
        _text(item.get("createdBy")),
        _text(item.get("description")),
    ]


def _issued_row(item: dict[str, Any]) -> Row:
    return [_text(item.get("name")), _text(item.get("role")), _text(item.get("value"))]


TOKEN_COLUMNS: Columns = (["Name", "Role", "Created", "Created by", "Description"], _token_row)
ISSUED_COLUMNS: Columns = (["Name", "Role", "Value"], _issued_row)


@contextmanager
def token_session(config: Path | None = None) -> Iterator[TokenClient]:
    """A token client for the server (the command's connection options, or ``config``), with
    server errors reported as ``error: ...``."""
    from entrepot.mgmt.tokens import TokenClient

    target = Target(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, OutputFormat.json, config)
    client, conn = make_client(target)
    with server_errors(conn):
        yield TokenClient(client)


def _emit_issued(item: dict[str, Any], output: OutputFormat) -> None:
    emit(item, output, ISSUED_COLUMNS)
    typer.echo(SHOWN_ONCE, err=True)


@token_app.command("create")
@client_command
def token_create(
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the new token.")],
    role: Annotated[
        str,
        typer.Option("--role", help="admin: every management API; pull: only pulls through /v2/."),
    ],
    description: Annotated[
        str, typer.Option("--description", help="Free text, e.g. who uses the token.")
    ] = "",
    output: OutputOpt = OutputFormat.json,
) -> None:
    """Create a token and print its value (shown this once only)."""
    if role.lower() not in ("admin", "pull"):
        fail(f"--role must be admin or pull, not {role!r}", 2)
    with token_session() as client:
        item = client.create(name, role.lower(), description)
    _emit_issued(item, output)


@token_app.command("list")
@client_command
def token_list(output: OutputOpt = OutputFormat.json) -> None:
    """List the tokens: names, roles, when and by whom created (never their values)."""
    with token_session() as client:
        emit(client.list(), output, TOKEN_COLUMNS)


@token_app.command("show")
@client_command
def token_show(name: NameArg, output: OutputOpt = OutputFormat.json) -> None:
    """Show one token (never its value)."""
    with token_session() as client:
        emit(client.show(name), output, TOKEN_COLUMNS)


@token_app.command("revoke")
@client_command
def token_revoke(name: NameArg) -> None:
    """Revoke a token: it stops working at once, on every server process."""
    with token_session() as client:
        client.revoke(name)


@token_app.command("rotate")
@client_command
def token_rotate(name: NameArg, output: OutputOpt = OutputFormat.json) -> None:
    """Give a token a new value (printed once); the old value stops working at once."""
    with token_session() as client:
        item = client.rotate(name)
    _emit_issued(item, output)


@token_app.command("rotate-admin")
def token_rotate_admin(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Offline, for a lost admin token: open this data dir's database directly "
            "(no server, no token needed) and write the new token to DIR/admin-token. Without "
            "it: through the server's API (which rewrites its admin-token file).",
            file_okay=False,
        ),
    ] = None,
    output: OutputOpt = OutputFormat.json,
    config: ConfigOpt = None,
) -> None:
    """Give the 'admin' token a new value (printed once); the old one stops working at once."""
    # Online (default): through the API with the current admin token; the server rewrites its
    # data dir's admin-token file if there is one. Offline (--data-dir DIR): a lost admin token.
    if data_dir is None:
        with token_session(config) as client:
            item = client.rotate("admin")
        _emit_issued(item, output)
        return
    cfg = _offline_config(config, data_dir)
    issued = _rotate_offline(cfg)
    emit(issued.view(), output, ISSUED_COLUMNS)
    typer.echo(
        f"wrote the new admin token to {cfg.token_file} (mode 0600); the old one no longer works.",
        err=True,
    )


def _offline_config(config_file: Path | None, data_dir: Path) -> Config:
    if not data_dir.is_dir():
        fail(f"--data-dir {data_dir}: no such directory", 2)
    try:
        cfg = load_config(config_file, overrides={"server.data_dir": str(data_dir)})
    except ConfigError as exc:
        fail(str(exc), 2)
    if cfg.database_url.startswith("sqlite"):
        db_file = Path(cfg.database_url.split(":///", 1)[1])
        if not db_file.is_file():
            fail(
                f"no entrepot database in {data_dir} ({db_file.name} is missing); is it the "
                "data dir of a server that has been started?",
                2,
            )
    return cfg


def _rotate_offline(cfg: Config) -> IssuedToken:
    from entrepot.management.tokens import TokenService
    from entrepot.metadata import Database, SqlResourceStore

    async def run() -> IssuedToken:
        database = Database(cfg.database_url)
        await database.open()
        try:
            service = TokenService(SqlResourceStore(database), cfg.token_file)
            return await service.rotate_admin(OFFLINE_ACTOR)
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except OSError as exc:
        token_file = cfg.token_file
        if Path(str(exc.filename)).name.startswith((token_file.name, f".{token_file.name}.")):
            fail(  # written inside the transaction: it was rolled back
                f"cannot write {token_file}: {exc.strerror or exc}; nothing was changed"
            )
        fail(f"cannot open the database: {_scrubbed(exc, cfg.database_url)}")
    except Exception as exc:  # the database refused or is unreachable: one line, no traceback
        fail(f"cannot rotate the admin token in the database: {_scrubbed(exc, cfg.database_url)}")


def _scrubbed(exc: BaseException, url: str) -> str:
    """The first line of ``exc``'s message, without the database password."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text
