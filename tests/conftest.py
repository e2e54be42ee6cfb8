"""Shared fixtures: real ``entrepot serve`` processes on free ports, real databases.

Nothing here fakes the server: every fixture starts the real command (``python -m entrepot
serve``) with a config file in a temporary data dir and talks HTTP to it on 127.0.0.1.
PostgreSQL tests use the server at ``ENTREPOT_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), each in a database of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

pytest_plugins = ["tests.registries"]

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "my-resource-group"
REGISTRY = "my-registry"
POSTGRES_ADMIN_URL = os.environ.get(
    "ENTREPOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_config(port: int, data_dir: Path, extra: str = "") -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data_dir}"

[arm]
page_size = 10

[[registries]]
subscription = "{SUBSCRIPTION}"
resource_group = "{RESOURCE_GROUP}"
name = "{REGISTRY}"
{extra}
"""


@dataclass
class ServerProcess:
    """A running ``entrepot serve``; ``restart()`` keeps its config and data dir."""

    config_path: Path
    data_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    @property
    def registry_path(self) -> str:
        return (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
            f"/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}"
        )

    def start(self, timeout: float = 30) -> None:
        assert self.process is None or self.process.poll() is not None
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = self.log_path.open("ab")
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "entrepot", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"entrepot serve exited early:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"entrepot serve did not become healthy:\n{self.log()}")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kwargs: Any) -> Any:
        """Our own client SDK, pointed at this server."""
        from entrepot.mgmt import ContainerRegistryManagementClient, StaticTokenCredential

        kwargs.setdefault("polling_interval", 0.05)
        kwargs.setdefault("retry_total", 0)
        return ContainerRegistryManagementClient(
            StaticTokenCredential(self.token), SUBSCRIPTION, base_url=self.url, **kwargs
        )

    def sdk_client(self, **kwargs: Any) -> Any:
        """The genuine ``azure-mgmt-containerregistry`` client, pointed at this server."""
        return genuine_sdk_client(self.url, self.token, **kwargs)


def genuine_sdk_client(url: str, token: str, **kwargs: Any) -> Any:
    """The genuine SDK with the loopback recipe of azure-sdk-wire.md §8 (plain http allowed)."""
    from azure.core.credentials import AccessToken
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

    class StaticToken:
        def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
            return AccessToken(token, int(time.time()) + 3600)

    class LoopbackPolicy(ARMChallengeAuthenticationPolicy):  # type: ignore[misc]
        def on_request(self, request: Any) -> None:
            request.context["enforce_https"] = False
            super().on_request(request)

    credential = StaticToken()
    kwargs.setdefault("polling_interval", 0.05)
    kwargs.setdefault("retry_total", 0)
    return ContainerRegistryManagementClient(
        credential,
        SUBSCRIPTION,
        base_url=url,
        authentication_policy=LoopbackPolicy(credential, "https://management.azure.com/.default"),
        **kwargs,
    )


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with extra TOML appended to the base config; all stopped at teardown."""
    started: list[ServerProcess] = []

    def start(extra: str = "", env: dict[str, str] | None = None, name: str = "") -> ServerProcess:
        port = free_port()
        root = tmp_path / (name or f"srv-{port}")
        data_dir = root / "data"
        data_dir.mkdir(parents=True)
        config_path = root / "entrepot.toml"
        config_path.write_text(base_config(port, data_dir, extra))
        server = ServerProcess(config_path, data_dir, port, env=dict(env or {}))
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a whole test module (SQLite, page size 10, registry REGISTRY)."""
    port = free_port()
    root = tmp_path_factory.mktemp("server")
    data_dir = root / "data"
    data_dir.mkdir()
    config_path = root / "entrepot.toml"
    config_path.write_text(base_config(port, data_dir))
    proc = ServerProcess(config_path, data_dir, port)
    proc.start()
    yield proc
    proc.stop()


def _pg_url(database: str) -> str:
    head, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{head}/{database}"


async def _pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (its plain ``postgresql://`` URL), dropped afterwards."""
    name = f"entrepot_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:  # pragma: no cover - .ci/run starts PostgreSQL
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    yield _pg_url(name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each supported kind, as a config ``database.url``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    return str(request.getfixturevalue("postgres_database"))
