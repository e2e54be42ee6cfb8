"""The storage driver conformance suite: every driver passes every test here.

Parametrised over the registered drivers through the ``storage`` fixture (adding a driver, the
object store of a later issue for instance, means adding one entry to ``DRIVERS``). Each test
talks to the driver through :class:`entrepot.storage.Storage`, the base every caller uses, so
that path checks and error normalisation are part of what is checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrepot.config import STORAGE_DRIVERS, StorageConfig
from entrepot.storage import (
    CHUNK_SIZE,
    FileInfo,
    InvalidOffset,
    InvalidPath,
    PathNotFound,
    Storage,
    StorageError,
    UnsupportedOperation,
    Writer,
    check_path,
    open_storage,
    register,
    registered,
)

MiB = 1 << 20


@dataclass(frozen=True)
class DriverCase:
    """How to open one driver for a test, and what it cannot promise."""

    name: str
    holds_content_in_memory: bool  # its files live in the process (memory driver)


DRIVERS = [
    DriverCase("filesystem", holds_content_in_memory=False),
    DriverCase("memory", holds_content_in_memory=True),
]


@pytest.fixture(params=DRIVERS, ids=[d.name for d in DRIVERS])
def case(request: pytest.FixtureRequest) -> DriverCase:
    case: DriverCase = request.param
    return case


@pytest.fixture
async def storage(case: DriverCase, tmp_path: Path) -> AsyncIterator[Storage]:
    store = await open_storage(StorageConfig(driver=case.name), tmp_path)
    assert store.name == case.name
    yield store
    await store.close()


async def written(storage: Storage, path: str, chunks: list[bytes]) -> Writer:
    writer = await storage.writer(path)
    for chunk in chunks:
        await writer.write(chunk)
    return writer


async def read_all(storage: Storage, path: str, offset: int = 0) -> bytes:
    async with await storage.reader(path, offset) as reader:
        return b"".join([chunk async for chunk in reader])


async def tree(storage: Storage) -> list[tuple[str, bool]]:
    return [(info.path, info.is_dir) async for info in storage.walk()]


# -- the registry ---------------------------------------------------------------------------------
def test_every_configurable_driver_is_registered_and_tested() -> None:
    assert registered() == tuple(sorted(STORAGE_DRIVERS))
    assert sorted(d.name for d in DRIVERS) == sorted(STORAGE_DRIVERS)
    with pytest.raises(ValueError, match="registered already"):
        register("filesystem", lambda config, data_dir: None)  # type: ignore[arg-type,return-value]


async def test_an_unknown_driver_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOperation, match=r"'nope'.*filesystem, memory"):
        await open_storage(StorageConfig(driver="nope"), tmp_path)


# -- small content --------------------------------------------------------------------------------
async def test_put_and_get_content(storage: Storage) -> None:
    await storage.put_content("a/b/c.txt", b"hello")
    assert await storage.get_content("a/b/c.txt") == b"hello"
    await storage.put_content("a/b/c.txt", b"replaced, longer")
    assert await storage.get_content("a/b/c.txt") == b"replaced, longer"
    await storage.put_content("a/b/c.txt", b"")
    assert await storage.get_content("a/b/c.txt") == b""
    assert await storage.stat("a/b/c.txt") == FileInfo(
        "a/b/c.txt", 0, (await storage.stat("a/b/c.txt")).mtime, False
    )


async def test_missing_content_is_path_not_found_naming_the_driver(storage: Storage) -> None:
    with pytest.raises(PathNotFound) as info:
        await storage.get_content("no/such/file")
    assert info.value.driver == storage.name
    assert info.value.path == "no/such/file"
    assert storage.name in str(info.value) and "no/such/file" in str(info.value)
    await storage.put_content("dir/file", b"x")
    with pytest.raises(PathNotFound):
        await storage.get_content("dir")  # a directory is not a file
    with pytest.raises(PathNotFound):
        await storage.reader("dir")
    with pytest.raises(PathNotFound):
        await storage.stat("dir/file/below")  # below a file
    assert not await storage.exists("dir/other")
    assert await storage.exists("dir") and await storage.exists("dir/file")


async def test_a_file_and_a_directory_cannot_share_a_path(storage: Storage) -> None:
    await storage.put_content("d/f", b"x")
    with pytest.raises(StorageError) as info:
        await storage.put_content("d", b"over a directory")
    assert not isinstance(info.value, PathNotFound) and info.value.driver == storage.name
    with pytest.raises(StorageError):
        await storage.put_content("d/f/below", b"below a file")
    writer = await written(storage, "d", [b"over a directory"])
    with pytest.raises(StorageError):
        await writer.commit()
    assert writer.cancelled
    assert await tree(storage) == [("d", True), ("d/f", False)]
    assert await storage.get_content("d/f") == b"x"


async def test_replacement_is_atomic_for_concurrent_readers(storage: Storage) -> None:
    versions = [bytes([65 + i]) * (MiB + i * 4099) for i in range(4)]
    await storage.put_content("blob", versions[0])
    seen: set[bytes] = set()
    done = asyncio.Event()

    async def replace() -> None:
        for i in range(40):
            if i % 2:
                await storage.put_content("blob", versions[i % 4])
            else:
                writer = await written(storage, "blob", [versions[i % 4][:1000]])
                await writer.write(versions[i % 4][1000:])
                await writer.commit()
            await asyncio.sleep(0)
        done.set()

    async def read() -> None:
        while not done.is_set():
            whole = await storage.get_content("blob")
            streamed = await read_all(storage, "blob")
            for data in (whole, streamed):
                assert data in versions, f"a mix or a prefix of {len(data)} bytes"
                seen.add(data[:1])
            await asyncio.sleep(0)

    await asyncio.gather(replace(), read(), read())
    assert len(seen) >= 2  # the readers did see replacements happen


async def test_a_reader_keeps_the_content_it_opened(storage: Storage) -> None:
    await storage.put_content("f", b"old" * 1000)
    async with await storage.reader("f") as reader:
        first = await reader.read(10)
        await storage.put_content("f", b"new!" * 10)
        rest = b"".join([chunk async for chunk in reader])
    assert first + rest == b"old" * 1000
    assert await storage.get_content("f") == b"new!" * 10


# -- reading from an offset -----------------------------------------------------------------------
async def test_reader_offsets(storage: Storage) -> None:
    data = bytes(range(256)) * 40
    await storage.put_content("f", data)
    for offset in (0, 1, 255, 4000, len(data) - 1, len(data)):
        async with await storage.reader("f", offset) as reader:
            assert (reader.size, reader.offset) == (len(data), offset)
            assert b"".join([c async for c in reader]) == data[offset:]
            assert reader.offset == len(data)
            assert await reader.read() == b""  # at the end, and stays there
    for bad in (len(data) + 1, 10**12, -1):
        with pytest.raises(InvalidOffset) as info:
            await storage.reader("f", bad)
        assert info.value.driver == storage.name and str(bad) in str(info.value)
    await storage.put_content("empty", b"")
    async with await storage.reader("empty", 0) as reader:
        assert reader.size == 0 and await reader.read() == b""
    with pytest.raises(InvalidOffset):
        await storage.reader("empty", 1)
    with pytest.raises(PathNotFound):
        await storage.reader("missing", 0)


async def test_reads_of_any_size_reassemble_the_content(storage: Storage) -> None:
    data = os.urandom(3 * MiB + 17)
    await storage.put_content("f", data)
    sizes = [1, 7, 4096, 65536, CHUNK_SIZE, 10 * CHUNK_SIZE]
    got = []
    async with await storage.reader("f", 5) as reader:
        for i in range(10_000):
            chunk = await reader.read(sizes[i % len(sizes)])
            if not chunk:
                break
            assert 0 < len(chunk) <= min(sizes[i % len(sizes)], CHUNK_SIZE)
            got.append(chunk)
    assert b"".join(got) == data[5:]
    await reader.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await reader.read()


def _pattern(index: int, block: bytes) -> bytes:
    """Chunk ``index`` of a big test file: distinct per chunk, cheap to make."""
    return index.to_bytes(8, "big") + block[8:]


@pytest.mark.slow
async def test_big_content_streams_in_bounded_chunks(case: DriverCase, storage: Storage) -> None:
    """64 MiB written and read in 1 MiB pieces: chunks are bounded and the Python heap never
    holds the file (tracemalloc counts every bytes object, threads' included)."""
    block = os.urandom(MiB)
    count = 64
    expected = hashlib.sha256()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        writer = await storage.writer("big/blob")
        for i in range(count):
            chunk = _pattern(i, block)
            expected.update(chunk)
            await writer.write(chunk)
            del chunk
        await writer.commit()
        write_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]  # the memory driver holds the file here

        assert (await storage.stat("big/blob")).size == count * MiB
        actual = hashlib.sha256()
        chunks = 0
        async with await storage.reader("big/blob") as reader:
            async for chunk in reader:
                assert 0 < len(chunk) <= CHUNK_SIZE
                actual.update(chunk)
                chunks += 1
        read_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()

        offset = 40 * MiB + 12345  # the tail, streamed from an offset
        tail = hashlib.sha256()
        async with await storage.reader("big/blob", offset) as reader:
            async for chunk in reader:
                tail.update(chunk)
        tail_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert actual.hexdigest() == expected.hexdigest()
    assert chunks >= count
    expected_tail = hashlib.sha256()
    first = offset // MiB
    expected_tail.update(_pattern(first, block)[offset % MiB :])
    for i in range(first + 1, count):
        expected_tail.update(_pattern(i, block))
    assert tail.hexdigest() == expected_tail.hexdigest()
    assert read_peak < 8 * MiB, f"reading held {read_peak / MiB:.1f} MiB"
    assert tail_peak < 8 * MiB, f"reading from an offset held {tail_peak / MiB:.1f} MiB"
    if not case.holds_content_in_memory:
        assert write_peak < 8 * MiB, f"writing held {write_peak / MiB:.1f} MiB"


# -- writers --------------------------------------------------------------------------------------
async def test_a_writer_publishes_only_on_commit(storage: Storage) -> None:
    await storage.put_content("keep", b"k")
    writer = await written(storage, "dir/new", [b"abc", b"", b"defg"])
    assert writer.size == 7
    assert not await storage.exists("dir/new")
    assert not await storage.exists("dir")
    assert await storage.list() == ["keep"]
    await writer.commit()
    assert writer.committed and not writer.cancelled
    assert await storage.get_content("dir/new") == b"abcdefg"
    assert (await storage.stat("dir/new")).size == 7
    with pytest.raises(StorageError, match="committed"):
        await writer.write(b"more")
    with pytest.raises(StorageError, match="committed"):
        await writer.commit()
    await writer.cancel()  # no-op after a commit
    assert await storage.get_content("dir/new") == b"abcdefg"


async def test_a_cancelled_writer_leaves_nothing(storage: Storage) -> None:
    await storage.put_content("f", b"original")
    writer = await written(storage, "f", [b"x" * (3 * MiB)])
    new = await written(storage, "g/h", [b"y" * 100])
    await writer.cancel()
    await new.cancel()
    await new.cancel()  # idempotent
    assert writer.cancelled and not writer.committed
    assert await storage.get_content("f") == b"original"
    assert await tree(storage) == [("f", False)]
    with pytest.raises(StorageError, match="cancelled"):
        await writer.write(b"z")
    with pytest.raises(StorageError, match="cancelled"):
        await writer.commit()


async def test_a_writer_in_async_with_cancels_on_exception_and_without_commit(
    storage: Storage,
) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with await storage.writer("a") as writer:
            await writer.write(b"partial")
            raise RuntimeError("boom")
    assert writer.cancelled
    async with await storage.writer("b") as writer:
        await writer.write(b"never committed")
    assert writer.cancelled
    async with await storage.writer("c") as writer:
        await writer.write(b"committed")
        await writer.commit()
    assert await tree(storage) == [("c", False)]
    assert await storage.get_content("c") == b"committed"


async def test_append_continues_a_file(storage: Storage) -> None:
    await storage.put_content("up/data", b"first;")
    writer = await storage.writer("up/data", append=True)
    assert writer.size == 6
    await writer.write(b"second")
    assert await storage.get_content("up/data") == b"first;"  # until the commit
    await writer.commit()
    assert writer.size == 12
    assert await storage.get_content("up/data") == b"first;second"
    with pytest.raises(PathNotFound):
        await storage.writer("up/missing", append=True)
    with pytest.raises(PathNotFound):
        await storage.writer("up", append=True)  # a directory


async def test_concurrent_writers_to_one_path_last_commit_wins_whole(storage: Storage) -> None:
    contents = [bytes([97 + i]) * (512 * 1024) * 3 for i in range(6)]
    writers = [await storage.writer("shared/blob") for _ in contents]
    for piece in range(3):  # interleaved writes
        for writer, content in zip(writers, contents, strict=True):
            await writer.write(content[piece * 512 * 1024 : (piece + 1) * 512 * 1024])
    order = list(range(len(writers)))
    random.Random(8).shuffle(order)
    for i in order[:3]:  # one after another: each commit replaces the file with its content
        await writers[i].commit()
        assert await storage.get_content("shared/blob") == contents[i]
    await asyncio.gather(*(writers[i].commit() for i in order[3:]))  # at once: one of them
    final = await storage.get_content("shared/blob")
    assert final in [contents[i] for i in order[3:]]
    assert await tree(storage) == [("shared", True), ("shared/blob", False)]


# -- the namespace --------------------------------------------------------------------------------
async def populate(storage: Storage) -> None:
    for path in ("a/1", "a/2", "a/b/3", "a/b/c/4", "z", "m/n/o"):
        await storage.put_content(path, path.encode())


async def test_list_gives_the_direct_children_sorted(storage: Storage) -> None:
    assert await storage.list() == []
    await populate(storage)
    assert await storage.list() == ["a", "m", "z"]
    assert await storage.list("") == ["a", "m", "z"]
    assert await storage.list("a") == ["a/1", "a/2", "a/b"]
    assert await storage.list("a/b") == ["a/b/3", "a/b/c"]
    assert await storage.list("m/n") == ["m/n/o"]
    with pytest.raises(PathNotFound):
        await storage.list("nope")
    with pytest.raises(PathNotFound):
        await storage.list("z")  # a file


async def test_stat_files_and_directories(storage: Storage) -> None:
    before = time.time()
    await storage.put_content("d/f", b"12345")
    after = time.time()
    info = await storage.stat("d/f")
    assert (info.path, info.size, info.is_dir) == ("d/f", 5, False)
    assert before - 2 <= info.mtime <= after + 2
    directory = await storage.stat("d")
    assert (directory.path, directory.size, directory.is_dir) == ("d", 0, True)
    with pytest.raises(PathNotFound):
        await storage.stat("d/g")


async def test_walk_visits_everything_directories_first_in_order(storage: Storage) -> None:
    await populate(storage)
    assert await tree(storage) == [
        ("a", True),
        ("a/1", False),
        ("a/2", False),
        ("a/b", True),
        ("a/b/3", False),
        ("a/b/c", True),
        ("a/b/c/4", False),
        ("m", True),
        ("m/n", True),
        ("m/n/o", False),
        ("z", False),
    ]
    below = [(i.path, i.size) async for i in storage.walk("a/b")]
    assert below == [("a/b/3", 0 + 5), ("a/b/c", 0), ("a/b/c/4", 7)]
    with pytest.raises(PathNotFound):
        [i async for i in storage.walk("missing")]


async def test_move_files_and_directories(storage: Storage) -> None:
    await populate(storage)
    await storage.move("z", "new/place/z2")
    assert await storage.get_content("new/place/z2") == b"z"
    assert not await storage.exists("z")
    await storage.put_content("target", b"old target")
    await storage.move("a/1", "target")  # replaces a file
    assert await storage.get_content("target") == b"a/1"
    await storage.move("a/b", "moved/b")  # a directory and everything below it
    assert await storage.get_content("moved/b/c/4") == b"a/b/c/4"
    assert await storage.list("a") == ["a/2"]
    await storage.move("target", "target")  # onto itself: nothing changes
    assert await storage.get_content("target") == b"a/1"
    with pytest.raises(PathNotFound):
        await storage.move("no/such", "x")
    with pytest.raises(StorageError):
        await storage.move("moved", "moved/inside")
    with pytest.raises(StorageError):
        await storage.move("target", "moved")  # a file onto a directory
    assert await storage.get_content("target") == b"a/1"
    assert await storage.get_content("moved/b/3") == b"a/b/3"


async def test_delete_files_and_directories(storage: Storage) -> None:
    await populate(storage)
    await storage.delete("a/1")
    assert not await storage.exists("a/1")
    await storage.delete("a/b")  # recursive
    assert not await storage.exists("a/b/c/4")
    assert await storage.list("a") == ["a/2"]
    with pytest.raises(PathNotFound):
        await storage.delete("a/1")
    with pytest.raises(PathNotFound):
        await storage.delete("a/b")
    await storage.delete("m")
    assert await storage.get_content("z") == b"z" and await storage.get_content("a/2") == b"a/2"
    assert [i.path async for i in storage.walk() if not i.is_dir] == ["a/2", "z"]


async def test_serving_hints(case: DriverCase, storage: Storage) -> None:
    await storage.put_content("f", b"content")
    url = await storage.redirect_url("f")
    assert url is None or url.startswith(("http://", "https://"))
    local = storage.local_path("f")
    if local is not None:
        assert local.read_bytes() == b"content"


# -- invalid input --------------------------------------------------------------------------------
INVALID_PATHS = [
    "/absolute",
    "a//b",
    "a/",
    "..",
    "../escape",
    "a/../../escape",
    "a/./b",
    ".",
    ".hidden",
    "a/.hidden",
    "a\0b",
    "nul\0",
    "a b",
    "back\\slash",
    "é",
    "x" * 256,
    "/".join(["d"] * 600),
    "_uploads/anything",
    "_private",
]


@pytest.mark.parametrize("path", INVALID_PATHS, ids=lambda p: repr(p)[:30])
async def test_invalid_paths_are_refused_before_the_driver_is_called(
    storage: Storage, path: str
) -> None:
    await storage.put_content("ok", b"x")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: storage.get_content(path),
        lambda: storage.put_content(path, b"data"),
        lambda: storage.reader(path),
        lambda: storage.writer(path),
        lambda: storage.writer(path, append=True),
        lambda: storage.stat(path),
        lambda: storage.list(path),
        lambda: storage.move("ok", path),
        lambda: storage.move(path, "elsewhere"),
        lambda: storage.delete(path),
        lambda: storage.redirect_url(path),
        lambda: storage.exists(path),
    ]
    for call in calls:
        with pytest.raises(InvalidPath) as info:
            await call()
        assert "\0" not in str(info.value)
    with pytest.raises(InvalidPath):
        storage.local_path(path)
    with pytest.raises(InvalidPath):
        [i async for i in storage.walk(path)]
    assert await tree(storage) == [("ok", False)]


async def test_the_empty_path_is_the_root_for_listing_only(storage: Storage) -> None:
    for call in (
        lambda: storage.get_content(""),
        lambda: storage.put_content("", b""),
        lambda: storage.stat(""),
        lambda: storage.delete(""),
        lambda: storage.writer(""),
        lambda: storage.reader(""),
    ):
        with pytest.raises(InvalidPath, match="empty"):
            await call()
    assert await storage.list("") == []
    assert [i async for i in storage.walk("")] == []


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab._-/\\\0 é"), max_size=12) | st.text(max_size=12))
def test_an_accepted_path_never_leaves_the_root(path: str) -> None:
    """Whatever ``check_path`` accepts names a place strictly below the root, unchanged by
    normalisation (no ``..``, ``.``, ``//``, absolute or NUL ever slips through)."""
    try:
        check_path(path)
    except InvalidPath:
        return
    root = "/root-of-the-store"
    joined = f"{root}/{path}"
    assert os.path.normpath(joined) == joined
    assert joined.startswith(root + "/") and "\0" not in path and path.isascii()
    assert not path.split("/")[0].startswith("_")
