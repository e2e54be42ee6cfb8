"""The shared bearer-token check (:class:`entrepot.web.auth.TokenAuthenticator`)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from entrepot import errors as e
from entrepot.web.auth import TokenAuthenticator

TOKENS = {hashlib.sha256(b"s3cret-token").hexdigest(): "admin"}


class Tokens:
    """A token table the authenticator asks, counting the questions."""

    def __init__(self) -> None:
        self.table = dict(TOKENS)
        self.asked: list[str] = []

    async def lookup(self, token_hash: str) -> str | None:
        self.asked.append(token_hash)
        return self.table.get(token_hash)


def test_tokens_are_looked_up_by_their_sha256_and_cached_when_found() -> None:
    tokens = Tokens()
    auth = TokenAuthenticator(tokens.lookup)

    async def run() -> None:
        assert await auth.check("Bearer s3cret-token") == "admin"
        assert await auth.check("bearer  s3cret-token ") == "admin"  # scheme case, spaces
        assert tokens.asked == [hashlib.sha256(b"s3cret-token").hexdigest()]  # once: cached
        tokens.table.clear()  # revoked: still accepted until the cache entry expires
        assert await auth.check("Bearer s3cret-token") == "admin"
        for _ in range(2):
            with pytest.raises(e.InvalidAuthenticationToken):
                await auth.check("Bearer wrong")
        assert len(tokens.asked) == 3  # an unknown token is asked every time

    asyncio.run(run())


def test_the_cache_expires() -> None:
    tokens = Tokens()
    auth = TokenAuthenticator(tokens.lookup, ttl=0.0)

    async def run() -> None:
        assert await auth.check("Bearer s3cret-token") == "admin"
        tokens.table.clear()
        with pytest.raises(e.InvalidAuthenticationToken):
            await auth.check("Bearer s3cret-token")

    asyncio.run(run())


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("", e.Unauthenticated),
        ("Basic dXNlcjpwdw==", e.InvalidAuthenticationToken),
        ("Bearer", e.InvalidAuthenticationToken),
        ("Bearer    ", e.InvalidAuthenticationToken),
        ("s3cret-token", e.InvalidAuthenticationToken),
    ],
)
def test_malformed_headers(header: str, error: type[e.EntrepotError]) -> None:
    tokens = Tokens()
    with pytest.raises(error) as info:
        asyncio.run(TokenAuthenticator(tokens.lookup).check(header))
    assert type(info.value) is error
    assert "s3cret" not in info.value.message
    assert tokens.asked == []


def test_a_token_that_is_not_utf8_is_an_invalid_token_not_a_crash() -> None:
    """aiohttp hands undecodable header bytes over as surrogate escapes."""
    tokens = Tokens()
    auth = TokenAuthenticator(tokens.lookup)
    sent = b"\xff\xfe-token"

    async def run() -> None:
        with pytest.raises(e.InvalidAuthenticationToken):
            await auth.check("Bearer " + sent.decode("utf-8", "surrogateescape"))
        assert tokens.asked == [hashlib.sha256(sent).hexdigest()]  # the bytes that were sent

    asyncio.run(run())
