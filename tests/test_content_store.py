"""The content store (``entrepot.storage.layout``) on every driver, and the filesystem driver's
own promises: crash safety (a process killed with SIGKILL mid-write), ingest clean-up across
processes, file modes, zero-copy paths and error messages without host paths."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from entrepot.config import StorageConfig, load_config
from entrepot.errors import DigestInvalid, SizeInvalid
from entrepot.oci import Digest
from entrepot.storage import (
    ContentStore,
    InvalidOffset,
    PathNotFound,
    Storage,
    StorageError,
    blob_path,
    open_storage,
)
from entrepot.storage.filesystem import INGEST_DIR, FilesystemDriver

MiB = 1 << 20


@pytest.fixture(params=["filesystem", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ContentStore]:
    storage = await open_storage(StorageConfig(driver=request.param), tmp_path)
    yield ContentStore(storage)
    await storage.close()


async def stored_files(store: ContentStore) -> list[str]:
    return [i.path async for i in store.storage.walk() if not i.is_dir]


async def ingest_chunks(store: ContentStore, data: bytes, chunk: int = 100_000) -> Digest:
    digest = Digest.of(data)
    async with store.ingest(digest, len(data)) as ingest:
        for offset in range(0, len(data), chunk):
            await ingest.write(data[offset : offset + chunk])
        return await ingest.commit()


# -- the layout -----------------------------------------------------------------------------------
def test_blob_paths_follow_the_documented_tree() -> None:
    hex64 = "ab" + "0" * 62
    assert blob_path(f"sha256:{hex64}") == f"blobs/sha256/ab/{hex64}"
    assert blob_path(Digest("sha512", "cd" + "1" * 126)) == f"blobs/sha512/cd/cd{'1' * 126}"
    for bad in ("sha256:short", "md5:" + "0" * 32, "sha256:" + "A" * 64, "../../etc/passwd"):
        with pytest.raises(DigestInvalid):
            blob_path(bad)


# -- ingest ---------------------------------------------------------------------------------------
async def test_ingest_verifies_and_publishes(store: ContentStore) -> None:
    data = os.urandom(3 * MiB + 5)
    digest = Digest.of(data)
    assert await store.has(digest) is None
    assert await ingest_chunks(store, data) == digest
    assert await store.has(digest) == len(data)
    assert await store.has(str(digest)) == len(data)
    async with await store.open(digest, 1000) as reader:
        assert reader.size == len(data)
        assert b"".join([c async for c in reader]) == data[1000:]
    with pytest.raises(InvalidOffset):
        await store.open(digest, len(data) + 1)
    assert await stored_files(store) == [blob_path(digest)]
    local = store.local_path(digest)
    if store.storage.name == "filesystem":
        assert local is not None and hashlib.sha256(local.read_bytes()).hexdigest() == digest.hex
    else:
        assert local is None
    assert [d async for d in store.digests()] == [(digest, len(data))]


async def test_ingest_of_sha512_content(store: ContentStore) -> None:
    data = b"sha512 content" * 1000
    digest = Digest.of(data, "sha512")
    async with store.ingest(digest) as ingest:
        await ingest.write(data)
        assert await ingest.commit() == digest
    assert await store.read(digest) == data
    assert blob_path(digest).startswith("blobs/sha512/")


async def test_a_wrong_digest_leaves_nothing(store: ContentStore) -> None:
    data = os.urandom(2 * MiB)
    claimed = Digest.of(b"something else")
    with pytest.raises(DigestInvalid, match=str(Digest.of(data))):
        async with store.ingest(claimed, len(data)) as ingest:
            await ingest.write(data)
            await ingest.commit()
    assert not ingest.committed
    assert await store.has(claimed) is None
    assert await stored_files(store) == []


async def test_a_wrong_size_leaves_nothing(store: ContentStore) -> None:
    data = os.urandom(MiB)
    digest = Digest.of(data)
    with pytest.raises(SizeInvalid, match="not the expected"):  # too short: found on commit
        async with store.ingest(digest, len(data) + 1) as ingest:
            await ingest.write(data)
            await ingest.commit()
    with pytest.raises(SizeInvalid, match="larger than"):  # too long: found as it is written
        async with store.ingest(digest, len(data) - 1) as ingest:
            await ingest.write(data[:1000])
            await ingest.write(data[1000:])
    assert ingest.size == 1000  # the chunk that overflowed was refused
    with pytest.raises(StorageError, match="cancelled"):
        await ingest.write(b"more")
    assert await stored_files(store) == []
    with pytest.raises(SizeInvalid):
        store.ingest(digest, -1)


async def test_leaving_an_ingest_without_commit_or_with_an_error_leaves_nothing(
    store: ContentStore,
) -> None:
    data = b"payload" * 1000
    async with store.ingest(Digest.of(data)) as ingest:
        await ingest.write(data)
    with pytest.raises(ConnectionError):
        async with store.ingest(Digest.of(data)) as ingest:
            await ingest.write(data[:100])
            raise ConnectionError("upstream went away")
    assert await stored_files(store) == []
    assert await store.has(Digest.of(data)) is None


async def test_concurrent_ingests_of_one_digest(store: ContentStore) -> None:
    data = os.urandom(2 * MiB + 3)
    digest = Digest.of(data)
    corrupt = bytearray(data)
    corrupt[MiB] ^= 0xFF

    async def ingest(content: bytes, seed: int) -> Digest:
        rng = random.Random(seed)
        async with store.ingest(digest, len(content)) as ing:
            offset = 0
            while offset < len(content):
                size = rng.randint(1, 300_000)
                await ing.write(content[offset : offset + size])
                offset += size
                await asyncio.sleep(0)
            return await ing.commit()

    results = await asyncio.gather(
        *(ingest(data, seed) for seed in range(8)),
        ingest(bytes(corrupt), 99),
        return_exceptions=True,
    )
    assert results[:8] == [digest] * 8
    assert isinstance(results[8], DigestInvalid)
    assert await store.read(digest) == data
    assert await stored_files(store) == [blob_path(digest)]
    assert await ingest_chunks(store, data) == digest  # once more, when it is there already
    assert await store.read(digest) == data


async def test_small_content_put_and_read(store: ContentStore) -> None:
    manifest = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
    digest = await store.put(manifest)
    assert digest == Digest.of(manifest)
    assert await store.read(digest) == manifest
    assert await store.put(manifest, digest) == digest  # again: nothing changes
    assert await store.put(manifest, Digest.of(manifest, "sha512")) == Digest.of(manifest, "sha512")
    with pytest.raises(DigestInvalid):
        await store.put(manifest + b" ", digest)
    assert len(await stored_files(store)) == 2
    with pytest.raises(PathNotFound):
        await store.read(Digest.of(b"not stored"))


async def test_delete(store: ContentStore) -> None:
    digest = await store.put(b"to delete")
    keep = await store.put(b"to keep")
    assert await store.delete(digest) is True
    assert await store.delete(digest) is False
    assert await store.has(digest) is None
    with pytest.raises(PathNotFound):
        await store.open(digest)
    assert [d async for d, _ in store.digests()] == [keep]


# -- configuration --------------------------------------------------------------------------------
def test_storage_config_defaults_and_validation(tmp_path: Path) -> None:
    config = load_config(env={"ENTREPOT_SERVER_DATA_DIR": str(tmp_path)})
    assert (config.storage.driver, config.storage.root) == ("filesystem", "")
    assert config.storage_root == tmp_path / "content"
    config = load_config(
        env={
            "ENTREPOT_STORAGE_ROOT": str(tmp_path / "elsewhere"),
            "ENTREPOT_STORAGE_DRIVER": "memory",
        }
    )
    assert config.storage_root == tmp_path / "elsewhere"
    assert config.sanitized()["storage"] == {
        "driver": "memory",
        "root": str(tmp_path / "elsewhere"),
    }
    path = tmp_path / "bad.toml"
    path.write_text('[storage]\ndriver = "s3"\nbucket = "x"\n')
    with pytest.raises(Exception) as info:
        load_config(path, env={})
    assert getattr(info.value, "problems", ()) == (
        "storage.bucket: unknown key (known: driver, root)",
        "storage.driver: one of filesystem, memory, got 's3'",
    )


# -- the filesystem driver ------------------------------------------------------------------------
@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def ingest_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / INGEST_DIR).iterdir())


@pytest.mark.parametrize("mask", [0o000, 0o022])
async def test_files_are_0600_and_directories_0700_whatever_the_umask(
    tmp_path: Path, mask: int
) -> None:
    root = tmp_path / "content"
    with umask(mask):
        storage = await open_storage(StorageConfig(root=str(root)), tmp_path)
        store = ContentStore(storage)
        await ingest_chunks(store, os.urandom(MiB))
        await store.put(b"manifest")
        await storage.move(blob_path(await store.put(b"moved")), "other/place")
        pending = await storage.writer("a/b/c")
        await pending.write(b"in progress" * 200_000)  # flushed to its ingest file
        assert len(ingest_files(root)) == 1
        found = {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}
        found["."] = stat.S_IMODE(root.stat().st_mode)
        await pending.commit()
    assert len(found) >= 10
    for name, mode in found.items():
        expected = 0o700 if (root / name).is_dir() else 0o600
        assert mode == expected, f"{name}: {mode:o}"
    assert stat.S_IMODE((root / "a" / "b" / "c").stat().st_mode) == 0o600


async def test_local_path_is_the_file_served_with_sendfile(tmp_path: Path) -> None:
    storage = await open_storage(StorageConfig(root=str(tmp_path / "c")), tmp_path)
    store = ContentStore(storage)
    digest = await store.put(b"served without a copy")
    path = store.local_path(digest)
    assert path == tmp_path / "c" / blob_path(digest)
    assert path is not None and path.read_bytes() == b"served without a copy"


async def test_os_errors_name_the_driver_and_never_a_host_path(tmp_path: Path) -> None:
    root = tmp_path / "content"
    storage = await open_storage(StorageConfig(root=str(root)), tmp_path)
    (root / INGEST_DIR).rmdir()
    (root / INGEST_DIR).write_bytes(b"a file where the ingest area should be")
    for call in (storage.writer("x"), storage.put_content("x", b"data")):
        with pytest.raises(StorageError) as info:
            await call
        assert info.value.driver == "filesystem"
        assert str(tmp_path) not in str(info.value) and str(tmp_path) not in repr(info.value.args)
        assert "Not a directory" in str(info.value)


async def test_an_abandoned_writer_leaves_no_ingest_file(tmp_path: Path) -> None:
    root = tmp_path / "content"
    storage = await open_storage(StorageConfig(root=str(root)), tmp_path)
    writer = await storage.writer("x")
    await writer.write(b"y" * (2 * MiB))
    assert len(ingest_files(root)) == 1
    del writer
    gc.collect()
    assert ingest_files(root) == []
    assert not await storage.exists("x")


async def test_cleaning_keeps_the_ingest_files_of_live_writers(tmp_path: Path) -> None:
    root = tmp_path / "content"
    storage = await open_storage(StorageConfig(root=str(root)), tmp_path)
    live = await storage.writer("live")
    await live.write(b"z" * (2 * MiB))
    (root / INGEST_DIR / "deadbeef").write_bytes(b"left by a process that died")
    (root / INGEST_DIR / "0123.trash" / "x").mkdir(parents=True)
    old = time.time() - 86400
    os.utime(root / INGEST_DIR / "deadbeef", (old, old))
    other = FilesystemDriver(root)  # a second process opening the same root
    assert await other.open() == 2
    assert len(ingest_files(root)) == 1  # the live writer's
    await live.write(b"z")
    await live.commit()
    assert (await storage.stat("live")).size == 2 * MiB + 1
    assert ingest_files(root) == []


CHILD_FILLER = textwrap.dedent(
    """
    import asyncio, hashlib, os, random, sys
    from pathlib import Path
    from entrepot.oci import Digest
    from entrepot.storage import ContentStore, Storage
    from entrepot.storage.filesystem import FilesystemDriver

    async def main() -> None:
        driver = FilesystemDriver(Path(sys.argv[1]))
        await driver.open()
        store = ContentStore(Storage(driver))
        rng = random.Random(int(sys.argv[2]))
        blobs = [os.urandom(rng.randint(1, 3 * 1024 * 1024)) for _ in range(8)]
        digests = [Digest.of(data) for data in blobs]
        payloads = [os.urandom(rng.randint(1, 4 * 1024 * 1024)) for _ in range(4)]
        bodies = [hashlib.sha256(p).digest() + p for p in payloads]
        i = 0
        while True:  # an ingest file exists nearly all the time
            data, digest = blobs[i % 8], digests[i % 8]
            async with store.ingest(digest, len(data)) as ingest:
                for offset in range(0, len(data), 256 * 1024):
                    await ingest.write(data[offset : offset + 256 * 1024])
                await ingest.commit()
            if rng.random() < 0.5:
                await store.delete(digest)  # so that the next ingest of it is published again
            await store.storage.put_content(f"small/{i % 5}", bodies[i % 4])
            if i == 0:
                print("ready", flush=True)  # something is committed
            i += 1

    asyncio.run(main())
    """
)

CHILD_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from entrepot.storage import Storage
    from entrepot.storage.filesystem import FilesystemDriver

    async def main() -> None:
        driver = FilesystemDriver(Path(sys.argv[1]))
        await driver.open()
        writer = await Storage(driver).writer("held/open")
        await writer.write(b"h" * (3 * 1024 * 1024))
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def start_child(script: str, *args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "ready":
        child.kill()
        raise AssertionError(
            f"child did not start: {line!r} {child.stderr.read() if child.stderr else ''}"
        )
    return child


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL


def assert_consistent(root: Path) -> int:
    """Every final file is whole: blobs hash to their names, other files carry their hash.
    Files deleted while this runs are skipped; return how many were checked."""
    count = 0
    for path in [*root.glob("blobs/*/*/*"), *root.glob("small/*")]:
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            continue
        if path.parent.name == "small":
            assert hashlib.sha256(body[32:]).digest() == body[:32], f"partial {path.name}"
        else:
            assert hashlib.sha256(body).hexdigest() == path.name, f"partial {path.name}"
        count += 1
    return count


@pytest.mark.slow
async def test_a_process_killed_mid_write_leaves_no_partial_file(tmp_path: Path) -> None:
    root = tmp_path / "content"
    rng = random.Random(8)
    leftovers_seen = 0
    for round_ in range(6):
        child = start_child(CHILD_FILLER, str(root), str(round_))
        try:
            end = time.monotonic() + rng.uniform(0.05, 0.6)
            while time.monotonic() < end:  # readers never see a partial file either
                await asyncio.to_thread(assert_consistent, root)
        finally:
            kill(child)
        assert assert_consistent(root) > 0
        leftovers_seen += len(ingest_files(root))
        reopened = FilesystemDriver(root)
        await reopened.open()
        assert ingest_files(root) == []
        assert assert_consistent(root) > 0
        store = ContentStore(Storage(reopened))
        async for digest, size in store.digests():  # what is there reads back whole
            assert await store.has(digest) == size
    assert leftovers_seen >= 1, "no kill happened mid-write: the test proved nothing"


@pytest.mark.slow
async def test_the_ingest_of_a_live_process_survives_another_opening_then_is_cleaned(
    tmp_path: Path,
) -> None:
    root = tmp_path / "content"
    child = start_child(CHILD_HOLDER, str(root))
    try:
        assert len(ingest_files(root)) == 1
        assert await FilesystemDriver(root).open() == 0  # its lock is held: kept
        assert len(ingest_files(root)) == 1
    finally:
        kill(child)
    assert await FilesystemDriver(root).open() == 1  # the process died: its lock went with it
    assert ingest_files(root) == []
    storage = await open_storage(StorageConfig(root=str(root)), tmp_path)
    assert not await storage.exists("held/open")
