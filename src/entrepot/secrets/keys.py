"""The vault's master key: where it comes from, and proof that it is the right one.

Sources, first wins:

1. ``ENTREPOT_MASTER_KEY``: the standard (or URL-safe) base64 encoding of 32 random bytes,
   e.g. ``openssl rand -base64 32``.
2. ``<data_dir>/master.key``: the same encoding on one line. Created on first start (mode
   0600 from the first byte, written to a temporary file and linked into place so that two
   processes starting at once cannot both create it) unless the database already holds vault
   data: a new key is never generated over existing ciphertext.

Key check: on first use the vault stores, in the ``settings`` table, a *key-check value*: an
AES-GCM encryption of a fixed plaintext. Every later start decrypts it; a different key fails
that authentication and start-up stops with a :class:`~entrepot.errors.ConfigError` instead of
writing secrets nobody can read again.

Nothing here logs or prints a key; error messages never contain one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from entrepot.errors import ConfigError

__all__ = [
    "KEY_CHECK_SETTING",
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE",
    "generate_key",
    "load_master_key",
    "make_key_check",
    "verify_key_check",
]

log = logging.getLogger("entrepot.secrets")

MASTER_KEY_ENV = "ENTREPOT_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
KEY_BYTES = 32
KEY_CHECK_SETTING = "vault.key_check"
_KEY_CHECK_PLAINTEXT = b"entrepot master key check"
_KEY_CHECK_AAD = b"entrepot:key-check:v1"
_KEY_CHECK_PREFIX = "v1:"
_B64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")


def generate_key() -> bytes:
    """32 fresh random bytes."""
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """The base64 text form of ``key`` (as ``ENTREPOT_MASTER_KEY`` and ``master.key`` hold it)."""
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str, where: str) -> bytes:
    """Parse the base64 text form of a 32-byte key.

    :param where: names the source in the error message (never the text itself).
    :raises ConfigError: when ``text`` is not base64 of exactly 32 bytes.
    """
    cleaned = text.strip()
    problem = (
        f"{where} must be the base64 encoding of {KEY_BYTES} random bytes "
        "(generate one with `openssl rand -base64 32`)"
    )
    if not _B64.match(cleaned):
        raise ConfigError(f"{problem}; it is not base64")
    try:
        key = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{problem}; it is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{problem}; it decodes to {len(key)} bytes")
    return key


def key_file(data_dir: Path) -> Path:
    """Where the master key file lives."""
    return data_dir / MASTER_KEY_FILE


def load_master_key(
    data_dir: Path, environ: Mapping[str, str] | None = None, *, create: bool = True
) -> bytes:
    """The master key: from ``ENTREPOT_MASTER_KEY``, else ``<data_dir>/master.key``.

    :param data_dir: the data directory (created if missing when a key file must be written).
    :param environ: the environment to read ``ENTREPOT_MASTER_KEY`` from (default
        ``os.environ``).
    :param create: whether a missing key file may be generated. Pass ``False`` when the
        database already holds vault data.
    :raises ConfigError: when the variable or the file is not a valid key, the file cannot be
        read or written, or it is missing and ``create`` is false.
    """
    env = os.environ if environ is None else environ
    text = env.get(MASTER_KEY_ENV, "")
    if text.strip():
        return decode_key(text, MASTER_KEY_ENV)
    path = key_file(data_dir)
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    if not create:
        raise ConfigError(
            f"the master key file {path} is missing, but the database already holds vault "
            f"data encrypted with a master key. Restore that file (or set {MASTER_KEY_ENV}); "
            "entrepot will not generate a new key over existing secrets."
        )
    return _create_key_file(path)


def _read_key_file(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(
            f"the master key file {path} cannot be read: {exc.strerror or exc}"
        ) from None
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "the master key file %s is accessible to other users (mode %o); chmod 600 it",
                path,
                stat.S_IMODE(mode),
            )
    except OSError:  # pragma: no cover - raced with a delete
        pass
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"the master key file {path} is not base64 text") from None
    return decode_key(text, f"the master key file {path}")


def _create_key_file(path: Path) -> bytes:
    """Write a new key to ``path`` (mode 0600) unless another process just did; return it."""
    key = generate_key()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (encode_key(key) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite a key
        except FileExistsError:
            return _read_key_file(path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise ConfigError(
            f"the master key file {path} cannot be created: {exc.strerror or exc}"
        ) from None
    log.info("generated a new vault master key in %s (mode 0600); back it up", path)
    return key


def remove_key_file(path: Path) -> None:
    """Delete a key file this process has just generated (used when it turns out unusable)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def make_key_check(key: bytes) -> str:
    """A fresh key-check value for ``key``: ``v1:`` + base64(nonce + AES-GCM ciphertext)."""
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, _KEY_CHECK_PLAINTEXT, _KEY_CHECK_AAD)
    return _KEY_CHECK_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def verify_key_check(key: bytes, check: str) -> bool:
    """Whether ``check`` (from :func:`make_key_check`) was made with ``key``.

    :raises ConfigError: when ``check`` is not a key-check value at all (corrupt settings).
    """
    if not check.startswith(_KEY_CHECK_PREFIX):
        raise ConfigError(
            f"the stored vault key-check value ({KEY_CHECK_SETTING}) has an unknown format"
        )
    try:
        raw = base64.b64decode(check[len(_KEY_CHECK_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"the stored vault key-check value ({KEY_CHECK_SETTING}) is corrupt"
        ) from None
    try:
        plain = AESGCM(key).decrypt(raw[:12], raw[12:], _KEY_CHECK_AAD)
    except (InvalidTag, ValueError):
        return False
    return secrets.compare_digest(plain, _KEY_CHECK_PLAINTEXT)
