"""Modes of the data dir and of every file ``entrepot serve`` writes in it, whatever the umask.

Real ``entrepot serve`` processes are started under a umask of 0022 and of 0000; the data dir
and every file and directory below it are checked after start, after writes of every kind
(a cache rule, a vault secret, tokens) and after stop.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, base_config, free_port
from tests.test_tokens_api import TOKENS, _rule_path, call

Factory = Callable[..., ServerProcess]


# -- modes of the data dir ------------------------------------------------------------------------
@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """``relative path -> permission bits`` of ``root`` and everything below it."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path) -> dict[str, int]:
    found = modes(root)
    for name, mode in found.items():
        expected = 0o700 if (root / name).is_dir() else 0o600
        assert mode == expected, (
            f"{name}: {mode:o} (all: { {k: f'{v:o}' for k, v in found.items()} })"
        )
    return found


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-0022", "umask-0000"])
def test_data_dir_and_files_are_private_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    port = free_port()
    (tmp_path / "fresh").mkdir()  # the server's log goes here
    data_dir = tmp_path / "fresh" / "data"  # created by the server
    config = tmp_path / "entrepot.toml"
    config.write_text(base_config(port, data_dir))
    server = ServerProcess(config, data_dir, port)
    with umask(mask):
        server.start()
    try:
        names = set(assert_private(data_dir))
        assert {".", "entrepot.db", "admin-token", "master.key"} <= names
        # Some writes: a rule, a vault secret, a token; the WAL grows, files may appear.
        rule = {"properties": {"sourceRepository": "docker.io/library/a", "targetRepository": "a"}}
        assert call(server, "PUT", _rule_path(server, "mode-rule"), rule).status_code == 201
        assert call(server, "PUT", "/entrepot/vaults/modes").status_code == 201
        secret = call(server, "PUT", "/entrepot/vaults/modes/secrets/s", {"value": "v"})
        assert secret.status_code == 201
        assert call(server, "PUT", f"{TOKENS}/p", {"role": "pull"}).status_code == 201
        assert call(server, "POST", f"{TOKENS}/admin/rotate").status_code == 200
        names = set(assert_private(data_dir))
        assert {"entrepot.db-wal", "entrepot.db-shm"} <= names
    finally:
        server.stop()
    assert_private(data_dir)


def test_files_left_open_by_an_older_version_are_narrowed(process_factory: Factory) -> None:
    server = process_factory()
    server.stop()
    server.data_dir.chmod(0o755)  # as an older version (or a umask of 022) left them
    db_files = sorted(server.data_dir.glob("entrepot.db*"))
    assert db_files
    for path in db_files:
        path.chmod(0o644)
    with umask(0o022):
        server.start()
    log = server.log()
    for path in db_files:
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert f"narrowed {path} from mode 644 to 600" in log
    assert f"the data dir {server.data_dir} is accessible to other users (mode 755)" in log
    assert call(server, "GET", server.registry_path).status_code == 200
