"""A blob fill streamed across processes: two real ``entrepot serve`` processes share the
database and the content store (filesystem driver); the one that does not hold the fill's
lease follows the holder's ingest file, so its clients get the bytes while they arrive, and
never a complete body before the content is stored.

The upstream is Debian's ``docker-registry`` behind :class:`~tests.test_pull_blobs.Relay`,
which paces its bytes (a slow network; the bytes are the registry's, unchanged).
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from entrepot.config import StorageConfig
from entrepot.oci import Digest
from entrepot.storage import ContentStore, open_storage
from tests.conftest import ServerProcess
from tests.registries import Registry
from tests.test_pull_blobs import (
    QUICK_LEASE,
    Got,
    MiB,
    Relay,
    assert_cut_short,
    blob_url,
    cache_config,
    fetch,
    push_blob,
    read_all,
    wait_until,
)
from tests.test_pull_cache import wait_for_log
from tests.test_registry_routes import put_rule


@pytest.fixture
def relay(open_registry: Registry) -> Iterator[Relay]:
    with Relay(open_registry.port, rate=None) as r:
        yield r


# -- the storage capability: another writer's ingest, found and followed ------------------------
async def test_a_writer_of_another_store_on_the_root_is_followed(tmp_path: Path) -> None:
    """Two stores on one root (as two processes have): one finds the other's live ingest of a
    digest, reads it while it grows, and learns when its writer lets go; the memory driver
    has nothing to follow."""
    config = StorageConfig(driver="filesystem", root=str(tmp_path / "root"))
    writer_store = ContentStore(await open_storage(config, tmp_path))
    follower = ContentStore(await open_storage(config, tmp_path))
    data = os.urandom(3 * MiB)
    digest = Digest.of(data)
    assert await follower.follow(digest) is None
    async with writer_store.ingest(digest, len(data)) as ingest:
        await ingest.write(data[: 2 * MiB])
        followed = await follower.follow(digest)
        assert followed is not None
        assert await followed.poll() == ingest.readable > 0
        assert await read_all(await followed.open_partial(10)) == data[10 : ingest.readable]
        await ingest.write(data[2 * MiB :])
        await ingest.commit()
    assert await followed.poll() is None  # let go: the content is at its path
    assert await follower.has(digest) == len(data)
    followed.close()

    other = os.urandom(3 * MiB)
    async with writer_store.ingest(Digest.of(other), len(other)) as cancelled:
        await cancelled.write(other)
        followed = await follower.follow(Digest.of(other))
        assert followed is not None and await followed.poll() == cancelled.readable > 0
    assert await followed.poll() is None and await follower.has(Digest.of(other)) is None
    followed.close()

    memory = ContentStore(await open_storage(StorageConfig(driver="memory"), tmp_path))
    async with memory.ingest(digest, len(data)) as ingest:
        await ingest.write(data)
        assert await memory.follow(digest) is None


def two_processes(
    process_factory: Callable[..., ServerProcess],
    database_url: str,
    registry: Registry,
    relay: Relay,
    root: Path,
    repo: str,
    digest: str,
) -> tuple[ServerProcess, ServerProcess]:
    """Processes ``a`` and ``b`` sharing ``database_url`` and the store root ``root``, both
    serving the rule ``up/*`` of ``registry`` (through ``relay``), ``up/<repo>`` answering
    a ``HEAD`` of ``digest``."""
    env = {
        **QUICK_LEASE,
        "ENTREPOT_DATABASE_URL": database_url,
        "ENTREPOT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    extra = cache_config(registry, relay, f'\n[storage]\nroot = "{root}"\n')
    a = process_factory(extra, env=env, name="a")
    b = process_factory(extra, env=env, name="b")
    put_rule(a, "upstream-lib", f"{registry.login_server}/lib/*", "up/*")
    for server in (a, b):  # b sees the rule within a second (a HEAD asks, and stores nothing)
        url = blob_url(server, repo, digest)
        wait_until(
            lambda: requests.head(url, timeout=30).status_code == 200,  # noqa: B023 (called here)
            10,
            "the rule",
        )
    return a, b


def ingest_of(root: Path, digest: str) -> list[Path]:
    area = root / "_uploads"
    hex_ = digest.removeprefix("sha256:")
    return [p for p in area.iterdir() if p.name.startswith(hex_)] if area.is_dir() else []


def stored_at(root: Path, digest: str) -> Path:
    hex_ = digest.removeprefix("sha256:")
    return root / "blobs/sha256" / hex_[:2] / hex_


def in_thread(work: Callable[[], Got]) -> tuple[threading.Thread, list[Got]]:
    out: list[Got] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    return thread, out


@pytest.mark.slow
def test_a_client_of_another_process_is_streamed_while_the_fill_runs(
    process_factory: Callable[..., ServerProcess],
    database_url: str,
    open_registry: Registry,
    relay: Relay,
    tmp_path: Path,
) -> None:
    root = tmp_path / "shared-content"
    data = os.urandom(16 * MiB)
    digest = push_blob(open_registry, "lib/xstream", data)
    a, b = two_processes(
        process_factory, database_url, open_registry, relay, root, "xstream", digest
    )
    relay.rate = 6 * MiB  # about 2.7 s for the fill

    thread, out = in_thread(lambda: fetch(blob_url(a, "xstream", digest)))
    wait_until(lambda: bool(ingest_of(root, digest)), 10, "a's fill to begin")
    on_b = fetch(blob_url(b, "xstream", digest))
    thread.join(60)
    (on_a,) = out

    for got in (on_a, on_b):
        assert got.status == 200 and got.complete, got
        assert got.size == len(data) and got.sha256 == digest
    # b's client got its first bytes well before a's fill ended (a's client's last byte comes
    # right after its commit), and its last byte only after it
    assert on_b.first_byte_at < on_a.ended_at - 1.0, (on_b, on_a)
    assert on_b.ended_at >= on_a.ended_at - 0.2
    assert stored_at(root, digest).read_bytes() == data
    time.sleep(0.3)
    assert wait_for_log(open_registry, "GET", f"/v2/lib/xstream/blobs/{digest}", 1) == 1
    assert fetch(blob_url(b, "xstream", digest)).origin == "hit"


@pytest.mark.slow
def test_a_holder_killed_mid_fill_cuts_the_other_process_client_short(
    process_factory: Callable[..., ServerProcess],
    database_url: str,
    open_registry: Registry,
    relay: Relay,
    tmp_path: Path,
) -> None:
    root = tmp_path / "shared-content"
    data = os.urandom(16 * MiB)
    digest = push_blob(open_registry, "lib/xkill", data)
    a, b = two_processes(process_factory, database_url, open_registry, relay, root, "xkill", digest)
    relay.rate = 6 * MiB

    thread, out = in_thread(lambda: fetch(blob_url(a, "xkill", digest)))
    wait_until(lambda: bool(ingest_of(root, digest)), 10, "a's fill to begin")
    on_b = fetch(blob_url(b, "xkill", digest), after=1 * MiB, then=lambda: a.stop(kill=True))
    thread.join(60)
    assert_cut_short(on_b, len(data))  # a short body, never a wrong complete one
    assert_cut_short(out[0], len(data))
    assert not stored_at(root, digest).exists()

    relay.rate = None
    again = fetch(blob_url(b, "xkill", digest))
    assert again.status == 200 and again.complete, again
    assert again.sha256 == digest and again.origin == "miss"
    assert stored_at(root, digest).read_bytes() == data
