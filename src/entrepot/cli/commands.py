"""The ``entrepot`` command line: ``serve``, and ``az acr``-shaped resource commands.

``entrepot serve`` runs the server. The resource commands mirror ``az acr cache``,
``az acr credential-set`` and ``az acr`` (registries), flag for flag, and talk to a running
server only through the client SDK :mod:`entrepot.mgmt`, imported lazily so that ``serve`` and
``--help`` do not load azure-core.

Where the server is and how to authenticate:

* URL: ``ENTREPOT_URL``, else the configuration (``--config``, else ``ENTREPOT_CONFIG``, else
  the defaults): ``server.public_url``, else ``http://`` + ``server.listen`` (a wildcard host
  such as ``0.0.0.0`` becomes loopback).
* Token: ``ENTREPOT_TOKEN``, else the ``admin-token`` file the server writes in its data dir.

Exit codes: 0 success; 1 the server refused or could not be reached; 2 invalid usage or
configuration. Errors are one line on stderr, ``error: ...``; no tracebacks.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from entrepot.config import Config, load_config
from entrepot.errors import ConfigError

if TYPE_CHECKING:
    from entrepot.mgmt import ContainerRegistryManagementClient
    from entrepot.models import Model

__all__ = ["app", "main"]

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP = "default"
POLLING_INTERVAL = 0.5
_RESOURCE_GROUP_IN_ID = re.compile(r"/resourceGroups/([^/]+)", re.IGNORECASE)


class OutputFormat(StrEnum):
    """``-o/--output``."""

    json = "json"
    table = "table"
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
        help="entrepot config file, used to find the server URL and admin token "
        "(default: ENTREPOT_CONFIG, else built-in defaults).",
        dir_okay=False,
    ),
]
YesOpt = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Accepted for az compatibility; entrepot never prompts."),
]


@dataclass(frozen=True)
class Target:
    """What every resource command needs besides its own flags."""

    subscription: str
    resource_group: str
    output: OutputFormat
    config: Path | None


# -- the application -----------------------------------------------------------------------------
app = typer.Typer(
    name="entrepot",
    help="entrepot: a self-hosted pull-through cache for container registries.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(
    help="Manage cache rules (az acr cache).", no_args_is_help=True, add_completion=False
)
credential_set_app = typer.Typer(
    help="Manage credential sets (az acr credential-set).",
    no_args_is_help=True,
    add_completion=False,
)
registry_app = typer.Typer(
    help="Manage registries (az acr create/show/list/delete).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(cache_app, name="cache")
app.add_typer(credential_set_app, name="credential-set")
app.add_typer(registry_app, name="registry")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=list(argv) if argv is not None else None, prog_name="entrepot")


# -- helpers -------------------------------------------------------------------------------------
def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load(config_file: Path | None) -> Config:
    try:
        return load_config(config_file)
    except ConfigError as exc:
        fail(str(exc), 2)


def server_url(config: Config) -> str:
    """The base URL of the server described by ``config``."""
    return config.server.base_url


def connection(config_file: Path | None) -> tuple[str, str]:
    """``(url, token)``: from ``ENTREPOT_URL``/``ENTREPOT_TOKEN``, else from the configuration."""
    url = os.environ.get("ENTREPOT_URL", "").strip()
    token = os.environ.get("ENTREPOT_TOKEN", "").strip()
    if url and token:
        return url.rstrip("/"), token
    config = _load(config_file)
    if not url:
        url = server_url(config)
    if not token:
        path = config.token_file.absolute()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            fail(
                f"no admin token: {path} does not exist. Start the server with `entrepot serve` "
                "(it writes the token there; pass the same --config), or set ENTREPOT_TOKEN."
            )
        except OSError as exc:
            fail(f"cannot read the admin token {path}: {exc.strerror or exc}")
        if not token:
            fail(f"the admin token file {path} is empty; set ENTREPOT_TOKEN.")
    return url.rstrip("/"), token


def make_client(target: Target) -> tuple[ContainerRegistryManagementClient, str]:
    """A management client for ``target`` and the URL it talks to."""
    url, token = connection(target.config)
    from entrepot.mgmt import ContainerRegistryManagementClient, StaticTokenCredential

    try:
        credential = StaticTokenCredential(token)
    except (TypeError, ValueError) as exc:
        fail(f"invalid admin token: {exc}")
    client = ContainerRegistryManagementClient(
        credential, target.subscription, base_url=url, polling_interval=POLLING_INTERVAL
    )
    return client, url


@contextmanager
def server_errors(url: str) -> Iterator[None]:
    """Turn the SDK's exceptions into ``error: ...`` and exit status 1."""
    from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError

    try:
        yield
    except HttpResponseError as exc:
        fail(describe_http_error(exc))
    except ServiceRequestError as exc:
        fail(f"request to the entrepot server at {url} failed: {exc.message}")
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


def emit(
    data: dict[str, Any] | list[dict[str, Any]], output: OutputFormat, columns: Columns
) -> None:
    """Write ``data`` to stdout as json, yaml or a table."""
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    elif output is OutputFormat.yaml:
        import yaml

        sys.stdout.write(
            yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
        )
    else:
        headers, row = columns
        rows = [row(item) for item in (data if isinstance(data, list) else [data])]
        print_table(headers, rows)


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
    subscription: str, resource_group: str, output: OutputFormat, config: Path | None
) -> Iterator[tuple[Target, ContainerRegistryManagementClient]]:
    """A :class:`Target` and a client, with server errors reported as ``error: ...``."""
    target = Target(subscription, resource_group, output, config)
    client, url = make_client(target)
    with server_errors(url):
        yield target, client


def _show(target: Target, model: Model, columns: Columns) -> None:
    emit(resource_to_dict(model, target.resource_group), target.output, columns)


def _show_list(target: Target, models: Iterable[Model], columns: Columns) -> None:
    emit([resource_to_dict(m, target.resource_group) for m in models], target.output, columns)


# -- serve ---------------------------------------------------------------------------------------
@app.command()
def serve(
    config: ConfigOpt = None,
    listen: Annotated[
        str | None, typer.Option("--listen", help="HOST:PORT to listen on (server.listen).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Data directory (server.data_dir).")
    ] = None,
) -> None:
    """Run the entrepot server (registry /v2/ API and management API) in the foreground."""
    try:
        cfg = load_config(config, overrides={"server.listen": listen, "server.data_dir": data_dir})
        from entrepot.app import serve as run_server

        run_server(cfg)
    except ConfigError as exc:
        fail(str(exc), 2)
    except OSError as exc:  # e.g. the port is taken: one line, not a traceback
        fail(f"cannot serve on {listen or 'the configured address'}: {exc.strerror or exc}", 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# -- cache rules ---------------------------------------------------------------------------------
@cache_app.command("create")
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
    config: ConfigOpt = None,
) -> None:
    """Create a cache rule."""
    from entrepot.models import CacheRule

    with session(subscription, resource_group, output, config) as (target, client):
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
    config: ConfigOpt = None,
) -> None:
    """Change or remove the credential set of a cache rule."""
    if cred_set is None and not remove_cred_set:
        fail("You must either update the credential set ID or remove it.", 2)
    if cred_set is not None and remove_cred_set:
        fail("--cred-set and --remove-cred-set cannot be used together.", 2)
    from entrepot.models import CacheRuleUpdateParameters

    with session(subscription, resource_group, output, config) as (target, client):
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
def cache_show(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """Show a cache rule."""
    with session(subscription, resource_group, output, config) as (target, client):
        _show(target, client.cache_rules.get(resource_group, registry, name), RULE_COLUMNS)


@cache_app.command("list")
def cache_list(
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """List the cache rules of a registry."""
    with session(subscription, resource_group, output, config) as (target, client):
        _show_list(target, client.cache_rules.list(resource_group, registry), RULE_COLUMNS)


@cache_app.command("delete")
def cache_delete(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    yes: YesOpt = False,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """Delete a cache rule (succeeds if it does not exist)."""
    with session(subscription, resource_group, OutputFormat.json, config) as (_, client):
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
    config: ConfigOpt = None,
) -> None:
    """Create a credential set (system-assigned identity, one credential)."""
    from entrepot.models import (
        AuthCredential,
        CredentialName,
        CredentialSet,
        IdentityProperties,
        ResourceIdentityType,
    )

    with session(subscription, resource_group, output, config) as (target, client):
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
def credential_set_update(
    name: NameOpt,
    registry: RegistryOpt,
    username_id: UsernameOpt = None,
    password_id: PasswordOpt = None,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """Change the username and/or password secret of a credential set."""
    if username_id is None and password_id is None:
        fail("You must update either the username secret ID, password secret ID, or both.", 2)
    from entrepot.models import AuthCredential, CredentialName, CredentialSetUpdateParameters

    with session(subscription, resource_group, output, config) as (target, client):
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
def credential_set_show(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """Show a credential set."""
    with session(subscription, resource_group, output, config) as (target, client):
        result = client.credential_sets.get(resource_group, registry, name)
        _show(target, result, CREDENTIAL_SET_COLUMNS)


@credential_set_app.command("validate")
def credential_set_validate(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """Measure a credential set's health now: read its secrets and log in to its upstream.

    Exits 0 when every credential is healthy, 3 when one is not (the output says why).
    """
    with session(subscription, resource_group, output, config) as (target, client):
        result = client.credential_sets.validate(resource_group, registry, name)
        _show(target, result, CREDENTIAL_SET_COLUMNS)
    statuses = [
        str(getattr(c.credential_health, "status", "")) for c in result.auth_credentials or []
    ]
    if any(status != "Healthy" for status in statuses):
        raise typer.Exit(3)


@credential_set_app.command("list")
def credential_set_list(
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """List the credential sets of a registry."""
    with session(subscription, resource_group, output, config) as (target, client):
        items = client.credential_sets.list(resource_group, registry)
        _show_list(target, items, CREDENTIAL_SET_COLUMNS)


@credential_set_app.command("delete")
def credential_set_delete(
    name: NameOpt,
    registry: RegistryOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    yes: YesOpt = False,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """Delete a credential set (succeeds if it does not exist)."""
    with session(subscription, resource_group, OutputFormat.json, config) as (_, client):
        client.credential_sets.begin_delete(resource_group, registry, name).result()


# -- registries ----------------------------------------------------------------------------------
@registry_app.command("create")
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
    config: ConfigOpt = None,
) -> None:
    """Create a registry."""
    from entrepot.models import Registry, Sku

    with session(subscription, resource_group, output, config) as (target, client):
        body = Registry(location=location, sku=Sku(name=sku))
        result = client.registries.begin_create(resource_group, name, body).result()
        _show(target, result, REGISTRY_COLUMNS)


@registry_app.command("show")
def registry_show(
    name: NameOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """Show a registry."""
    with session(subscription, resource_group, output, config) as (target, client):
        _show(target, client.registries.get(resource_group, name), REGISTRY_COLUMNS)


@registry_app.command("list")
def registry_list(
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    output: OutputOpt = OutputFormat.json,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """List the registries of a resource group."""
    with session(subscription, resource_group, output, config) as (target, client):
        items = client.registries.list_by_resource_group(resource_group)
        _show_list(target, items, REGISTRY_COLUMNS)


@registry_app.command("delete")
def registry_delete(
    name: NameOpt,
    resource_group: ResourceGroupOpt = DEFAULT_RESOURCE_GROUP,
    yes: YesOpt = False,
    subscription: SubscriptionOpt = DEFAULT_SUBSCRIPTION,
    config: ConfigOpt = None,
) -> None:
    """Delete a registry (succeeds if it does not exist)."""
    with session(subscription, resource_group, OutputFormat.json, config) as (_, client):
        client.registries.begin_delete(resource_group, name).result()
