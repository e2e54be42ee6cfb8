"""The ARM routes: thin handlers over :class:`entrepot.management.Management`.

Paths are matched on the raw (still percent-encoded) path, one segment at a time, so a name
that contains an encoded ``/`` is a 400 naming that name rather than a confusing 404. Literal
segments (``resourceGroups``, ``providers`` ...) are case-insensitive, as in ARM.

Wire behaviour (what the genuine SDK depends on):

* PUT/PATCH answer 201 (new) or 200 (existing) with the resource, ``Azure-AsyncOperation`` and
  ``Retry-After``; the status URL answers 200 with ``{"id","name","status",...}``.
* DELETE answers 202 with ``Location`` (``.../operationResults/{id}``: 202 while running, 204
  when done) or 204 when the resource does not exist.
* Lists are ``{"value": [...], "nextLink": ...}`` with ``nextLink`` only when more follows.
* ``POST .../credentialSets/{name}/validate`` (an entrepot extension, after ECR's
  ValidatePullThroughCacheRule) measures the set's credential health now and answers 200 with
  the credential set.
* Every response carries ``x-ms-request-id``; every error is ``{"error": {code, message,
  target}}`` with the status from the error table (the middleware of
  :func:`entrepot.web.responses.management_errors`).
* A path of another shape is a 404 for anyone; any other request is authenticated before its
  names, api-version or body are validated (a malformed name without a valid token is a 401).
* A PUT/PATCH body must be JSON: another ``Content-Type`` is 415 ``UnsupportedMediaType``.
* Absolute URLs (``Azure-AsyncOperation``, ``Location``, ``nextLink``) start with
  :class:`entrepot.web.responses.BaseUrl`: ``public_url`` or the listen address, never ``Host``.
* A ``$skipToken`` not made by this server is 400 ``InvalidPropertyValue`` (target
  ``$skipToken``), never a restart at the first page.

:func:`build_arm_app` makes the face: a sub-application that ``app.py`` mounts at
``/subscriptions``; ``app.py`` also routes :data:`CASE_VARIANTS` (``/SUBSCRIPTIONS/...``) of
the root to :meth:`ArmApi.dispatch`, since a mount's prefix is matched exactly.
"""

from __future__ import annotations

import logging
from base64 import b64decode, urlsafe_b64encode
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import orjson
from aiohttp import web

from entrepot import errors as e
from entrepot.config import Config
from entrepot.management import (
    Accepted,
    Actor,
    Management,
    OperationState,
    OperationStatus,
    Page,
    RegistryRef,
)
from entrepot.metadata.records import ResourceKind as Kind
from entrepot.models import Model, child_resource_id, format_datetime
from entrepot.web.auth import TokenAuthenticator
from entrepot.web.responses import BaseUrl, json_response, management_errors

log = logging.getLogger("entrepot.web.arm")

API_VERSIONS = frozenset({"2023-07-01", "2025-04-01", "2025-11-01"})
PROVIDER_SEGMENTS = ("providers", "microsoft.containerregistry", "registries")
MOUNT = "/subscriptions"  # where app.py mounts the face
CASE_VARIANTS = r"/{mount:(?i:subscriptions)}{tail:(?:/[\s\S]*)?}"
"""A root route for :meth:`ArmApi.dispatch`: ``/SUBSCRIPTIONS/...`` and the other spellings
that the face mounted at :data:`MOUNT` (matched exactly) does not see, routed as ARM does."""

MANAGEMENT_KEY = web.AppKey("management", Management)
CONFIG_KEY = web.AppKey("config", Config)
ERROR_STATUS = {kind.arm_code: kind.status for kind in e.error_table().values()}


@dataclass(frozen=True)
class Route:
    """A parsed ARM path."""

    subscription: str
    resource_group: str
    registry: str | None = None
    kind: Kind | None = None  # child collection (cacheRules / credentialSets), if any
    child: str | None = None
    op_segment: str | None = None  # operationStatuses | operationResults
    op_id: str | None = None
    action: str | None = None  # a POST action on a child resource (``validate``)

    @property
    def ref(self) -> RegistryRef:
        assert self.registry is not None
        return RegistryRef(self.subscription, self.resource_group, self.registry)

    @property
    def resource_id(self) -> str:
        rid = self.ref.resource_id
        if self.kind is not None and self.child is not None:
            rid = child_resource_id(rid, self.kind.value, self.child)
        return rid


def parse_path(raw_path: str) -> Route:
    """Split an ARM path into a :class:`Route`.

    :raises RouteNotFound: when the path is not one of this provider's resources.
    :raises InvalidResourceName: when a name segment contains a ``/`` (``%2F``) or is empty.
    """
    raw = raw_path.split("?", 1)[0].rstrip("/")
    parts = raw.split("/")[1:]

    def name(i: int, what: str) -> str:
        value = unquote(parts[i])
        if not value or "/" in value:
            raise e.InvalidResourceName(f"The {what} {value!r} is invalid.", target=what)
        return value

    def literal(i: int, *expected: str) -> bool:
        return i < len(parts) and parts[i].lower() in expected

    not_found = e.RouteNotFound(
        "The requested resource type is not supported by this server. Expected "
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries"
        "[/{name}[/cacheRules|/credentialSets[/{name}]]]."
    )
    if not (
        len(parts) >= 7
        and literal(0, "subscriptions")
        and literal(2, "resourcegroups")
        and all(literal(4 + i, seg) for i, seg in enumerate(PROVIDER_SEGMENTS))
    ):
        raise not_found
    sub, rg = name(1, "subscriptionId"), name(3, "resourceGroupName")
    if len(parts) == 7:
        return Route(sub, rg)
    registry = name(7, "registryName")
    rest = parts[8:]
    if not rest:
        return Route(sub, rg, registry)
    if rest[0].lower() in ("operationstatuses", "operationresults") and len(rest) == 2:
        return Route(sub, rg, registry, None, None, rest[0].lower(), name(9, "operationId"))
    kinds = {"cacherules": Kind.CACHE_RULE, "credentialsets": Kind.CREDENTIAL_SET}
    kind = kinds.get(rest[0].lower())
    if kind is None:
        raise not_found
    if len(rest) == 1:
        return Route(sub, rg, registry, kind)
    what = "cacheRuleName" if kind is Kind.CACHE_RULE else "credentialSetName"
    child = name(9, what)
    if len(rest) == 2:
        return Route(sub, rg, registry, kind, child)
    if len(rest) == 3 and kind is Kind.CREDENTIAL_SET and rest[2].lower() == "validate":
        return Route(sub, rg, registry, kind, child, action="validate")
    if len(rest) == 4 and rest[2].lower() in ("operationstatuses", "operationresults"):
        return Route(sub, rg, registry, kind, child, rest[2].lower(), name(11, "operationId"))
    raise not_found


class ArmApi:
    """The request handlers; one instance per application."""

    def __init__(
        self, management: Management, config: Config, authenticator: TokenAuthenticator
    ) -> None:
        self.management = management
        self.config = config
        self.authenticator = authenticator
        self.base_url = BaseUrl(config.server)

    # -- dispatch -------------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Answer one request under ``/subscriptions`` (any case of the fixed words).

        A path that is not this provider's shape is a 404 for anyone; everything else is
        authenticated first, so a malformed name without a valid token is a 401.
        """
        try:
            route = parse_path(request.raw_path)
        except e.InvalidResourceName:
            await self.authenticator.authenticate(request)
            raise
        actor = Actor(await self.authenticator.authenticate(request))
        version = _api_version(request)
        method = request.method
        if route.op_segment is not None:
            _allow(method, "GET")
            return await self._operation(request, route, version)
        if route.registry is None:
            _allow(method, "GET")
            return self._page_response(
                request,
                version,
                await self.management.registries.list(
                    route.subscription, route.resource_group, _skip_token(request)
                ),
            )
        if route.kind is None:
            _allow(method, "GET", "PUT", "DELETE")
            if method == "GET":
                registry = await self.management.registries.get(route.ref)
                return json_response(200, registry.to_arm())
            if method == "PUT":
                body = await self._body(request)
                created = await self.management.registries.put(route.ref, body, actor)
                return self._accepted(request, version, created)
            return self._deleted(
                request, version, await self.management.registries.delete(route.ref, actor)
            )
        service: Any = (
            self.management.cache_rules
            if route.kind is Kind.CACHE_RULE
            else self.management.credential_sets
        )
        if route.child is None:
            _allow(method, "GET")
            page: Page[Any] = await service.list(route.ref, _skip_token(request))
            return self._page_response(request, version, page)
        if route.action == "validate":
            _allow(method, "POST")
            validated = await self.management.credential_sets.validate(route.ref, route.child)
            return json_response(200, validated.to_arm())
        _allow(method, "GET", "PUT", "PATCH", "DELETE")
        if method == "GET":
            model: Model = await service.get(route.ref, route.child)
            return json_response(200, model.to_arm())
        if method == "DELETE":
            return self._deleted(
                request, version, await service.delete(route.ref, route.child, actor)
            )
        body = await self._body(request)
        accepted: Accepted[Any] = await (
            service.put(route.ref, route.child, body, actor)
            if method == "PUT"
            else service.patch(route.ref, route.child, body, actor)
        )
        return self._accepted(request, version, accepted)

    # -- pieces ---------------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> Any:
        _require_json(request)
        raw = await request.read()
        if not raw.strip():
            raise e.InvalidRequestContent("The request body is empty; a JSON object is required.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise e.InvalidRequestContent(f"The request body is not valid JSON: {exc}.") from None

    def _base(self, request: web.Request) -> str:
        return self.base_url.of(request)

    def _op_url(
        self, request: web.Request, resource_id: str, segment: str, op_id: str, v: str
    ) -> str:
        return f"{self._base(request)}{_quote_id(resource_id)}/{segment}/{op_id}?api-version={v}"

    def _accepted(
        self, request: web.Request, version: str, accepted: Accepted[Any]
    ) -> web.Response:
        assert accepted.operation_id is not None and accepted.resource is not None
        headers = {
            "Azure-AsyncOperation": self._op_url(
                request, accepted.resource_id, "operationStatuses", accepted.operation_id, version
            ),
            "Retry-After": str(self.config.arm.retry_after),
        }
        return json_response(201 if accepted.created else 200, accepted.resource.to_arm(), headers)

    def _deleted(self, request: web.Request, version: str, accepted: Accepted[Any]) -> web.Response:
        if accepted.operation_id is None:
            return web.Response(status=204)
        location = self._op_url(
            request, accepted.resource_id, "operationResults", accepted.operation_id, version
        )
        return web.Response(
            status=202,
            headers={"Location": location, "Retry-After": str(self.config.arm.retry_after)},
        )

    def _page_response(self, request: web.Request, version: str, page: Page[Any]) -> web.Response:
        body: dict[str, Any] = {"value": [item.to_arm() for item in page.items]}
        if page.next_after is not None:
            token = encode_skip_token(page.next_after)
            body["nextLink"] = (
                f"{self._base(request)}{request.raw_path.split('?', 1)[0]}"
                f"?api-version={version}&$skipToken={quote(token, safe='')}"
            )
        return json_response(200, body)

    async def _operation(self, request: web.Request, route: Route, version: str) -> web.Response:
        assert route.op_id is not None
        op = await self.management.get_operation(route.resource_id, route.op_id)
        retry = {"Retry-After": str(self.config.arm.retry_after)}
        if route.op_segment == "operationresults":
            if op.status is OperationState.IN_PROGRESS:
                location = self._op_url(request, op.resource_id, "operationResults", op.id, version)
                return web.Response(status=202, headers={"Location": location, **retry})
            if op.status is OperationState.SUCCEEDED:
                return web.Response(status=204)
            status = ERROR_STATUS.get(op.error_code or "", 500)
            body = {"error": {"code": op.error_code, "message": op.error_message}}
            return json_response(status if status >= 400 else 500, body)
        return json_response(
            200, _status_body(op), retry if op.status is OperationState.IN_PROGRESS else None
        )


def _status_body(op: OperationStatus) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"{op.resource_id}/operationStatuses/{op.id}",
        "name": op.id,
        "status": op.status,
        "startTime": format_datetime(op.start_time),
    }
    if op.end_time is not None:
        body["endTime"] = format_datetime(op.end_time)
    if op.error_code:
        body["error"] = {"code": op.error_code, "message": op.error_message or ""}
    return body


def encode_skip_token(after: str) -> str:
    """An opaque, URL-safe, never empty ``$skipToken`` for the keyset position ``after``."""
    return "k" + urlsafe_b64encode(after.encode()).decode().rstrip("=")


def decode_skip_token(token: str | None) -> str:
    """The keyset position of a ``$skipToken``; ``""`` for the first page (no token).

    Only what :func:`encode_skip_token` makes of a non-empty, printable, lower-case position
    is accepted, so a damaged token is an error rather than a silent restart at the first page.

    :raises InvalidPropertyValue: for any other token, the empty one included.
    """
    if token is None:
        return ""
    try:
        raw = token[1:] if token.startswith("k") else ""
        if not raw:
            raise ValueError
        after = b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True).decode()
        if not after.isprintable() or after != after.lower() or encode_skip_token(after) != token:
            raise ValueError
        return after
    except (ValueError, UnicodeDecodeError):
        raise e.InvalidPropertyValue(
            "The $skipToken is not valid; use the nextLink of the previous page.",
            target="$skipToken",
        ) from None


def _skip_token(request: web.Request) -> str:
    return decode_skip_token(request.query.get("$skipToken"))


JSON_TYPES = ("application/json", "text/json")


def _require_json(request: web.Request) -> None:
    """A request body must be JSON: ``application/json`` (``text/json``, any
    ``application/*+json``) or no ``Content-Type`` at all.

    :raises UnsupportedContentType: for any other media type (415).
    """
    if "Content-Type" not in request.headers:
        return
    media = request.content_type.lower()
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    raise e.UnsupportedContentType(
        f"The content media type {media!r} is not supported; send 'application/json'.",
        target="Content-Type",
    )


def _quote_id(resource_id: str) -> str:
    return "/".join(quote(part, safe="") for part in resource_id.split("/"))


def _api_version(request: web.Request) -> str:
    version = request.query.get("api-version")
    if version is None:
        raise e.MissingApiVersion(
            "The 'api-version' query parameter is required. Supported versions: "
            + ", ".join(sorted(API_VERSIONS)),
            target="api-version",
        )
    if version not in API_VERSIONS:
        raise e.InvalidApiVersion(
            f"The api-version {version!r} is not supported. Supported versions: "
            + ", ".join(sorted(API_VERSIONS)),
            target="api-version",
        )
    return version


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise e.MethodNotAllowed(
            f"The method {method} is not allowed here; allowed: {', '.join(allowed)}."
        )


def build_arm_app(api: ArmApi) -> web.Application:
    """The ARM face: everything under ``/subscriptions`` (mount it there) goes to the dispatcher.

    Its middleware renders every error, including the router's and aiohttp's 413, as ARM JSON.
    """
    app = web.Application(middlewares=[management_errors(log)])
    app.router.add_route("*", "", api.dispatch)  # /subscriptions itself
    app.router.add_route("*", r"/{tail:[\s\S]*}", api.dispatch)
    return app
