"""Bearer-token authentication shared by the management-shaped faces (ARM, vault).

Tokens are never stored: the lookup is by the SHA-256 hex digest of the token, and answers the
token's description (``"admin"`` ...), which the faces use as the acting principal.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from entrepot import errors as e
from entrepot.web.access_log import PRINCIPAL

__all__ = ["TokenAuthenticator", "TokenLookup"]

TokenLookup = Callable[[str], Awaitable[str | None]]
"""``sha256 hex of a token -> its description``, ``None`` when no such token exists."""


class TokenAuthenticator:
    """Checks ``Authorization: Bearer <token>`` against ``lookup``.

    A token found is remembered for ``ttl`` seconds (so a revoked token may keep working that
    long); a token not found is asked again every time.
    """

    def __init__(self, lookup: TokenLookup, *, ttl: float = 60.0) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._cache: dict[str, tuple[str, float]] = {}

    async def authenticate(self, request: web.Request) -> str:
        """The description of the request's bearer token (see :meth:`check`); it is also the
        request's ``PRINCIPAL`` in the access log."""
        principal = await self.check(request.headers.get("Authorization", ""))
        request[PRINCIPAL] = principal
        return principal

    async def check(self, header: str) -> str:
        """The description of the token in ``header``, an ``Authorization`` header's value.

        :raises Unauthenticated: when ``header`` is empty (no ``Authorization`` header).
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
        # aiohttp decodes headers with surrogateescape: hash the bytes that were sent.
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).hexdigest()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        description = await self._lookup(digest)
        if description is None:
            raise e.InvalidAuthenticationToken("Authentication failed. The token is not valid.")
        self._cache[digest] = (description, time.monotonic() + self._ttl)
        return description
