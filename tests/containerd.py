"""A real containerd daemon for the tests (Debian's ``containerd`` and its ``ctr``).

:func:`start_containerd` runs ``containerd --config FILE`` with a root, state directory and
sockets of its own under a temporary directory (nothing under ``/var/lib/containerd`` or
``/run/containerd`` is touched, and no system containerd is needed or disturbed). The CRI
plugin and the snapshotters that need devices or other file systems are disabled; images are
unpacked with the ``native`` snapshotter (plain copies: no overlay mount).

Registry hosts are configured the way a node configures them: a ``certs.d``-style directory
(``--hosts-dir``) holding ``<host>/hosts.toml`` (:func:`write_hosts`). ``ctr`` is the client:
:meth:`Containerd.pull` is ``ctr images pull``; :meth:`Containerd.content` reads a blob back
from containerd's content store, so tests can compare what containerd holds with what the
upstream has.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

CONTAINERD_BIN = os.environ.get("ENTREPOT_TEST_CONTAINERD_BIN", "containerd")
CTR_BIN = os.environ.get("ENTREPOT_TEST_CTR_BIN", "ctr")

_DISABLED = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",  # would write under /opt/containerd
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
]


def require_containerd() -> None:
    """Fail (not skip) with the install hint when containerd or ctr is missing."""
    missing = [n for n in (CONTAINERD_BIN, CTR_BIN) if shutil.which(n) is None]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: run `bash -c 'source scripts/_env.sh; "
            "ensure_containerd'` (apt: containerd)"
        )


@dataclass
class Containerd:
    """A running containerd daemon; ``address`` is its gRPC socket."""

    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def log_path(self) -> Path:
        return self.root / "containerd.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def write_config(self) -> Path:
        disabled = ", ".join(f'"{name}"' for name in _DISABLED)
        config = self.root / "config.toml"
        config.write_text(
            f"""version = 2
root = "{self.root / "root"}"
state = "{self.root / "state"}"
disabled_plugins = [{disabled}]

[grpc]
  address = "{self.address}"

[ttrpc]
  address = "{self.root / "ttrpc.sock"}"

[debug]
  address = ""
"""
        )
        return config

    def start(self, timeout: float = 20) -> None:
        config = self.write_config()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [CONTAINERD_BIN, "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited early:\n{self.log()}")
            if self.address.exists() and self.ctr("version").returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"containerd did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def ctr(
        self, *args: str, namespace: str = "default", timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``ctr --address SOCKET --namespace NAMESPACE ARGS...`` (output captured)."""
        return subprocess.run(
            [CTR_BIN, "--address", str(self.address), "--namespace", namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pull(
        self,
        reference: str,
        *,
        hosts_dir: Path,
        namespace: str | None = None,
        options: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """``ctr images pull`` of ``reference`` with the registry hosts of ``hosts_dir``,
        unpacked with the native snapshotter; in a namespace of its own unless one is given."""
        return self.ctr(
            "images", "pull", "--snapshotter", "native", "--hosts-dir", str(hosts_dir),
            *options, reference,
            namespace=namespace or f"pull-{secrets.token_hex(4)}",
        )  # fmt: skip

    def content(self, digest: str, *, namespace: str) -> bytes:
        """The bytes containerd's content store holds for ``digest`` (seen from ``namespace``)."""
        done = subprocess.run(
            [CTR_BIN, "--address", str(self.address), "--namespace", namespace,
             "content", "get", digest],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"ctr content get {digest}: {done.stderr.decode(errors='replace')}")
        return done.stdout


def write_hosts(
    hosts_dir: Path,
    host: str,
    *,
    server: str,
    mirror: str,
    header: dict[str, str] | None = None,
    ca: Path | None = None,
) -> Path:
    """Write ``hosts_dir/<host>/hosts.toml``: ``server`` is the registry's own endpoint (the
    fallback), ``mirror`` (a URL) the host asked first, for pull and resolve, trusting the CA
    certificate ``ca`` (for ``https://``) and with the HTTP ``header``s given (e.g.
    ``Authorization``); returns the file."""
    lines = [
        f'server = "{server}"',
        "",
        f'[host."{mirror}"]',
        '  capabilities = ["pull", "resolve"]',
    ]
    if ca is not None:
        lines.append(f'  ca = "{ca}"')
    if header:
        lines.append(f'  [host."{mirror}".header]')
        lines.extend(f'    {name} = ["{value}"]' for name, value in header.items())
    path = hosts_dir / host / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def start_containerd(root: Path) -> Containerd:
    """Start a containerd daemon whose files all live under ``root``."""
    require_containerd()
    root.mkdir(parents=True, exist_ok=True)
    daemon = Containerd(root)
    daemon.start()
    return daemon
