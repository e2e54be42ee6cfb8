"""The composition root: :func:`build_app` is the only place that wires concrete classes.

``serve(config)`` runs one asyncio process that answers the management API under
``/subscriptions``, the built-in vault under ``/entrepot/vaults`` and ``/healthz`` without
authentication.

On first start (no admin token in the database) a token is generated: its SHA-256 is stored,
the token itself is written to ``<data_dir>/admin-token`` with mode 0600 for the CLI, and it is
printed once on standard output.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from entrepot.config import Config
from entrepot.credential_health import CredentialProbe
from entrepot.management import Actor, Management, RegistryRef
from entrepot.metadata import Database, SqlOperationStore, SqlResourceStore
from entrepot.metadata.protocols import ResourceStore
from entrepot.metadata.vault_store import SqlVaultStore
from entrepot.secrets import BuiltinVault, build_resolvers
from entrepot.upstream.client import UpstreamClient
from entrepot.web.arm import CONFIG_KEY, MANAGEMENT_KEY, ArmApi, setup_routes
from entrepot.web.vault import setup_vault_routes

log = logging.getLogger("entrepot")
SYSTEM_ACTOR = Actor("entrepot")


def login_server(config: Config) -> str:
    """The host[:port] that clients pull from: the public URL's, else the listen address."""
    if config.server.public_url:
        return urlsplit(config.server.public_url).netloc
    return config.server.local_address


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


async def bootstrap_token(store: ResourceStore, config: Config) -> str | None:
    """Create the admin token on first start; return it then, ``None`` on later starts."""
    async with store.write() as tx:
        if await tx.count_tokens() > 0:
            return None
        token = secrets.token_urlsafe(32)
        await tx.add_token(hashlib.sha256(token.encode()).hexdigest(), "admin")
        write_private(config.token_file, token + "\n")
    return token


def build_app(config: Config) -> web.Application:
    """The aiohttp application for ``config``; resources open on startup and close on cleanup."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = Database(config.database_url)
    resources = SqlResourceStore(store)
    vault = BuiltinVault(SqlVaultStore(store))
    resolvers = build_resolvers(config.secrets, vault)
    own_login_server = login_server(config)
    management = Management(
        resources,
        SqlOperationStore(store),
        config.arm,
        config.policy,
        lambda _name: own_login_server,
        lease_seconds=config.arm.operation_lease_seconds,
        sweep_seconds=config.arm.operation_sweep_seconds,
        resolvers=resolvers,
        health_interval=config.health.interval_seconds,
    )
    api = ArmApi(management, config, resources)
    app = web.Application(
        middlewares=[api.middleware], client_max_size=config.arm.max_request_bytes
    )
    app[CONFIG_KEY] = config
    app[MANAGEMENT_KEY] = management

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    setup_routes(app, api)
    setup_vault_routes(app, api, vault)
    sessions: list[aiohttp.ClientSession] = []

    async def on_startup(_app: web.Application) -> None:
        await store.open()
        await vault.unlock(config.data_dir)
        session = aiohttp.ClientSession()
        sessions.append(session)
        upstream = UpstreamClient(session, config.upstreams, timeout=config.health.timeout_seconds)
        management.health.probe = CredentialProbe(
            resolvers, upstream, timeout=config.health.timeout_seconds
        )
        token = await bootstrap_token(resources, config)
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
        for session in sessions:
            await session.close()
        await store.close()

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
