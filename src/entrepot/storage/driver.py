"""The storage driver protocol: byte-level, path-keyed, async; the base that checks it; the
registry of drivers by name.

Three parts, after distribution's ``storagedriver.go``, ``base/base.go`` and ``factory.go``:

* :class:`Driver` (composed of the roles :class:`ContentReading`, :class:`ContentWriting` and
  :class:`ContentServing`): what a concrete driver implements. It only does I/O; the paths it
  is given are valid, its offsets are not negative.
* :class:`Storage`: the base every caller talks to. It wraps one driver, validates paths and
  offsets once, times calls (a warning for slow ones) and normalises errors: whatever a driver
  raises comes out as a :class:`StorageError` carrying the driver's name (``OSError`` becomes
  a plain :class:`StorageError` naming the operation and path, never a host path).
* :func:`register` / :func:`open_storage`: the registry; ``[storage] driver`` names the
  factory that builds the driver.

Paths
-----
A path is relative, ``/``-separated components of ``[A-Za-z0-9._-]``, each at most 255
characters, not starting with ``.`` (so no ``.``, ``..`` or hidden names), at most 1024 in
all; no empty components, no leading or trailing ``/``, no NUL. Top-level names starting with
``_`` belong to the drivers themselves (the filesystem driver's ingest area ``_uploads/``) and
are refused as :class:`InvalidPath`. The empty path ``""`` is the root: valid for
:meth:`Storage.list` and :meth:`Storage.walk` only. Anything else raises :class:`InvalidPath`
before the driver is called.

What every driver guarantees (the conformance suite ``tests/test_storage_drivers.py`` checks it):

* **Atomic content.** :meth:`Storage.put_content` and :meth:`Writer.commit` replace a file as a
  whole: a reader sees the old content or the new one, never a mix or a prefix. A reader
  opened before a replacement keeps reading the content it opened.
* **Nothing before commit.** A :class:`Writer`'s bytes are invisible at its path until
  :meth:`Writer.commit`; :meth:`Writer.cancel` (or an exception in ``async with``) leaves
  nothing behind. Of concurrent writers to one path the last to commit wins, whole.
* **Directories are implicit.** A directory exists while it holds a file; callers must not rely
  on an empty directory being listed or not (the filesystem keeps them, object stores cannot).
* **Bounded memory.** Readers yield chunks of at most :data:`CHUNK_SIZE` bytes; writers do not
  hold what they were given beyond that (the memory driver holds its files, by definition).

Errors (all :class:`StorageError`, a 500 when they reach a face unhandled)::

    StorageError                 an operation failed (message: driver, operation, path)
    ├── PathNotFound             no file or directory at the path (or a directory where a file
    │                            is needed, and the reverse)
    ├── InvalidPath              the path is outside the grammar above
    ├── InvalidOffset            a read offset is negative or past the end of the file
    └── UnsupportedOperation     the driver does not offer this operation
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from entrepot.config import StorageConfig
from entrepot.errors import EntrepotError

__all__ = [
    "CHUNK_SIZE",
    "ContentReading",
    "ContentServing",
    "ContentWriting",
    "Driver",
    "DriverFactory",
    "FileInfo",
    "FileSpan",
    "InvalidOffset",
    "InvalidPath",
    "PathNotFound",
    "Reader",
    "Storage",
    "StorageError",
    "UnsupportedOperation",
    "Writer",
    "check_path",
    "open_storage",
    "register",
    "registered",
]

log = logging.getLogger("entrepot.storage")

CHUNK_SIZE = 1 << 20
"""The largest chunk a :class:`Reader` yields, and the unit writers flush in (1 MiB)."""

MAX_PATH_LENGTH = 1024
MAX_COMPONENT_LENGTH = 255
SLOW_CALL_SECONDS = 5.0
"""A driver call slower than this is logged as a warning (the base's timing)."""

_COMPONENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*", re.ASCII)
"""The grammar of a valid non-root path (see the module docstring)."""


# -- errors -------------------------------------------------------------------------------------
class StorageError(EntrepotError):
    """A storage operation failed.

    :param path: the storage path concerned (never a host path).
    :param detail: what went wrong, for people.
    :param driver: the name of the driver; :class:`Storage` sets it when a driver did not.
    """

    default_detail = "storage operation failed"

    def __init__(self, path: str, detail: str | None = None, *, driver: str = "") -> None:
        self.path = path
        self.detail = detail or self.default_detail
        self.driver = driver
        where = f"storage driver {driver!r}" if driver else "storage"
        super().__init__(f"{where}: {self.detail}: {path!r}", target=path or None)

    def with_driver(self, driver: str) -> Self:
        """This error, naming ``driver`` (itself when it names one already)."""
        if self.driver:
            return self
        copy = type(self)(self.path, self.detail, driver=driver)
        copy.__cause__ = self.__cause__
        return copy


class PathNotFound(StorageError):
    default_detail = "no such file or directory"


class InvalidPath(StorageError):
    default_detail = "invalid storage path"


class InvalidOffset(StorageError):
    default_detail = "offset outside the file"


class UnsupportedOperation(StorageError):
    default_detail = "operation not supported by this driver"


def check_path(path: str, *, root_ok: bool = False) -> str:
    """``path`` if it is valid (see the module docstring), else :class:`InvalidPath`.

    :param root_ok: whether ``""`` (the root) is accepted.
    """
    if path == "" and root_ok:
        return path
    if not isinstance(path, str) or not path:
        raise InvalidPath(str(path), "empty storage path")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidPath(path[:64] + "...", f"storage path longer than {MAX_PATH_LENGTH}")
    if PATH_RE.fullmatch(path) is None:
        raise InvalidPath(
            path.replace("\0", "\\0"),
            "a storage path is relative, '/'-separated components of [A-Za-z0-9._-] not "
            "starting with '.'",
        )
    first, *_ = parts = path.split("/")
    if first.startswith("_"):
        raise InvalidPath(path, "top-level names starting with '_' are reserved for drivers")
    if any(len(part) > MAX_COMPONENT_LENGTH for part in parts):
        raise InvalidPath(path, f"a path component is longer than {MAX_COMPONENT_LENGTH}")
    return path


# -- values -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileInfo:
    """What :meth:`Storage.stat` and :meth:`Storage.walk` report about a path.

    ``size`` is 0 for a directory; ``mtime`` is seconds since the epoch (a directory's may be
    0.0 where the driver has none).
    """

    path: str
    size: int
    mtime: float
    is_dir: bool


# -- streams ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileSpan:
    """``count`` bytes at ``offset`` of the open local file ``fd``, for the web layer to send
    without copying them through Python (``sendfile(2)``).

    Given by :meth:`Reader.local_span`: ``fd`` belongs to that reader and stays valid until it
    is closed; the span is never empty. :meth:`chunks` reads the same bytes for a connection
    that cannot take ``sendfile`` (TLS).
    """

    fd: int
    offset: int
    count: int
    path: str

    async def chunks(self) -> AsyncIterator[bytes]:
        """The span's bytes in chunks of at most :data:`CHUNK_SIZE` (``pread`` in a thread).

        :raises StorageError: when the file is shorter than the span.
        """
        offset, end = self.offset, self.offset + self.count
        while offset < end:
            data = await asyncio.to_thread(os.pread, self.fd, min(CHUNK_SIZE, end - offset), offset)
            if not data:
                raise StorageError(self.path, "the file is shorter than the span read")
            offset += len(data)
            yield data


class Reader(ABC):
    """A stream of one file's content from an offset.

    ``size`` is the file's size when it was opened and ``offset`` the position of the next
    byte. The content read is the content of the file as it was opened, even if it is replaced
    meanwhile. Use as ``async with`` (or call :meth:`close`); ``async for chunk in reader``
    yields chunks of at most :data:`CHUNK_SIZE` bytes until the end.

    Drivers implement :meth:`_read` and :meth:`_close`; errors they raise come out as
    :class:`StorageError` naming the driver.
    """

    def __init__(self, driver: str, path: str, offset: int, size: int) -> None:
        self.driver = driver
        self.path = path
        self.offset = offset
        self.size = size
        self._closed = False

    async def read(self, n: int = CHUNK_SIZE) -> bytes:
        """Up to ``n`` bytes (at most :data:`CHUNK_SIZE`) from the current offset; ``b""`` at
        the end only.

        :raises StorageError: when the reader is closed or the driver fails.
        """
        if self._closed:
            raise StorageError(self.path, "read from a closed reader", driver=self.driver)
        n = min(n, CHUNK_SIZE)
        if n <= 0 or self.offset >= self.size:
            return b""
        with _normalised(self.driver, "read", self.path):
            data = await self._read(min(n, self.size - self.offset))
        self.offset += len(data)
        return data

    async def close(self) -> None:
        """Release the reader; idempotent."""
        if not self._closed:
            self._closed = True
            with _normalised(self.driver, "close", self.path):
                await self._close()

    def local_span(self, end: int | None = None) -> FileSpan | None:
        """The bytes from :attr:`offset` to ``end`` (default and at most :attr:`size`) as a
        :class:`FileSpan` of the local file this reader reads, to be sent with ``sendfile``;
        the reader is then at ``end``. ``None`` (and the reader unchanged) when the driver has
        no local file (memory, object stores), for a writer's read-back
        (:meth:`Writer.open_partial`: those bytes are not verified) or when nothing is left.

        :raises StorageError: when the reader is closed.
        """
        if self._closed:
            raise StorageError(self.path, "read from a closed reader", driver=self.driver)
        end = self.size if end is None else min(end, self.size)
        fd = self._local_fd()
        if fd is None or end <= self.offset:
            return None
        span = FileSpan(fd, self.offset, end - self.offset, self.path)
        self.offset = end
        return span

    def _local_fd(self) -> int | None:
        """The descriptor of the local file read, owned by the reader; drivers that have one
        override this."""
        return None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def _read(self, n: int) -> bytes:
        """Up to ``n`` (> 0) bytes at ``self.offset``; fewer only at the end of the file."""

    @abstractmethod
    async def _close(self) -> None: ...


class Writer(ABC):
    """A file being written; invisible at its path until :meth:`commit`.

    ``size`` is the number of bytes the file will have when committed (with ``append``, the
    existing content counts). One task at a time may use a writer. After :meth:`commit` or
    :meth:`cancel` it is done: :meth:`write` and :meth:`commit` raise, :meth:`cancel` does
    nothing. As ``async with``: an exception inside cancels, and leaving without
    :meth:`commit` cancels too (content is published only explicitly).

    Drivers implement :meth:`_write`, :meth:`_commit` and :meth:`_cancel`; when ``_commit``
    fails, ``_cancel`` is called, so a failed commit leaves nothing either.

    **Reading back** (optional; for streaming content while it is written): :attr:`readable`
    is how many leading bytes :meth:`open_partial` can read now (what reached the driver, not
    what is still buffered); drivers that offer it override :meth:`_open_partial` and
    :attr:`readable`.
    """

    def __init__(self, driver: str, path: str, size: int = 0) -> None:
        self.driver = driver
        self.path = path
        self.size = size
        self.committed = False
        self.cancelled = False
        self._sealed = False  # a commit or cancel has begun: no more partial readers

    @property
    def readable(self) -> int:
        """How many leading bytes :meth:`open_partial` can read now (0 by default)."""
        return 0

    async def open_partial(self, offset: int) -> Reader:
        """A :class:`Reader` of the bytes written so far, from ``offset``, up to
        :attr:`readable` as it is now (its ``size``); open another for bytes written later.

        The bytes are *unpublished* (not verified by anyone): callers decide what to do with
        them. The reader keeps reading them after the writer commits or is cancelled.

        :raises StorageError: once :meth:`commit` or :meth:`cancel` has begun.
        :raises InvalidOffset: when ``offset`` is negative or past :attr:`readable`.
        :raises UnsupportedOperation: when the driver cannot read back.
        """
        if self.done or self._sealed:
            raise StorageError(self.path, "read back from a finished writer", driver=self.driver)
        end = self.readable
        if not 0 <= offset <= end:
            raise InvalidOffset(
                self.path, f"offset {offset} is outside the {end} bytes written", driver=self.driver
            )
        with _normalised(self.driver, "open_partial", self.path):
            return await self._open_partial(offset, end)

    async def _open_partial(self, offset: int, end: int) -> Reader:
        """A reader of bytes ``offset`` to ``end`` (both valid) of what was written."""
        raise UnsupportedOperation(self.path, driver=self.driver)

    @property
    def done(self) -> bool:
        return self.committed or self.cancelled

    def _check_open(self, action: str) -> None:
        if self.done:
            state = "committed" if self.committed else "cancelled"
            raise StorageError(self.path, f"{action} on a {state} writer", driver=self.driver)

    async def write(self, data: bytes) -> None:
        """Append ``data``.

        :raises StorageError: when the writer is done or the driver fails (the writer should
            then be cancelled).
        """
        self._check_open("write")
        if not data:
            return
        with _normalised(self.driver, "write", self.path):
            await self._write(data)
        self.size += len(data)

    async def commit(self) -> None:
        """Make the content visible at the path, replacing what was there, atomically.

        :raises StorageError: when the writer is done or the commit fails (nothing is then
            visible, and the writer is cancelled).
        """
        self._check_open("commit")
        self._sealed = True
        try:
            with _normalised(self.driver, "commit", self.path):
                await self._commit()
        except BaseException:
            await self.cancel()
            raise
        self.committed = True

    async def cancel(self) -> None:
        """Discard what was written; nothing is left. Idempotent; no-op after a commit."""
        if self.done:
            return
        self._sealed = True
        self.cancelled = True
        with _normalised(self.driver, "cancel", self.path):
            await self._cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cancel()

    @abstractmethod
    async def _write(self, data: bytes) -> None: ...

    @abstractmethod
    async def _commit(self) -> None: ...

    @abstractmethod
    async def _cancel(self) -> None: ...


# -- the protocol -------------------------------------------------------------------------------
class ContentReading(Protocol):
    """Reading roles. Paths are valid (checked by :class:`Storage`); ``""`` is the root."""

    async def get_content(self, path: str) -> bytes:
        """The whole content of the file at ``path`` (for small content)."""
        ...

    async def reader(self, path: str, offset: int) -> Reader:
        """A reader of the file at ``path`` from ``offset`` (>= 0; may exceed the size: the
        base checks it against :attr:`Reader.size`)."""
        ...

    async def stat(self, path: str) -> FileInfo: ...

    async def list(self, path: str) -> list[str]:
        """The full paths of the direct children of directory ``path``, in any order."""
        ...

    def walk(self, path: str) -> AsyncIterator[FileInfo]:
        """Every file and directory below directory ``path``, a directory before its children,
        siblings in lexical order."""
        ...


class ContentWriting(Protocol):
    """Writing roles; see the module docstring for the atomicity each must give."""

    async def put_content(self, path: str, data: bytes) -> None: ...

    async def writer(self, path: str, append: bool) -> Writer:
        """A writer to ``path``; with ``append`` it starts with the file's content (which must
        exist)."""
        ...

    async def move(self, source: str, destination: str) -> None:
        """Move a file or directory, replacing a file at ``destination``."""
        ...

    async def delete(self, path: str) -> None:
        """Delete a file, or a directory with everything below it."""
        ...


class ContentServing(Protocol):
    """How the web layer may serve a file without streaming it through Python."""

    async def redirect_url(self, path: str) -> str | None:
        """A URL a client may fetch the file from directly, or ``None``."""
        ...

    def local_path(self, path: str) -> Path | None:
        """The file's path on this machine (for ``sendfile``), or ``None``. No I/O."""
        ...

    async def free_bytes(self) -> int | None:
        """The bytes still free for new files (what an unprivileged writer may use), or
        ``None`` when the driver cannot tell (it is then treated as unlimited)."""
        ...


class Driver(ContentReading, ContentWriting, ContentServing, Protocol):
    """A concrete storage driver: ``name`` plus the three roles, and :meth:`close`."""

    @property
    def name(self) -> str: ...

    async def close(self) -> None:
        """Release what the driver holds; the driver is not used after."""
        ...


# -- the base -----------------------------------------------------------------------------------
@contextmanager
def _normalised(driver: str, operation: str, path: str) -> Iterator[None]:
    """Turn what a driver raises into a :class:`StorageError` naming the driver."""
    try:
        yield
    except StorageError as exc:
        if exc.driver:
            raise
        raise exc.with_driver(driver) from exc.__cause__
    except FileNotFoundError:
        raise PathNotFound(path, driver=driver) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__  # never str(exc): it holds host paths
        raise StorageError(path, f"{operation} failed: {reason}", driver=driver) from None


class Storage:
    """The storage every caller uses: one driver behind path checks and error normalisation.

    Every method may raise :class:`StorageError` (with the driver's name); the ones that name
    a path raise :class:`InvalidPath` for a path outside the grammar and
    :class:`PathNotFound` when nothing is there.
    """

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.name = driver.name

    @contextmanager
    def _call(self, operation: str, path: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            with _normalised(self.name, operation, path):
                yield
        finally:
            elapsed = time.monotonic() - start
            if elapsed > SLOW_CALL_SECONDS:
                log.warning("storage %s: %s %r took %.1f s", self.name, operation, path, elapsed)

    async def get_content(self, path: str) -> bytes:
        """The whole content of the file at ``path``; meant for small content (manifests)."""
        check_path(path)
        with self._call("get_content", path):
            return await self.driver.get_content(path)

    async def put_content(self, path: str, data: bytes) -> None:
        """Write ``data`` as the file at ``path``, atomically replacing what was there."""
        check_path(path)
        with self._call("put_content", path):
            await self.driver.put_content(path, bytes(data))

    async def reader(self, path: str, offset: int = 0) -> Reader:
        """A :class:`Reader` of the file at ``path`` from ``offset``.

        :raises InvalidOffset: when ``offset`` is negative or past the end (``offset == size``
            is valid: the reader is at its end).
        """
        check_path(path)
        if offset < 0:
            raise InvalidOffset(path, f"negative offset {offset}", driver=self.name)
        with self._call("reader", path):
            reader = await self.driver.reader(path, offset)
        if offset > reader.size:
            await reader.close()
            raise InvalidOffset(
                path, f"offset {offset} is past the end ({reader.size} bytes)", driver=self.name
            )
        return reader

    async def writer(self, path: str, *, append: bool = False) -> Writer:
        """A :class:`Writer` to ``path``; its content is visible only after ``commit()``.

        :param append: start with the file's current content (:class:`PathNotFound` when
            there is none): the committed file is the old content followed by what is written.
        """
        check_path(path)
        with self._call("writer", path):
            return await self.driver.writer(path, append)

    async def stat(self, path: str) -> FileInfo:
        check_path(path)
        with self._call("stat", path):
            return await self.driver.stat(path)

    async def exists(self, path: str) -> bool:
        """Whether a file or directory is at ``path``."""
        try:
            await self.stat(path)
        except PathNotFound:
            return False
        return True

    async def list(self, path: str = "") -> list[str]:
        """The full paths of the direct children of directory ``path`` (``""``: the root),
        sorted. :class:`PathNotFound` when ``path`` is not a directory."""
        check_path(path, root_ok=True)
        with self._call("list", path):
            return sorted(await self.driver.list(path))

    async def move(self, source: str, destination: str) -> None:
        """Move the file or directory at ``source`` to ``destination``, replacing a file
        there (atomically for a file)."""
        check_path(source)
        check_path(destination)
        with self._call("move", source):
            await self.driver.move(source, destination)

    async def delete(self, path: str) -> None:
        """Delete the file at ``path``, or the directory and everything below it."""
        check_path(path)
        with self._call("delete", path):
            await self.driver.delete(path)

    async def walk(self, path: str = "") -> AsyncIterator[FileInfo]:
        """Every file and directory below directory ``path`` (``""``: the root): a directory
        before its children, siblings in lexical order. Files added or removed during the
        walk may or may not be seen."""
        check_path(path, root_ok=True)
        iterator = self.driver.walk(path).__aiter__()
        while True:
            with self._call("walk", path):
                try:
                    info = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            yield info

    async def redirect_url(self, path: str) -> str | None:
        """A URL a client may fetch the file from directly (object stores), or ``None``."""
        check_path(path)
        with self._call("redirect_url", path):
            return await self.driver.redirect_url(path)

    def local_path(self, path: str) -> Path | None:
        """Where the file would be on this machine (filesystem driver), or ``None``.

        No I/O: the file may not exist, or be replaced or deleted after; open it and treat
        ``FileNotFoundError`` as :class:`PathNotFound`. A replaced file is replaced whole.
        """
        check_path(path)
        return self.driver.local_path(path)

    async def free_bytes(self) -> int | None:
        """The bytes still free for new files, or ``None`` when the driver cannot tell."""
        with self._call("free_bytes", ""):
            return await self.driver.free_bytes()

    async def close(self) -> None:
        with self._call("close", ""):
            await self.driver.close()


# -- the registry -------------------------------------------------------------------------------
DriverFactory = Callable[[StorageConfig, Path], Awaitable[Driver]]
"""Builds a driver from ``[storage]`` and the data dir (and does its start-up work)."""

_FACTORIES: dict[str, DriverFactory] = {}


def register(name: str, factory: DriverFactory) -> None:
    """Make ``[storage] driver = "<name>"`` build drivers with ``factory``.

    :raises ValueError: when ``name`` is registered already.
    """
    if name in _FACTORIES:
        raise ValueError(f"storage driver {name!r} is registered already")
    _FACTORIES[name] = factory


def registered() -> tuple[str, ...]:
    """The registered driver names, sorted."""
    return tuple(sorted(_FACTORIES))


async def open_storage(config: StorageConfig, data_dir: Path) -> Storage:
    """The :class:`Storage` of the driver ``config.driver`` names, opened.

    :raises StorageError: when the driver is unknown or cannot start (its root cannot be
        created, for instance).
    """
    factory = _FACTORIES.get(config.driver)
    if factory is None:
        raise UnsupportedOperation(
            "",
            f"unknown storage driver {config.driver!r} (known: {', '.join(registered())})",
        )
    with _normalised(config.driver, "open", ""):
        driver = await factory(config, data_dir)
    return Storage(driver)
