"""The composition root: :func:`build_app` is the only place that wires concrete classes.

``serve(config)`` runs one asyncio process. Its root application does nothing but mount one
sub-application per face, each with its own routes, middleware and error renderer:

* ``/subscriptions``: the ARM face (:mod:`entrepot.web.arm`), ARM errors and ``x-ms-request-id``;
* ``/entrepot/vaults``: the built-in vault's management routes (:mod:`entrepot.web.vault`);
* ``/entrepot/tokens``: API-token management (:mod:`entrepot.web.tokens`);
* ``/v2``: the registry face (:mod:`entrepot.web.oci`), OCI errors, addressed by ``Host``.

Besides, the root answers ``/healthz`` without authentication, and any path no face claims in
the management API's shape (an ARM 404, as before the faces were split). The request body limit
(``[arm] max_request_bytes``) is the root's, so it holds on every face for bodies read whole.

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
from entrepot.config import Config
from entrepot.credential_health import CredentialProbe
from entrepot.management import Actor, Management, RegistryRef
from entrepot.management.tokens import TokenService
from entrepot.metadata import Database, SqlOperationStore, SqlResourceStore
from entrepot.metadata.protocols import ResourceStore
from entrepot.metadata.vault_store import SqlVaultStore
from entrepot.secrets import BuiltinVault, build_resolvers
from entrepot.upstream import AiohttpTransport, UpstreamClient
from entrepot.web import arm, oci
from entrepot.web import tokens as tokens_face
from entrepot.web import vault as vault_face
from entrepot.web.auth import TokenAuthenticator
from entrepot.web.responses import Handler, Middleware, management_errors

log = logging.getLogger("entrepot")
SYSTEM_ACTOR = Actor("entrepot")


class StoreLookups:
    """What the faces ask the metadata store, as the small async callables they take (each one
    point read)."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    async def count_named(self, name: str) -> int:
        """:meth:`entrepot.web.oci.RegistryLookup.count_named` (2 means "2 or more")."""
        return len(await self.store.registries_named(name))

    async def sole_registry(self) -> str | None:
        """:meth:`entrepot.web.oci.RegistryLookup.sole_registry`."""
        names = await self.store.first_registries()
        return names[0] if len(names) == 1 else None


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
    lookups = StoreLookups(resources)
    vault = BuiltinVault(SqlVaultStore(database))
    resolvers = build_resolvers(config.secrets, vault)
    addressing = RegistryAddressing(config.server)
    transport = AiohttpTransport()  # opens its session inside the running loop
    upstream = UpstreamClient(transport, config.upstreams, timeout=config.health.timeout_seconds)
    management = Management(
        resources,
        SqlOperationStore(database),
        config.arm,
        config.policy,
        addressing.login_server,
        lease_seconds=config.arm.operation_lease_seconds,
        sweep_seconds=config.arm.operation_sweep_seconds,
        resolvers=resolvers,
        probe=CredentialProbe(resolvers, upstream, timeout=config.health.timeout_seconds),
        health_interval=config.health.interval_seconds,
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
    app.add_subapp(arm.MOUNT, arm.build_arm_app(arm.ArmApi(management, config, authenticator)))
    app.add_subapp(vault_face.MOUNT, vault_face.build_vault_app(authenticator, vault))
    app.add_subapp(tokens_face.MOUNT, tokens_face.build_tokens_app(authenticator, tokens))
    app.add_subapp(oci.MOUNT, oci.build_oci_app(addressing, lookups))

    async def on_startup(_app: web.Application) -> None:
        await database.open()
        await vault.unlock(config.data_dir)
        token = await tokens.bootstrap()
        if token is not None:
            print(
                f"entrepot: created the admin API token (shown once; saved to "
                f"{config.token_file} with mode 0600):\n{token}",
                flush=True,
            )
        for seed in config.registries:
            await management.registries.ensure(
                RegistryRef(seed.subscription, seed.resource_group, seed.name),
                seed.location,
                SYSTEM_ACTOR,
            )
        await management.start()

    async def on_cleanup(_app: web.Application) -> None:
        await management.stop()
        await transport.close()
        await database.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def serve(config: Config) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop gracefully)."""
    configure_logging(config.server.log_level)
    log.info("starting with %s", config.sanitized())
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is optional
        pass
    app = build_app(config)
    web.run_app(
        app,
        host=config.server.host,
        port=config.server.port,
        print=lambda _msg: log.info("listening on %s", config.server.listen),
        access_log=logging.getLogger("aiohttp.access"),
    )
