"""The in-memory driver: files in a dict, gone when the process ends.

A real driver, not a mock: it passes the same conformance suite as the filesystem driver and is
meant for tests and small throw-away setups (``[storage] driver = "memory"``). It behaves like
an object store: directories are implicit (a directory exists while a file is below it), and
content is immutable ``bytes`` swapped whole, so replacement is atomic and a reader keeps the
content it opened. All operations run on the event loop without blocking (no I/O); one
driver is used by one event loop.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from entrepot.config import StorageConfig
from entrepot.storage.driver import FileInfo, PathNotFound, Reader, StorageError, Writer

__all__ = ["MemoryDriver", "create"]

NAME = "memory"


async def create(config: StorageConfig, data_dir: Path) -> MemoryDriver:
    """The factory registered as ``memory`` (``root`` and ``data_dir`` are not used)."""
    return MemoryDriver()


@dataclass(frozen=True, slots=True)
class _File:
    data: bytes
    mtime: float


class MemoryDriver:
    """Files in a dict keyed by path."""

    name = NAME

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}

    async def close(self) -> None:
        self._files.clear()

    # -- the namespace --------------------------------------------------------------------------
    def _file(self, path: str) -> _File:
        found = self._files.get(path)
        if found is None:
            raise PathNotFound(
                path, "no file at this path" if self._is_dir(path) else None, driver=NAME
            )
        return found

    def _below(self, path: str) -> list[str]:
        prefix = f"{path}/" if path else ""
        return [p for p in self._files if p.startswith(prefix)]

    def _is_dir(self, path: str) -> bool:
        return path == "" or any(True for _ in self._below(path))

    def _check_file_slot(self, path: str) -> None:
        """Refuse a file at ``path`` when a directory is there or a file is above it."""
        if self._is_dir(path):
            raise StorageError(path, "a directory is at this path", driver=NAME)
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self._files:
                raise StorageError(path, "a file is where a directory is needed", driver=NAME)

    def _store(self, path: str, data: bytes) -> None:
        self._check_file_slot(path)
        self._files[path] = _File(data, time.time())

    # -- reading --------------------------------------------------------------------------------
    async def get_content(self, path: str) -> bytes:
        return self._file(path).data

    async def reader(self, path: str, offset: int) -> Reader:
        return MemoryReader(path, self._file(path).data, offset)

    async def stat(self, path: str) -> FileInfo:
        found = self._files.get(path)
        if found is not None:
            return FileInfo(path, len(found.data), found.mtime, False)
        below = self._below(path)
        if not below:
            raise PathNotFound(path, driver=NAME)
        return FileInfo(path, 0, max(self._files[p].mtime for p in below), True)

    async def list(self, path: str) -> list[str]:
        if path in self._files:
            raise PathNotFound(path, "not a directory", driver=NAME)
        prefix = f"{path}/" if path else ""
        children = {prefix + p[len(prefix) :].split("/", 1)[0] for p in self._below(path)}
        if not children and path:
            raise PathNotFound(path, driver=NAME)
        return sorted(children)

    async def walk(self, path: str) -> AsyncIterator[FileInfo]:
        for child in await self.list(path):
            try:
                info = await self.stat(child)
            except PathNotFound:
                continue  # removed meanwhile
            yield info
            if info.is_dir:
                try:
                    async for below in self.walk(child):
                        yield below
                except PathNotFound:
                    continue

    async def free_bytes(self) -> int | None:
        """``None``: memory is not measured (unlimited as far as fills are concerned)."""
        return None

    async def redirect_url(self, path: str) -> str | None:
        return None

    def local_path(self, path: str) -> Path | None:
        return None

    # -- writing --------------------------------------------------------------------------------
    async def put_content(self, path: str, data: bytes) -> None:
        self._store(path, bytes(data))

    async def writer(self, path: str, append: bool) -> Writer:
        start = self._file(path).data if append else b""
        return MemoryWriter(self, path, start)

    async def move(self, source: str, destination: str) -> None:
        if source == destination:
            await self.stat(source)
            return
        if destination.startswith(source + "/"):
            raise StorageError(destination, "cannot move a path below itself", driver=NAME)
        found = self._files.get(source)
        if found is not None:
            self._check_file_slot(destination)
            self._files[destination] = found
            del self._files[source]
            return
        below = self._below(source)
        if not below:
            raise PathNotFound(source, driver=NAME)
        if destination in self._files or self._is_dir(destination):
            raise StorageError(
                destination, "a directory is at the destination, or a file is", driver=NAME
            )
        self._check_file_slot(destination)  # no file above the destination
        for old in below:
            self._files[destination + old[len(source) :]] = self._files.pop(old)

    async def delete(self, path: str) -> None:
        if self._files.pop(path, None) is not None:
            return
        below = self._below(path)
        if not below:
            raise PathNotFound(path, driver=NAME)
        for p in below:
            del self._files[p]


class MemoryReader(Reader):
    """Reads slices of the ``bytes`` it was opened with."""

    def __init__(self, path: str, data: bytes, offset: int) -> None:
        super().__init__(NAME, path, offset, len(data))
        self._data = memoryview(data)

    async def _read(self, n: int) -> bytes:
        return bytes(self._data[self.offset : self.offset + n])

    async def _close(self) -> None:
        self._data = memoryview(b"")


class MemoryWriter(Writer):
    """Collects chunks; commit joins them and swaps the file in."""

    def __init__(self, driver: MemoryDriver, path: str, start: bytes) -> None:
        super().__init__(NAME, path, len(start))
        self._driver = driver
        self._chunks = [start] if start else []
        self._ends = [len(start)] if start else []  # where each chunk ends in the file

    async def _write(self, data: bytes) -> None:
        self._chunks.append(bytes(data))
        self._ends.append(self.size + len(data))

    @property
    def readable(self) -> int:
        return self.size

    async def _open_partial(self, offset: int, end: int) -> Reader:
        # The lists are replaced (not cleared) on commit and cancel: the reader keeps its view.
        return _PartialReader(self.path, self._chunks, self._ends, offset, end)

    async def _commit(self) -> None:
        self._driver._store(self.path, b"".join(self._chunks))
        self._chunks, self._ends = [], []

    async def _cancel(self) -> None:
        self._chunks, self._ends = [], []


class _PartialReader(Reader):
    """Reads bytes ``offset`` to ``size`` of a :class:`MemoryWriter`'s chunks."""

    def __init__(
        self, path: str, chunks: list[bytes], ends: list[int], offset: int, size: int
    ) -> None:
        super().__init__(NAME, path, offset, size)
        self._parts = chunks
        self._ends = ends

    async def _read(self, n: int) -> bytes:
        i = bisect.bisect_right(self._ends, self.offset)
        start = self._ends[i - 1] if i else 0
        part = self._parts[i]
        return part[self.offset - start : self.offset - start + n]

    async def _close(self) -> None:
        self._parts, self._ends = [], []
