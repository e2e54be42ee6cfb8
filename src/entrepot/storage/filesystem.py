"""The filesystem driver: files under one root directory, written through an ingest area.

::

    <root>/                       mode 0700, like every directory below it (files: 0600)
      _uploads/                   the ingest area, private to this driver
        <uuid>                    a file being written (put_content, or a Writer being set
                                  up); locked by its writer with flock(2) while it lives
        <name>.<uuid>             the same, of a Writer to a path whose last part is <name>
                                  (renamed so once locked: other processes can find it)
        <uuid>.trash/             a directory being deleted
      <path>                      committed files, at their storage paths

What callers may rely on, besides the guarantees of :mod:`entrepot.storage.driver`:

* **Crash safety.** Content is written to ``_uploads/<uuid>``, ``fsync``\\ ed, renamed to its
  path (``rename(2)`` replaces atomically) and the directory ``fsync``\\ ed; new directories
  are ``fsync``\\ ed into their parents. A process killed at any point leaves no partial file
  at a final path, only an ingest file.
* **Stale ingest files** are removed when the driver opens (:meth:`FilesystemDriver.clean_ingest`;
  call it again on a timer if wished): an ingest file is stale when no live process holds its
  lock. A writer holds its lock from creation to commit or cancel and the kernel drops it when
  the process dies, so this is exact, and safe with several processes sharing the root: their
  live ingests are kept, whatever their age. A writer whose fresh file is taken by a cleaner
  between its creation and its lock notices (the inode is no longer at the path) and starts a
  new one. Leftover ``.trash`` directories are removed too.
* **Modes** are 0600 for files and 0700 for directories whatever the umask.
* **Reading back.** A writer's flushed bytes can be read while it writes
  (:meth:`~entrepot.storage.Writer.open_partial`), through a descriptor of the ingest file.
* **Following another process's writer** (:meth:`FilesystemDriver.follow`): a process finds a
  live ingest file of a path by its name and reads it while it grows (:class:`FollowedIngest`),
  unverified; it knows the writer is gone (committed, cancelled or dead) when its lock is free.
* **Zero copy.** A reader's :meth:`~entrepot.storage.Reader.local_span` hands out its open
  descriptor so that the web layer can ``sendfile`` the bytes (the file as it was opened, even
  if it is deleted meanwhile); :meth:`FilesystemDriver.local_path` gives the file's real path.
* Blocking calls run in threads (``asyncio.to_thread``); writes are buffered into 1 MiB
  chunks, so a thread is used once per chunk, not per small write.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import fcntl
import os
import shutil
import stat
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from entrepot.config import CONTENT_DIR, StorageConfig
from entrepot.storage.driver import (
    CHUNK_SIZE,
    FileInfo,
    InvalidPath,
    PathNotFound,
    Reader,
    StorageError,
    Writer,
)

__all__ = ["INGEST_DIR", "FilesystemDriver", "FollowedIngest", "create"]

NAME = "filesystem"
INGEST_DIR = "_uploads"
FILE_MODE = 0o600
DIR_MODE = 0o700
_TRASH = ".trash"
_T = TypeVar("_T")


async def create(config: StorageConfig, data_dir: Path) -> FilesystemDriver:
    """The factory registered as ``filesystem``: root ``config.root`` or
    ``<data_dir>/content``; creates it and cleans the ingest area."""
    root = Path(config.root) if config.root else data_dir / CONTENT_DIR
    driver = FilesystemDriver(root)
    await driver.open()
    return driver


class FilesystemDriver:
    """Files under ``root`` (see the module docstring). Call :meth:`open` before use."""

    name = NAME

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.ingest_dir = self.root / INGEST_DIR

    async def open(self) -> int:
        """Create the root and the ingest area (0700) and remove stale ingest files; return
        how many were removed."""
        await asyncio.to_thread(self._open)
        return await self.clean_ingest()

    def _open(self) -> None:
        if not self.root.is_dir():
            _makedirs(self.root, stop=Path(self.root.anchor))
        _makedirs(self.ingest_dir, stop=self.root)

    async def close(self) -> None:
        return None

    async def clean_ingest(self) -> int:
        """Remove ingest files no live writer holds, and leftover ``.trash`` directories;
        return how many entries were removed."""
        return await asyncio.to_thread(self._clean_ingest)

    def _clean_ingest(self) -> int:
        removed = 0
        try:
            entries = list(os.scandir(self.ingest_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live writer holds it
                continue
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return removed

    async def follow(self, path: str) -> FollowedIngest | None:
        """A live ingest file of ``path`` (a writer of any process holds its lock), opened to be
        read while it grows; ``None`` if there is none."""
        return await asyncio.to_thread(self._follow, path)

    def _follow(self, path: str) -> FollowedIngest | None:
        prefix = _ingest_prefix(path)
        try:
            entries = list(os.scandir(self.ingest_dir))
        except FileNotFoundError:
            return None
        for entry in entries:
            if not entry.name.startswith(prefix) or entry.name.endswith(_TRASH):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            if _writer_lives(fd):
                return FollowedIngest(fd, path)
            os.close(fd)
        return None

    # -- paths ----------------------------------------------------------------------------------
    def _full(self, path: str) -> Path:
        if path == "":
            return self.root
        if path.startswith("/") or ".." in path.split("/") or "\0" in path:
            raise InvalidPath(path, driver=NAME)  # checked by Storage: defence in depth
        return self.root / path

    def _storage_path(self, full: Path) -> str:
        return full.relative_to(self.root).as_posix()

    def local_path(self, path: str) -> Path | None:
        return self._full(path)

    async def free_bytes(self) -> int | None:
        """The free bytes of the root's filesystem available to unprivileged writers
        (``statvfs``: ``f_bavail * f_frsize``)."""
        stats = os.statvfs(self.root)  # one system call, no disk I/O worth a thread
        return stats.f_bavail * stats.f_frsize

    async def redirect_url(self, path: str) -> str | None:
        return None

    # -- reading --------------------------------------------------------------------------------
    async def get_content(self, path: str) -> bytes:
        return await asyncio.to_thread(self._get_content, path)

    def _get_content(self, path: str) -> bytes:
        try:
            with open(self._full(path), "rb") as f:
                return f.read()
        except (IsADirectoryError, NotADirectoryError):
            raise PathNotFound(path, "no file at this path", driver=NAME) from None

    async def reader(self, path: str, offset: int) -> Reader:
        fd, size = await asyncio.to_thread(self._open_for_reading, path)
        return FilesystemReader(fd, path, offset, size)

    def _open_for_reading(self, path: str) -> tuple[int, int]:
        try:
            fd = os.open(self._full(path), os.O_RDONLY | os.O_CLOEXEC)
        except NotADirectoryError:
            raise PathNotFound(path, driver=NAME) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise PathNotFound(path, "no file at this path", driver=NAME)
        return fd, info.st_size

    async def stat(self, path: str) -> FileInfo:
        return await asyncio.to_thread(self._stat, path)

    def _stat(self, path: str) -> FileInfo:
        try:
            info = os.stat(self._full(path))
        except NotADirectoryError:
            raise PathNotFound(path, driver=NAME) from None
        is_dir = stat.S_ISDIR(info.st_mode)
        return FileInfo(path, 0 if is_dir else info.st_size, info.st_mtime, is_dir)

    async def list(self, path: str) -> list[str]:
        return [info.path for info in await asyncio.to_thread(self._scan, path)]

    def _scan(self, path: str) -> builtins.list[FileInfo]:
        """The children of directory ``path`` (the ingest area left out), sorted."""
        try:
            entries = list(os.scandir(self._full(path)))
        except NotADirectoryError:
            raise PathNotFound(path, "not a directory", driver=NAME) from None
        found: list[FileInfo] = []
        prefix = f"{path}/" if path else ""
        for entry in entries:
            if entry.name.startswith((".", "_")) and not path:
                continue  # the ingest area and anything not in the path grammar
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile
            is_dir = stat.S_ISDIR(info.st_mode)
            size = 0 if is_dir else info.st_size
            found.append(FileInfo(prefix + entry.name, size, info.st_mtime, is_dir))
        found.sort(key=lambda i: i.path)
        return found

    async def walk(self, path: str) -> AsyncIterator[FileInfo]:
        for info in await asyncio.to_thread(self._scan, path):
            yield info
            if info.is_dir:
                try:
                    async for below in self.walk(info.path):
                        yield below
                except PathNotFound:
                    continue  # removed meanwhile

    # -- writing --------------------------------------------------------------------------------
    async def writer(self, path: str, append: bool) -> Writer:
        full = self._full(path)
        fd, temp, size = await asyncio.to_thread(self._new_ingest, full if append else None, path)
        return FilesystemWriter(self, path, fd, temp, size)

    def _new_ingest(self, copy_from: Path | None = None, path: str = "") -> tuple[int, Path, int]:
        """A new locked ingest file ``(fd, temp, size)``, holding the content of ``copy_from``
        (the file at storage path ``path``) if given."""
        while True:
            temp = self.ingest_dir / uuid.uuid4().hex
            try:
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except FileNotFoundError:
                _makedirs(self.ingest_dir, stop=self.root)  # removed under us: recreate
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if not _same_file(fd, temp):  # a cleaner took it before our lock: start again
                    os.close(fd)
                    continue
            except BlockingIOError:
                os.close(fd)  # a cleaner holds it and is about to remove it
                continue
            except BaseException:
                os.close(fd)
                raise
            break
        return self._name_ingest(fd, temp, copy_from, path)

    def _name_ingest(
        self, fd: int, fresh: Path, copy_from: Path | None, path: str
    ) -> tuple[int, Path, int]:
        """Name the locked ingest file ``fresh`` for followers of ``path`` (only once locked: a
        named file lives, or is stale) and fill it with ``copy_from``."""
        temp = fresh.with_name(_ingest_prefix(path) + fresh.name)
        try:
            if temp != fresh:
                os.rename(fresh, temp)
        except BaseException:
            _discard(fd, fresh)
            raise
        try:
            os.fchmod(fd, FILE_MODE)
            size = 0
            if copy_from is not None:
                try:
                    with open(copy_from, "rb") as source:
                        size = _copy_into(source.fileno(), fd)
                except (IsADirectoryError, NotADirectoryError):
                    raise PathNotFound(path, "no file at this path", driver=NAME) from None
        except BaseException:
            _discard(fd, temp)
            raise
        return fd, temp, size

    def _publish(self, fd: int, temp: Path, full: Path) -> None:
        """``fsync`` ``fd``, rename ``temp`` to ``full`` and make it durable; closes ``fd``."""
        try:
            os.fsync(fd)
            for attempt in range(3):
                _makedirs(full.parent, stop=self.root)
                try:
                    os.replace(temp, full)
                    break
                except FileNotFoundError:
                    if attempt == 2 or not os.path.exists(temp):
                        raise
                    # a parent directory was removed meanwhile: create it again
                except IsADirectoryError:
                    raise StorageError(
                        self._storage_path(full), "a directory is at this path", driver=NAME
                    ) from None
            _fsync_dir(full.parent)
        finally:
            os.close(fd)

    async def put_content(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(self._put_content, path, data)

    def _put_content(self, path: str, data: bytes) -> None:
        full = self._full(path)
        fd, temp, _ = self._new_ingest()
        try:
            _write_all(fd, data)
        except BaseException:
            _discard(fd, temp)
            raise
        try:
            self._publish(fd, temp, full)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    async def move(self, source: str, destination: str) -> None:
        await asyncio.to_thread(self._move, source, destination)

    def _move(self, source: str, destination: str) -> None:
        src, dst = self._full(source), self._full(destination)
        try:
            os.lstat(src)
        except NotADirectoryError:
            raise PathNotFound(source, driver=NAME) from None
        if dst == src:
            return
        if dst.is_relative_to(src):
            raise StorageError(destination, "cannot move a path below itself", driver=NAME)
        _makedirs(dst.parent, stop=self.root)
        try:
            os.replace(src, dst)
        except (IsADirectoryError, NotADirectoryError):
            raise StorageError(
                destination, "a directory is at the destination, or a file is", driver=NAME
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise StorageError(
                    destination, "a directory is at the destination", driver=NAME
                ) from None
            raise
        _fsync_dir(dst.parent)
        if src.parent != dst.parent:
            _fsync_dir(src.parent)

    async def delete(self, path: str) -> None:
        await asyncio.to_thread(self._delete, path)

    def _delete(self, path: str) -> None:
        full = self._full(path)
        try:
            info = os.lstat(full)
        except NotADirectoryError:
            raise PathNotFound(path, driver=NAME) from None
        if stat.S_ISDIR(info.st_mode):
            # Out of the namespace first (atomically), then removed at leisure.
            trash = self.ingest_dir / (uuid.uuid4().hex + _TRASH)
            _makedirs(self.ingest_dir, stop=self.root)
            os.replace(full, trash)
            _fsync_dir(full.parent)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.unlink(full)
            _fsync_dir(full.parent)


class FilesystemReader(Reader):
    """Reads an open file descriptor with ``pread`` in a thread."""

    def __init__(self, fd: int, path: str, offset: int, size: int, *, local: bool = True) -> None:
        super().__init__(NAME, path, offset, size)
        self._fd = fd
        self._local = local
        self._io = _ThreadIO()
        self._finalizer = weakref.finalize(self, os.close, fd)

    async def _read(self, n: int) -> bytes:
        return await self._io.run(os.pread, self._fd, n, self.offset)

    def _local_fd(self) -> int | None:
        return self._fd if self._local else None

    async def _close(self) -> None:
        await self._io.settle()
        self._finalizer()


class FilesystemWriter(Writer):
    """Writes to a locked ingest file, buffered in :data:`CHUNK_SIZE` chunks; commit renames it
    into place."""

    def __init__(self, driver: FilesystemDriver, path: str, fd: int, temp: Path, size: int) -> None:
        super().__init__(NAME, path, size)
        self._driver = driver
        self._fd = fd
        self._temp = temp
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._flushed = size  # bytes in the ingest file
        self._io = _ThreadIO()
        # An abandoned writer (neither committed nor cancelled) leaves nothing either.
        self._finalizer = weakref.finalize(self, _discard, fd, temp)

    async def _write(self, data: bytes) -> None:
        self._buffer.append(bytes(data))
        self._buffered += len(data)
        if self._buffered >= CHUNK_SIZE:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        await self._io.run(_write_all, self._fd, data)
        self._flushed += len(data)

    @property
    def readable(self) -> int:
        return self._flushed

    async def _open_partial(self, offset: int, end: int) -> Reader:
        # The ingest file through a descriptor of its own: it outlives the writer's (closed on
        # commit or cancel) and reads the same inode, renamed or unlinked. The base refuses
        # this once a commit or cancel has begun, so the writer's descriptor is open here.
        # not local: unverified bytes never go out as a span (sendfile serves committed files)
        return FilesystemReader(os.dup(self._fd), self.path, offset, end, local=False)

    async def _commit(self) -> None:
        await self._flush()
        full = self._driver._full(self.path)
        self._finalizer.detach()  # the thread below closes fd
        try:
            await self._io.run(self._driver._publish, self._fd, self._temp, full)
        except BaseException:
            await self._io.settle()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)  # the fd is closed: only the file is left to remove
            raise

    async def _cancel(self) -> None:
        await self._io.settle()
        self._buffer.clear()
        if self._finalizer.alive:  # closes fd, removes the ingest file (unlinking takes a while)
            await asyncio.to_thread(self._finalizer)


class _ThreadIO:
    """Runs blocking calls in a thread, one at a time, such that a cancelled caller does not
    leave a call running on a descriptor that is closed meanwhile: :meth:`settle` waits for it.
    """

    def __init__(self) -> None:
        self._pending: asyncio.Future[object] | None = None

    async def run(self, fn: Callable[..., _T], *args: object) -> _T:
        await self.settle()  # a call a cancelled caller left running finishes first
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._pending = future  # type: ignore[assignment]
        return await asyncio.shield(future)

    async def settle(self) -> None:
        if self._pending is not None and not self._pending.done():
            await asyncio.wait([self._pending])
        self._pending = None


# -- helpers (blocking; run in threads) -----------------------------------------------------------
class FollowedIngest:
    """Another writer's ingest file, followed while it grows (:meth:`FilesystemDriver.follow`).
    Its bytes are **not verified**. Call :meth:`poll` to learn how far it has grown and
    whether its writer still holds it; :meth:`close` when done."""

    def __init__(self, fd: int, path: str) -> None:
        self.path = path
        self.readable = 0
        """How many leading bytes :meth:`open_partial` reads (as of the last :meth:`poll`)."""
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)

    async def poll(self) -> int | None:
        """The size of the file now, or ``None`` once its writer let go of it (it committed,
        cancelled or died: look for the content at its path)."""
        return await asyncio.to_thread(self._poll)

    def _poll(self) -> int | None:
        size = os.fstat(self._fd).st_size
        if not _writer_lives(self._fd):
            return None
        self.readable = size
        return size

    async def open_partial(self, offset: int) -> Reader:
        """A reader of the file from ``offset`` to :attr:`readable` (never sent as a span)."""
        return FilesystemReader(os.dup(self._fd), self.path, offset, self.readable, local=False)

    def close(self) -> None:
        self._finalizer()


def _ingest_prefix(path: str) -> str:
    """The start of the ingest file names of storage path ``path``."""
    return f"{path.rsplit('/', 1)[-1]}." if path else ""


def _writer_lives(fd: int) -> bool:
    """Whether a writer holds the lock of the ingest file open as ``fd``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _copy_into(source: int, target: int) -> int:
    total = 0
    while chunk := os.read(source, CHUNK_SIZE):
        _write_all(target, chunk)
        total += len(chunk)
    return total


def _discard(fd: int, temp: Path) -> None:
    """Close ``fd`` and remove ``temp`` (an ingest file); errors ignored."""
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: Path, *, stop: Path) -> None:
    """Create ``path`` and its missing parents up to ``stop`` with mode 0700 (any umask), each
    new directory ``fsync``\\ ed into its parent.

    :raises StorageError: when a file is where a directory is needed.
    """
    if path.is_dir():
        return
    missing: list[Path] = []
    current = path
    while current != stop and not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise StorageError(
                    _relative(directory, stop), "a file is where a directory is needed"
                ) from None
            continue
        except NotADirectoryError:
            raise StorageError(
                _relative(directory, stop), "a file is where a directory is needed"
            ) from None
        os.chmod(directory, DIR_MODE)
        _fsync_dir(directory.parent)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name
