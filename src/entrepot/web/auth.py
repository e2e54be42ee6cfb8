"""Token authentication shared by the faces: Bearer on the management APIs, Basic for ``/v2/``.

Tokens are never stored: the lookup is by the SHA-256 hex digest of the token and answers its
:class:`~entrepot.metadata.records.TokenRecord` (name and role). There is no cache: every check
is one point read of the token table (``SqlResourceStore.token``, a prebuilt query), so a
revoked or rotated token is refused from the moment the change commits, on every process that
shares the database. Checks of one token that overlap share one read: a check that starts while
a read of its token is in flight takes that read's answer, which is at most that one read old.

Roles: an ``admin`` token may use the management APIs (ARM, ``/entrepot/vaults``,
``/entrepot/tokens``) through :meth:`TokenAuthenticator.authenticate` (or ``check``); a ``pull``
token sent there is answered 403 ``AuthorizationFailed``.
:meth:`TokenAuthenticator.authenticate_basic` checks HTTP Basic credentials (user name = the
token's name, password = the token) for the registry face, and accepts both roles. The acting
principal's name is the token's name. No error message quotes a header or a token.
:func:`is_empty_basic` tells Basic credentials with an empty user name and password (what
skopeo sends when it has none) from real ones, so that the registry face treats them as no
credentials at all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from entrepot import errors as e
from entrepot.metadata.records import TokenRecord, TokenRole
from entrepot.web.access_log import PRINCIPAL

__all__ = ["Principal", "TokenAuthenticator", "TokenLookup", "is_empty_basic"]

TokenLookup = Callable[[str], Awaitable[TokenRecord | None]]
"""``sha256 hex of a token -> its record``, ``None`` when no such token exists (or it was
revoked). It must see every committed write: it is asked on every request."""


def is_empty_basic(header: str) -> bool:
    """Whether ``header`` is HTTP Basic credentials with an empty user name and an empty
    password (``Basic Og==``, base64 of ``:``): what skopeo and other clients send to a
    ``Basic`` challenge when they have no credentials. Such a header carries no identity."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        return base64.b64decode(encoded.strip(), validate=True) == b":"
    except (binascii.Error, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token stands for: the token's name and role."""

    name: str
    role: TokenRole

    @property
    def is_admin(self) -> bool:
        return self.role is TokenRole.ADMIN

    @property
    def may_pull(self) -> bool:
        """Whether it may pull through ``/v2/`` (both roles may)."""
        return self.role in (TokenRole.ADMIN, TokenRole.PULL)


class TokenAuthenticator:
    """Checks ``Authorization`` headers against ``lookup`` (asked on every call, no cache)."""

    def __init__(self, lookup: TokenLookup) -> None:
        self._lookup = lookup
        self._in_flight: dict[str, asyncio.Future[TokenRecord | None]] = {}

    async def _record(self, token: str) -> TokenRecord | None:
        """The record of ``token``: a fresh read, or the one in flight for the same token.

        The read runs as a task of its own, so a caller that is cancelled (a client hanging up)
        does not cancel it for the others waiting on it; it is forgotten as soon as it ends.
        """
        # aiohttp decodes headers with surrogateescape: hash the bytes that were sent.
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        pending = self._in_flight.get(digest)
        if pending is None or pending.done():  # done: its answer may predate a change
            pending = asyncio.ensure_future(self._lookup(digest))
            self._in_flight[digest] = pending
            pending.add_done_callback(lambda done: self._forget(digest, done))
        return await asyncio.shield(pending)

    def _forget(self, digest: str, done: asyncio.Future[TokenRecord | None]) -> None:
        if self._in_flight.get(digest) is done:
            del self._in_flight[digest]
        if not done.cancelled():
            done.exception()  # retrieved here, so a failure nobody awaited is not logged

    async def authenticate(self, request: web.Request) -> str:
        """The name of the request's admin bearer token (see :meth:`check`); it is also the
        request's ``PRINCIPAL`` in the access log."""
        principal = await self.check(request.headers.get("Authorization", ""))
        request[PRINCIPAL] = principal
        return principal

    async def check(self, header: str) -> str:
        """The name of the admin token in ``header``, an ``Authorization`` header's value.

        :raises Unauthenticated: when ``header`` is empty (no ``Authorization`` header).
        :raises InvalidAuthenticationToken: when it is not ``Bearer <token>`` or the token is
            unknown (or revoked).
        :raises AuthorizationFailed: when the token is valid but not an admin token.
        """
        principal = await self.bearer(header)
        if not principal.is_admin:
            raise e.AuthorizationFailed(
                f"The token {principal.name!r} has the role '{principal.role.value}', which may "
                "only pull images; this API needs an admin token."
            )
        return principal.name

    async def bearer(self, header: str) -> Principal:
        """The principal of the bearer token in ``header``, whatever its role.

        :raises Unauthenticated: when ``header`` is empty.
        :raises InvalidAuthenticationToken: when it is not ``Bearer <token>`` or the token is
            unknown.
        """
        scheme, _, token = header.partition(" ")
        if not header:
            raise e.Unauthenticated(
                "Authentication failed. The 'Authorization' header is missing; send "
                "'Authorization: Bearer <admin token>'."
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise e.InvalidAuthenticationToken(
                "Authentication failed. The 'Authorization' header must be 'Bearer <token>'."
            )
        record = await self._record(token.strip())
        if record is None:
            raise e.InvalidAuthenticationToken("Authentication failed. The token is not valid.")
        return Principal(record.name, record.role)

    async def authenticate_basic(self, header: str) -> Principal:
        """The principal of HTTP Basic credentials: user name = a token's name (any case),
        password = that token. Both roles are returned; the caller decides what each may do
        (:attr:`Principal.may_pull`).

        :raises Unauthenticated: when ``header`` is empty.
        :raises InvalidAuthenticationToken: when it is not ``Basic <base64 of user:password>``,
            the token is unknown, or the user name is not the token's name (one message for
            all three, so that a guess learns nothing).
        """
        if not header:
            raise e.Unauthenticated(
                "Authentication failed. Send HTTP Basic credentials: the token's name as the "
                "user name and the token as the password."
            )
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            raise e.InvalidAuthenticationToken(
                "Authentication failed. The 'Authorization' header must be 'Basic <credentials>'."
            )
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        user, colon, password = decoded.partition(":")
        if not colon:
            raise e.InvalidAuthenticationToken(
                "Authentication failed. The Basic credentials must be base64 of 'name:token'."
            )
        if not user or not password:
            raise e.InvalidAuthenticationToken(
                "Authentication failed. The Basic credentials need a user name (the token's "
                "name) and a password (the token); one of them is empty."
            )
        record = await self._record(password)
        if record is None or record.name.lower() != user.lower():
            raise e.InvalidAuthenticationToken(
                "Authentication failed. The user name or the token is not valid: the user "
                "name is the token's name ('admin' for the admin token; entrepot token list "
                "shows them) and the password is the token."
            )
        return Principal(record.name, record.role)
