"""``file:///ABSOLUTE/PATH``: secrets from files, as Kubernetes or systemd mount them.

Off unless ``[secrets] file_enabled = true``, and then only for files whose real path (every
symbolic link resolved) lies under one of ``file_roots``: a link inside a root that points
outside it is refused. The value is the file's UTF-8 content with one trailing newline
(``\\n`` or ``\\r\\n``) removed, as ``echo secret > file`` leaves one.

This resolver does not check principals: the operator who enabled it and chose the roots has
decided which files any credential set may read.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from entrepot import errors as e
from entrepot.errors import ConfigError
from entrepot.secrets.base import Secret, scheme_of

__all__ = ["FileResolver"]

MAX_FILE_BYTES = 64 * 1024


class FileResolver:
    """Resolve ``file:///PATH`` for files under ``roots``.

    :param roots: absolute directories; resolved to their real paths once, here.
    :param private: directories never readable whatever the roots say (the server's data dir:
        its database, master key and admin token). ``/proc``, ``/sys`` and ``/dev`` are always
        private too: ``/proc/self/environ`` would hand out the server's own ``ENTREPOT_*``
        variables.
    :raises ConfigError: when a root is not an absolute path.
    """

    description = "the file resolver"
    ALWAYS_PRIVATE = ("/proc", "/sys", "/dev")

    def __init__(self, roots: Iterable[str | Path], private: Iterable[str | Path] = ()) -> None:
        resolved = []
        for root in roots:
            if not Path(root).is_absolute():
                raise ConfigError(f"secrets.file_roots: {str(root)!r} is not an absolute path")
            resolved.append(Path(os.path.realpath(root)))
        self.roots = tuple(resolved)
        self.private = tuple(Path(os.path.realpath(p)) for p in (*self.ALWAYS_PRIVATE, *private))

    def handles(self, identifier: str) -> bool:
        return scheme_of(identifier) == "file"

    def path(self, identifier: str) -> Path:
        """The absolute path named by ``file:///PATH`` (percent-decoded, not yet resolved).

        :raises InvalidSecretIdentifier: when it is not a local absolute ``file:`` URL.
        """

        def invalid(why: str) -> e.InvalidSecretIdentifier:
            return e.InvalidSecretIdentifier(
                f"The secret identifier {identifier!r} is invalid: {why}; expected "
                "file:///ABSOLUTE/PATH."
            )

        if not self.handles(identifier):
            raise invalid("it is not a file: URL")
        parts = urlsplit(identifier)
        if parts.netloc not in ("", "localhost"):
            raise invalid("only local files (no host) can be read")
        if parts.query or parts.fragment:
            raise invalid("it must not have a query string or fragment")
        path = unquote(parts.path)
        if not path.startswith("/") or "\x00" in path or path.endswith("/"):
            raise invalid("the path must be absolute and name a file")
        return Path(path)

    def check(self, identifier: str) -> None:
        self.path(identifier)

    def real_path(self, identifier: str) -> Path:
        """The real path of the file, checked to lie under a root.

        :raises SecretAccessDenied: when it does not.
        """
        real = Path(os.path.realpath(self.path(identifier)))
        if any(real == p or real.is_relative_to(p) for p in self.private):
            raise e.SecretAccessDenied(
                f"Access to the secret {identifier!r} is denied: the server's own files (its data "
                "dir, /proc, /sys, /dev) are never readable as secrets."
            )
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            raise e.SecretAccessDenied(
                f"Access to the secret {identifier!r} is denied: the file is not under any "
                "directory of secrets.file_roots."
            )
        return real

    async def resolve(self, identifier: str, principal_id: str) -> Secret:
        """The file's content; ``principal_id`` is not consulted (see the module doc).

        :raises SecretAccessDenied: the real path is outside ``secrets.file_roots``.
        :raises SecretNotFound: no such file (or it is a directory).
        :raises SecretStoreUnavailable: it cannot be read, is too large or is not UTF-8.
        """
        real = self.real_path(identifier)
        return await asyncio.to_thread(self._read, identifier, real)

    @staticmethod
    def _read(identifier: str, real: Path) -> Secret:
        try:
            with real.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise e.SecretNotFound(
                f"The secret {identifier!r} was not found: no such file."
            ) from None
        except OSError as exc:
            raise e.SecretStoreUnavailable(
                f"The secret {identifier!r} cannot be read: {exc.strerror or type(exc).__name__}."
            ) from None
        if len(data) > MAX_FILE_BYTES:
            raise e.SecretStoreUnavailable(
                f"The secret {identifier!r} cannot be read: the file is larger than "
                f"{MAX_FILE_BYTES} bytes."
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise e.SecretStoreUnavailable(
                f"The secret {identifier!r} cannot be read: the file is not UTF-8 text."
            ) from None
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        return Secret(text)
