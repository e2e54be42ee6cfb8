"""API tokens: issue, list, revoke and rotate them (no HTTP; ``web/tokens.py`` is the face).

A token is a random secret (``secrets.token_urlsafe(32)``, 43 characters) with a unique
case-insensitive ``name`` and a ``role``: ``admin`` may use every management API (ARM, vaults,
tokens) and pull; ``pull`` may only pull through ``/v2/`` (HTTP Basic: user name = the token's
name, password = the token). Only the SHA-256 hex of a secret is stored. A secret is returned
once, by :meth:`TokenService.create` or :meth:`TokenService.rotate`, and never again.

The token named ``admin`` is the one ``entrepot serve`` creates on its first start and writes to
``<data_dir>/admin-token`` (mode 0600) for the CLI. Rotating it rewrites that file when it exists
(:attr:`TokenService.token_file`), and :meth:`TokenService.rotate_admin` re-creates it when it
is gone: that is how someone with access to the data dir (and the database) recovers a lost
admin token offline (``entrepot token rotate-admin --data-dir DIR``).

What callers may rely on:

* Every change is one serialised write transaction: of concurrent creations of one name exactly
  one succeeds; the last admin token can never be revoked (there is always a way in).
* A revocation or rotation holds from the moment it commits, on every process sharing the
  database: authentication reads the token table on every request (no cache).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrepot import errors as e
from entrepot.metadata.database import utcnow
from entrepot.metadata.protocols import ResourceStore
from entrepot.metadata.records import NewToken, TokenRecord, TokenRole
from entrepot.models import format_datetime

__all__ = [
    "ADMIN_TOKEN_NAME",
    "IssuedToken",
    "TokenService",
    "check_token_name",
    "hash_token",
    "new_token_value",
    "parse_role",
    "token_view",
    "write_private",
]

ADMIN_TOKEN_NAME = "admin"
SYSTEM_ACTOR = "entrepot"
MAX_DESCRIPTION = 200
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def new_token_value() -> str:
    """A fresh token secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_token(value: str) -> str:
    """The SHA-256 hex digest under which a token's secret is stored and looked up."""
    return hashlib.sha256(value.encode()).hexdigest()


def check_token_name(name: str) -> None:
    """:raises InvalidResourceName: unless ``name`` is 1-63 letters, digits, ``.``, ``_`` or
    ``-``, beginning and ending with a letter or digit."""
    if not _NAME.fullmatch(name):
        raise e.InvalidResourceName(
            f"The token name {name[:70]!r} is invalid: use 1-63 letters, digits, '.', '_' or "
            "'-', beginning and ending with a letter or digit.",
            target="name",
        )


def parse_role(value: object) -> TokenRole:
    """:raises InvalidPropertyValue: unless ``value`` is ``"admin"`` or ``"pull"`` (any case)."""
    if isinstance(value, str):
        try:
            return TokenRole(value.lower())
        except ValueError:
            pass
    raise e.InvalidPropertyValue(
        f"'role' must be one of: {', '.join(r.value for r in TokenRole)}.", target="role"
    )


def token_view(record: TokenRecord) -> dict[str, Any]:
    """A token as the API and the CLI show it: ``name``, ``role``, ``description``,
    ``created`` (when its current secret was issued), ``createdBy``; never a secret."""
    return {
        "name": record.name,
        "role": record.role.value,
        "description": record.description,
        "created": format_datetime(record.created_at),
        "createdBy": record.created_by,
    }


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the first byte (any umask)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class IssuedToken:
    """A token and its secret, as returned once by creation or rotation (never stored)."""

    record: TokenRecord
    value: str = field(repr=False)

    def view(self) -> dict[str, Any]:
        """:func:`token_view` plus ``value``, the secret: the only view that holds it."""
        return {**token_view(self.record), "value": self.value}


class TokenService:
    """The token operations over a :class:`ResourceStore`.

    :param token_file: ``<data_dir>/admin-token``; rotating the ``admin`` token rewrites it
        (mode 0600) when it exists. ``None``: no file is ever written.
    """

    def __init__(self, store: ResourceStore, token_file: Path | None = None) -> None:
        self.store = store
        self.token_file = token_file

    async def list(self) -> list[TokenRecord]:
        """Every token, by lower-cased name (no secrets: none are stored)."""
        async with self.store.read() as tx:
            return await tx.tokens()

    async def get(self, name: str) -> TokenRecord:
        """:raises NotFound: no token is called ``name``."""
        async with self.store.read() as tx:
            return _found(await tx.token_named(name), name)

    async def create(
        self, name: str, role: TokenRole, actor: str, description: str = ""
    ) -> IssuedToken:
        """Issue a new token called ``name``.

        :raises InvalidResourceName: ``name`` is not a valid token name.
        :raises InvalidPropertyValue: ``description`` is over 200 characters.
        :raises ResourceExists: a token of that name (any case) exists.
        :raises InvalidPropertyValue: ``name`` is ``admin`` and ``role`` is not admin (that
            name is kept for an admin token, which ``rotate_admin`` may re-create).
        """
        check_token_name(name)
        if name.lower() == ADMIN_TOKEN_NAME and role is not TokenRole.ADMIN:
            raise e.InvalidPropertyValue(
                f"The token named {ADMIN_TOKEN_NAME!r} must have the role 'admin'.", target="role"
            )
        if len(description) > MAX_DESCRIPTION:
            raise e.InvalidPropertyValue(
                f"'description' is longer than {MAX_DESCRIPTION} characters.", target="description"
            )
        value = new_token_value()
        async with self.store.write() as tx:
            if await tx.token_named(name) is not None:
                raise e.ResourceExists(
                    f"A token named {name!r} exists already; revoke it first, or rotate it.",
                    target="name",
                )
            new = NewToken(name, role, hash_token(value), description, actor, utcnow())
            token_id = await tx.insert_token(new)
        record = TokenRecord(token_id, name, role, description, new.now, actor)
        return IssuedToken(record, value)

    async def revoke(self, name: str) -> None:
        """Delete token ``name``: it stops working when this returns, on every process.

        :raises NotFound: no such token.
        :raises Conflict: it is the last admin token.
        """
        async with self.store.write() as tx:
            record = _found(await tx.token_named(name), name)
            if record.role is TokenRole.ADMIN and await tx.count_tokens(TokenRole.ADMIN) <= 1:
                raise e.Conflict(
                    f"{record.name!r} is the last admin token; create another admin token "
                    "before revoking it.",
                    target="name",
                )
            await tx.delete_token(record.id)

    async def rotate(self, name: str, actor: str) -> IssuedToken:
        """Give token ``name`` a new secret (same name, role and description); the old secret
        stops working at once. Rotating ``admin`` rewrites :attr:`token_file` if it exists.

        :raises NotFound: no such token.
        """
        value = new_token_value()
        now = utcnow()
        async with self.store.write() as tx:
            record = _found(await tx.token_named(name), name)
            await tx.replace_token_hash(record.id, hash_token(value), actor, now)
            if record.name.lower() == ADMIN_TOKEN_NAME and self._has_token_file():
                self._write_token_file(value)  # inside the transaction: no file, no rotation
        rotated = TokenRecord(record.id, record.name, record.role, record.description, now, actor)
        return IssuedToken(rotated, value)

    async def rotate_admin(self, actor: str = SYSTEM_ACTOR) -> IssuedToken:
        """Replace the secret of the ``admin`` token, re-creating that token (role admin) if it
        was revoked, and write the new secret to :attr:`token_file` (created if missing).

        This is the offline recovery path: the caller has the database, not a working token.
        If the file cannot be written nothing changes (the error propagates).
        """
        value = new_token_value()
        now = utcnow()
        async with self.store.write() as tx:
            record = await tx.token_named(ADMIN_TOKEN_NAME)
            if record is None:
                new = NewToken(ADMIN_TOKEN_NAME, TokenRole.ADMIN, hash_token(value), "", actor, now)
                token_id = await tx.insert_token(new)
                record = TokenRecord(token_id, ADMIN_TOKEN_NAME, TokenRole.ADMIN, "", now, actor)
            else:
                await tx.replace_token_hash(record.id, hash_token(value), actor, now)
            self._write_token_file(value)
        rotated = TokenRecord(record.id, record.name, record.role, record.description, now, actor)
        return IssuedToken(rotated, value)

    async def bootstrap(self) -> str | None:
        """On first start (no token at all): create the ``admin`` token, write it to
        :attr:`token_file` and return it; ``None`` on every later start."""
        async with self.store.write() as tx:
            if await tx.count_tokens() > 0:
                return None
            value = new_token_value()
            new = NewToken(
                ADMIN_TOKEN_NAME, TokenRole.ADMIN, hash_token(value), "", SYSTEM_ACTOR, utcnow()
            )
            await tx.insert_token(new)
            self._write_token_file(value)
        return value

    # internals
    def _has_token_file(self) -> bool:
        return self.token_file is not None and self.token_file.exists()

    def _write_token_file(self, value: str) -> None:
        if self.token_file is not None:
            write_private(self.token_file, value + "\n")


def _found(record: TokenRecord | None, name: str) -> TokenRecord:
    if record is None:
        raise e.NotFound(f"No token is named {name[:70]!r}.", target="name")
    return record
