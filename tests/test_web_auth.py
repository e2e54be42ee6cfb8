"""The shared token check (:class:`entrepot.web.auth.TokenAuthenticator`): Bearer for the
management APIs (admin tokens only), Basic for ``/v2/`` (both roles); no cache."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib

import pytest

from entrepot import errors as e
from entrepot.metadata.records import TokenRecord, TokenRole
from entrepot.web.auth import Principal, TokenAuthenticator

NOW = dt.datetime(2024, 5, 6, tzinfo=dt.UTC)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    """A token table the authenticator asks, counting the questions."""

    def __init__(self) -> None:
        self.table = {
            _hash("s3cret-token"): TokenRecord(1, "admin", TokenRole.ADMIN, "", NOW, "entrepot"),
            _hash("pull-s3cret"): TokenRecord(2, "CI-Puller", TokenRole.PULL, "", NOW, "admin"),
        }
        self.asked: list[str] = []

    async def lookup(self, token_hash: str) -> TokenRecord | None:
        self.asked.append(token_hash)
        return self.table.get(token_hash)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_tokens_are_looked_up_by_their_sha256_on_every_request() -> None:
    tokens = Tokens()
    auth = TokenAuthenticator(tokens.lookup)

    async def run() -> None:
        assert await auth.check("Bearer s3cret-token") == "admin"
        assert await auth.check("bearer  s3cret-token ") == "admin"  # scheme case, spaces
        assert tokens.asked == [_hash("s3cret-token")] * 2  # asked each time: no cache
        tokens.table.clear()  # revoked: refused at once, not after a grace period
        with pytest.raises(e.InvalidAuthenticationToken):
            await auth.check("Bearer s3cret-token")
        for _ in range(2):
            with pytest.raises(e.InvalidAuthenticationToken):
                await auth.check("Bearer wrong")
        assert len(tokens.asked) == 5

    asyncio.run(run())


def test_a_pull_token_is_refused_403_on_the_management_apis() -> None:
    tokens = Tokens()
    auth = TokenAuthenticator(tokens.lookup)

    async def run() -> None:
        with pytest.raises(e.AuthorizationFailed) as info:
            await auth.check("Bearer pull-s3cret")
        assert info.value.status == 403 and info.value.code == "AuthorizationFailed"
        assert "pull-s3cret" not in info.value.message
        assert await auth.bearer("Bearer pull-s3cret") == Principal("CI-Puller", TokenRole.PULL)
        assert await auth.bearer("Bearer s3cret-token") == Principal("admin", TokenRole.ADMIN)

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


def test_basic_credentials_are_the_token_name_and_the_token() -> None:
    tokens = Tokens()
    auth = TokenAuthenticator(tokens.lookup)

    async def run() -> None:
        pull = Principal("CI-Puller", TokenRole.PULL)
        assert await auth.authenticate_basic(basic("CI-Puller", "pull-s3cret")) == pull
        assert await auth.authenticate_basic(basic("ci-puller", "pull-s3cret")) == pull
        assert await auth.authenticate_basic("basic " + basic("ci-puller", "pull-s3cret")[6:])
        assert pull.may_pull and not pull.is_admin
        admin = await auth.authenticate_basic(basic("admin", "s3cret-token"))
        assert admin == Principal("admin", TokenRole.ADMIN) and admin.may_pull
        # A password holding ':' is fine: only the first ':' separates the user name.
        tokens.table[_hash("a:b")] = TokenRecord(3, "colon", TokenRole.PULL, "", NOW, "x")
        assert (await auth.authenticate_basic(basic("colon", "a:b"))).name == "colon"

    asyncio.run(run())


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("", e.Unauthenticated),
        ("Bearer pull-s3cret", e.InvalidAuthenticationToken),
        ("Basic", e.InvalidAuthenticationToken),
        ("Basic !!!not-base64!!!", e.InvalidAuthenticationToken),
        (
            "Basic " + base64.b64encode(b"no-colon-pull-s3cret").decode(),
            e.InvalidAuthenticationToken,
        ),
        (
            "Basic " + base64.b64encode(b"\xff\xfe:pull-s3cret").decode(),
            e.InvalidAuthenticationToken,
        ),
        (basic("", "pull-s3cret"), e.InvalidAuthenticationToken),
        (basic("CI-Puller", ""), e.InvalidAuthenticationToken),
        (basic("admin", "pull-s3cret"), e.InvalidAuthenticationToken),  # another token's name
        (basic("CI-Puller", "wrong"), e.InvalidAuthenticationToken),
    ],
)
def test_basic_refusals_say_nothing_about_the_secret(
    header: str, error: type[e.EntrepotError]
) -> None:
    tokens = Tokens()
    with pytest.raises(error) as info:
        asyncio.run(TokenAuthenticator(tokens.lookup).authenticate_basic(header))
    assert type(info.value) is error and info.value.status == 401
    assert "s3cret" not in info.value.message and "wrong" not in info.value.message


def test_basic_sees_a_revocation_at_once() -> None:
    tokens = Tokens()
    auth = TokenAuthenticator(tokens.lookup)

    async def run() -> None:
        assert (await auth.authenticate_basic(basic("CI-Puller", "pull-s3cret"))).name
        del tokens.table[_hash("pull-s3cret")]
        with pytest.raises(e.InvalidAuthenticationToken):
            await auth.authenticate_basic(basic("CI-Puller", "pull-s3cret"))

    asyncio.run(run())


class SlowTokens(Tokens):
    """A lookup that waits until released, to make checks overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.fail = False

    async def lookup(self, token_hash: str) -> TokenRecord | None:
        self.asked.append(token_hash)
        await self.release.wait()
        if self.fail:
            raise ConnectionError("database unreachable")
        return self.table.get(token_hash)


def test_overlapping_checks_of_one_token_share_one_read() -> None:
    tokens = SlowTokens()
    auth = TokenAuthenticator(tokens.lookup)

    async def run() -> None:
        first = [asyncio.create_task(auth.check("Bearer s3cret-token")) for _ in range(5)]
        other = asyncio.create_task(auth.bearer("Bearer pull-s3cret"))
        basic_check = asyncio.create_task(auth.authenticate_basic(basic("admin", "s3cret-token")))
        await asyncio.sleep(0.01)
        first[0].cancel()  # a client hanging up does not cancel the read for the others
        await asyncio.sleep(0)
        tokens.release.set()
        assert [await t for t in first[1:]] == ["admin"] * 4
        assert (await other).role is TokenRole.PULL
        assert (await basic_check).name == "admin"
        assert first[0].cancelled()
        assert sorted(tokens.asked) == sorted([_hash("s3cret-token"), _hash("pull-s3cret")])

        # A read that has ended is not reused: a revocation after it is seen by the next check.
        del tokens.table[_hash("s3cret-token")]
        with pytest.raises(e.InvalidAuthenticationToken):
            await auth.check("Bearer s3cret-token")
        assert len(tokens.asked) == 3

        # A failed read fails every check that shared it, and the next check reads again.
        tokens.release.clear()
        tokens.fail = True
        failing = [asyncio.create_task(auth.bearer("Bearer pull-s3cret")) for _ in range(3)]
        await asyncio.sleep(0.01)
        tokens.release.set()
        for task in failing:
            with pytest.raises(ConnectionError):
                await task
        tokens.fail = False
        assert (await auth.bearer("Bearer pull-s3cret")).name == "CI-Puller"
        assert len(tokens.asked) == 5

    asyncio.run(run())
