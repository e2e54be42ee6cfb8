"""The upstream registry client: login, Bearer tokens, and authorised requests.

Layers, from the wire up::

    Transport.send  one HTTP exchange (swappable; :class:`AiohttpTransport` by default);
                    transport failures → UpstreamUnreachable/UpstreamTlsError/UpstreamError
    _send           follows redirects by hand, one ``Transport.send`` per hop;
                    ``Authorization`` never leaves the first origin; https → http refused
    _send_retrying  GET/HEAD retried with backoff on connection failures, 502/503/504 and
                    429 (honouring ``Retry-After``); then 429 → UpstreamTooManyRequests and
                    other 5xx → UpstreamError (never the reason phrase: an upstream may put
                    anything there). An address the guard refuses is not retried (it cannot
                    change). ``request(..., attempts=1, step_timeout=T)`` makes one try of at most
                    ``T`` s per wait, token fetches included (a revalidation with a cached
                    copy to fall back on)
    auth            the ``WWW-Authenticate`` challenge of the endpoint (none, Basic, Bearer);
                    Bearer tokens fetched from the realm and cached per scope
    login / request / auth_headers / token_for      the public API

Authentication flows (distribution's "Token Authentication Specification" and "OAuth2 Token
Authentication"):

* ``GET /v2/`` answers 200: the upstream needs no credentials there.
* 401 with ``Basic``: every request carries ``Authorization: Basic``.
* 401 with ``Bearer realm=..,service=..[,scope=..]``: ``GET realm?service=..&scope=..`` with
  Basic credentials (none for anonymous) returns ``{"token"|"access_token", "expires_in"}``.
  When that GET answers 404 or 405 and there are credentials, the realm is asked again with the
  OAuth2 password grant (``POST`` form ``grant_type=password&username&password&service&
  client_id=entrepot&scope``) and remembered as OAuth2-only. Tokens are cached per
  (endpoint, realm, service, scope, user, password fingerprint) until ``expires_in`` (default
  60 s) minus a margin; a token the registry rejects is dropped and fetched once more.

Encodings: every request says ``Accept-Encoding: identity``; a body is passed on as the bytes
sent (blobs are bytes by digest), except that :meth:`UpstreamResponse.read
<entrepot.upstream.response.UpstreamResponse.read>` decodes a ``gzip``/``deflate`` body an
upstream compresses anyway (manifests and token answers are documents, HTTP-correctly decoded).

Secrets: passwords and tokens never appear in an exception message or a log record. Messages
name the login server or host and, where it helps, the user name. Credentials are sent to a
plain-http token realm only when the registry endpoint itself is plain http (which only a
config entry can make it).

Addresses: every exchange (the endpoint, each redirect hop, each token realm) goes through the
one transport, so a guarded transport (:class:`AiohttpTransport
<entrepot.upstream.aiohttp_transport.AiohttpTransport>` with an :class:`AddressGuard
<entrepot.upstream.guard.AddressGuard>`, as the server builds it) judges each address actually
connected to; a redirect from https to plain http is never followed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from entrepot.config import UpstreamEndpoint
from entrepot.errors import (
    UpstreamAddressRefused,
    UpstreamAuthenticationFailed,
    UpstreamError,
    UpstreamTlsError,
    UpstreamTooManyRequests,
    UpstreamUnreachable,
)
from entrepot.upstream.aiohttp_transport import AiohttpTransport
from entrepot.upstream.challenge import Challenge, parse_www_authenticate
from entrepot.upstream.endpoints import normalize_login_server, resolve_endpoint
from entrepot.upstream.response import UpstreamResponse, hostport
from entrepot.upstream.transport import Timeouts, Transport

__all__ = ["AuthKind", "Credentials", "LoginResult", "UpstreamClient"]

log = logging.getLogger("entrepot.upstream")

Credentials = tuple[str, str]
"""``(username, password)``; ``None`` in their place means anonymous."""

AuthKind = Literal["none", "basic", "bearer"]

CLIENT_ID = "entrepot"
USER_AGENT = "entrepot"
DEFAULT_TOKEN_LIFETIME = 60.0
MAX_REDIRECTS = 10
MAX_TOKEN_BODY = 1024 * 1024
"""The most bytes read of a token server's answer (real ones send a few kilobytes)."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({502, 503, 504})
_REPOSITORY_SCOPE_RE = re.compile(r"repository(?:\([^)]*\))?:(?P<name>[^:\s]+):[^\s]*")
_OAUTH_ERROR_RE = re.compile(r"[a-z_]{1,64}")
MAX_RETRY_AFTER = 86400.0 * 365
"""A ``Retry-After`` longer than this is read as this (it is not waited for anyway)."""


@dataclass(frozen=True)
class _Limits:
    """The tries and the timeout of the exchanges of one :meth:`UpstreamClient.request`."""

    attempts: int | None
    timeout: float | None


_LIMITS: ContextVar[_Limits | None] = ContextVar("entrepot_upstream_limits", default=None)


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a successful :meth:`UpstreamClient.login` (failures raise).

    :ivar login_server: the login server, normalised (lower case).
    :ivar endpoint: the base URL talked to.
    :ivar auth: what the upstream asked for: ``"none"`` (``/v2/`` answered 200 without
        credentials), ``"basic"`` or ``"bearer"``.
    :ivar verified: the upstream (or its token server) checked the credentials given and
        accepted them. ``False`` when no credentials were given, and when the upstream lets
        anyone in so that the credentials were never checked ("healthy but unverified").
    :ivar anonymous: no credentials were given.
    """

    login_server: str
    endpoint: str
    auth: AuthKind
    verified: bool
    anonymous: bool


@dataclass(frozen=True)
class _Scheme:
    """How an endpoint asks to be authenticated (from its latest challenge)."""

    kind: AuthKind
    realm: str | None = None
    service: str | None = None


@dataclass(frozen=True)
class _Token:
    value: str
    fetched_at: float  # time.monotonic()
    expires_at: float


_TokenKey = tuple[str, str, str, str, str, str]


class UpstreamClient:
    """Talks to upstream registries on behalf of entrepot.

    One instance is shared by the whole process: it caches each endpoint's challenge and the
    Bearer tokens. It does not own its transport (the caller closes it, or the session it was
    made from). Redirects are followed here, one :meth:`Transport.send
    <entrepot.upstream.transport.Transport.send>` per hop, whatever the transport's defaults.

    :param transport: the :class:`~entrepot.upstream.transport.Transport` every exchange goes
        through (redirect hops and token realms included); an ``aiohttp.ClientSession`` is
        wrapped in an unguarded :class:`AiohttpTransport
        <entrepot.upstream.aiohttp_transport.AiohttpTransport>` (its connector decides TLS
        trust: system CAs by default). Hosts named through the API need a guarded transport.
    :param upstreams: ``Config.upstreams`` (login server → endpoint URL).
    :param timeout: seconds for connecting, and for each whole small exchange (ping, token);
        for :meth:`request` it bounds the connect.
    :param stall_timeout: for :meth:`request`, seconds each read may wait (for the headers,
        then for each piece of the body): a stalled upstream fails, a long download does not
        (there is no overall limit). Default: ``timeout``.
    :param retries: extra tries of GET/HEAD after a connection failure, 502/503/504 or 429.
    :param backoff: first delay between tries, doubled each time.
    :param max_retry_after: a 429 whose ``Retry-After`` is longer than this is not waited for.
    """

    def __init__(
        self,
        transport: Transport | aiohttp.ClientSession,
        upstreams: Mapping[str, UpstreamEndpoint],
        *,
        timeout: float = 15,
        stall_timeout: float | None = None,
        retries: int = 2,
        backoff: float = 0.25,
        max_retry_after: float = 10.0,
    ) -> None:
        if isinstance(transport, aiohttp.ClientSession):
            transport = AiohttpTransport(transport)
        self._transport = transport
        self._upstreams = upstreams
        self._timeout = timeout
        self._stall_timeout = timeout if stall_timeout is None else stall_timeout
        self._retries = max(0, retries)
        self._backoff = backoff
        self._max_retry_after = max_retry_after
        self._schemes: dict[str, _Scheme] = {}
        self._tokens: dict[_TokenKey, _Token] = {}
        self._token_locks: dict[_TokenKey, asyncio.Lock] = {}
        self._oauth_realms: set[str] = set()
        self._fingerprint_key = secrets.token_bytes(32)

    # -- public API ------------------------------------------------------------------------------

    @property
    def stall_timeout(self) -> float:
        """Seconds each read of a response may wait (``stall_timeout``)."""
        return self._stall_timeout

    def endpoint(self, login_server: str) -> URL:
        """The base URL of ``login_server`` (see :mod:`entrepot.upstream.endpoints`)."""
        return resolve_endpoint(login_server, self._upstreams)

    async def login(
        self,
        login_server: str,
        credentials: Credentials | None,
        scope: str | None = None,
        *,
        fresh: bool = False,
    ) -> LoginResult:
        """Check that ``credentials`` (or anonymous access) get into ``login_server``.

        ``GET /v2/``, then whatever its challenge asks for, then ``GET /v2/`` again with the
        ``Authorization`` obtained. When ``/v2/`` needs no credentials but some were given,
        and ``scope`` names a repository (``repository:NAME:pull``), ``GET /v2/NAME/tags/list``
        is tried the same way to check them there; if nothing asks for them the result says
        ``verified=False``.

        :param scope: asked of the token server (and used as above); ``None`` for none.
        :param fresh: ignore cached tokens (always ask the token server).
        :raises UpstreamAuthenticationFailed: the upstream or its token server refused the
            credentials, or asks for credentials and none were given.
        :raises UpstreamUnreachable: no connection, or no answer in time.
        :raises UpstreamTlsError: the TLS handshake failed (untrusted certificate...).
        :raises UpstreamTooManyRequests: 429 after the retries.
        :raises UpstreamError: anything else unexpected (5xx, not a registry...).
        """
        name = normalize_login_server(login_server)
        endpoint = self.endpoint(name)
        v2 = _join(endpoint, "/v2/")
        status, challenges = await self._probe(v2)
        if status == 200:
            self._schemes[str(endpoint)] = _Scheme("none")
            verified = False
            if credentials is not None and scope:
                verified = await self._verify_scoped(name, endpoint, credentials, scope, fresh)
            return LoginResult(name, str(endpoint), "none", verified, credentials is None)
        if status != 401:
            raise _unexpected(name, status, "/v2/")
        scheme = self._learn(name, endpoint, challenges)
        await self._check_access(name, endpoint, scheme, credentials, scope, v2, fresh, {200})
        return LoginResult(
            name, str(endpoint), scheme.kind, credentials is not None, credentials is None
        )

    async def token_for(
        self, login_server: str, credentials: Credentials | None, scope: str | None
    ) -> str | None:
        """A Bearer token for ``scope`` (cached), or ``None`` if the upstream does not use them.

        Pings ``/v2/`` the first time an endpoint is seen, to learn its challenge.

        :raises UpstreamAuthenticationFailed: the token server refused the credentials.
        :raises UpstreamError: and its subclasses, as for :meth:`login`.
        """
        name = normalize_login_server(login_server)
        endpoint = self.endpoint(name)
        scheme = await self._scheme_for(name, endpoint)
        if scheme.kind != "bearer":
            return None
        token, _ = await self._bearer(name, endpoint, scheme, credentials, scope, fresh=False)
        return token

    async def auth_headers(
        self, login_server: str, credentials: Credentials | None, scope: str | None
    ) -> dict[str, str]:
        """``{"Authorization": ...}`` for a request to ``login_server`` in ``scope``, or ``{}``.

        For callers that send requests themselves. They must not send these headers to any
        other host (a redirect to blob storage, say); :meth:`request` takes care of that.
        """
        name = normalize_login_server(login_server)
        endpoint = self.endpoint(name)
        scheme = await self._scheme_for(name, endpoint)
        value, _ = await self._authorization(name, endpoint, scheme, credentials, scope, False)
        return {"Authorization": value} if value else {}

    async def request(
        self,
        method: str,
        login_server: str,
        path: str,
        *,
        credentials: Credentials | None,
        scope: str | None = None,
        headers: Mapping[str, str] | None = None,
        attempts: int | None = None,
        step_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send ``method path`` (``/v2/...``) to ``login_server``, authenticating as needed.

        Sends the ``Authorization`` the endpoint is known to want; on a 401 with a challenge
        it authenticates (Bearer: for the challenge's ``scope``, else ``scope``) and sends once
        more. Redirects are followed; ``Authorization`` is dropped when one leaves the
        endpoint's origin (scheme, host, port). The body is not read: the caller reads it
        (:meth:`UpstreamResponse.read`, :meth:`UpstreamResponse.iter_chunks`) or closes the
        response, best with ``async with``. Its ``url`` is the last hop's. Any status but 429
        and 5xx is returned, including a final 401 (no access), 403 and 404.

        :param attempts: tries of each exchange (default: 1 + the client's ``retries`` for
            GET/HEAD); ``1``: no retry, not even after a 429 or a 5xx.
        :param step_timeout: seconds each exchange of this call (token fetches included) may take
            to connect and to each read, instead of the client's ``timeout`` and
            ``stall_timeout``; it also bounds each read of the returned body.
        :raises UpstreamAuthenticationFailed: the token server refused the credentials.
        :raises UpstreamTooManyRequests: 429 after the retries.
        :raises UpstreamError: 5xx after the retries; and its other subclasses as for
            :meth:`login`.
        """
        if attempts is None and step_timeout is None:
            return await self._request(method, login_server, path, credentials, scope, headers)
        token = _LIMITS.set(_Limits(attempts, step_timeout))
        try:
            return await self._request(method, login_server, path, credentials, scope, headers)
        finally:
            _LIMITS.reset(token)

    async def _request(
        self,
        method: str,
        login_server: str,
        path: str,
        credentials: Credentials | None,
        scope: str | None,
        headers: Mapping[str, str] | None,
    ) -> UpstreamResponse:
        name = normalize_login_server(login_server)
        endpoint = self.endpoint(name)
        url = _join(endpoint, path)
        base = dict(headers or {})
        scheme = self._schemes.get(str(endpoint))
        sent: str | None = None
        if scheme is not None and scheme.kind != "none":
            sent, _ = await self._authorization(name, endpoint, scheme, credentials, scope, False)
        resp = await self._send_retrying(method, url, _with_auth(base, sent), stream=True)
        if resp.status != 401:
            return resp
        challenge = _pick(parse_www_authenticate(resp.headers.getall("WWW-Authenticate", [])))
        if challenge is None:
            return resp
        new = _scheme_of(challenge)
        if new.kind == "basic" and credentials is None:
            self._schemes[str(endpoint)] = new
            return resp
        await resp.close()
        self._schemes[str(endpoint)] = new
        wanted = challenge.get("scope") or scope
        value, _ = await self._authorization(
            name, endpoint, new, credentials, wanted, fresh=sent is not None
        )
        return await self._send_retrying(method, url, _with_auth(base, value), stream=True)

    def forget(self, login_server: str) -> None:
        """Drop what is cached for ``login_server``: its challenge and all its tokens."""
        endpoint = str(self.endpoint(login_server))
        self._schemes.pop(endpoint, None)
        for key in [k for k in self._tokens if k[0] == endpoint]:
            del self._tokens[key]

    # -- authentication --------------------------------------------------------------------------

    async def _probe(self, url: URL) -> tuple[int, list[Challenge]]:
        resp = await self._send_retrying("GET", url, {})
        async with resp:
            return resp.status, parse_www_authenticate(resp.headers.getall("WWW-Authenticate", []))

    def _learn(self, name: str, endpoint: URL, challenges: list[Challenge]) -> _Scheme:
        challenge = _pick(challenges)
        if challenge is None:
            schemes = ", ".join(sorted({c.scheme for c in challenges})) or "none"
            raise UpstreamError(
                f"The upstream {name} asks for an authentication scheme entrepot does not "
                f"support ({schemes})."
            )
        scheme = _scheme_of(challenge)
        self._schemes[str(endpoint)] = scheme
        return scheme

    async def _scheme_for(self, name: str, endpoint: URL) -> _Scheme:
        known = self._schemes.get(str(endpoint))
        if known is not None:
            return known
        status, challenges = await self._probe(_join(endpoint, "/v2/"))
        if status == 200:
            self._schemes[str(endpoint)] = _Scheme("none")
            return self._schemes[str(endpoint)]
        if status != 401:
            raise _unexpected(name, status, "/v2/")
        return self._learn(name, endpoint, challenges)

    async def _check_access(
        self,
        name: str,
        endpoint: URL,
        scheme: _Scheme,
        credentials: Credentials | None,
        scope: str | None,
        url: URL,
        fresh: bool,
        ok: set[int],
    ) -> None:
        """GET ``url`` with the ``Authorization`` ``scheme`` asks for; raise unless ``ok``."""
        if scheme.kind == "basic" and credentials is None:
            raise UpstreamAuthenticationFailed(
                f"The upstream {name} requires credentials and none were given."
            )
        for attempt in range(2):
            value, cached = await self._authorization(
                name, endpoint, scheme, credentials, scope, fresh or attempt > 0
            )
            resp = await self._send_retrying("GET", url, _with_auth({}, value))
            async with resp:
                status = resp.status
            if status in ok:
                return
            if status not in (401, 403):
                raise _unexpected(name, status, url.path)
            if cached and attempt == 0:
                self._drop_token(endpoint, scheme, credentials, scope)
                continue
            raise _refused(name, credentials, token_server=False)

    async def _verify_scoped(
        self, name: str, endpoint: URL, credentials: Credentials, scope: str, fresh: bool
    ) -> bool:
        """Check ``credentials`` on the repository of ``scope``; ``False`` if nothing asks."""
        match = _REPOSITORY_SCOPE_RE.search(scope)
        if match is None:
            return False
        url = _join(endpoint, f"/v2/{match['name']}/tags/list")
        status, challenges = await self._probe(url)
        if status != 401:
            return False
        challenge = _pick(challenges)
        if challenge is None:
            return False
        scheme = _scheme_of(challenge)
        wanted = challenge.get("scope") or scope
        await self._check_access(
            name, endpoint, scheme, credentials, wanted, url, fresh, {200, 404}
        )
        return True

    async def _authorization(
        self,
        name: str,
        endpoint: URL,
        scheme: _Scheme,
        credentials: Credentials | None,
        scope: str | None,
        fresh: bool,
    ) -> tuple[str | None, bool]:
        """The ``Authorization`` value for ``scheme``, and whether it came from the cache."""
        if scheme.kind == "none":
            return None, False
        if scheme.kind == "basic":
            return (_basic(credentials) if credentials is not None else None), False
        token, cached = await self._bearer(name, endpoint, scheme, credentials, scope, fresh)
        return f"Bearer {token}", cached

    def _token_key(
        self, endpoint: URL, scheme: _Scheme, credentials: Credentials | None, scope: str | None
    ) -> _TokenKey:
        user, fingerprint = "", ""
        if credentials is not None:
            user = credentials[0]
            fingerprint = hmac.new(
                self._fingerprint_key, credentials[1].encode(), hashlib.sha256
            ).hexdigest()
        return (
            str(endpoint),
            scheme.realm or "",
            scheme.service or "",
            scope or "",
            user,
            fingerprint,
        )

    def _drop_token(
        self, endpoint: URL, scheme: _Scheme, credentials: Credentials | None, scope: str | None
    ) -> None:
        self._tokens.pop(self._token_key(endpoint, scheme, credentials, scope), None)

    async def _bearer(
        self,
        name: str,
        endpoint: URL,
        scheme: _Scheme,
        credentials: Credentials | None,
        scope: str | None,
        fresh: bool,
    ) -> tuple[str, bool]:
        """A token for ``scope`` and whether it was cached; one fetch per key at a time."""
        key = self._token_key(endpoint, scheme, credentials, scope)
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        asked = time.monotonic()
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at > time.monotonic():
                if not fresh:
                    return cached.value, cached.fetched_at < asked
                if cached.fetched_at >= asked:
                    return cached.value, False  # fetched while this call waited: fresh enough
            token = await self._fetch_token(name, endpoint, scheme, credentials, scope)
            self._tokens[key] = token
            return token.value, False

    async def _fetch_token(
        self,
        name: str,
        endpoint: URL,
        scheme: _Scheme,
        credentials: Credentials | None,
        scope: str | None,
    ) -> _Token:
        realm = _realm_url(name, scheme.realm)
        if credentials is not None and realm.scheme == "http" and endpoint.scheme == "https":
            raise UpstreamError(
                f"The upstream {name} sends its token realm over plain http ({realm.host}); "
                "entrepot does not send credentials there."
            )
        scopes = scope.split() if scope else []
        started = time.monotonic()
        if credentials is None or str(realm) not in self._oauth_realms:
            query: list[tuple[str, str]] = []
            if scheme.service:
                query.append(("service", scheme.service))
            query.extend(("scope", s) for s in scopes)
            if credentials is not None:
                query.append(("account", credentials[0]))
            resp = await self._send_retrying(
                "GET", realm.update_query(query), _with_auth({}, _basic_or_none(credentials))
            )
            async with resp:
                if resp.status not in (404, 405) or credentials is None:
                    return await self._token_response(name, resp, credentials, started, "GET")
            # No GET here: an OAuth2-only token server (distribution's "OAuth2 Token
            # Authentication"). Remember it, and ask with the password grant.
            self._oauth_realms.add(str(realm))
        form = {
            "grant_type": "password",
            "username": credentials[0],
            "password": credentials[1],
            "client_id": CLIENT_ID,
        }
        if scheme.service:
            form["service"] = scheme.service
        if scopes:
            form["scope"] = " ".join(scopes)
        resp = await self._send(
            "POST",
            realm,
            {"Content-Type": "application/x-www-form-urlencoded"},
            body=urllib.parse.urlencode(form).encode(),
        )
        async with resp:
            await _raise_for_status(name, resp)
            return await self._token_response(name, resp, credentials, started, "POST")

    async def _token_response(
        self,
        name: str,
        resp: UpstreamResponse,
        credentials: Credentials | None,
        started: float,
        method: str,
    ) -> _Token:
        host = hostport(resp.url)
        if resp.status in (401, 403):
            raise _refused(name, credentials, token_server=True)
        if resp.status == 400:
            error = await _oauth_error(resp)
            if error in {"invalid_grant", "invalid_client", "unauthorized_client"}:
                raise _refused(name, credentials, token_server=True)
            detail = f" ({error})" if error else ""
            raise UpstreamError(
                f"The token server of upstream {name} ({host}) answered 400{detail}."
            )
        if resp.status != 200:
            raise UpstreamError(
                f"The token server of upstream {name} ({host}) answered {resp.status}."
            )
        raw = await resp.read(limit=MAX_TOKEN_BODY)
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            raise UpstreamError(
                f"The token server of upstream {name} ({host}) did not answer JSON."
            ) from None
        fields: dict[str, object] = body if isinstance(body, dict) else {}
        value = fields.get("token") or fields.get("access_token")
        if not isinstance(value, str) or not value:
            raise UpstreamError(f"The token server of upstream {name} ({host}) sent no token.")
        lifetime = DEFAULT_TOKEN_LIFETIME
        expires_in = fields.get("expires_in")
        if (
            isinstance(expires_in, int | float)
            and not isinstance(expires_in, bool)
            and expires_in > 0
        ):
            lifetime = float(expires_in)
        log.debug("upstream %s: token from %s via %s, valid %.0f s", name, host, method, lifetime)
        return _Token(value, time.monotonic(), started + lifetime - _lifetime_margin(lifetime))

    # -- HTTP ------------------------------------------------------------------------------------

    async def _send_retrying(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        *,
        stream: bool = False,
    ) -> UpstreamResponse:
        """``_send`` with retries for GET/HEAD; raises for 429 and 5xx."""
        tries = 1 + (self._retries if method in ("GET", "HEAD") else 0)
        limits = _LIMITS.get()
        if limits is not None and limits.attempts is not None:
            tries = max(1, min(tries, limits.attempts))
        delay = self._backoff
        for attempt in range(tries):
            last = attempt == tries - 1
            try:
                resp = await self._send(method, url, headers, stream=stream)
            except (UpstreamTlsError, UpstreamAddressRefused):
                raise  # neither changes by asking again
            except UpstreamUnreachable:
                if last:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
                continue
            wait: float | None = None
            if resp.status in _RETRY_STATUSES:
                wait = delay
            elif resp.status == 429:
                retry_after = _retry_after(resp.headers)
                wait = delay if retry_after is None else retry_after
                if wait > self._max_retry_after:
                    wait = None
            if wait is None or last:
                await _raise_for_status(hostport(url), resp)
                return resp
            await resp.close()
            log.debug("upstream %s answered %s; retrying in %.2f s", url.host, resp.status, wait)
            await asyncio.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        *,
        body: bytes | None = None,
        stream: bool = False,
    ) -> UpstreamResponse:
        """One request, redirects followed (one transport exchange per hop); ``Authorization``
        is not sent to another origin."""
        origin = _origin(url)
        hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
        limits = _LIMITS.get()
        if limits is not None and limits.timeout is not None:
            timeouts = Timeouts.stream(limits.timeout, read=limits.timeout)
        elif stream:
            timeouts = Timeouts.stream(self._timeout, read=self._stall_timeout)
        else:
            timeouts = Timeouts.exchange(self._timeout)
        for _ in range(MAX_REDIRECTS + 1):
            resp = await self._transport.send(method, url, hdrs, body, timeouts=timeouts)
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            await resp.close()
            try:
                target = url.join(URL(location))
            except ValueError:
                raise UpstreamError(
                    f"The upstream {hostport(url)} redirected to an invalid URL."
                ) from None
            if target.scheme not in ("http", "https") or not target.host:
                raise UpstreamError(f"The upstream {hostport(url)} redirected to a non-http URL.")
            if url.scheme == "https" and target.scheme == "http":
                raise UpstreamError(
                    f"The upstream {hostport(url)} redirected from https to plain http "
                    f"({hostport(target)}); entrepot does not follow such a redirect."
                )
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                hdrs.pop("Content-Type", None)
            if _origin(target) != origin:
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
            url = target
        raise UpstreamError(f"The upstream {hostport(url)} redirected too many times.")


# -- helpers -------------------------------------------------------------------------------------


def _join(endpoint: URL, path: str) -> URL:
    return URL(str(endpoint).rstrip("/") + "/" + path.lstrip("/"))


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, (url.host or "").lower(), url.port)


def _basic(credentials: Credentials) -> str:
    user, password = credentials
    if ":" in user:
        raise UpstreamAuthenticationFailed("An upstream user name cannot contain ':'.")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _basic_or_none(credentials: Credentials | None) -> str | None:
    return _basic(credentials) if credentials is not None else None


def _with_auth(headers: Mapping[str, str], value: str | None) -> dict[str, str]:
    out = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    if value:
        out["Authorization"] = value
    return out


def _pick(challenges: list[Challenge]) -> Challenge | None:
    """Bearer (with a realm) if offered, else Basic, else ``None``."""
    for challenge in challenges:
        if challenge.scheme == "bearer" and challenge.realm:
            return challenge
    for challenge in challenges:
        if challenge.scheme == "basic":
            return challenge
    return None


def _scheme_of(challenge: Challenge) -> _Scheme:
    if challenge.scheme == "bearer":
        return _Scheme("bearer", challenge.realm, challenge.get("service"))
    return _Scheme("basic")


def _realm_url(name: str, realm: str | None) -> URL:
    try:
        url = URL(realm or "")
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise UpstreamError(f"The upstream {name} names an invalid token realm.")
    return url


def _lifetime_margin(lifetime: float) -> float:
    """How long before its stated expiry a token stops being reused."""
    return min(10.0, lifetime / 4)


def _retry_after(headers: CIMultiDictProxy[str]) -> float | None:
    value = headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():  # not "²" or "٣": isdigit() alone takes those
        return min(float(value), MAX_RETRY_AFTER)
    if value:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return None


async def _raise_for_status(host: str, resp: UpstreamResponse) -> None:
    """429 → UpstreamTooManyRequests, 5xx → UpstreamError (the response is closed)."""
    if resp.status == 429:
        retry_after = _retry_after(resp.headers)
        await resp.close()
        hint = f"; retry after {retry_after:.0f} s" if retry_after is not None else ""
        raise UpstreamTooManyRequests(
            f"The upstream {host} is rate-limiting requests (429 Too Many Requests{hint})."
        )
    if resp.status >= 500:
        await resp.close()  # the reason phrase is the upstream's free text: never repeated
        raise UpstreamError(f"The upstream {host} answered {resp.status}.")


def _unexpected(name: str, status: int, path: str) -> UpstreamError:
    if status == 404 and path == "/v2/":
        return UpstreamError(f"The upstream {name} does not serve the registry API at /v2/ (404).")
    return UpstreamError(f"The upstream {name} answered {status} to GET {path}.")


def _refused(
    name: str, credentials: Credentials | None, *, token_server: bool
) -> UpstreamAuthenticationFailed:
    who = f"The token server of upstream {name}" if token_server else f"The upstream {name}"
    if credentials is None:
        return UpstreamAuthenticationFailed(f"{who} refused anonymous access.")
    return UpstreamAuthenticationFailed(
        f"{who} refused the credentials of user {credentials[0]!r}."
    )


async def _oauth_error(resp: UpstreamResponse) -> str | None:
    """The ``error`` of an OAuth2 error answer (RFC 6749 §5.2), if it is a plain code."""
    try:
        body = json.loads(await resp.read(limit=MAX_TOKEN_BODY))
    except (ValueError, UpstreamError):
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str) and _OAUTH_ERROR_RE.fullmatch(error):
        return error
    return None
