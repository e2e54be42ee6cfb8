"""Shared fixtures: real entrepot servers on free ports, real databases.

Nothing here fakes the server. Every server is the real application of
:func:`entrepot.app.build_app`, configured by :func:`entrepot.config.load_config` from a TOML
file in a temporary data dir (plus ``ENTREPOT_*`` variables), and tests talk HTTP to it on
127.0.0.1. It runs in one of two ways, with the same interface (:class:`Server`):

* in this process (:class:`InProcessServer`: ``server``, ``server_factory``): aiohttp serves
  the app on an event loop in a background thread. Only the process boundary is gone, so it
  is what every test uses unless it proves something about the process itself;
* as the real command (:class:`ServerProcess`: ``process_factory``): ``python -m entrepot
  serve --config FILE``, for start-up output, restart, ``kill -9`` and several processes on
  one database.

PostgreSQL tests use the server at ``ENTREPOT_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), each in a database of its own; every test
using ``postgres_database`` (directly or through ``database_url[postgresql]``) is marked
``postgres``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as entrepot.app logs


@dataclass
class Server:
    """A running entrepot server; ``restart()`` keeps its config and data dir.

    ``config_path`` is its TOML file, ``env`` the ``ENTREPOT_*`` variables added to this
    process's environment for it, ``log()`` what it logged (and printed) so far.
    """

    config_path: Path
    data_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
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
        raise NotImplementedError

    def stop(self, *, kill: bool = False) -> None:
        raise NotImplementedError

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


@dataclass
class ServerProcess(Server):
    """A running ``entrepot serve`` process (``stop(kill=True)`` is ``kill -9``)."""

    process: subprocess.Popen[bytes] | None = None

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


class _ThreadLog(logging.Handler):
    """Appends the records emitted by threads whose name starts with ``prefix`` to a file."""

    def __init__(self, path: Path, prefix: str, level: int) -> None:
        super().__init__(level)
        self.path = path
        self.prefix = prefix
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if not (record.threadName or "").startswith(self.prefix):
            return
        try:
            line = self.format(record)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        except Exception:  # pragma: no cover - logging must not break the server
            self.handleError(record)


@dataclass
class InProcessServer(Server):
    """The real app of ``build_app`` served by aiohttp on a background thread of this process.

    The configuration is loaded exactly as ``entrepot serve --config FILE`` loads it (the file,
    then ``ENTREPOT_*`` variables of ``os.environ`` overlaid with ``env``). ``env`` is for
    configuration only: other variables the server reads at run time (``ENTREPOT_MASTER_KEY``,
    ``env:`` secrets) come from ``os.environ`` as for any code in this process. ``log()`` holds
    what the server's threads logged at the configured level, in ``entrepot serve``'s format,
    and the first-start token banner. There is no ``kill -9`` here: use ``process_factory``.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _handler: _ThreadLog | None = None
    _saved_level: int | None = None

    def start(self, timeout: float = 30) -> None:
        import uvloop
        from aiohttp import web

        from entrepot.app import build_app
        from entrepot.config import load_config

        assert self._thread is None, "already running"
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.log_path.touch()
        config = load_config(self.config_path, env={**os.environ, **self.env})
        assert config.server.port == self.port, config.server.listen
        prefix = f"entrepot-{self.port}/"  # the names of the server's threads
        level = getattr(logging, config.server.log_level.upper(), logging.INFO)
        self._handler = _ThreadLog(self.log_path, prefix, level)
        logging.getLogger().addHandler(self._handler)
        app_logger = logging.getLogger("entrepot")
        self._saved_level = app_logger.level
        if app_logger.getEffectiveLevel() > level:
            app_logger.setLevel(level)

        loop = uvloop.new_event_loop()  # what `entrepot serve` runs on
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix=f"{prefix}executor"))
        runner = web.AppRunner(build_app(config), access_log=None)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, config.server.host, config.server.port)
                loop.run_until_complete(site.start())
            except BaseException as exc:  # reported by start()
                failure.append(exc)
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(runner.cleanup())
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"{prefix}loop", daemon=True)
        # The first-start token banner is printed while starting: into the log, as a process's
        # stdout would be (this thread only waits meanwhile).
        with (
            self.log_path.open("a", encoding="utf-8") as out,
            contextlib.redirect_stdout(out),
        ):
            self._thread.start()
            started = ready.wait(timeout)
        if failure or not started:
            self._thread.join(5)
            self._thread = None
            self._detach_log()
            if failure:
                raise RuntimeError(f"entrepot did not start:\n{self.log()}") from failure[0]
            raise RuntimeError(f"entrepot did not start in {timeout}s:\n{self.log()}")

    def stop(self, *, kill: bool = False) -> None:
        """Shut the app down as SIGTERM would (cleanup hooks run); ``kill`` is not possible."""
        assert not kill, "an in-process server cannot be killed: use process_factory"
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        assert not self._thread.is_alive(), "entrepot did not shut down"
        self._thread = None
        self._loop = None
        self._detach_log()

    def _detach_log(self) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler = None
        if self._saved_level is not None:
            logging.getLogger("entrepot").setLevel(self._saved_level)
            self._saved_level = None


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


S = TypeVar("S", bound=Server)


def _new_server(cls: type[S], parent: Path, name: str = "", extra: str = "", **kw: Any) -> S:
    """A server of class ``cls`` (not started): config and data dir in ``parent/name``
    (``name`` defaults to ``srv-PORT``); ``kw`` goes to the class (``env``)."""
    port = free_port()
    root = parent / (name or f"srv-{port}")
    data_dir = root / "data"
    data_dir.mkdir(parents=True, mode=0o700)  # as entrepot makes it
    config_path = root / "entrepot.toml"
    config_path.write_text(base_config(port, data_dir, extra))
    return cls(config_path, data_dir, port, **kw)


def _factory(cls: type[S], tmp_path: Path) -> Iterator[Callable[..., S]]:
    started: list[S] = []

    def start(extra: str = "", env: dict[str, str] | None = None, name: str = "") -> S:
        server = _new_server(cls, tmp_path, name, extra, env=dict(env or {}))
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., InProcessServer]]:
    """Start in-process servers with extra TOML appended to the base config and ``ENTREPOT_*``
    variables ``env``; all stopped at teardown."""
    yield from _factory(InProcessServer, tmp_path)


@pytest.fixture
def process_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Like ``server_factory``, but each server is a real ``entrepot serve`` process."""
    yield from _factory(ServerProcess, tmp_path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One in-process server for a whole test module (SQLite, page size 10, REGISTRY)."""
    srv = _new_server(InProcessServer, tmp_path_factory.mktemp("server"), name="srv")
    srv.start()
    yield srv
    srv.stop()


def _uses_postgres(item: pytest.Item) -> bool:
    """Whether ``item`` needs the PostgreSQL server: it requests ``postgres_database``, or one of
    its parameters picks PostgreSQL (``database_url[postgresql]``, ``backend`` ``postgresql``,
    ``harness_kind`` ``vault-postgresql``: fixtures that get ``postgres_database`` lazily)."""
    if "postgres_database" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return any(
        isinstance(v, str) and (v == "postgresql" or v.endswith("-postgresql")) for v in params
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL ``postgres`` (``-m "not postgres"`` skips them)."""
    for item in items:
        if _uses_postgres(item):
            item.add_marker(pytest.mark.postgres)


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


class _PostgresDatabases:
    """Makes and drops the test databases on one worker thread, off the tests' path.

    ``take()`` returns a database created for it alone (fresh and empty: nothing else ever
    connects to it) and starts creating the next one; ``drop()`` queues the drop. PostgreSQL's
    work (copying the template, WAL, fsync) thus overlaps the tests instead of adding to them.
    ``close()`` waits for all of it and raises the first failure, as a teardown would.
    """

    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="test-postgres-admin")
        self._next: Future[str] | None = None
        self._drops: list[Future[None]] = []

    @staticmethod
    def _create() -> str:
        name = f"entrepot_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        return name

    @staticmethod
    def _drop(name: str) -> None:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def take(self) -> str:
        future, self._next = self._next, None
        name = (future or self._worker.submit(self._create)).result()
        self._next = self._worker.submit(self._create)
        return name

    def drop(self, name: str) -> None:
        self._drops.append(self._worker.submit(self._drop, name))

    def close(self) -> None:
        if self._next is not None:
            with contextlib.suppress(Exception):  # a failed creation was reported by take()
                self.drop(self._next.result())
        self._worker.shutdown(wait=True)
        for done in self._drops:
            done.result()


@pytest.fixture(scope="session")
def _postgres_databases() -> Iterator[_PostgresDatabases]:
    databases = _PostgresDatabases()
    yield databases
    databases.close()


@pytest.fixture
def postgres_database(_postgres_databases: _PostgresDatabases) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (its plain ``postgresql://`` URL), dropped afterwards."""
    try:
        name = _postgres_databases.take()
    except OSError as exc:  # pragma: no cover - .ci/run starts PostgreSQL
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    yield _pg_url(name)
    _postgres_databases.drop(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each supported kind, as a config ``database.url``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    return str(request.getfixturevalue("postgres_database"))
