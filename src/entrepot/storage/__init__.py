"""The content store: storage drivers (:mod:`.driver`), the filesystem and memory drivers, and
the content-addressed layout above them (:mod:`.layout`, whose docstring draws the tree).

``open_storage(config.storage, config.data_dir)`` builds the driver ``[storage] driver`` names;
``ContentStore(storage)`` stores and serves content by digest. Only this package knows paths.
"""

from __future__ import annotations

from entrepot.storage import filesystem, memory
from entrepot.storage.driver import (
    CHUNK_SIZE,
    ContentReading,
    ContentServing,
    ContentWriting,
    Driver,
    DriverFactory,
    FileInfo,
    FileSpan,
    InvalidOffset,
    InvalidPath,
    PathNotFound,
    Reader,
    Storage,
    StorageError,
    UnsupportedOperation,
    Writer,
    check_path,
    open_storage,
    register,
    registered,
)
from entrepot.storage.filesystem import FollowedIngest
from entrepot.storage.layout import LAYOUT_VERSION, ContentStore, Ingest, blob_path, upload_path

__all__ = [
    "CHUNK_SIZE",
    "LAYOUT_VERSION",
    "ContentReading",
    "ContentServing",
    "ContentStore",
    "ContentWriting",
    "Driver",
    "DriverFactory",
    "FileInfo",
    "FileSpan",
    "FollowedIngest",
    "Ingest",
    "InvalidOffset",
    "InvalidPath",
    "PathNotFound",
    "Reader",
    "Storage",
    "StorageError",
    "UnsupportedOperation",
    "Writer",
    "blob_path",
    "check_path",
    "open_storage",
    "register",
    "registered",
    "upload_path",
]

register(filesystem.NAME, filesystem.create)
register(memory.NAME, memory.create)
