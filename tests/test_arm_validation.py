"""Every validation rule of the management API, as a table of bad requests with exact ARM codes.

Each row is one raw HTTP request (``requests``, so bodies can be malformed) against a real
``entrepot serve``; it asserts the status, ``error.code`` and, where the error is about one
field, ``error.target``. After every refused request the state of the registries (all rules,
sets and registries, every page) must be exactly what it was before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, Server

API = "2025-11-01"
PROVIDER = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    "/providers/Microsoft.ContainerRegistry"
)
OTHER = "otherreg1"  # a second registry, holding a credential set of the same name
STAR = "starreg1"  # a registry with a "*" wildcard rule
REGISTRIES = (REGISTRY, OTHER, STAR)
SECRET_U = "https://vault.vault.azure.net/secrets/user"
SECRET_P = "https://vault.vault.azure.net/secrets/pass"
_ABSENT = object()


def reg(name: str = REGISTRY) -> str:
    return f"{PROVIDER}/registries/{name}"


def rule_path(name: str, registry: str = REGISTRY) -> str:
    return f"{reg(registry)}/cacheRules/{name}"


def set_path(name: str, registry: str = REGISTRY) -> str:
    return f"{reg(registry)}/credentialSets/{name}"


def rule(source: Any = "quay.io/new/x", target: Any = "new-x", cs: Any = _ABSENT) -> Any:
    props: dict[str, Any] = {"sourceRepository": source, "targetRepository": target}
    if cs is not _ABSENT:
        props["credentialSetResourceId"] = cs
    return {"properties": props}


def cred(**overrides: Any) -> dict[str, Any]:
    item = {
        "name": "Credential1",
        "usernameSecretIdentifier": SECRET_U,
        "passwordSecretIdentifier": SECRET_P,
    }
    for key, value in overrides.items():
        if value is _ABSENT:
            item.pop(key)
        else:
            item[key] = value
    return item


def cset(login: Any = "quay.io", creds: Any = _ABSENT, identity: Any = _ABSENT) -> Any:
    body: dict[str, Any] = {
        "identity": {"type": "SystemAssigned"} if identity is _ABSENT else identity,
        "properties": {
            "loginServer": login,
            "authCredentials": [cred()] if creds is _ABSENT else creds,
        },
    }
    if identity is None:
        del body["identity"]
    if login is _ABSENT:
        del body["properties"]["loginServer"]
    if creds is None:
        del body["properties"]["authCredentials"]
    return body


@dataclass(frozen=True)
class Raw:
    """A body sent byte for byte."""

    data: bytes


class Api:
    """Raw HTTP against one server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.session = requests.Session()
        self.auth = server.headers()
        self.sent = 0  # requests other than snapshot reads
        # (sent, registries, state) of the last state a refused request was checked against
        self.verified: tuple[int, tuple[str, ...], Any] | None = None

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        api: str | None = API,
        count: bool = True,
    ) -> requests.Response:
        self.sent += count
        headers = {**self.auth, "Content-Type": "application/json"}
        data = body.data if isinstance(body, Raw) else (None if body is None else json.dumps(body))
        url = f"{self.server.url}{path}"
        if api is not None:
            url += f"?api-version={api}"
        response = self.session.request(method, url, data=data, headers=headers, timeout=30)
        assert response.headers.get("x-ms-request-id"), (method, path, response.status_code)
        return response

    def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """A request that must succeed; waits for its operation; returns the resource."""
        response = self(method, path, body)
        assert response.status_code in (200, 201, 202, 204), (method, path, response.text)
        operation = response.headers.get("Azure-AsyncOperation") or response.headers.get("Location")
        deadline = time.monotonic() + 15
        while operation:
            polled = self.session.get(operation, headers=self.auth, timeout=30)
            if polled.status_code == 204:
                break
            assert polled.status_code in (200, 202), polled.text
            if polled.status_code == 200 and polled.json()["status"] != "InProgress":
                assert polled.json()["status"] == "Succeeded", polled.text
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return dict(response.json()) if response.content else {}

    def items(self, path: str) -> list[dict[str, Any]]:
        """Every item of a list, following nextLink."""
        response = self("GET", path, count=False)
        out: list[dict[str, Any]] = []
        while True:
            assert response.status_code == 200, (path, response.text)
            page = response.json()
            out += page["value"]
            if not page.get("nextLink"):
                return out
            response = self.session.get(page["nextLink"], headers=self.auth, timeout=30)

    def snapshot(self, registries: tuple[str, ...] = REGISTRIES) -> Any:
        """What a refused request must not change (credential health excluded: it is measured)."""
        state: dict[str, Any] = {
            "registries": sorted(
                (
                    r["name"],
                    r.get("location"),
                    (r.get("sku") or {}).get("name"),
                    r["properties"].get("provisioningState"),
                    r["systemData"]["lastModifiedAt"],
                )
                for r in self.items(f"{PROVIDER}/registries")
            )
        }
        for registry in registries:
            state[registry] = {
                "rules": sorted(
                    (
                        r["name"],
                        r["properties"]["sourceRepository"],
                        r["properties"]["targetRepository"],
                        (r["properties"].get("credentialSetResourceId") or "").lower(),
                        r["properties"]["provisioningState"],
                        r["systemData"]["lastModifiedAt"],
                    )
                    for r in self.items(f"{reg(registry)}/cacheRules")
                ),
                "sets": sorted(
                    (
                        s["name"],
                        s["properties"]["loginServer"],
                        json.dumps(s.get("identity"), sort_keys=True),
                        json.dumps(
                            [
                                {k: v for k, v in c.items() if k != "credentialHealth"}
                                for c in s["properties"]["authCredentials"]
                            ],
                            sort_keys=True,
                        ),
                        s["properties"]["provisioningState"],
                        s["systemData"]["lastModifiedAt"],
                    )
                    for s in self.items(f"{reg(registry)}/credentialSets")
                ),
            }
        return state


@dataclass(frozen=True)
class Bad:
    """One refused request and the error it must get."""

    id: str
    method: str
    path: str
    body: Any
    status: int
    code: str
    target: str | None = None  # None: not asserted


def check_refused(api: Api, case: Bad, registries: tuple[str, ...] = REGISTRIES) -> None:
    if api.verified is not None and api.verified[:2] == (api.sent, registries):
        before = api.verified[2]  # nothing was sent since that state was read
    else:
        before = api.snapshot(registries)
    response = api(case.method, case.path, case.body)
    assert response.status_code == case.status, (case.id, response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json"), case.id
    body = response.json()
    assert set(body) == {"error"}, (case.id, body)
    error = body["error"]
    assert error["code"] == case.code, (case.id, error)
    assert isinstance(error["message"], str) and error["message"], (case.id, error)
    if case.target is not None:
        assert error.get("target") == case.target, (case.id, error)
    after = api.snapshot(registries)
    assert after == before, f"{case.id}: a refused request changed state"
    api.verified = (api.sent, registries, after)


# -- the world the table runs against ------------------------------------------------------------
@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    api = Api(server)
    for name in (OTHER, STAR):
        api.ok("PUT", reg(name), {"location": "local", "sku": {"name": "Basic"}})
    api.ok("PUT", set_path("valset-one"), cset())
    api.ok("PUT", set_path("valset-two"), cset("ghcr.io"))
    api.ok("PUT", set_path("valset-one", OTHER), cset())
    api.ok("PUT", rule_path("val-wild"), rule("quay.io/wild/*", "wild/*"))
    api.ok("PUT", rule_path("val-deep"), rule("quay.io/deep/a/b/*", "deep/a/b/*"))
    api.ok("PUT", rule_path("val-static"), rule("quay.io/static/one", "static/one"))
    api.ok(
        "PUT",
        rule_path("val-uses-set"),
        rule("quay.io/used/x", "used-x", reg() + "/credentialSets/valset-one"),
    )
    api.ok("PUT", rule_path("val-star", STAR), rule("quay.io/*", "*"))
    yield api


VALID_SET_ID = f"{reg()}/credentialSets/valset-one"
NEW = rule_path("val-new")
NEW_SET = set_path("valset-new")
NOREG = "noregistry1"
LONG = "a" * 256

CASES: list[Bad] = [
    # -- resource names (5-50 of [a-zA-Z0-9-]); an encoded '/' is a bad name, not a 404 --------
    *(
        Bad(
            f"rule-name-{label}",
            "PUT",
            rule_path(name),
            rule(),
            400,
            "InvalidResourceName",
            "cacheRuleName",
        )
        for label, name in [
            ("short", "abcd"),
            ("long", "a" * 51),
            ("underscore", "rule_one"),
            ("dot", "rule.one"),
            ("unicode", "r%C3%A8gle1"),
            ("space", "rule%20one"),
            ("slash", "ab%2Fcdef"),
            ("slash-lower", "ab%2fcdef"),
        ]
    ),
    Bad(
        "rule-name-get-slash",
        "GET",
        rule_path("ab%2Fcdef"),
        None,
        400,
        "InvalidResourceName",
        "cacheRuleName",
    ),
    Bad(
        "rule-name-delete-short",
        "DELETE",
        rule_path("abcd"),
        None,
        400,
        "InvalidResourceName",
        "cacheRuleName",
    ),
    Bad(
        "rule-name-patch-short",
        "PATCH",
        rule_path("abcd"),
        {"properties": {}},
        400,
        "InvalidResourceName",
        "cacheRuleName",
    ),
    *(
        Bad(
            f"set-name-{label}",
            "PUT",
            set_path(name),
            cset(),
            400,
            "InvalidResourceName",
            "credentialSetName",
        )
        for label, name in [
            ("short", "abcd"),
            ("long", "s" * 51),
            ("underscore", "set_one"),
            ("unicode", "s%C3%A9t-one"),
            ("slash", "valset%2Fone"),
        ]
    ),
    Bad(
        "registry-name-slash",
        "GET",
        f"{PROVIDER}/registries/my%2Fregistry/cacheRules",
        None,
        400,
        "InvalidResourceName",
        "registryName",
    ),
    Bad(
        "registry-name-short",
        "PUT",
        reg("abcd"),
        {"location": "local"},
        400,
        "InvalidResourceName",
        "registryName",
    ),
    # -- source repository syntax --------------------------------------------------------------
    *(
        Bad(
            f"source-{label}",
            "PUT",
            NEW,
            rule(source, "new-x"),
            400,
            "InvalidSourceRepository",
            "properties.sourceRepository",
        )
        for label, source in [
            ("upper-host", "Quay.io/a/b"),
            ("upper-path", "quay.io/A/b"),
            ("tag", "quay.io/a/b:1.0"),
            ("digest", "quay.io/a/b@sha256:" + "0" * 64),
            ("star-middle", "quay.io/*/b"),
            ("star-partial", "quay.io/a*"),
            ("two-stars", "quay.io/a/*/*"),
            ("no-login-server", "library/ubuntu"),
            ("empty", ""),
            ("whitespace", " quay.io/a/b"),
            ("double-slash", "quay.io//a"),
            ("trailing-slash", "quay.io/a/"),
            ("host-only", "quay.io"),
            ("space", "quay.io/a b"),
            ("unicode", "quay.io/\u00e4/b"),
            ("too-long", "quay.io/" + LONG),
            ("bad-port", "quay.io:99999/a"),
        ]
    ),
    # -- target repository syntax --------------------------------------------------------------
    *(
        Bad(
            f"target-{label}",
            "PUT",
            NEW,
            rule("quay.io/t/x", target),
            400,
            "InvalidTargetRepository",
            "properties.targetRepository",
        )
        for label, target in [
            ("upper", "T-x"),
            ("tag", "t-x:latest"),
            ("digest", "t-x@sha256:" + "0" * 64),
            ("star-middle", "t/*/x"),
            ("star-partial", "t*"),
            ("leading-slash", "/t"),
            ("trailing-slash", "t/"),
            ("empty", ""),
            ("space", "t x"),
            ("unicode", "t\u00e9"),
            ("too-long", LONG),
        ]
    ),
    # -- a wildcard on one side only -------------------------------------------------------------
    *(
        Bad(
            f"wildcard-mismatch-{label}",
            "PUT",
            NEW,
            rule(source, target),
            400,
            "WildcardMismatch",
            "properties.targetRepository",
        )
        for label, source, target in [
            ("source", "quay.io/w/*", "w"),
            ("target", "quay.io/w", "w/*"),
            ("registry-source", "quay.io/*", "w"),
            ("star-target", "quay.io/w", "*"),
        ]
    ),
    # -- overlapping targets ----------------------------------------------------------------------
    *(
        Bad(
            f"overlap-{label}",
            "PUT",
            rule_path("val-new", registry),
            rule(source, target),
            409,
            "CacheRuleTargetConflict",
            "properties.targetRepository",
        )
        for label, registry, source, target in [
            ("same-wildcard", REGISTRY, "quay.io/other/*", "wild/*"),
            ("nested-child", REGISTRY, "quay.io/other/*", "wild/sub/*"),
            ("nested-parent", REGISTRY, "quay.io/other/*", "deep/*"),
            ("nested-middle", REGISTRY, "quay.io/other/*", "deep/a/*"),
            ("star-over-wildcards", REGISTRY, "quay.io/*", "*"),
            ("same-static", REGISTRY, "quay.io/other/x", "static/one"),
            ("under-star", STAR, "quay.io/x/*", "x/*"),
            ("second-star", STAR, "ghcr.io/*", "*"),
        ]
    ),
    # -- credential-set references ---------------------------------------------------------------
    Bad(
        "set-ref-missing",
        "PUT",
        NEW,
        rule(cs=f"{reg()}/credentialSets/nosuchset"),
        400,
        "CredentialSetNotFound",
        "properties.credentialSetResourceId",
    ),
    *(
        Bad(
            f"set-ref-{label}",
            "PUT",
            NEW,
            rule(cs=ref),
            400,
            "InvalidCredentialSetResourceId",
            "properties.credentialSetResourceId",
        )
        for label, ref in [
            ("other-registry", f"{reg(OTHER)}/credentialSets/valset-one"),
            ("malformed", "not-an-id"),
            ("empty", ""),
            ("extra-segment", f"{VALID_SET_ID}/extra"),
            ("rule-id", rule_path("val-wild")),
            ("registry-id", reg()),
            ("other-subscription", VALID_SET_ID.replace("00000000-", "11111111-", 1)),
        ]
    ),
    Bad(
        "set-ref-type",
        "PUT",
        NEW,
        rule(cs=123),
        400,
        "InvalidPropertyValue",
        "properties.credentialSetResourceId",
    ),
    Bad(
        "patch-set-ref-missing",
        "PATCH",
        rule_path("val-static"),
        {"properties": {"credentialSetResourceId": f"{reg()}/credentialSets/nosuchset"}},
        400,
        "CredentialSetNotFound",
        "properties.credentialSetResourceId",
    ),
    Bad(
        "patch-set-ref-other-registry",
        "PATCH",
        rule_path("val-static"),
        {"properties": {"credentialSetResourceId": f"{reg(OTHER)}/credentialSets/valset-one"}},
        400,
        "InvalidCredentialSetResourceId",
        "properties.credentialSetResourceId",
    ),
    Bad(
        "patch-set-ref-type",
        "PATCH",
        rule_path("val-static"),
        {"properties": {"credentialSetResourceId": ["x"]}},
        400,
        "InvalidPropertyValue",
        "properties.credentialSetResourceId",
    ),
    # -- a set in use cannot go --------------------------------------------------------------------
    Bad("set-in-use", "DELETE", set_path("valset-one"), None, 409, "CredentialSetInUse"),
    # -- fixed at creation -------------------------------------------------------------------------
    Bad(
        "put-changes-source",
        "PUT",
        rule_path("val-static"),
        rule("quay.io/static/two", "static/one"),
        409,
        "PropertyChangeNotAllowed",
        "properties.sourceRepository",
    ),
    Bad(
        "put-changes-target",
        "PUT",
        rule_path("val-static"),
        rule("quay.io/static/one", "static/two"),
        409,
        "PropertyChangeNotAllowed",
        "properties.targetRepository",
    ),
    Bad(
        "put-changes-wildcard-target",
        "PUT",
        rule_path("val-wild"),
        rule("quay.io/wild/*", "wild2/*"),
        409,
        "PropertyChangeNotAllowed",
        "properties.targetRepository",
    ),
    Bad(
        "patch-changes-source",
        "PATCH",
        rule_path("val-static"),
        {"properties": {"sourceRepository": "quay.io/other/x"}},
        409,
        "PropertyChangeNotAllowed",
        "properties.sourceRepository",
    ),
    Bad(
        "patch-changes-target",
        "PATCH",
        rule_path("val-static"),
        {"properties": {"targetRepository": "other"}},
        409,
        "PropertyChangeNotAllowed",
        "properties.targetRepository",
    ),
    Bad(
        "put-changes-login-server",
        "PUT",
        set_path("valset-one"),
        cset("ghcr.io"),
        409,
        "PropertyChangeNotAllowed",
        "properties.loginServer",
    ),
    Bad(
        "patch-changes-login-server",
        "PATCH",
        set_path("valset-one"),
        {"properties": {"loginServer": "ghcr.io"}},
        409,
        "PropertyChangeNotAllowed",
        "properties.loginServer",
    ),
    # -- malformed bodies --------------------------------------------------------------------------
    *(
        Bad(f"malformed-{label}", method, path, Raw(data), 400, "InvalidRequestContent")
        for label, method, path, data in [
            ("syntax", "PUT", NEW, b"{bad"),
            ("truncated", "PUT", NEW, b'{"properties": {"sourceRepository": "quay.io/a/b"'),
            ("empty", "PUT", NEW, b""),
            ("blank", "PUT", NEW, b"  \n"),
            ("array", "PUT", NEW, b"[]"),
            ("string", "PUT", NEW, b'"properties"'),
            ("null", "PUT", NEW, b"null"),
            ("number", "PUT", NEW, b"42"),
            ("nan", "PUT", NEW, b'{"properties": NaN}'),
            ("not-utf8", "PUT", NEW, b'{"properties": "\xff\xfe"}'),
            ("trailing", "PUT", NEW, b'{"properties": {}} {}'),
            ("patch-rule", "PATCH", rule_path("val-static"), b"{bad"),
            ("patch-rule-array", "PATCH", rule_path("val-static"), b"[1]"),
            ("put-set", "PUT", NEW_SET, b"[1]"),
            ("patch-set", "PATCH", set_path("valset-one"), b"nope"),
            ("put-registry", "PUT", reg(NOREG), b"nope"),
        ]
    ),
    # -- wrong JSON types: InvalidPropertyValue names the field ------------------------------------
    *(
        Bad(f"type-{label}", "PUT", path, body, 400, "InvalidPropertyValue", target)
        for label, path, body, target in [
            ("source-number", NEW, rule(5), "properties.sourceRepository"),
            ("source-bool", NEW, rule(True), "properties.sourceRepository"),
            ("source-object", NEW, rule({"a": 1}), "properties.sourceRepository"),
            ("target-list", NEW, rule("quay.io/a/b", ["b"]), "properties.targetRepository"),
            ("properties-string", NEW, {"properties": "x"}, "properties"),
            ("properties-list", NEW, {"properties": []}, "properties"),
            ("login-server-number", NEW_SET, cset(5), "properties.loginServer"),
            ("login-server-bad", NEW_SET, cset("not a host"), "properties.loginServer"),
            ("login-server-port-99999", NEW_SET, cset("quay.io:99999"), "properties.loginServer"),
            ("login-server-port-0", NEW_SET, cset("quay.io:0"), "properties.loginServer"),
            ("login-server-long-label", NEW_SET, cset("a" * 64 + ".io"), "properties.loginServer"),
            ("creds-object", NEW_SET, cset(creds={}), "properties.authCredentials"),
            ("creds-string-item", NEW_SET, cset(creds=["x"]), "properties.authCredentials[0]"),
            ("creds-empty", NEW_SET, cset(creds=[]), "properties.authCredentials"),
            (
                "secret-number",
                NEW_SET,
                cset(creds=[cred(usernameSecretIdentifier=5)]),
                "properties.authCredentials[0].usernameSecretIdentifier",
            ),
            (
                "credential-name",
                NEW_SET,
                cset(creds=[cred(name="Credential2")]),
                "properties.authCredentials[0].name",
            ),
            (
                "credential-twice",
                NEW_SET,
                cset(creds=[cred(), cred()]),
                "properties.authCredentials[1].name",
            ),
            ("identity-string", NEW_SET, cset(identity="SystemAssigned"), "identity"),
            ("identity-type-number", NEW_SET, cset(identity={"type": 5}), "identity.type"),
            ("identity-user", NEW_SET, cset(identity={"type": "UserAssigned"}), "identity.type"),
            ("identity-none", NEW_SET, cset(identity={"type": "None"}), "identity.type"),
            (
                "identity-both",
                NEW_SET,
                cset(identity={"type": "SystemAssigned, UserAssigned"}),
                "identity.type",
            ),
            ("identity-bogus", NEW_SET, cset(identity={"type": "Bogus"}), "identity.type"),
            ("registry-location", reg(NOREG), {"location": 5}, "location"),
            (
                "registry-sku",
                reg(NOREG),
                {"location": "local", "sku": {"name": "Gold"}},
                "sku.name",
            ),
            ("registry-tags", reg(NOREG), {"location": "local", "tags": "x"}, "tags"),
        ]
    ),
    Bad(
        "patch-set-identity-user",
        "PATCH",
        set_path("valset-one"),
        {"identity": {"type": "UserAssigned"}},
        400,
        "InvalidPropertyValue",
        "identity.type",
    ),
    Bad(
        "patch-set-creds-string",
        "PATCH",
        set_path("valset-one"),
        {"properties": {"authCredentials": "x"}},
        400,
        "InvalidPropertyValue",
        "properties.authCredentials",
    ),
    Bad(
        "patch-rule-properties-string",
        "PATCH",
        rule_path("val-static"),
        {"properties": "x"},
        400,
        "InvalidPropertyValue",
        "properties",
    ),
    # -- missing required properties ---------------------------------------------------------------
    *(
        Bad(f"missing-{label}", "PUT", path, body, 400, "MissingRequiredProperty", target)
        for label, path, body, target in [
            ("everything", NEW, {}, "properties.sourceRepository"),
            ("properties-empty", NEW, {"properties": {}}, "properties.sourceRepository"),
            ("source-null", NEW, rule(None, "b"), "properties.sourceRepository"),
            (
                "target",
                NEW,
                {"properties": {"sourceRepository": "quay.io/a/b"}},
                "properties.targetRepository",
            ),
            ("login-server", NEW_SET, cset(_ABSENT), "properties.loginServer"),
            ("auth-credentials", NEW_SET, cset(creds=None), "properties.authCredentials"),
            (
                "password",
                NEW_SET,
                cset(creds=[cred(passwordSecretIdentifier=_ABSENT)]),
                "properties.authCredentials[0].passwordSecretIdentifier",
            ),
            (
                "username-empty",
                NEW_SET,
                cset(creds=[cred(usernameSecretIdentifier="")]),
                "properties.authCredentials[0].usernameSecretIdentifier",
            ),
            (
                "credential-name",
                NEW_SET,
                cset(creds=[cred(name=_ABSENT)]),
                "properties.authCredentials[0].name",
            ),
            ("sku-name", reg(NOREG), {"location": "local", "sku": {}}, "sku.name"),
        ]
    ),
    # -- secret identifiers must be URIs -----------------------------------------------------------
    *(
        Bad(
            f"secret-{label}",
            "PUT",
            NEW_SET,
            cset(creds=[cred(**{field: value})]),
            400,
            "InvalidSecretIdentifier",
            f"properties.authCredentials[0].{field}",
        )
        for label, field, value in [
            ("words", "usernameSecretIdentifier", "not a uri"),
            ("no-scheme", "usernameSecretIdentifier", "vault.vault.azure.net/secrets/u"),
            ("whitespace", "passwordSecretIdentifier", SECRET_P + " x"),
            ("too-long", "passwordSecretIdentifier", "https://v.vault.azure.net/" + "a" * 2100),
        ]
    ),
    Bad(
        "patch-secret",
        "PATCH",
        set_path("valset-one"),
        {"properties": {"authCredentials": [cred(passwordSecretIdentifier="nope")]}},
        400,
        "InvalidSecretIdentifier",
        "properties.authCredentials[0].passwordSecretIdentifier",
    ),
    # -- unknown parents and resources -------------------------------------------------------------
    *(
        Bad(
            f"no-registry-{label}",
            method,
            path,
            body,
            404,
            "ParentResourceNotFound",
            "registryName",
        )
        for label, method, path, body in [
            ("get-rule", "GET", rule_path("val-static", NOREG), None),
            ("put-rule", "PUT", rule_path("val-static", NOREG), rule()),
            ("patch-rule", "PATCH", rule_path("val-static", NOREG), {"properties": {}}),
            ("delete-rule", "DELETE", rule_path("val-static", NOREG), None),
            ("list-rules", "GET", f"{reg(NOREG)}/cacheRules", None),
            ("put-set", "PUT", set_path("valset-one", NOREG), cset()),
            ("list-sets", "GET", f"{reg(NOREG)}/credentialSets", None),
        ]
    ),
    Bad("no-registry-get", "GET", reg(NOREG), None, 404, "ResourceNotFound"),
    Bad("no-rule-get", "GET", rule_path("no-such-rule"), None, 404, "ResourceNotFound"),
    Bad(
        "no-rule-patch",
        "PATCH",
        rule_path("no-such-rule"),
        {"properties": {}},
        404,
        "ResourceNotFound",
    ),
    Bad("no-set-get", "GET", set_path("no-such-set"), None, 404, "ResourceNotFound"),
    Bad(
        "no-set-patch",
        "PATCH",
        set_path("no-such-set"),
        {"properties": {}},
        404,
        "ResourceNotFound",
    ),
    Bad(
        "no-operation",
        "GET",
        f"{rule_path('val-static')}/operationStatuses/cacherules-x",
        None,
        404,
        "ResourceNotFound",
    ),
    # -- wrong methods -----------------------------------------------------------------------------
    *(
        Bad(f"method-{label}", method, path, body, 405, "MethodNotAllowed")
        for label, method, path, body in [
            ("post-rule", "POST", rule_path("val-static"), rule()),
            ("put-rules", "PUT", f"{reg()}/cacheRules", rule()),
            ("delete-rules", "DELETE", f"{reg()}/cacheRules", None),
            ("post-sets", "POST", f"{reg()}/credentialSets", cset()),
            ("patch-registry", "PATCH", reg(), {"tags": {}}),
            ("post-registries", "POST", f"{PROVIDER}/registries", {}),
            ("put-status", "PUT", f"{rule_path('val-static')}/operationStatuses/x", {}),
            ("delete-result", "DELETE", f"{rule_path('val-static')}/operationResults/x", None),
            ("options-rule", "OPTIONS", rule_path("val-static"), None),
        ]
    ),
    # -- body size ---------------------------------------------------------------------------------
    Bad("too-large-rule", "PUT", NEW, rule("quay.io/a/" + "b" * 2_000_000), 413, "RequestTooLarge"),
    Bad(
        "too-large-set",
        "PUT",
        NEW_SET,
        cset(creds=[cred(usernameSecretIdentifier="x" * 2**21)]),
        413,
        "RequestTooLarge",
    ),
    Bad(
        "too-large-patch",
        "PATCH",
        rule_path("val-static"),
        Raw(b" " * 2_000_000 + b"{}"),
        413,
        "RequestTooLarge",
    ),
]


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) > 150


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused(api: Api, case: Bad) -> None:
    check_refused(api, case)


# -- what the table must not refuse ---------------------------------------------------------------
def test_accepted_boundaries(api: Api) -> None:
    """The valid neighbours of the refused rows are accepted (so the table is about the rule)."""
    created = []
    for name, body in [
        ("a" * 50, rule("quay.io/b50/x", "b50")),
        ("abcde", rule("quay.io/b5/x", "b5")),
        ("Mixed-Case-1", rule("quay.io/mixed/x", "mixed")),
        # a static rule inside a wildcard one is allowed
        ("val-inside", rule("quay.io/other/inner", "wild/inner")),
        # a sibling whose name merely starts like a wildcard's target is no overlap
        ("val-sibling", rule("quay.io/wildly/*", "wildly/*")),
        ("val-below", rule("quay.io/static/one/two", "static/one/two")),
        ("val-ports", rule("registry.example.com:5000/a.b/c_d/e--f", "a.b/c_d/e--f")),
        ("val-ipv6", rule("[2001:db8::1]:5000/x/*", "ipv6/*")),
        ("val-set-any-case", rule("quay.io/case/x", "case-x", VALID_SET_ID.upper())),
    ]:
        response = api("PUT", rule_path(name), body)
        assert response.status_code == 201, (name, response.text)
        created.append(name)
    star_static = api("PUT", rule_path("val-star-static", STAR), rule("quay.io/x", "x"))
    assert star_static.status_code == 201, star_static.text
    assert api("PUT", set_path("s" * 50), cset()).status_code == 201
    for name in created:
        api.ok("DELETE", rule_path(name))
    api.ok("DELETE", rule_path("val-star-static", STAR))
    api.ok("DELETE", set_path("s" * 50))


def test_patch_semantics(api: Api) -> None:
    path = rule_path("val-patch")
    two = f"{reg()}/credentialSets/valset-two"
    api.ok("PUT", path, rule("quay.io/patch/x", "patch-x", VALID_SET_ID))

    def current() -> dict[str, Any]:
        response = api("GET", path)
        assert response.status_code == 200
        return dict(response.json()["properties"])

    first = current()
    # {"properties": {}} and {} change nothing.
    for body in ({"properties": {}}, {}):
        response = api("PATCH", path, body)
        assert response.status_code == 200, response.text
        after = current()
        assert after["credentialSetResourceId"].lower() == VALID_SET_ID.lower()
        assert (after["sourceRepository"], after["targetRepository"]) == (
            first["sourceRepository"],
            first["targetRepository"],
        )
    # Restating the fixed properties unchanged is not a change.
    same = {"properties": {"sourceRepository": "quay.io/patch/x", "targetRepository": "patch-x"}}
    assert api("PATCH", path, same).status_code == 200
    # PATCH sets and removes only credentialSetResourceId.
    api.ok("PATCH", path, {"properties": {"credentialSetResourceId": two}})
    assert current()["credentialSetResourceId"].lower() == two.lower()
    api.ok("PATCH", path, {"properties": {"credentialSetResourceId": None}})
    assert "credentialSetResourceId" not in current()
    assert current()["sourceRepository"] == "quay.io/patch/x"
    # A PUT over the rule replaces it: without the key, the rule has no credential set.
    api.ok("PUT", path, rule("quay.io/patch/x", "patch-x", VALID_SET_ID))
    assert current()["credentialSetResourceId"].lower() == VALID_SET_ID.lower()
    replaced = api("PUT", path, rule("quay.io/patch/x", "patch-x"))
    assert replaced.status_code == 200
    assert "credentialSetResourceId" not in current()
    api.ok("DELETE", path)

    # Credential sets: PATCH merges authCredentials by name and keeps the rest.
    spath = set_path("valset-patch")
    made = api.ok("PUT", spath, cset("ghcr.io"))
    principal = made["identity"]["principalId"]
    new_password = "https://vault.vault.azure.net/secrets/new-pass"
    api.ok(
        "PATCH",
        spath,
        {
            "properties": {
                "authCredentials": [
                    {"name": "Credential1", "passwordSecretIdentifier": new_password}
                ]
            }
        },
    )
    got = api("GET", spath).json()
    (credential,) = got["properties"]["authCredentials"]
    assert credential["usernameSecretIdentifier"] == SECRET_U
    assert credential["passwordSecretIdentifier"] == new_password
    assert got["properties"]["loginServer"] == "ghcr.io"
    assert got["identity"]["principalId"] == principal
    for body in ({"properties": {}}, {"identity": {"type": "SystemAssigned"}}):
        assert api("PATCH", spath, body).status_code == 200
        again = api("GET", spath).json()
        assert again["identity"]["principalId"] == principal
        assert again["properties"]["authCredentials"][0]["passwordSecretIdentifier"] == new_password
    same_login = api("PATCH", spath, {"properties": {"loginServer": "GHCR.io"}})
    assert same_login.status_code == 200, same_login.text
    api.ok("DELETE", spath)


def test_in_use_set_is_free_after_its_rules_go(api: Api) -> None:
    spath = set_path("valset-busy")
    api.ok("PUT", spath, cset())
    sid = f"{reg()}/credentialSets/valset-busy"
    api.ok("PUT", rule_path("val-busy-1"), rule("quay.io/busy/one", "busy-one", sid))
    api.ok("PUT", rule_path("val-busy-2"), rule("quay.io/busy/two", "busy-two", sid))
    refused = Bad("busy", "DELETE", spath, None, 409, "CredentialSetInUse")
    check_refused(api, refused)
    api.ok("DELETE", rule_path("val-busy-1"))
    check_refused(api, refused)  # still used by the second rule
    api.ok("PATCH", rule_path("val-busy-2"), {"properties": {"credentialSetResourceId": None}})
    api.ok("DELETE", spath)
    assert api("GET", spath).status_code == 404
    api.ok("DELETE", rule_path("val-busy-2"))


def test_registry_names_are_unique_across_resource_groups(api: Api) -> None:
    """Each registry has its own login server, so a name names one registry on the server."""
    other_group = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/another-group"
        "/providers/Microsoft.ContainerRegistry/registries"
    )
    body = {"location": "local"}
    for name in (REGISTRY, REGISTRY.upper()):
        response = api("PUT", f"{other_group}/{name}", body)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "ResourceExists"
        assert "another-group" not in response.json()["error"]["message"]
        assert api("GET", f"{other_group}/{name}").status_code == 404
    created = api.ok("PUT", f"{other_group}/unique-name-1", body)
    assert created["name"] == "unique-name-1"
    api.ok("DELETE", f"{other_group}/unique-name-1")
    assert api("GET", f"{other_group}/unique-name-1").status_code == 404


def test_delete_of_missing_things_is_204(api: Api) -> None:
    for path in (rule_path("no-such-rule"), set_path("no-such-set"), reg(NOREG)):
        response = api("DELETE", path)
        assert response.status_code == 204, (path, response.text)
        assert response.content == b""


# -- configured limits and policies (servers of their own) ----------------------------------------
def test_rule_quota(server_factory: Callable[..., Server]) -> None:
    api = Api(
        server_factory(
            env={
                "ENTREPOT_ARM_MAX_RULES_PER_REGISTRY": "3",
                "ENTREPOT_ARM_MAX_CREDENTIAL_SETS_PER_REGISTRY": "2",
            }
        )
    )
    for i in range(3):
        api.ok("PUT", rule_path(f"quota-{i}"), rule(f"quay.io/q/{i}", f"q{i}"))
    over = Bad(
        "quota",
        "PUT",
        rule_path("quota-3"),
        rule("quay.io/q/3", "q3"),
        409,
        "CacheRuleQuotaExceeded",
    )
    check_refused(api, over, (REGISTRY,))
    assert len(api.items(f"{reg()}/cacheRules")) == 3
    # At the quota, existing rules can still be replaced and patched.
    assert api("PUT", rule_path("quota-0"), rule("quay.io/q/0", "q0")).status_code == 200
    assert api("PATCH", rule_path("quota-1"), {"properties": {}}).status_code == 200
    api.ok("DELETE", rule_path("quota-2"))
    assert api("PUT", rule_path("quota-3"), rule("quay.io/q/3", "q3")).status_code == 201
    check_refused(
        api,
        Bad(
            "quota-again",
            "PUT",
            rule_path("quota-4"),
            rule("quay.io/q/4", "q4"),
            409,
            "CacheRuleQuotaExceeded",
        ),
        (REGISTRY,),
    )
    # The quota is per registry.
    api.ok("PUT", reg("quotareg2"), {"location": "local"})
    assert (
        api("PUT", rule_path("quota-4", "quotareg2"), rule("quay.io/q/4", "q4")).status_code == 201
    )

    # Credential sets have a quota of their own, with a code of its own.
    api.ok("PUT", set_path("quota-set-0"), cset())
    api.ok("PUT", set_path("quota-set-1"), cset())
    check_refused(
        api,
        Bad("set-quota", "PUT", set_path("quota-set-2"), cset(), 409, "CredentialSetQuotaExceeded"),
        (REGISTRY,),
    )


def test_allowed_login_servers(server_factory: Callable[..., Server]) -> None:
    api = Api(
        server_factory(env={"ENTREPOT_POLICY_ALLOWED_LOGIN_SERVERS": "quay.io,*.example.com"})
    )
    cases = [
        *(
            Bad(
                f"upstream-{label}",
                "PUT",
                NEW,
                rule(source, target),
                400,
                "UpstreamNotSupported",
                "properties.sourceRepository",
            )
            for label, source, target in [
                ("ghcr", "ghcr.io/a/b", "b"),
                ("docker", "docker.io/library/*", "hub/*"),
                ("bare-domain", "example.com/a/b", "b"),
                ("suffix-trick", "quay.io.evil.net/a/b", "b"),
                ("prefix-trick", "evilquay.io/a/b", "b"),
                ("loopback", "127.0.0.1:5000/x", "x"),
            ]
        ),
        *(
            Bad(
                f"set-upstream-{login}",
                "PUT",
                NEW_SET,
                cset(login),
                400,
                "UpstreamNotSupported",
                "properties.loginServer",
            )
            for login in ("ghcr.io", "docker.io", "example.com", "quay.io.evil.net")
        ),
    ]
    for case in cases:
        check_refused(api, case, (REGISTRY,))
    for name, source, target in [
        ("okay-quay", "quay.io/a/b", "quay-b"),
        ("okay-sub", "reg.example.com/a/b", "sub-b"),
        ("okay-deep", "deep.reg.example.com/a/*", "deep/*"),
    ]:
        assert api("PUT", rule_path(name), rule(source, target)).status_code == 201, name
    assert api("PUT", set_path("okay-set"), cset("quay.io")).status_code == 201
    assert api("PUT", set_path("okay-set2"), cset("reg.example.com")).status_code == 201


def test_docker_hub_credentials_and_private_addresses(
    server_factory: Callable[..., Server],
) -> None:
    api = Api(
        server_factory(
            env={
                "ENTREPOT_POLICY_REQUIRE_DOCKER_HUB_CREDENTIALS": "true",
                "ENTREPOT_POLICY_FORBID_PRIVATE_ADDRESSES": "true",
            }
        )
    )
    hub_set = api.ok("PUT", set_path("hub-creds"), cset("docker.io"))["id"]
    docker = [
        Bad(
            f"docker-{label}",
            "PUT",
            NEW,
            rule(source, target),
            400,
            "EnforceDockerAuthentication",
            "properties.credentialSetResourceId",
        )
        for label, source, target in [
            ("library", "docker.io/library/*", "hub/*"),
            ("static", "docker.io/library/ubuntu", "ubuntu"),
            ("registry-1", "registry-1.docker.io/library/alpine", "alpine"),
            ("index", "index.docker.io/library/busybox", "busybox"),
        ]
    ]
    private = [
        Bad(
            f"private-{label}",
            "PUT",
            NEW,
            rule(source, target),
            400,
            "UpstreamNotSupported",
            "properties.sourceRepository",
        )
        for label, source, target in [
            ("loopback", "127.0.0.1:5000/x", "x"),
            ("loopback-no-port", "127.0.0.1/x/*", "x/*"),
            ("localhost", "localhost:5000/x/y", "x/y"),
            ("ten", "10.1.2.3/x", "x"),
            ("192", "192.168.0.1:5000/x", "x"),
            ("link-local", "169.254.169.254/latest", "latest"),
            ("ipv6-loopback", "[::1]:5000/x", "x"),
        ]
    ] + [
        Bad(
            f"private-set-{login}",
            "PUT",
            NEW_SET,
            cset(login),
            400,
            "UpstreamNotSupported",
            "properties.loginServer",
        )
        for login in ("127.0.0.1:5000", "localhost", "[::1]:5000", "10.0.0.1")
    ]
    for case in docker + private:
        check_refused(api, case, (REGISTRY,))

    # With a credential set a Docker Hub rule is fine; it cannot lose the set afterwards.
    hub = rule_path("hub-rule")
    assert api("PUT", hub, rule("docker.io/library/*", "hub/*", hub_set)).status_code == 201
    check_refused(
        api,
        Bad(
            "docker-patch-remove",
            "PATCH",
            hub,
            {"properties": {"credentialSetResourceId": None}},
            400,
            "EnforceDockerAuthentication",
            "properties.credentialSetResourceId",
        ),
        (REGISTRY,),
    )
    check_refused(
        api,
        Bad(
            "docker-put-without",
            "PUT",
            hub,
            rule("docker.io/library/*", "hub/*"),
            400,
            "EnforceDockerAuthentication",
            "properties.credentialSetResourceId",
        ),
        (REGISTRY,),
    )
    # Public, non-Docker-Hub upstreams need no credential set.
    assert api("PUT", rule_path("public-quay"), rule("quay.io/a/b", "quay-b")).status_code == 201
    assert api("PUT", rule_path("public-ip"), rule("8.8.8.8:5000/a", "pub-a")).status_code == 201
