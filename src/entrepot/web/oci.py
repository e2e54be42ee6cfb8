"""The registry face: the OCI distribution API under ``/v2/``, mounted there by ``app.py``.

Every request goes, in this order, through:

1. **Authentication.** With ``[registry] anonymous_pull`` (by default: only while the server
   listens on loopback) a request without credentials passes; Basic credentials with an empty
   user name and password (``Basic Og==``: what skopeo sends when it has none) count as none,
   with or without anonymous pull. Otherwise, and whenever credentials are sent, they must be
   HTTP Basic with an API token's name as the user name and the token as the password
   (``docker login``, ``skopeo --creds NAME:TOKEN``, containerd's ``hosts.toml``), or
   ``Authorization: Bearer <token>``; both roles (``pull``, ``admin``) may pull. A token is
   checked with one point read per request, so a revoked token is refused from the moment its
   revocation commits. Failures are 401 ``UNAUTHORIZED`` with
   ``WWW-Authenticate: Basic realm="entrepot"`` (``GET /v2/`` too: it is how ``docker login``
   probes).
2. **The registry**, by its ``Host`` header (:mod:`entrepot.addressing`), in
   ``request[REGISTRY]``: a host that names no registry, the server's own host when no registry
   is the default, a registry that does not exist and a name held by several registries are all
   404 ``NAME_UNKNOWN`` whose message says which: a request never reaches another registry.
   A server that holds no registry yet says so, and how to create one; there, and only there,
   the ping (``GET /v2/``) still answers 200 once authentication passed, as distribution's
   does, so that a client goes on to its real request and shows that message (a client shows
   nothing of a failed ping's body). A host that names a registry that does not exist fails
   the ping too, so ``docker login`` to a wrong address fails.
3. **The route.** ``GET``/``HEAD`` of ``/v2/`` is 200 ``{}``; of ``/v2/_catalog`` the
   registry's cached repositories (no repository is named ``_catalog``: a name starts with a
   letter or digit). Under ``/v2/<name>/``:
   ``manifests/<reference>``, ``blobs/<digest>``, ``tags/list`` and ``referrers/<digest>``
   (``GET``, ``HEAD``), and the push API (``blobs/uploads/...``; ``PUT``/``DELETE`` of
   manifests, ``DELETE`` of blobs). ``<name>`` must be a valid repository name (400
   ``NAME_INVALID``).
4. **The cache rule** (:mod:`entrepot.proxy.resolution`, held in memory by
   :class:`~entrepot.proxy.directory.RegistryDirectory`): by target, or with ``?ns=<registry>``
   (mirror mode, as containerd sends it) by source. A repository no rule covers that holds
   cached content (its rule was deleted; not in mirror mode, which maps sources through rules)
   is served from the cache only (:mod:`entrepot.proxy.orphans`: what was cached, ``hit``,
   nothing fetched, the rest 404 ``MANIFEST_UNKNOWN``/``BLOB_UNKNOWN`` saying the rule is gone);
   any other is 404 ``NAME_UNKNOWN`` saying so and naming the registry; an ``ns`` that is not a
   login server is 400 ``NAME_INVALID``.
5. **Pushes are refused**: a push to a repository a rule covers is 403 ``DENIED`` naming the
   rule (its content comes from upstream only); any other push is 405 ``UNSUPPORTED``.
6. **Reads** validate the reference (400 ``TAG_INVALID``/``DIGEST_INVALID``), the ``n`` of
   ``tags/list`` and ``_catalog`` (400 ``PAGINATION_NUMBER_INVALID`` unless a non-negative
   integer; more than :data:`MAX_PAGE` is :data:`MAX_PAGE`) and go to the engine's
   :class:`~entrepot.proxy.engine.Repository`: manifests with ``Content-Type``,
   ``Docker-Content-Digest``, ``Content-Length`` and ``ETag``; blobs streamed (with
   ``Accept-Ranges: bytes``; one ``Range`` is 206 with ``Content-Range``, an unsatisfiable or
   malformed one 416 with ``Content-Range: bytes */size``, several ranges the whole blob with
   200: :mod:`entrepot.web.ranges`; a blob not cached yet is filled whole first); tags as
   ``{"name", "tags"}`` (sorted, after ``last``) with a relative ``Link`` to the next page when
   the page is full (carrying ``ns`` in mirror mode). The catalog (before step 4: it names no
   repository, and ``ns`` changes nothing) is ``{"repositories"}``: the target names of the
   repositories the registry holds a manifest of, whatever rule filled them, sorted and paged
   the same way (:meth:`~entrepot.proxy.engine.Engine.catalog`). The cache
   header (:data:`~entrepot.proxy.engine.CACHE_HEADER`) says where the content came from.
   :func:`entrepot.app.build_app` wires :class:`~entrepot.proxy.cache.CachingEngine`; the
   stand-in :class:`~entrepot.proxy.engine.NotCachedEngine` (404, no tags) serves tests of the
   face alone.

Every response carries ``Docker-Distribution-API-Version: registry/2.0`` and an
``X-Request-Id`` of its own (never ``x-ms-request-id``: this is not the management API).
Errors are OCI JSON, ``{"errors": [{"code", "message", "detail"}]}``, with the status and the
OCI code of the domain error's row in the error table (:mod:`entrepot.errors`); ``detail`` is
``{"target": ...}`` when the error names one, else ``null``. A path under ``/v2/`` with no route
is 404 ``UNSUPPORTED`` (distribution's own router answers an unformatted 404 there; the OCI
spec's ``UNSUPPORTED`` says best that this registry has no such API, and ``NAME_UNKNOWN`` stays
reserved for registries and repositories that do not exist); a method a route does not allow is
405 ``UNSUPPORTED``; anything unexpected is 500 ``UNKNOWN`` with a message that says nothing
about it (the traceback goes to the log only).
"""

from __future__ import annotations

import logging
import re
from random import getrandbits
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from entrepot import errors as e
from entrepot.addressing import DEFAULT, RegistryAddressing
from entrepot.metadata.records import RegistryHead
from entrepot.oci import Digest, parse_login_server, parse_reference, parse_repository
from entrepot.proxy import (
    CACHE_HEADER,
    BlobDescriptor,
    Engine,
    ManifestContent,
    RegistryDirectory,
    Repository,
    Resolution,
)
from entrepot.storage import FileSpan
from entrepot.web.access_log import PRINCIPAL
from entrepot.web.auth import TokenAuthenticator, is_empty_basic
from entrepot.web.ranges import ByteRange, RangeNotSatisfiable, parse_range
from entrepot.web.responses import Handler, domain_error, json_response
from entrepot.web.sendfile import send_span

__all__ = [
    "API_VERSION",
    "API_VERSION_HEADER",
    "CHALLENGE",
    "MAX_PAGE",
    "MOUNT",
    "REGISTRY",
    "REQUEST_ID_HEADER",
    "RegistryFace",
    "build_oci_app",
    "oci_error",
]

log = logging.getLogger("entrepot.web.oci")

MOUNT = "/v2"
API_VERSION_HEADER = "Docker-Distribution-API-Version"
API_VERSION = "registry/2.0"
REQUEST_ID_HEADER = "X-Request-Id"
CHALLENGE = 'Basic realm="entrepot"'
"""The ``WWW-Authenticate`` challenge of every 401 of the face."""
MAX_PAGE = 1000
"""The most names one ``tags/list`` or ``_catalog`` page holds, whatever ``n`` asks."""
REGISTRY = web.RequestKey("registry", RegistryHead)
"""The registry a request is addressed to."""
REQUEST_ID = web.RequestKey("oci_request_id", str)
"""The ``X-Request-Id`` of a request's answer."""

PUSH_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_METHODS = frozenset({"GET", "HEAD"})
# (kind, pattern) tried in order; <name> greedy, as distribution's router matches it
_ROUTES = (
    ("catalog", re.compile(r"_catalog(?P<name>)(?P<arg>)")),
    ("upload", re.compile(r"(?P<name>.+)/blobs/uploads/?(?P<arg>[^/]*)")),
    ("manifest", re.compile(r"(?P<name>.+)/manifests/(?P<arg>[^/]+)")),
    ("blob", re.compile(r"(?P<name>.+)/blobs/(?P<arg>[^/]+)")),
    ("tags", re.compile(r"(?P<name>.+)/tags/list(?P<arg>)")),
    ("referrers", re.compile(r"(?P<name>.+)/referrers/(?P<arg>[^/]+)")),
)


class _NoRegistryYet(e.ResourceNotFound):
    """The server's own host was addressed and the server holds no registry at all."""


def oci_error(err: e.EntrepotError) -> web.Response:
    """``err`` as OCI error JSON with the error table's status and OCI code."""
    detail: dict[str, Any] | None = {"target": err.target} if err.target else None
    body = {"errors": [{"code": err.kind.oci_code, "message": err.message, "detail": detail}]}
    response = json_response(err.status, body)
    if isinstance(err, e.Unauthenticated):
        response.headers["WWW-Authenticate"] = CHALLENGE
    return response


def _request_id() -> str:
    """A fresh request id in the form of a version-4 UUID, from the process's PRNG: it must be
    unique, not unguessable, and ``uuid.uuid4`` (``os.urandom``) costs several times more."""
    h = f"{getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _route(path: str) -> tuple[str, str, str] | None:
    """``(kind, name, argument)`` of a path below ``/v2/``, or ``None``."""
    for kind, pattern in _ROUTES:
        match = pattern.fullmatch(path)
        if match is not None:
            return kind, match["name"], match["arg"]
    return None


def _page(request: web.Request) -> tuple[int, str]:
    """``(limit, after)`` of a listing: ``n`` (default and cap :data:`MAX_PAGE`) and ``last``.

    :raises PaginationNumberInvalid: when ``n`` is not a non-negative integer.
    """
    text = request.query.get("n")
    limit = MAX_PAGE
    if text is not None:
        if not text.isascii() or not text.isdigit():
            raise e.PaginationNumberInvalid(
                f"The page size n={text[:40]!r} is not a non-negative integer.", target="n"
            )
        digits = text.lstrip("0")
        limit = MAX_PAGE if len(digits) > len(str(MAX_PAGE)) else min(int(digits or 0), MAX_PAGE)
    return limit, request.query.get("last", "")


def _next_link(path: str, limit: int, page: list[str], query: dict[str, str]) -> dict[str, str]:
    """The ``Link`` header of the page after a full ``page`` (none after a short one)."""
    if not limit or len(page) < limit:
        return {}
    query = {"n": str(limit), "last": page[-1], **query}
    return {"Link": f'<{MOUNT}/{path}?{urlencode(query)}>; rel="next"'}


def _accepted(request: web.Request) -> list[str]:
    """The media types of every ``Accept`` header, in order, without parameters."""
    types: list[str] = []
    for header in request.headers.getall("Accept", ()):
        for item in header.split(","):
            media_type = item.split(";", 1)[0].strip()
            if media_type:
                types.append(media_type)
    return types


class RegistryFace:
    """The middleware and handlers of the face."""

    def __init__(
        self,
        addressing: RegistryAddressing,
        directory: RegistryDirectory,
        engine: Engine,
        authenticator: TokenAuthenticator,
        *,
        anonymous_pull: bool,
    ) -> None:
        self.addressing = addressing
        self.directory = directory
        self.engine = engine
        self.authenticator = authenticator
        self.anonymous_pull = anonymous_pull

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = _request_id()
        try:
            await self.authenticate(request)
            try:
                request[REGISTRY] = await self.registry_for(request.headers.get("Host", ""))
            except _NoRegistryYet:
                if request.path.rstrip("/") != MOUNT or request.method not in READ_METHODS:
                    raise
                # the ping of a fresh install: 200, so the client's real request shows why
            response = await handler(request)
        except web.HTTPNotFound:
            response = oci_error(
                e.RouteNotFound(f"This registry has no API at {request.method} {request.path}.")
            )
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            response = oci_error(
                e.MethodNotAllowed(
                    f"The method {request.method} is not allowed at {request.path}; "
                    f"allowed: {allowed}."
                )
            )
        except Exception as exc:
            response = oci_error(domain_error(exc, request, log))
        return response

    async def authenticate(self, request: web.Request) -> None:
        """Let the request pass, or raise (see the module doc, step 1)."""
        header = request.headers.get("Authorization", "")
        if not header or is_empty_basic(header):  # skopeo without credentials sends ":"
            if self.anonymous_pull:
                return
            raise e.Unauthenticated(
                "Authentication required. Send HTTP Basic credentials: an API token's name as "
                "the user name and the token as the password (docker login; skopeo --creds "
                "NAME:TOKEN); entrepot token create -n NAME --role pull makes one."
            )
        if header.partition(" ")[0].lower() == "bearer":
            principal = await self.authenticator.bearer(header)
        else:
            principal = await self.authenticator.authenticate_basic(header)
        request[PRINCIPAL] = principal.name
        if not principal.may_pull:
            raise e.AuthorizationFailed(
                f"The token {principal.name!r} has the role '{principal.role.value}', which "
                "may not pull."
            )

    async def registry_for(self, host: str) -> RegistryHead:
        """The one registry that ``Host: host`` addresses.

        :raises ResourceNotFound: (``NAME_UNKNOWN``) when it addresses none, a registry that does
            not exist, or a name that several registries hold; when the server holds no
            registry at all, its subclass ``_NoRegistryYet`` that says how to create one.
        """
        target = self.addressing.registry_name_for_host(host)
        shown = host[:255]
        domain = self.addressing.domain
        if target is None:
            raise e.ResourceNotFound(
                f"No registry answers at host '{shown}': registries of this server are "
                f"addressed as <registry name>.{domain}.",
                target="Host",
            )
        if target is DEFAULT:
            name = self.addressing.default_registry
            if name is None:
                first = await self.directory.first()
                if not first:
                    raise _NoRegistryYet(
                        "This server has no registry yet: create one (entrepot registry create "
                        "-n NAME -g GROUP) and a cache rule (entrepot cache create -n RULE -r "
                        "NAME -g GROUP -s docker.io/library/alpine -t alpine), then pull "
                        f"{shown or 'HOST:PORT'}/alpine.",
                        target="Host",
                    )
                if len(first) > 1:
                    how = (
                        f"address a registry by its login server, <registry name>.{domain}"
                        if domain
                        else "set [server] registry_domain to address each registry by name"
                    )
                    raise e.ResourceNotFound(
                        f"No registry answers at the server's own host '{shown}': the server "
                        "holds several registries, and [server] default_registry is not "
                        f"set; {how}.",
                        target="Host",
                    )
                return first[0]
            what = f"The default registry '{name}' ([server] default_registry)"
        else:
            name = target
            what = f"The registry '{name}'"
        heads = await self.directory.named(name)
        if not heads:
            raise e.ResourceNotFound(f"{what} does not exist.", target="Host")
        if len(heads) > 1:
            raise e.ResourceNotFound(
                f"{what} is ambiguous: registries of that name exist in several resource groups.",
                target="Host",
            )
        return heads[0]

    async def version_check(self, _request: web.Request) -> web.Response:
        """``GET /v2/``: the registry speaks the distribution API (and the caller may use it)."""
        return json_response(200, {})

    # -- /v2/<name>/... -------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Every path below ``/v2/`` (see the module doc, steps 3 to 6)."""
        route = _route(request.match_info["path"])
        if route is None:
            raise web.HTTPNotFound()
        kind, name, arg = route
        method = request.method
        if kind == "catalog":
            if method not in READ_METHODS:
                raise web.HTTPMethodNotAllowed(method, sorted(READ_METHODS))
            return await self.catalog(request)
        push = kind == "upload" or (kind in ("manifest", "blob") and method in PUSH_METHODS)
        if not push and method not in READ_METHODS:
            raise web.HTTPMethodNotAllowed(method, sorted(READ_METHODS))
        parse_repository(name)
        registry = request[REGISTRY]
        ns = request.query.get("ns")
        rules = await self.directory.rules(registry)
        if ns is not None:
            parse_login_server(ns, target="ns")
            resolution = rules.resolve_mirror(ns, name)
        else:
            resolution = rules.resolve(name)
        if push:
            self.refuse_push(registry, name, ns, resolution)
        repository: Repository | None
        if resolution is not None:
            repository = self.engine.repository(resolution)
        elif ns is None:  # what a deleted rule cached stays pullable, from the cache only
            repository = await self.engine.cached_repository(registry.id, registry.name, name)
        else:
            repository = None
        if repository is None:
            covered = f"'{ns}/{name}' (mirror mode)" if ns is not None else f"'{name}'"
            raise e.RepositoryUnknown(
                f"No cache rule of registry '{registry.name}' covers the repository {covered}: "
                "nothing can be pulled there. Create a cache rule whose "
                f"{'sourceRepository' if ns is not None else 'targetRepository'} covers it."
            )
        if kind == "manifest":
            return await self.manifest(request, repository, arg)
        if kind == "blob":
            return await self.blob(request, repository, arg)
        if kind == "tags":
            return await self.tags(request, repository)
        return await self.referrers(request, repository, arg)

    @staticmethod
    def refuse_push(
        registry: RegistryHead, name: str, ns: str | None, resolution: Resolution | None
    ) -> None:
        """:raises RepositoryReadOnly: ``DENIED`` for a rule's repository.
        :raises PushUnsupported: ``UNSUPPORTED`` for any other."""
        if resolution is not None:
            raise e.RepositoryReadOnly(
                f"The repository '{resolution.repository}' of registry '{registry.name}' is "
                f"read-only: cache rule '{resolution.rule.name}' fills it from "
                f"{resolution.upstream.login_server}/{resolution.upstream.repository}; push "
                "there instead."
            )
        shown = f"{ns}/{name}" if ns is not None else name
        raise e.PushUnsupported(
            f"Registry '{registry.name}' does not accept pushes (to '{shown}' or anywhere): "
            "it is a pull-through cache."
        )

    async def manifest(
        self, request: web.Request, repository: Repository, reference: str
    ) -> web.Response:
        parsed = parse_reference(reference)
        content = await repository.manifests.get(parsed, _accepted(request))
        response = _manifest_response(content)
        if _etag_matches(request.headers.get("If-None-Match"), str(content.digest)):
            response.set_status(304)  # as distribution: the client's copy is this one
            response.body = b""
        return response

    async def blob(
        self, request: web.Request, repository: Repository, digest_text: str
    ) -> web.StreamResponse:
        digest = Digest.parse(digest_text)
        if request.method == "HEAD":
            found = await repository.blobs.stat(digest)
            headers = {
                "Content-Length": str(found.size),
                "Content-Type": found.media_type or "application/octet-stream",
                "Docker-Content-Digest": str(found.digest),
                "ETag": f'"{found.digest}"',
                "Accept-Ranges": "bytes",
                CACHE_HEADER: found.origin.value,
            }
            return web.Response(headers=headers)
        header = request.headers.get("Range")
        if header is None:
            return await self.send_blob(request, repository, digest, None, None)
        # A range needs the size first. Opening 0 bytes of a blob that is not cached yet
        # starts its fill (whole, once, shared with concurrent readers as any fill) and
        # answers as soon as the upstream told the size; the range then streams from the
        # fill as its bytes arrive.
        probe = await repository.blobs.open(digest, 0, 0)
        try:
            found = probe.descriptor
        finally:
            await probe.close()
        try:
            wanted = parse_range(header, found.size)
        except RangeNotSatisfiable:
            return web.Response(
                status=416,
                headers={
                    "Content-Range": f"bytes */{found.size}",
                    "Accept-Ranges": "bytes",
                    "Docker-Content-Digest": str(found.digest),
                },
            )
        return await self.send_blob(request, repository, digest, wanted, found)

    async def send_blob(
        self,
        request: web.Request,
        repository: Repository,
        digest: Digest,
        wanted: ByteRange | None,
        probed: BlobDescriptor | None,
    ) -> web.StreamResponse:
        """Stream the blob, or its range ``wanted`` (206); ``probed`` is what an earlier open
        said of it (its origin is the one reported: it may have filled the cache)."""
        if wanted is None:
            reader = await repository.blobs.open(digest)
        else:
            reader = await repository.blobs.open(digest, wanted.start, wanted.length)
        try:
            found = reader.descriptor
            origin = (probed or found).origin
            response = web.StreamResponse(
                headers={
                    "Content-Type": (probed or found).media_type
                    or found.media_type
                    or "application/octet-stream",
                    "Docker-Content-Digest": str(found.digest),
                    "ETag": f'"{found.digest}"',
                    "Accept-Ranges": "bytes",
                    CACHE_HEADER: origin.value,
                    API_VERSION_HEADER: API_VERSION,
                }
            )
            if wanted is None:
                response.content_length = found.size
            else:
                response.set_status(206)
                response.headers["Content-Range"] = wanted.content_range(found.size)
                response.content_length = wanted.length
            writer = await response.prepare(request)
            assert writer is not None
            try:
                async for chunk in reader.chunks():
                    if isinstance(chunk, FileSpan):  # verified bytes of a local file
                        await send_span(request, response, writer, chunk)
                    else:
                        await response.write(chunk)
            except Exception as exc:  # the headers are sent: all that is left is to hang up
                where = repository.resolution.repository
                if isinstance(exc, e.EntrepotError):  # a failed fill: it says why
                    log.warning("serving blob %s of %s cut short: %s", digest, where, exc)
                elif isinstance(exc, ConnectionError):
                    log.debug("client hung up while served blob %s of %s", digest, where)
                else:
                    log.exception("serving blob %s of %s failed", digest, where)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
        finally:
            await reader.close()

    async def tags(self, request: web.Request, repository: Repository) -> web.Response:
        """``tags/list``: the cached tags, sorted, paged by ``n`` and ``last``."""
        limit, after = _page(request)
        tags = await repository.tags.list(after, limit) if limit else []
        name = request.match_info["path"][: -len("/tags/list")]
        ns = {"ns": request.query["ns"]} if "ns" in request.query else {}
        headers = _next_link(f"{name}/tags/list", limit, tags, ns)
        return json_response(200, {"name": name, "tags": tags}, headers)

    async def catalog(self, request: web.Request) -> web.Response:
        """``_catalog``: the registry's cached repositories, sorted, paged by ``n`` and
        ``last``."""
        limit, after = _page(request)
        registry = request[REGISTRY]
        names = await self.engine.catalog(registry.id, after, limit) if limit else []
        headers = _next_link("_catalog", limit, names, {})
        return json_response(200, {"repositories": names}, headers)

    async def referrers(
        self, request: web.Request, repository: Repository, digest_text: str
    ) -> web.Response:
        subject = Digest.parse(digest_text)
        artifact_type = request.query.get("artifactType")
        content = await repository.referrers.index(subject, artifact_type)
        response = _manifest_response(content)
        if artifact_type is not None:
            response.headers["OCI-Filters-Applied"] = "artifactType"
        return response


def _etag_matches(header: str | None, digest: str) -> bool:
    """Whether ``If-None-Match`` names the manifest (quoted or not, or ``*``)."""
    if not header:
        return False
    tags = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return "*" in tags or digest in tags


def _manifest_response(content: ManifestContent) -> web.Response:
    """A manifest's exact bytes with its media type, digest, length and ``ETag`` (a ``HEAD``
    gets the same headers without the body)."""
    digest = str(content.digest)
    return web.Response(
        body=content.data,
        headers={
            "Content-Type": content.media_type,
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            CACHE_HEADER: content.origin.value,
        },
    )


async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
    """Put the face's own headers on every answer as its headers are sent, streamed ones
    (blobs) included."""
    response.headers[API_VERSION_HEADER] = API_VERSION
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


def build_oci_app(face: RegistryFace) -> web.Application:
    """The registry face, to be mounted at :data:`MOUNT`."""
    app = web.Application(middlewares=[face.middleware])
    app.on_response_prepare.append(_stamp)
    app.router.add_get("/", face.version_check)
    app.router.add_get("", face.version_check)  # /v2 (no trailing slash) answers the same
    app.router.add_route("*", "/{path:.+}", face.dispatch)
    return app
