"""The composition root: :func:`build_app` is the only place that wires concrete classes.

``serve(config)`` runs one asyncio process. Its root application does nothing but mount one
sub-application per face, each with its own routes, middleware and error renderer:

* ``/subscriptions``: the ARM face (:mod:`entrepot.web.arm`), ARM errors and ``x-ms-request-id``;
* ``/entrepot/vaults``: the built-in vault's management routes (:mod:`entrepot.web.vault`);
* ``/entrepot/tokens``: API-token management (:mod:`entrepot.web.tokens`);
* ``/v2``: the registry face (:mod:`entrepot.web.oci`), OCI errors, addressed by ``Host``.

Besides, the root answers ``/healthz`` without authentication, routes ``/SUBSCRIPTIONS/...``
and the other spellings of the ARM face's prefix to the ARM dispatcher (ARM's fixed path words
are case-insensitive), and answers any path no face claims in the management API's shape (an
ARM 404, as before the faces were split). The request body limit (``[arm] max_request_bytes``)
is the root's, so it holds on every face for bodies read whole. The HTTP server around it
(TLS, read timeouts, parser errors, access log, shutdown) is :mod:`entrepot.web.serving`.

On first start (no token in the database) the ``admin`` token is generated: its SHA-256 is
stored, the token itself is written to ``<data_dir>/admin-token`` with mode 0600 for the CLI,
and it is printed once on standard output. The data dir is created with mode 0700 (an existing
one open to other users is reported); every file entrepot writes in it is 0600, whatever the
umask.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from pathlib import Path

from aiohttp import web

from entrepot.addressing import RegistryAddressing
from entrepot.config import CONTENT_DIR, Config, mask_url
from entrepot.credential_health import CredentialProbe
from entrepot.errors import ConfigError, ResourceExists
from entrepot.management import Actor, Management, RegistryRef
from entrepot.management.tokens import TokenService
from entrepot.metadata import (
    Database,
    SqlContentIndex,
    SqlLeases,
    SqlOperationStore,
    SqlResourceStore,
)
from entrepot.metadata.protocols import StoreUnavailable
from entrepot.metadata.records import ResourceKind
from entrepot.metadata.vault_store import SqlVaultStore
from entrepot.proxy import RegistryDirectory
from entrepot.proxy.cache import CachingEngine
from entrepot.proxy.credentials import RuleCredentials
from entrepot.secrets import BuiltinVault, build_resolvers
from entrepot.storage import ContentStore, open_storage
from entrepot.upstream import AddressGuard, AiohttpTransport, UpstreamClient
from entrepot.web import arm, oci, status
from entrepot.web import tokens as tokens_face
from entrepot.web import vault as vault_face
from entrepot.web.access_log import ACCESS_LOGGER, CachedTimeFormatter
from entrepot.web.auth import TokenAuthenticator
from entrepot.web.responses import Handler, Middleware, management_errors
from entrepot.web.serving import serve_app, tls_context

log = logging.getLogger("entrepot")
SYSTEM_ACTOR = Actor("entrepot")


def unclaimed_only(middleware: Middleware) -> Middleware:
    """``middleware`` for requests no sub-application claimed; a face's own go straight on."""

    @web.middleware
    async def root(request: web.Request, handler: Handler) -> web.StreamResponse:
        if len(request.match_info.apps) > 1:  # a face resolved it: its middleware answers
            return await handler(request)
        return await middleware(request, handler)

    return root


def private_dir(path: Path) -> None:
    """Create directory ``path`` with mode 0700 (any umask); warn if it exists open to others."""
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "the data dir %s is accessible to other users (mode %o); chmod 700 it", path, mode
            )
    else:
        os.chmod(path, 0o700)


def build_app(config: Config) -> web.Application:
    """The aiohttp application for ``config``; resources open on startup and close on cleanup."""
    private_dir(config.data_dir)
    database = Database(config.database_url)
    resources = SqlResourceStore(database)
    tokens = TokenService(resources, config.token_file)
    # the registry face's registries and rules: in memory, revalidated, dropped on our changes
    directory = RegistryDirectory(resources, config.registry.rules_refresh_seconds)
    resources.subscribe(directory.invalidate)
    vault = BuiltinVault(SqlVaultStore(database))
    resolvers = build_resolvers(config.secrets, vault, private_dirs=(config.data_dir,))
    addressing = RegistryAddressing(config.server)
    guard = AddressGuard.from_config(config.policy, config.upstreams)
    transport = AiohttpTransport(guard=guard)  # opens its session inside the running loop
    upstream = UpstreamClient(
        transport,
        config.upstreams,
        timeout=config.health.timeout_seconds,
        stall_timeout=config.cache.upstream_stall_seconds,
    )
    management = Management(
        resources,
        SqlOperationStore(database),
        SqlLeases(database),
        config.arm,
        config.policy,
        addressing.login_server,
        lease_seconds=config.arm.operation_lease_seconds,
        sweep_seconds=config.arm.operation_sweep_seconds,
        resolvers=resolvers,
        probe=CredentialProbe(resolvers, upstream, timeout=config.health.timeout_seconds),
        health_interval=config.health.interval_seconds,
    )

    async def remeasure(set_id: int) -> None:  # an upstream 401 with a set's credentials
        async with resources.read() as tx:
            row = await tx.by_id(ResourceKind.CREDENTIAL_SET, set_id)
        if row is not None:
            await management.health.measure_and_store(row)

    content_index = SqlContentIndex(database)
    engine = CachingEngine(
        content_index,
        SqlLeases(database),
        upstream,
        tag_ttl=config.cache.tag_ttl_seconds,
        lease_seconds=config.cache.fill_lease_seconds,
        max_blob_bytes=config.cache.max_blob_bytes,
        min_free_bytes=config.cache.min_free_bytes,
        credentials=RuleCredentials(resources, resolvers, remeasure),
        revalidate_timeout=config.cache.revalidate_timeout_seconds,
        upstream_backoff=config.cache.upstream_backoff_seconds,
    )
    authenticator = TokenAuthenticator(resources.token)  # a point read per check, no cache
    app = web.Application(
        middlewares=[unclaimed_only(management_errors(log))],
        client_max_size=config.arm.max_request_bytes,
    )
    app[arm.CONFIG_KEY] = config
    app[arm.MANAGEMENT_KEY] = management
    app[vault_face.VAULT_KEY] = vault

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    arm_api = arm.ArmApi(management, config, authenticator)
    app.add_subapp(arm.MOUNT, arm.build_arm_app(arm_api))
    app.router.add_route("*", arm.CASE_VARIANTS, arm_api.dispatch)  # /SUBSCRIPTIONS/... too
    app.add_subapp(vault_face.MOUNT, vault_face.build_vault_app(authenticator, vault))
    app.add_subapp(tokens_face.MOUNT, tokens_face.build_tokens_app(authenticator, tokens))
    registry_face = oci.RegistryFace(
        addressing,
        directory,
        engine,
        authenticator,
        anonymous_pull=config.anonymous_pull,
    )
    app.add_subapp(oci.MOUNT, oci.build_oci_app(registry_face))
    kind = "sqlite" if database.is_sqlite else "postgresql"
    status_app = status.build_status_app(
        authenticator, resources.counts, kind, content_index.counts, storage_shown(config)
    )
    app.add_subapp(status.MOUNT, status_app)

    async def on_startup(_app: web.Application) -> None:
        try:
            await database.open()
        except Exception as exc:
            raise StoreUnavailable(database_problem(config, exc)) from exc
        await vault.unlock(config.data_dir)
        engine.open(ContentStore(await open_storage(config.storage, config.data_dir)))
        token = await tokens.bootstrap()
        if token is not None:
            print(
                f"entrepot: created the admin API token (shown once; saved to "
                f"{config.token_file} with mode 0600):\n{token}",
                flush=True,
            )
        for i, seed in enumerate(config.registries):
            try:
                await management.registries.ensure(
                    RegistryRef(seed.subscription, seed.resource_group, seed.name),
                    seed.location,
                    SYSTEM_ACTOR,
                )
            except ResourceExists as exc:
                raise ConfigError(f"registries[{i}].name: {exc.message}") from None
        await management.start()
        log.info(
            "registry face: %s",
            "anonymous pull allowed" if config.anonymous_pull else "pulls need an API token",
        )

    async def on_cleanup(_app: web.Application) -> None:
        await management.stop()
        await engine.close()
        await transport.close()
        await database.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def storage_shown(config: Config) -> dict[str, str]:
    """The content store as ``entrepot status`` shows it: the driver and the absolute path of
    its root (``[storage] root``, else ``<data_dir>/content``)."""
    root = config.storage.root or str(config.data_dir / CONTENT_DIR)
    return {"driver": config.storage.driver, "root": os.path.abspath(root)}


def database_problem(config: Config, exc: BaseException) -> str:
    """One line saying why the database could not be opened, naming it (password hidden)."""
    where = mask_url(config.database.url or config.database_url)
    if isinstance(exc, OSError) and not config.database_url.startswith("sqlite"):
        reason = exc.strerror or str(exc) or type(exc).__name__  # refused, unknown host ...
        return (
            f"the database at {where} is unreachable: {reason} "
            "(is the database server running, and is database.url right?)"
        )
    cause = getattr(exc, "orig", None) or exc  # a SQLAlchemy error wraps the driver's
    reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return f"cannot open the database at {where}: {reason.splitlines()[0]}"


def configure_logging(level: str, access_log: str = "text") -> None:
    """Log lines to standard error: ``TIME LEVEL LOGGER: message``.

    The access log (``entrepot.access``, :mod:`entrepot.web.access_log`) is written at INFO
    whatever ``level`` is; as ``json`` its lines are the bare JSON objects, one per line.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CachedTimeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.INFO)
    if access_log == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False


def serve(config: Config) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop gracefully, see
    :mod:`entrepot.web.serving`).

    :raises ConfigError: when the TLS certificate or key cannot be loaded.
    :raises OSError: when the listen address cannot be bound.
    """
    server = config.server
    ssl_context = tls_context(server.tls_cert, server.tls_key) if server.tls_cert else None
    configure_logging(server.log_level, server.access_log)
    log.info("starting with %s", config.sanitized())
    if ssl_context is None and not server.listens_on_loopback:
        log.warning(
            "serving plain HTTP on %s, an address off loopback (server.allow_insecure_http): "
            "tokens and secrets cross the network in clear unless a TLS proxy is in front",
            server.listen,
        )
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is optional
        pass
    app = build_app(config)
    serve_app(
        app,
        server,
        ssl_context=ssl_context,
        on_listening=lambda url: log.info("listening on %s", url),
    )
