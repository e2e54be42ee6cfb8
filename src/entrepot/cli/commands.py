"""The ``entrepot`` command line: ``serve``, ``status``, and ``az acr``-shaped resource commands.

``entrepot serve`` runs the server. The resource commands mirror ``az acr cache``,
``az acr credential-set`` and ``az acr`` (registries), flag for flag, and talk to a running
server only through the client SDK :mod:`entrepot.mgmt`, imported lazily so that ``serve`` and
``--help`` do not load azure-core.

Every command that talks to a server (:func:`client_command`) takes the same options, after the
command name as in az: ``--url``, ``--token``, ``--token-file``, ``--data-dir``, ``--config``
and ``--query``. Where the server is and how to authenticate, first match wins:

* URL: ``--url``; ``ENTREPOT_URL``; the configuration (``--config``, else ``ENTREPOT_CONFIG``,
  else the defaults): ``server.public_url``, else ``http://`` + ``server.listen`` (a wildcard
  host such as ``0.0.0.0`` becomes loopback).
* Token: ``--token``; ``--token-file FILE``; ``DATA_DIR/admin-token`` with ``--data-dir``;
  ``ENTREPOT_TOKEN``; the ``admin-token`` file the server writes in the configuration's
  ``server.data_dir`` (``./entrepot-data`` by default).

An authentication error says where the token came from; a server that does not answer is
reported at once (connections are not retried), with a hint to start one.

Output: ``-o json`` (default), ``yaml``, ``table`` or ``tsv`` (values only, tab-separated, one
line per item, as az prints them); ``--query`` applies a JMESPath expression first, as in az.

Exit codes: 0 success; 1 the server refused or could not be reached; 2 invalid usage or
configuration. Errors are one line on stderr, ``error: ...``; no tracebacks.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, get_type_hints

import typer

from entrepot.config import Config, load_config
from entrepot.errors import ConfigError

if TYPE_CHECKING:
    from entrepot.mgmt import ContainerRegistryManagementClient
    from entrepot.models import Model

__all__ = ["ClientOptions", "app", "client_command", "main"]

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP = "default"
POLLING_INTERVAL = 0.5
_RESOURCE_GROUP_IN_ID = re.compile(r"/resourceGroups/([^/]+)", re.IGNORECASE)


class OutputFormat(StrEnum):
    """``-o/--output``."""

    json = "json"
    table = "table"
    tsv = "tsv"
    yaml = "yaml"


# -- options shared by the resource commands -----------------------------------------------------
NameOpt = Annotated[str, typer.Option("--name", "-n", help="Name of the resource.")]
RegistryOpt = Annotated[str, typer.Option("--registry", "-r", help="Name of the registry.")]
ResourceGroupOpt = Annotated[
    str,
    typer.Option(
        "--resource-group",
        "-g",
        envvar="ENTREPOT_RESOURCE_GROUP",
        help="Resource group of the registry.",
    ),
]
OutputOpt = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", case_sensitive=False, help="Output format."),
]
SubscriptionOpt = Annotated[
    str,
    typer.Option("--subscription", envvar="ENTREPOT_SUBSCRIPTION", help="Subscription id."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="entrepot config file, read for the server URL and data dir "
        "(default: ENTREPOT_CONFIG, else built-in defaults).",
        dir_okay=False,
        show_default=False,
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="URL of the entrepot server (default: ENTREPOT_URL, else from the config: "
        "server.public_url, else http://127.0.0.1:5000 or server.listen).",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="API token (default: --token-file, else DATA_DIR/admin-token with --data-dir, "
        "else ENTREPOT_TOKEN, else admin-token in the config's data dir). Other local users "
        "can read command lines: prefer --token-file or ENTREPOT_TOKEN.",
        show_default=False,
    ),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file", help="File holding the API token.", dir_okay=False, show_default=False
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The server's data dir; the token is read from its admin-token file "
        "(default: the config's server.data_dir, ./entrepot-data).",
        file_okay=False,
        show_default=False,
    ),
]
QueryOpt = Annotated[
    str | None,
    typer.Option(
        "--query",
        help='JMESPath query applied to the output, as in az; e.g. "[].name".',
        show_default=False,
    ),
]
YesOpt = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Accepted for az compatibility; entrepot never prompts."),
]


@dataclass(frozen=True)
class Target:
    """What every resource command needs besides its own flags.

    ``config`` is the ``--config`` of a command that declares that option itself; a
    :func:`client_command` leaves it ``None`` (its options come from :func:`current_options`).
    """

    subscription: str
    resource_group: str
    output: OutputFormat
    config: Path | None = None


@dataclass(frozen=True)
class ClientOptions:
    """The options every :func:`client_command` takes, as given on its command line."""

    url: str | None = None
    token: str | None = None
    token_file: Path | None = None
    data_dir: Path | None = None
    config: Path | None = None
    query: str | None = None


_CLIENT_OPTIONS: list[tuple[str, Any]] = [
    ("url", UrlOpt),
    ("token", TokenOpt),
    ("token_file", TokenFileOpt),
    ("data_dir", DataDirOpt),
    ("config", ConfigOpt),
    ("query", QueryOpt),
]
_current: ContextVar[ClientOptions] = ContextVar("entrepot_client_options")


def current_options() -> ClientOptions:
    """The :class:`ClientOptions` of the command being run (all unset outside one)."""
    return _current.get(ClientOptions())


def client_command(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the options of every command that talks to a server.

    The returned function's signature is ``command``'s plus ``--url``, ``--token``,
    ``--token-file``, ``--data-dir``, ``--config`` and ``--query`` (keyword-only, all optional),
    which typer turns into options. When it runs, their values are checked (a malformed
    ``--query`` exits 2 before anything is sent) and made available to :func:`make_client`
    and :func:`emit` through :func:`current_options`; ``command`` itself never sees them.
    Apply it below ``@app.command()``.
    """
    signature = inspect.signature(command)
    hints = get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=hints[p.name]) for p in signature.parameters.values()]
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=hint)
        for name, hint in _CLIENT_OPTIONS
    ]

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        options = ClientOptions(**{name: kwargs.pop(name, None) for name, _ in _CLIENT_OPTIONS})
        if options.query is not None:
            compile_query(options.query)
        reset = _current.set(options)
        try:
            command(*args, **kwargs)
        finally:
            _current.reset(reset)

    run.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    run.__annotations__ = {**hints, **dict(_CLIENT_OPTIONS)}
    return run


# -- the application -----------------------------------------------------------------------------
_HELP = f"""entrepot: a self-hosted pull-through cache for container registries.

\b
Start the server with `entrepot serve` (scripts/serve in a checkout); the
other commands talk to it. They find it from --url, ENTREPOT_URL or the
config (default http://127.0.0.1:5000), and authenticate with --token,
--token-file, ENTREPOT_TOKEN or the admin-token file the server writes in its
data dir (--data-dir, default ./entrepot-data). Resource commands take
-g/--resource-group (default: {DEFAULT_RESOURCE_GROUP!r}, or ENTREPOT_RESOURCE_GROUP) and
--subscription (default: {DEFAULT_SUBSCRIPTION}).
"""

# Help screens use click's plain formatter, not typer's rich panels: typer 0.29's rich panels
# print every option's type, flags included (`--help <bool>`, `--yes <bool>`), and cut long
# defaults with an ellipsis; the plain formatter shows a flag without a type and wraps values.
PLAIN_HELP: Any = None

app = typer.Typer(
    name="entrepot",
    help=_HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=PLAIN_HELP,
)
cache_app = typer.Typer(
    help="Manage cache rules (az acr cache).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=PLAIN_HELP,
)
credential_set_app = typer.Typer(
    help="Manage credential sets (az acr credential-set).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=PLAIN_HELP,
)
registry_app = typer.Typer(
    help="Manage registries (az acr create/show/list/delete).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=PLAIN_HELP,
)
app.add_typer(cache_app, name="cache")
app.add_typer(credential_set_app, name="credential-set")
app.add_typer(registry_app, name="registry")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"entrepot {_client_version()}")
        raise typer.Exit(0)


def _client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("entrepot")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "0.0.0"


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Options before the command apply to entrepot itself."""


def _use_plain_help(typer_app: typer.Typer) -> None:
    """Give ``typer_app`` and every group under it the plain help formatter (see PLAIN_HELP),
    also groups other modules registered without asking for it."""
    typer_app.rich_markup_mode = PLAIN_HELP
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _use_plain_help(group.typer_instance)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    _use_plain_help(app)
    app(args=list(argv) if argv is not None else None, prog_name="entrepot")


# -- helpers -------------------------------------------------------------------------------------
def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load(options: ClientOptions) -> Config:
    overrides = {"server.data_dir": str(options.data_dir) if options.data_dir else None}
    try:
        return load_config(options.config, overrides=overrides)
    except ConfigError as exc:
        fail(str(exc), 2)


def server_url(config: Config) -> str:
    """The base URL of the server described by ``config``."""
    return config.server.base_url


@dataclass(frozen=True)
class Connection:
    """Where the server is, the token to send, and where that token came from (for errors)."""

    url: str
    token: str
    token_source: str


def _read_token(path: Path, what: str) -> str:
    path = path.absolute()
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        fail(
            f"no API token: {what} {path} does not exist. Start the server with `entrepot "
            "serve` (it writes its admin token there; give the same --config or --data-dir), "
            "or pass --token-file or set ENTREPOT_TOKEN. Lost it while the server runs? "
            "`entrepot token rotate-admin --data-dir DIR` makes a new one."
        )
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}")
    if not token:
        fail(f"{what} {path} is empty; pass --token-file or set ENTREPOT_TOKEN.")
    return token


def connection(options: ClientOptions | None = None) -> Connection:
    """The server's URL and the token to send, by the precedence in this module's docstring."""
    options = options or current_options()
    url = (options.url or os.environ.get("ENTREPOT_URL", "")).strip()
    config: Config | None = None
    if not url:
        config = _load(options)
        url = server_url(config)
    if options.token is not None:
        if not options.token.strip():
            fail("--token is empty", 2)
        token, source = options.token.strip(), "--token"
    elif options.token_file is not None:
        path = options.token_file.absolute()
        token, source = _read_token(path, "the --token-file"), f"--token-file {path}"
    elif options.data_dir is None and os.environ.get("ENTREPOT_TOKEN", "").strip():
        token, source = os.environ["ENTREPOT_TOKEN"].strip(), "ENTREPOT_TOKEN"
    else:
        config = config or _load(options)
        path = config.token_file.absolute()
        token = _read_token(path, "the admin token file")
        source = f"the admin token file {path}"
    return Connection(url.rstrip("/"), token, source)


def make_client(target: Target) -> tuple[ContainerRegistryManagementClient, Connection]:
    """A management client for the current command's server and how it connects.

    Connection errors are not retried (``retry_connect=0``): a server that is not running is
    reported at once; other failures keep azure-core's retries.
    """
    options = current_options()
    if options.config is None and target.config is not None:
        options = replace(options, config=target.config)
    conn = connection(options)
    from entrepot.mgmt import ContainerRegistryManagementClient, StaticTokenCredential

    try:
        credential = StaticTokenCredential(conn.token)
    except (TypeError, ValueError) as exc:
        fail(f"invalid API token from {conn.token_source}: {exc}")
    try:
        client = ContainerRegistryManagementClient(
            credential,
            target.subscription,
            base_url=conn.url,
            polling_interval=POLLING_INTERVAL,
            retry_connect=0,
        )
    except ValueError as exc:
        fail(f"--url / ENTREPOT_URL: {exc}", 2)
    return client, conn


def _refused(exc: BaseException) -> bool:
    """Whether ``exc`` was caused, at any depth, by a refused connection."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        if "connection refused" in str(current).lower():
            return True
        stack.extend([current.__cause__, current.__context__])
        stack.append(getattr(current, "inner_exception", None))
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
    return False


@contextmanager
def server_errors(conn: Connection) -> Iterator[None]:
    """Turn the SDK's exceptions into ``error: ...`` and exit status 1."""
    from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError

    try:
        yield
    except HttpResponseError as exc:
        message = describe_http_error(exc)
        if getattr(exc, "status_code", None) == 401:
            message += f" The token came from {conn.token_source}."
        fail(message)
    except ServiceRequestError as exc:
        if _refused(exc):
            fail(
                f"no entrepot server is running at {conn.url} (connection refused). Start one "
                "with `entrepot serve` (scripts/serve in a checkout), or point --url or "
                "ENTREPOT_URL at a running server."
            )
        if "non-TLS" in str(exc.message) or "non-https" in str(exc.message):
            fail(
                f"refusing to send the API token over plain http to {conn.url}: tokens travel "
                "unencrypted only to loopback addresses. Serve with TLS ([server] tls_cert and "
                "tls_key) and use an https:// URL."
            )
        fail(f"cannot reach the entrepot server at {conn.url}: {exc.message}")
    except AzureError as exc:
        fail(f"{type(exc).__name__}: {exc.message}")


def describe_http_error(exc: Any) -> str:
    """``(<code>) <message>`` of an azure-core ``HttpResponseError``."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None)
    if code:
        return f"({code}) {message or exc.reason or ''}".rstrip()
    status = getattr(exc, "status_code", None)
    text = getattr(exc, "message", None) or str(exc)
    return f"(HTTP {status}) {text}" if status else str(text)


def credential_set_id(target: Target, registry: str, cred_set: str) -> str:
    """The resource id of credential set ``cred_set``; a full id is passed through."""
    if cred_set.startswith("/"):
        return cred_set
    return (
        f"/subscriptions/{target.subscription}/resourceGroups/{target.resource_group}"
        f"/providers/Microsoft.ContainerRegistry/registries/{registry}/credentialSets/{cred_set}"
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _plain(value: Any) -> Any:
    from entrepot.models import Model

    if isinstance(value, Model):
        return model_to_dict(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):  # tags, userAssignedIdentities: keys are data, kept as they are
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        from entrepot.models import format_datetime

        return format_datetime(value)
    return value


def model_to_dict(model: Model) -> dict[str, Any]:
    """The model as az prints it: flattened, camelCase keys in sorted order, ``None`` as null."""
    plain = model.as_dict()  # attribute names, in model order
    out = {_camel(attr): _plain(getattr(model, attr)) for attr in plain}
    return dict(sorted(out.items()))


def resource_to_dict(model: Model, resource_group: str) -> dict[str, Any]:
    """:func:`model_to_dict` plus ``resourceGroup`` (taken from the id, as az does)."""
    out = model_to_dict(model)
    match = _RESOURCE_GROUP_IN_ID.search(str(out.get("id") or ""))
    out["resourceGroup"] = match.group(1) if match else resource_group
    return dict(sorted(out.items()))


Row = list[str]
Columns = tuple[list[str], Callable[[dict[str, Any]], Row]]


def compile_query(query: str) -> Any:
    """The compiled JMESPath expression ``query``; exits 2 when it is malformed."""
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.compile(query)
    except JMESPathError as exc:
        reason = str(exc).splitlines()[0].rstrip(": ")
        fail(f"--query: invalid JMESPath expression {query!r}: {reason}", 2)


def emit(data: Any, output: OutputFormat, columns: Columns) -> None:
    """Write ``data`` to stdout as json, yaml, a table or tsv, after the command's ``--query``.

    Without ``--query`` a table has ``columns``; with one, a table's columns are those of the
    query's result (an object's keys, or ``Result`` for plain values).
    """
    query = current_options().query
    if query is not None:
        data = compile_query(query).search(data)
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    elif output is OutputFormat.yaml:
        import yaml

        sys.stdout.write(
            yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
        )
    elif output is OutputFormat.tsv:
        sys.stdout.write("".join(line + "\n" for line in tsv_lines(data)))
    elif query is not None:
        print_table(*generic_table(data))
    else:
        headers, row = columns
        rows = [row(item) for item in (data if isinstance(data, list) else [data])]
        print_table(headers, rows)


def _tsv_cell(value: Any) -> str:
    return "" if value is None else str(value)


def tsv_lines(data: Any) -> list[str]:
    """``data`` as az's ``-o tsv`` prints it: one line per item of a list (one for anything
    else), holding the item's plain values (an object's in key order, nested objects and lists
    left out) separated by tabs; ``None`` is empty."""
    items = data if isinstance(data, list) else [data]
    lines = []
    for item in items:
        values = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else [item]
        )
        lines.append("\t".join(_tsv_cell(v) for v in values if not isinstance(v, dict | list)))
    return lines


def generic_table(data: Any) -> tuple[list[str], list[Row]]:
    """Headers and rows for any JSON value (the table of a ``--query`` result)."""
    items = data if isinstance(data, list) else [data]
    if items and all(isinstance(item, dict) for item in items):
        headers = list(dict.fromkeys(key for item in items for key in item))
        return headers, [[_table_cell(item.get(h)) for h in headers] for item in items]
    if items and all(isinstance(item, list) for item in items):
        width = max(len(item) for item in items)
        headers = [f"Column{i + 1}" for i in range(width)]
        return headers, [
            [_table_cell(v) for v in item] + [""] * (width - len(item)) for item in items
        ]
    return ["Result"], [[_table_cell(item)] for item in items]


def _table_cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _text(value)


def print_table(headers: list[str], rows: Iterable[Row]) -> None:
    """A plain table on stdout; values are never truncated, and uncoloured when piped."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    tty = sys.stdout.isatty()
    console = Console(
        file=sys.stdout,
        highlight=False,
        no_color=not tty,
        color_system="auto" if tty else None,
        # Piped output is not limited to a terminal's width: the table is as wide as its
        # widest values (a table does not expand to the console's width).
        width=None if tty else 100_000,
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold", no_wrap=not tty)
    for values in rows:
        table.add_row(*values)
    if tty:
        console.print(table)
        return
    with console.capture() as capture:
        console.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in capture.get().splitlines()))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _last_segment(resource_id: Any) -> str:
    return _text(resource_id).rstrip("/").rsplit("/", 1)[-1] if resource_id else ""


def _rule_row(item: dict[str, Any]) -> Row:
    return [
        _text(item.get("name")),
        _text(item.get("sourceRepository")),
        _text(item.get("targetRepository")),
        _last_segment(item.get("credentialSetResourceId")),
        _text(item.get("provisioningState")),
    ]


def _credential_set_row(item: dict[str, Any]) -> Row:
    creds = item.get("authCredentials") or [{}]
    first = creds[0] if isinstance(creds[0], dict) else {}
    health = first.get("credentialHealth") or {}
    return [
        _text(item.get("name")),
        _text(item.get("loginServer")),
        _text(first.get("usernameSecretIdentifier")),
        _text(first.get("passwordSecretIdentifier")),
        _text(health.get("status") if isinstance(health, dict) else health),
        _text(item.get("provisioningState")),
    ]


def _registry_row(item: dict[str, Any]) -> Row:
    return [
        _text(item.get("name")),
        _text(item.get("resourceGroup")),
        _text(item.get("loginServer")),
        _text(item.get("location")),
        _text(item.get("provisioningState")),
    ]


RULE_COLUMNS: Columns = (["Name", "Source", "Target", "Credential Set", "State"], _rule_row)
CREDENTIAL_SET_COLUMNS: Columns = (
    ["Name", "Login Server", "Username secret", "Password secret", "Health", "State"],
    _credential_set_row,
)
REGISTRY_COLUMNS: Columns = (
    ["Name", "Resource group", "Login server", "Location", "State"],
    _registry_row,
)


@contextmanager
def session(
    subscription: str, resource_group: str, output: OutputFormat
) -> Iterator[tuple[Target, ContainerRegistryManagementClient]]:
    """A :class:`Target` and a client, with server errors reported as ``error: ...``."""
    target = Target(subscription, resource_group, output)
    client, conn = make_client(target)
    with server_errors(conn):
        yield target, client


def _show(target: Target, model: Model, columns: Columns) -> None:
    emit(resource_to_dict(model, target.resource_group), target.output, columns)


def _show_list(target: Target, models: Iterable[Model], columns: Columns) -> None:
    emit([resource_to_dict(m, target.resource_group) for m in models], target.output, columns)


# -- serve ---------------------------------------------------------------------------------------
@app.command()
def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Configuration file (TOML; default: ENTREPOT_CONFIG, else built-in defaults). "
            "ENTREPOT_<SECTION>_<KEY> variables override it.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="HOST:PORT to listen on; overrides server.listen (default 127.0.0.1:5000).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir",
            help="Where the SQLite database, the vault's master key and the admin-token file "
            "live; overrides server.data_dir (default ./entrepot-data).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the entrepot server (management API and registry /v2/ API) in the foreground.

    On its first start it creates the admin API token, prints it once and writes it to
    DATA_DIR/admin-token, where the other commands find it. Stop it with Ctrl-C or SIGTERM.
    """
    try:
        cfg = load_config(config, overrides={"server.listen": listen, "server.data_dir": data_dir})
    except ConfigError as exc:
        fail(str(exc), 2)
    from entrepot.app import serve as run_server
    from entrepot.metadata.protocols import StoreUnavailable

    try:
        run_server(cfg)
    except ConfigError as exc:
        fail(str(exc), 2)
    except StoreUnavailable as exc:  # the database: unreachable, refused the login ...
        fail(str(exc), 1)
    except OSError as exc:  # the port is taken, the data dir cannot be created ...
        if exc.filename:
            fail(f"cannot serve: {exc.filename}: {exc.strerror or exc}", 1)
        fail(f"cannot listen on {cfg.server.listen}: {exc.strerror or exc}", 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# -- status --------------------------------------------------------------------------------------
STATUS_COLUMNS: Columns = (
    ["Server", "Version", "Database", "Registries", "Cache rules", "Credential sets"],
    lambda item: [
        _text(item.get(key))
        for key in ("url", "version", "database", "registries", "cacheRules", "credentialSets")
    ],
)
"""What :func:`emit` is given; ``-o table`` without ``--query`` prints :func:`status_rows`."""


def human_bytes(size: Any) -> str:
    """``size`` bytes for people: ``512 B``, ``1.5 KiB`` ... ``2.0 TiB`` (non-numbers as text)."""
    if not isinstance(size, int):
        return _text(size)
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def status_rows(item: dict[str, Any]) -> list[Row]:
    """``entrepot status -o table``: one ``[property, value]`` row per figure, top to bottom
    (the figures are too many for one line)."""
    cache = item.get("cache") if isinstance(item.get("cache"), dict) else {}
    storage = item.get("storage") if isinstance(item.get("storage"), dict) else {}
    assert isinstance(cache, dict) and isinstance(storage, dict)
    size = cache.get("blobBytes")
    shown_size = f"{human_bytes(size)} ({size} bytes)" if isinstance(size, int) else _text(size)
    return [
        ["Server", _text(item.get("url"))],
        ["Version", _text(item.get("version"))],
        ["Database", _text(item.get("database"))],
        ["Registries", _text(item.get("registries"))],
        ["Cache rules", _text(item.get("cacheRules"))],
        ["Credential sets", _text(item.get("credentialSets"))],
        ["Cached repositories", _text(cache.get("repositories"))],
        ["Cached manifests", _text(cache.get("manifests"))],
        ["Cached tags", _text(cache.get("tags"))],
        ["Cached blobs", _text(cache.get("blobs"))],
        ["Cached blob size", shown_size],
        ["Storage driver", _text(storage.get("driver"))],
        ["Storage root", _text(storage.get("root"))],
    ]


@app.command("status")
@client_command
def status(output: OutputOpt = OutputFormat.json) -> None:
    """Show the server: its URL, version, database kind (sqlite or postgresql), how many
    registries, cache rules and credential sets it holds, what the cache holds (repositories,
    manifests, tags, blobs and their total size) and where the content store keeps it."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.core.rest import HttpRequest
    from azure.mgmt.core.exceptions import ARMErrorFormat

    client, conn = make_client(Target(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, output))
    with server_errors(conn):
        response = client.send_request(HttpRequest("GET", "/entrepot/status"))
        if response.status_code >= 400:
            error = ClientAuthenticationError if response.status_code == 401 else HttpResponseError
            raise error(response=response, error_format=ARMErrorFormat)
        body = response.json()
    shown = {"url": conn.url, **body}
    if output is OutputFormat.table and current_options().query is None:
        print_table(["Property", "Value"], status_rows(shown))
        return
    emit(shown, output, STATUS_COLUMNS)


# -- cache rules ---------------------------------------------------------------------------------
@cache_app.command("create")
@client_command
def cache_create(
    name: NameOpt,
    registry: RegistryOpt,
    source_repo: Annotated[
        str,
        typer.Option(
            "--source-repo", "-s", help="Upstream repository, e.g. docker.io/library/ubuntu."
        ),
    ],
    target_repo: Annotated[
        str, typer.Option("--target-repo", "-t", help="Repository in the registry, e.g. ubuntu.")
    ],
    cred_set: Annotated[
        str | None,
        typer.Option("--cred-set", "-c", help="Name of a credential set of the registry."),
    ] = None,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Create a cache rule."""
    from entrepot.models import CacheRule

    with session(subscription, resource_group, output) as (target, client):
        rule = CacheRule(
            source_repository=source_repo,
            target_repository=target_repo,
            credential_set_resource_id=(
                credential_set_id(target, registry, cred_set) if cred_set else None
            ),
        )
        result = client.cache_rules.begin_create(resource_group, registry, name, rule).result()
        _show(target, result, RULE_COLUMNS)


@cache_app.command("update")
@client_command
def cache_update(
    name: NameOpt,
    registry: RegistryOpt,
    cred_set: Annotated[
        str | None,
        typer.Option("--cred-set", "-c", help="Name of the credential set to use."),
    ] = None,
    remove_cred_set: Annotated[
        bool, typer.Option("--remove-cred-set", help="Remove the rule's credential set.")
    ] = False,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Change or remove the credential set of a cache rule."""
    if cred_set is None and not remove_cred_set:
        fail("You must either update the credential set ID or remove it.", 2)
    if cred_set is not None and remove_cred_set:
        fail("--cred-set and --remove-cred-set cannot be used together.", 2)
    from entrepot.models import CacheRuleUpdateParameters

    with session(subscription, resource_group, output) as (target, client):
        params: CacheRuleUpdateParameters | dict[str, Any]
        if cred_set is not None:
            params = CacheRuleUpdateParameters(
                credential_set_resource_id=credential_set_id(target, registry, cred_set)
            )
        else:
            params = {"properties": {"credentialSetResourceId": None}}
        result = client.cache_rules.begin_update(resource_group, registry, name, params).result()
        _show(target, result, RULE_COLUMNS)


@cache_app.command("show")
@client_command
def cache_show(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Show a cache rule."""
    with session(subscription, resource_group, output) as (target, client):
        _show(target, client.cache_rules.get(resource_group, registry, name), RULE_COLUMNS)


@cache_app.command("list")
@client_command
def cache_list(
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """List the cache rules of a registry."""
    with session(subscription, resource_group, output) as (target, client):
        _show_list(target, client.cache_rules.list(resource_group, registry), RULE_COLUMNS)


@cache_app.command("delete")
@client_command
def cache_delete(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    yes: YesOpt = False,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Delete a cache rule (succeeds if it does not exist)."""
    with session(subscription, resource_group, OutputFormat.json) as (_, client):
        client.cache_rules.begin_delete(resource_group, registry, name).result()


# -- credential sets -----------------------------------------------------------------------------
UsernameOpt = Annotated[
    str | None,
    typer.Option("--username-id", "-u", help="Secret identifier of the username."),
]
PasswordOpt = Annotated[
    str | None,
    typer.Option("--password-id", "-p", help="Secret identifier of the password."),
]


@credential_set_app.command("create")
@client_command
def credential_set_create(
    name: NameOpt,
    registry: RegistryOpt,
    login_server: Annotated[
        str, typer.Option("--login-server", "-l", help="Login server of the upstream registry.")
    ],
    username_id: Annotated[
        str, typer.Option("--username-id", "-u", help="Secret identifier of the username.")
    ],
    password_id: Annotated[
        str, typer.Option("--password-id", "-p", help="Secret identifier of the password.")
    ],
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Create a credential set (system-assigned identity, one credential)."""
    from entrepot.models import (
        AuthCredential,
        CredentialName,
        CredentialSet,
        IdentityProperties,
        ResourceIdentityType,
    )

    with session(subscription, resource_group, output) as (target, client):
        body = CredentialSet(
            identity=IdentityProperties(type=ResourceIdentityType.SYSTEM_ASSIGNED),
            login_server=login_server,
            auth_credentials=[
                AuthCredential(
                    name=CredentialName.CREDENTIAL1,
                    username_secret_identifier=username_id,
                    password_secret_identifier=password_id,
                )
            ],
        )
        result = client.credential_sets.begin_create(resource_group, registry, name, body).result()
        _show(target, result, CREDENTIAL_SET_COLUMNS)


@credential_set_app.command("update")
@client_command
def credential_set_update(
    name: NameOpt,
    registry: RegistryOpt,
    username_id: UsernameOpt = None,
    password_id: PasswordOpt = None,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Change the username and/or password secret of a credential set."""
    if username_id is None and password_id is None:
        fail("You must update either the username secret ID, password secret ID, or both.", 2)
    from entrepot.models import AuthCredential, CredentialName, CredentialSetUpdateParameters

    with session(subscription, resource_group, output) as (target, client):
        current = client.credential_sets.get(resource_group, registry, name)
        existing = current.auth_credentials[0] if current.auth_credentials else AuthCredential()
        params = CredentialSetUpdateParameters(
            auth_credentials=[
                AuthCredential(
                    name=existing.name or CredentialName.CREDENTIAL1,
                    username_secret_identifier=username_id or existing.username_secret_identifier,
                    password_secret_identifier=password_id or existing.password_secret_identifier,
                )
            ]
        )
        result = client.credential_sets.begin_update(
            resource_group, registry, name, params
        ).result()
        _show(target, result, CREDENTIAL_SET_COLUMNS)


@credential_set_app.command("show")
@client_command
def credential_set_show(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Show a credential set."""
    with session(subscription, resource_group, output) as (target, client):
        result = client.credential_sets.get(resource_group, registry, name)
        _show(target, result, CREDENTIAL_SET_COLUMNS)


@credential_set_app.command("validate")
@client_command
def credential_set_validate(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Measure a credential set's health now: read its secrets and log in to its upstream.

    Exits 0 when every credential is healthy, 3 when one is not (the output says why).
    """
    with session(subscription, resource_group, output) as (target, client):
        result = client.credential_sets.validate(resource_group, registry, name)
        _show(target, result, CREDENTIAL_SET_COLUMNS)
    statuses = [
        str(getattr(c.credential_health, "status", "")) for c in result.auth_credentials or []
    ]
    if any(status != "Healthy" for status in statuses):
        raise typer.Exit(3)


@credential_set_app.command("list")
@client_command
def credential_set_list(
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """List the credential sets of a registry."""
    with session(subscription, resource_group, output) as (target, client):
        items = client.credential_sets.list(resource_group, registry)
        _show_list(target, items, CREDENTIAL_SET_COLUMNS)


@credential_set_app.command("delete")
@client_command
def credential_set_delete(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    yes: YesOpt = False,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Delete a credential set (succeeds if it does not exist)."""
    with session(subscription, resource_group, OutputFormat.json) as (_, client):
        client.credential_sets.begin_delete(resource_group, registry, name).result()


# -- registries ----------------------------------------------------------------------------------
@registry_app.command("create")
@client_command
def registry_create(
    name: NameOpt,
    location: Annotated[
        str | None,
        typer.Option(
            "--location", "-l", help="Location (default: the server's arm.default_location)."
        ),
    ] = None,
    sku: Annotated[str, typer.Option("--sku", help="SKU, recorded only.")] = "Basic",
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Create a registry."""
    from entrepot.models import Registry, Sku

    with session(subscription, resource_group, output) as (target, client):
        body = Registry(location=location, sku=Sku(name=sku))
        result = client.registries.begin_create(resource_group, name, body).result()
        _show(target, result, REGISTRY_COLUMNS)


@registry_app.command("show")
@client_command
def registry_show(
    name: NameOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Show a registry."""
    with session(subscription, resource_group, output) as (target, client):
        _show(target, client.registries.get(resource_group, name), REGISTRY_COLUMNS)


@registry_app.command("list")
@client_command
def registry_list(
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """List the registries of a resource group."""
    with session(subscription, resource_group, output) as (target, client):
        items = client.registries.list_by_resource_group(resource_group)
        _show_list(target, items, REGISTRY_COLUMNS)


@registry_app.command("delete")
@client_command
def registry_delete(
    name: NameOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    yes: YesOpt = False,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
) -> None:
    """Delete a registry (succeeds if it does not exist)."""
    with session(subscription, resource_group, OutputFormat.json) as (_, client):
        client.registries.begin_delete(resource_group, name).result()
