"""The processes of the pull-through benchmark: an upstream registry and three caches before it.

Every process listens on a free 127.0.0.1 port, keeps its files under a directory it is given
and is stopped by :meth:`Process.stop` (SIGTERM, then SIGKILL after 10 s). Nothing here
contacts anything but 127.0.0.1:

* :class:`Upstream`: Debian's ``docker-registry`` (CNCF distribution), no auth, access log on,
  so that the requests the caches make can be counted (:meth:`Upstream.count`).
* :class:`Distribution`: the same binary in proxy mode (``proxy: remoteurl:`` the upstream).
* :class:`Drayage`: the ``drayage`` binary of the PyPI package (``pip install -e '.[bench]'``).
  Its only upstream is the ``docker_io`` key pointed at the loopback registry: drayage sends a
  name that matches no configured registry to its ``docker_io`` upstream, whose built-in default
  is Docker Hub on the internet, so this also makes sure that nothing it does can leave the
  machine. Repositories are then pulled by their plain upstream names.
* :class:`Entrepot`: ``python -m entrepot serve`` with the upstream's login server in
  ``[upstreams]`` and one wildcard cache rule ``<login server>/lib/* -> up/*`` created through
  the management API with the admin token.

Each cache has a :attr:`Process.prefix`: the path a client puts after ``/v2/`` to reach the
upstream repository ``lib/<name>`` (``lib/`` for the two that mirror names 1:1, ``up/`` for
entrepot's rule).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

REGISTRY_BIN = os.environ.get("ENTREPOT_TEST_REGISTRY_BIN", "docker-registry")
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "bench-rg"
REGISTRY = "bench"
API_VERSION = "2025-11-01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """One server child process; ``url`` is where it answers, ``pid`` its process id."""

    name = "process"
    prefix = "lib/"  # /v2/<prefix><repo> reaches the upstream's lib/<repo>

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready_path(self) -> str:
        return "/v2/"

    def start(self, timeout: float = 60) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                if requests.get(self.url + self.ready_path(), timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start on {self.url}:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _registry_config(root: Path, port: int, remote: str | None) -> dict[str, object]:
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "storage")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if remote is not None:
        config["proxy"] = {"remoteurl": remote}
    return config


class Upstream(Process):
    """The upstream registry; :meth:`count` reads its access log."""

    name = "upstream docker-registry"

    @property
    def login_server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        config = self.root / "config.yml"
        config.write_text(yaml.safe_dump(_registry_config(self.root, self.port, None)))
        return [REGISTRY_BIN, "serve", str(config)]

    def count(self, method: str, path: str) -> int:
        """How many ``method path`` requests the access log shows so far (any status)."""
        needle = f'"{method} {path} HTTP/1.1"'
        return self.log_path.read_text(errors="replace").count(needle)

    def settled_count(self, method: str, path: str, quiet: float = 1.0) -> int:
        """:meth:`count` once it has not changed for ``quiet`` seconds (at most 30 s): a cache
        may still be filling after its clients are done, and the log line follows the answer."""
        last, since = self.count(method, path), time.monotonic()
        deadline = since + 30
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.count(method, path)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last


class Distribution(Process):
    """Debian's docker-registry in proxy mode in front of the upstream."""

    name = "distribution"

    def __init__(self, root: Path, upstream: Upstream) -> None:
        super().__init__(root)
        self.upstream = upstream

    def command(self) -> list[str]:
        config = self.root / "config.yml"
        data = _registry_config(self.root, self.port, self.upstream.url)
        config.write_text(yaml.safe_dump(data))
        return [REGISTRY_BIN, "serve", str(config)]


def drayage_binary() -> str | None:
    """The ``drayage`` executable of this Python environment (or on PATH), if installed."""
    beside = Path(sys.executable).parent / "drayage"
    if beside.exists():
        return str(beside)
    return shutil.which("drayage")


def drayage_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip() or out.stderr.strip()


class Drayage(Process):
    """drayage with one upstream, ``docker_io``, pointed at the loopback registry."""

    name = "drayage"

    def __init__(self, root: Path, upstream: Upstream, binary: str) -> None:
        super().__init__(root)
        self.upstream = upstream
        self.binary = binary

    def command(self) -> list[str]:
        cache = self.root / "cache"
        cache.mkdir(exist_ok=True)
        config = self.root / "config.toml"
        config.write_text(
            f'listen = "127.0.0.1:{self.port}"\n'
            f'cache_dir = "{cache}"\n'
            "manifest_ttl_seconds = 900\n"
            "\n[upstreams.docker_io]\n"
            f'registry = "{self.upstream.url}"\n'
        )
        return [self.binary, "serve", "--config", str(config)]

    def env(self) -> dict[str, str]:
        # No proxy variables: its upstream is on loopback.
        return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}

    def ready_path(self) -> str:
        return "/readyz"


class Entrepot(Process):
    """``entrepot serve`` with a rule ``<upstream>/lib/* -> up/*``."""

    name = "entrepot"
    prefix = "up/"

    def __init__(self, root: Path, upstream: Upstream) -> None:
        super().__init__(root)
        self.upstream = upstream

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def command(self) -> list[str]:
        self.data_dir.mkdir(exist_ok=True)
        config = self.root / "entrepot.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\ndata_dir = "{self.data_dir}"\n'
            f'\n[upstreams."{self.upstream.login_server}"]\nurl = "{self.upstream.url}"\n'
            f'\n[[registries]]\nsubscription = "{SUBSCRIPTION}"\n'
            f'resource_group = "{RESOURCE_GROUP}"\nname = "{REGISTRY}"\n'
        )
        return [sys.executable, "-m", "entrepot", "serve", "--config", str(config)]

    def env(self) -> dict[str, str]:
        # Only our settings: no ENTREPOT_* from the caller's shell may change the server.
        return {k: v for k, v in os.environ.items() if not k.startswith("ENTREPOT_")}

    def ready_path(self) -> str:
        return "/healthz"

    def start(self, timeout: float = 60) -> None:
        super().start(timeout)
        rule = (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers"
            f"/Microsoft.ContainerRegistry/registries/{REGISTRY}/cacheRules/upstream-lib"
        )
        response = requests.put(
            self.url + rule,
            params={"api-version": API_VERSION},
            json={
                "properties": {
                    "sourceRepository": f"{self.upstream.login_server}/lib/*",
                    "targetRepository": "up/*",
                }
            },
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"creating the cache rule: {response.status_code} {response.text}")
