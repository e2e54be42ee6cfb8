"""The management API through the genuine ``azure-mgmt-containerregistry`` 15.x, plus its wire.

Every test talks to a real ``entrepot serve`` process (the module-scoped ``server`` fixture) over
HTTP: the SDK tests drive the unchanged SDK (azure-sdk-wire.md §8 loopback recipe), the wire
tests use ``requests`` to check what the SDK depends on (LRO headers, status URLs, paging,
api-versions, authentication, ``x-ms-request-id``).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mgmt.containerregistry.models import (
    AuthCredential,
    CacheRule,
    CacheRuleUpdateParameters,
    CredentialName,
    CredentialSet,
    CredentialSetUpdateParameters,
    IdentityProperties,
    ProvisioningState,
    Registry,
    ResourceIdentityType,
    Sku,
)

from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, Server, genuine_sdk_client

API = "2025-11-01"
ACCEPTED_VERSIONS = ("2023-07-01", "2025-04-01", "2025-11-01")
RG = RESOURCE_GROUP
PROVIDER_PREFIX = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry"
)


# -- helpers -------------------------------------------------------------------------------------
def registry_path(name: str = REGISTRY) -> str:
    return f"{PROVIDER_PREFIX}/registries/{name}"


def set_id(name: str, registry: str = REGISTRY) -> str:
    return f"{registry_path(registry)}/credentialSets/{name}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def credential(user: str = "u", password: str = "p") -> AuthCredential:
    return AuthCredential(
        name=CredentialName.CREDENTIAL1,
        username_secret_identifier=f"https://vault.vault.azure.net/secrets/{user}",
        password_secret_identifier=f"https://vault.vault.azure.net/secrets/{password}",
    )


def new_credential_set(login_server: str = "quay.io") -> CredentialSet:
    return CredentialSet(
        identity=IdentityProperties(type=ResourceIdentityType.SYSTEM_ASSIGNED),
        login_server=login_server,
        auth_credentials=[credential()],
    )


class Wire:
    """Raw HTTP against the server; remembers every response for the request-id checks."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.responses: list[requests.Response] = []

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        api: str | None = API,
        headers: dict[str, str] | None = None,
        url: str | None = None,
    ) -> requests.Response:
        params = {} if api is None else {"api-version": api}
        response = requests.request(
            method,
            url or f"{self.server.url}{path}",
            params=None if url else params,
            json=body,
            headers=self.server.headers() if headers is None else headers,
            timeout=30,
        )
        self.responses.append(response)
        return response


@pytest.fixture
def wire(server: Server) -> Wire:
    return Wire(server)


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    return server.sdk_client()


def error_of(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def poll_status(wire: Wire, url: str, timeout: float = 15) -> dict[str, Any]:
    """GET an Azure-AsyncOperation URL until its status is terminal; return the last body."""
    deadline = time.monotonic() + timeout
    while True:
        response = wire("GET", "", url=url)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "status" in body, body
        if body["status"] in ("Succeeded", "Failed", "Canceled"):
            return dict(body)
        assert body["status"] == "InProgress", body
        assert time.monotonic() < deadline, f"operation still {body['status']}"
        time.sleep(0.05)


def assert_absolute_with_version(server: Server, url: str, version: str) -> None:
    assert url.startswith(f"{server.url}/subscriptions/"), url
    assert f"api-version={version}" in url.split("?", 1)[1], url


# -- cache rules through the SDK -----------------------------------------------------------------
def test_cache_rule_create_get_update_delete_through_sdk(client: Any, server: Server) -> None:
    first, second = unique("sdkset"), unique("sdkset")
    client.credential_sets.begin_create(RG, REGISTRY, first, new_credential_set()).result()
    client.credential_sets.begin_create(RG, REGISTRY, second, new_credential_set()).result()
    name = unique("sdkrule")

    created = client.cache_rules.begin_create(
        RG,
        REGISTRY,
        name,
        CacheRule(
            source_repository="quay.io/sdk/flow/*",
            target_repository=f"{name}/*",
            credential_set_resource_id=set_id(first),
        ),
    ).result()
    assert created.name == name
    assert created.id == f"{registry_path()}/cacheRules/{name}"
    assert created.type == "Microsoft.ContainerRegistry/registries/cacheRules"
    assert created.source_repository == "quay.io/sdk/flow/*"
    assert created.target_repository == f"{name}/*"
    assert created.credential_set_resource_id.lower() == set_id(first).lower()
    assert created.provisioning_state == ProvisioningState.SUCCEEDED
    assert created.creation_date is not None

    fetched = client.cache_rules.get(RG, REGISTRY, name)
    assert fetched.as_dict() == created.as_dict()

    updated = client.cache_rules.begin_update(
        RG, REGISTRY, name, CacheRuleUpdateParameters(credential_set_resource_id=set_id(second))
    ).result()
    assert updated.credential_set_resource_id.lower() == set_id(second).lower()
    assert updated.source_repository == "quay.io/sdk/flow/*"
    assert updated.provisioning_state == ProvisioningState.SUCCEEDED
    assert client.cache_rules.get(RG, REGISTRY, name).credential_set_resource_id.lower() == (
        set_id(second).lower()
    )

    # The model cannot say "remove"; a raw dict with an explicit null can (azure-sdk-wire.md §3).
    noop = client.cache_rules.begin_update(
        RG, REGISTRY, name, CacheRuleUpdateParameters(credential_set_resource_id=None)
    ).result()
    assert noop.credential_set_resource_id.lower() == set_id(second).lower()
    removed = client.cache_rules.begin_update(
        RG, REGISTRY, name, {"properties": {"credentialSetResourceId": None}}
    ).result()
    assert removed.credential_set_resource_id is None
    assert client.cache_rules.get(RG, REGISTRY, name).credential_set_resource_id is None

    assert client.cache_rules.begin_delete(RG, REGISTRY, name).result() is None
    with pytest.raises(ResourceNotFoundError) as info:
        client.cache_rules.get(RG, REGISTRY, name)
    assert info.value.status_code == 404
    assert info.value.error.code == "ResourceNotFound"
    assert name not in {rule.name for rule in client.cache_rules.list(RG, REGISTRY)}
    # The sets are free again once no rule uses them.
    client.credential_sets.begin_delete(RG, REGISTRY, first).result()
    client.credential_sets.begin_delete(RG, REGISTRY, second).result()


def test_cache_rules_list_over_several_pages_through_sdk(client: Any, server: Server) -> None:
    registry = unique("pagesdk")
    client.registries.begin_create(
        RG, registry, Registry(location="local", sku=Sku(name="Basic"))
    ).result()
    names = {f"page-rule-{i:02d}" for i in range(23)}
    for name in sorted(names):
        client.cache_rules.begin_create(
            RG,
            registry,
            name,
            CacheRule(source_repository=f"quay.io/paging/{name}", target_repository=name),
        ).result()
    pages = [list(page) for page in client.cache_rules.list(RG, registry).by_page()]
    assert [len(page) for page in pages] == [10, 10, 3]  # page size 10 in the test config
    listed = [rule.name for page in pages for rule in page]
    assert sorted(listed) == sorted(names)  # every rule once
    assert all(r.provisioning_state == ProvisioningState.SUCCEEDED for p in pages for r in p)
    # The plain iterator follows nextLink too.
    assert {rule.name for rule in client.cache_rules.list(RG, registry)} == names
    client.registries.begin_delete(RG, registry).result()


# -- credential sets through the SDK -------------------------------------------------------------
def test_credential_set_identity_update_and_in_use(client: Any) -> None:
    name = unique("sdkcreds")
    created = client.credential_sets.begin_create(
        RG, REGISTRY, name, new_credential_set("ghcr.io")
    ).result()
    assert created.name == name
    assert created.type == "Microsoft.ContainerRegistry/registries/credentialSets"
    assert created.login_server == "ghcr.io"
    assert created.provisioning_state == ProvisioningState.SUCCEEDED
    assert created.identity.type == ResourceIdentityType.SYSTEM_ASSIGNED
    principal, tenant = created.identity.principal_id, created.identity.tenant_id
    assert uuid.UUID(principal) and uuid.UUID(tenant)
    assert [c.name for c in created.auth_credentials] == [CredentialName.CREDENTIAL1]
    assert created.auth_credentials[0].username_secret_identifier.endswith("/secrets/u")

    updated = client.credential_sets.begin_update(
        RG,
        REGISTRY,
        name,
        CredentialSetUpdateParameters(auth_credentials=[credential("u2", "p2")]),
    ).result()
    assert updated.auth_credentials[0].username_secret_identifier.endswith("/secrets/u2")
    assert updated.auth_credentials[0].password_secret_identifier.endswith("/secrets/p2")
    assert updated.login_server == "ghcr.io"
    assert (updated.identity.principal_id, updated.identity.tenant_id) == (principal, tenant)
    fetched = client.credential_sets.get(RG, REGISTRY, name)
    assert fetched.auth_credentials[0].username_secret_identifier.endswith("/secrets/u2")
    assert (fetched.identity.principal_id, fetched.identity.tenant_id) == (principal, tenant)
    # A PUT over the existing set keeps the identity too.
    replaced = client.credential_sets.begin_create(
        RG, REGISTRY, name, new_credential_set("ghcr.io")
    ).result()
    assert (replaced.identity.principal_id, replaced.identity.tenant_id) == (principal, tenant)
    assert name in {s.name for s in client.credential_sets.list(RG, REGISTRY)}

    # Another set gets another principal, the same tenant.
    other = unique("sdkcreds")
    second = client.credential_sets.begin_create(RG, REGISTRY, other, new_credential_set()).result()
    assert second.identity.principal_id != principal
    assert second.identity.tenant_id == tenant
    client.credential_sets.begin_delete(RG, REGISTRY, other).result()

    rule = unique("inuse")
    client.cache_rules.begin_create(
        RG,
        REGISTRY,
        rule,
        CacheRule(
            source_repository="ghcr.io/inuse/x",
            target_repository=rule,
            credential_set_resource_id=set_id(name),
        ),
    ).result()
    with pytest.raises(ResourceExistsError) as info:
        client.credential_sets.begin_delete(RG, REGISTRY, name).result()
    assert info.value.status_code == 409
    assert info.value.error.code == "CredentialSetInUse"
    assert client.credential_sets.get(RG, REGISTRY, name).name == name  # still there

    client.cache_rules.begin_delete(RG, REGISTRY, rule).result()
    assert client.credential_sets.begin_delete(RG, REGISTRY, name).result() is None
    with pytest.raises(ResourceNotFoundError) as gone:
        client.credential_sets.get(RG, REGISTRY, name)
    assert gone.value.error.code == "ResourceNotFound"


# -- registries through the SDK ------------------------------------------------------------------
def test_registry_create_get_list_delete_cascades(client: Any, wire: Wire) -> None:
    name = unique("sdkreg")
    created = client.registries.begin_create(
        RG, name, Registry(location="local", sku=Sku(name="Basic"))
    ).result()
    assert created.name == name
    assert created.location == "local"
    assert created.sku.name == "Basic"
    assert created.id == registry_path(name)
    assert created.provisioning_state == ProvisioningState.SUCCEEDED
    assert client.registries.get(RG, name).name == name
    listed = {r.name for r in client.registries.list_by_resource_group(RG)}
    assert {name, REGISTRY} <= listed

    client.credential_sets.begin_create(RG, name, "cascadeset", new_credential_set()).result()
    client.cache_rules.begin_create(
        RG,
        name,
        "cascaderule",
        CacheRule(
            source_repository="quay.io/cascade/*",
            target_repository="cascade/*",
            credential_set_resource_id=set_id("cascadeset", name),
        ),
    ).result()
    assert [r.name for r in client.cache_rules.list(RG, name)] == ["cascaderule"]

    assert client.registries.begin_delete(RG, name).result() is None
    with pytest.raises(ResourceNotFoundError) as info:
        client.registries.get(RG, name)
    assert info.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as parent:
        client.cache_rules.get(RG, name, "cascaderule")
    assert parent.value.error.code == "ParentResourceNotFound"
    assert name not in {r.name for r in client.registries.list_by_resource_group(RG)}

    # A registry re-created under the same name starts empty: rules and sets went with it.
    client.registries.begin_create(
        RG, name, Registry(location="local", sku=Sku(name="Basic"))
    ).result()
    assert list(client.cache_rules.list(RG, name)) == []
    assert list(client.credential_sets.list(RG, name)) == []
    assert wire("GET", f"{registry_path(name)}/cacheRules/cascaderule").status_code == 404
    client.registries.begin_delete(RG, name).result()


# -- the SDK's error classes ---------------------------------------------------------------------
def test_sdk_error_classes_carry_arm_codes(client: Any, server: Server) -> None:
    with pytest.raises(ResourceNotFoundError) as missing:
        client.cache_rules.get(RG, REGISTRY, "no-such-rule")
    assert missing.value.error.code == "ResourceNotFound"

    with pytest.raises(ResourceNotFoundError) as parent:
        client.cache_rules.get(RG, "noregistry", "no-such-rule")
    assert parent.value.error.code == "ParentResourceNotFound"

    name = unique("errors")
    client.cache_rules.begin_create(
        RG, REGISTRY, name, CacheRule(source_repository="quay.io/e/*", target_repository="e/*")
    ).result()
    with pytest.raises(ResourceExistsError) as conflict:
        client.cache_rules.begin_create(
            RG,
            REGISTRY,
            unique("errors"),
            CacheRule(source_repository="quay.io/e/f/*", target_repository="e/f/*"),
        ).result()
    assert conflict.value.status_code == 409
    assert conflict.value.error.code == "CacheRuleTargetConflict"
    assert conflict.value.error.target == "properties.targetRepository"

    with pytest.raises(ResourceExistsError) as fixed:
        client.cache_rules.begin_create(
            RG, REGISTRY, name, CacheRule(source_repository="quay.io/x/*", target_repository="e/*")
        ).result()
    assert fixed.value.error.code == "PropertyChangeNotAllowed"

    with pytest.raises(HttpResponseError) as bad:
        client.cache_rules.begin_create(
            RG,
            REGISTRY,
            unique("errors"),
            CacheRule(source_repository="quay.io/UPPER/case", target_repository="upper"),
        ).result()
    assert type(bad.value) is HttpResponseError
    assert bad.value.status_code == 400
    assert bad.value.error.code == "InvalidSourceRepository"
    assert bad.value.error.target == "properties.sourceRepository"

    with pytest.raises(HttpResponseError) as missing_set:
        client.cache_rules.begin_create(
            RG,
            REGISTRY,
            unique("errors"),
            CacheRule(
                source_repository="quay.io/nset/x",
                target_repository="nset-x",
                credential_set_resource_id=set_id("does-not-exist"),
            ),
        ).result()
    assert missing_set.value.status_code == 400
    assert missing_set.value.error.code == "CredentialSetNotFound"

    with pytest.raises(HttpResponseError) as version:
        server.sdk_client(api_version="2024-01-01").cache_rules.get(RG, REGISTRY, name)
    assert version.value.status_code == 400
    assert version.value.error.code == "InvalidApiVersionParameter"

    bad_token = genuine_sdk_client(server.url, "not-the-token")
    with pytest.raises(ClientAuthenticationError) as auth:
        bad_token.cache_rules.get(RG, REGISTRY, name)
    assert auth.value.status_code == 401
    assert auth.value.error.code == "InvalidAuthenticationToken"
    with pytest.raises(ClientAuthenticationError):
        list(bad_token.cache_rules.list(RG, REGISTRY))

    client.cache_rules.begin_delete(RG, REGISTRY, name).result()


# -- the wire under the SDK ----------------------------------------------------------------------
def test_put_lro_headers_and_status(wire: Wire, server: Server) -> None:
    name = unique("wirerule")
    path = f"{registry_path()}/cacheRules/{name}"
    body = {"properties": {"sourceRepository": "quay.io/wire/x", "targetRepository": name}}

    first = wire("PUT", path, body)
    assert first.status_code == 201, first.text
    assert first.json()["name"] == name
    assert first.json()["properties"]["provisioningState"] in ("Creating", "Succeeded")
    status_url = first.headers["Azure-AsyncOperation"]
    assert_absolute_with_version(server, status_url, API)
    assert re.fullmatch(r"[0-9]+", first.headers["Retry-After"]), first.headers["Retry-After"]
    assert "/operationStatuses/" in status_url
    final = poll_status(wire, status_url)
    assert final["status"] == "Succeeded"
    assert {"id", "name", "startTime", "endTime"} <= set(final)
    assert "resourceLocation" not in final

    got = wire("GET", path)
    assert got.status_code == 200
    assert got.json()["properties"]["provisioningState"] == "Succeeded"

    again = wire("PUT", path, body)
    assert again.status_code == 200, again.text
    assert again.headers["Azure-AsyncOperation"] != status_url
    assert re.fullmatch(r"[0-9]+", again.headers["Retry-After"])
    assert poll_status(wire, again.headers["Azure-AsyncOperation"])["status"] == "Succeeded"

    patched = wire("PATCH", path, {"properties": {}})
    assert patched.status_code == 200, patched.text
    assert_absolute_with_version(server, patched.headers["Azure-AsyncOperation"], API)
    assert poll_status(wire, patched.headers["Azure-AsyncOperation"])["status"] == "Succeeded"

    # The version of the request is the version of the status URL.
    old = wire("PUT", path, body, api="2023-07-01")
    assert old.status_code == 200
    assert_absolute_with_version(server, old.headers["Azure-AsyncOperation"], "2023-07-01")

    deleted = wire("DELETE", path)
    assert deleted.status_code == 202, deleted.text
    location = deleted.headers["Location"]
    assert_absolute_with_version(server, location, API)
    assert "/operationResults/" in location
    assert re.fullmatch(r"[0-9]+", deleted.headers["Retry-After"])
    deadline = time.monotonic() + 15
    while True:
        result = wire("GET", "", url=location)
        if result.status_code == 204:
            break
        assert result.status_code == 202, result.text
        assert time.monotonic() < deadline
        location = result.headers.get("Location", location)
        time.sleep(0.05)
    assert result.content == b""
    gone = wire("GET", path)
    assert gone.status_code == 404
    assert error_of(gone)["code"] == "ResourceNotFound"
    # The operation result stays reachable after the resource is gone.
    assert wire("GET", "", url=deleted.headers["Location"]).status_code == 204

    missing = wire("DELETE", path)
    assert missing.status_code == 204
    assert "Location" not in missing.headers

    ids = [r.headers.get("x-ms-request-id") for r in wire.responses]
    assert all(ids), [r.status_code for r in wire.responses if not r.headers.get("x-ms-request-id")]
    assert len(set(ids)) == len(ids)


def test_credential_set_lro_on_the_wire(wire: Wire, server: Server) -> None:
    name = unique("wireset")
    path = f"{registry_path()}/credentialSets/{name}"
    body = {
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "loginServer": "quay.io",
            "authCredentials": [
                {
                    "name": "Credential1",
                    "usernameSecretIdentifier": "https://myvault.vault.azure.net/secrets/u",
                    "passwordSecretIdentifier": "https://myvault.vault.azure.net/secrets/p",
                }
            ],
        },
    }
    created = wire("PUT", path, body)
    assert created.status_code == 201, created.text
    assert created.json()["identity"]["principalId"]
    assert_absolute_with_version(server, created.headers["Azure-AsyncOperation"], API)
    assert poll_status(wire, created.headers["Azure-AsyncOperation"])["status"] == "Succeeded"
    assert wire("PUT", path, body).status_code == 200
    deleted = wire("DELETE", path)
    assert deleted.status_code == 202
    assert_absolute_with_version(server, deleted.headers["Location"], API)
    deadline = time.monotonic() + 15
    while wire("GET", path).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert wire("DELETE", path).status_code == 204
    assert all(r.headers.get("x-ms-request-id") for r in wire.responses)


def test_paging_next_link_absent_on_last_page(wire: Wire, server: Server) -> None:
    registry = unique("pagewire")
    made = wire("PUT", registry_path(registry), {"location": "local", "sku": {"name": "Basic"}})
    assert made.status_code == 201, made.text
    poll_status(wire, made.headers["Azure-AsyncOperation"])
    names = {f"wire-page-{i:02d}" for i in range(21)}
    for name in names:
        response = wire(
            "PUT",
            f"{registry_path(registry)}/cacheRules/{name}",
            {"properties": {"sourceRepository": f"quay.io/p/{name}", "targetRepository": name}},
        )
        assert response.status_code == 201, response.text

    seen: list[str] = []
    sizes: list[int] = []
    response = wire("GET", f"{registry_path(registry)}/cacheRules")
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        assert isinstance(page["value"], list)
        sizes.append(len(page["value"]))
        seen += [item["name"] for item in page["value"]]
        if "nextLink" not in page:
            break
        link = page["nextLink"]
        assert link, "nextLink must never be empty"
        assert_absolute_with_version(server, link, API)
        assert "$skipToken=" in link or "%24skipToken=" in link
        assert len(sizes) < 10, "paging does not end"
        response = wire("GET", "", url=link)
    assert sizes == [10, 10, 1]
    assert sorted(seen) == sorted(names)
    assert response.json().get("nextLink", "absent") == "absent"

    # Credential sets and registries page the same way (one page here: no nextLink at all).
    sets = wire("GET", f"{registry_path(registry)}/credentialSets")
    assert sets.status_code == 200 and sets.json() == {"value": []}
    wire("DELETE", registry_path(registry))


@pytest.mark.parametrize("version", ACCEPTED_VERSIONS)
def test_accepted_api_versions(wire: Wire, version: str) -> None:
    for path in (
        f"{registry_path()}/cacheRules",
        f"{registry_path()}/credentialSets",
        registry_path(),
        f"{PROVIDER_PREFIX}/registries",
    ):
        response = wire("GET", path, api=version)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["x-ms-request-id"]


@pytest.mark.parametrize(
    ("version", "code"),
    [
        ("2024-01-01", "InvalidApiVersionParameter"),
        ("2025-11-01-preview", "InvalidApiVersionParameter"),
        ("2019-05-01", "InvalidApiVersionParameter"),
        ("latest", "InvalidApiVersionParameter"),
        ("", "InvalidApiVersionParameter"),
        (None, "MissingApiVersionParameter"),
    ],
)
def test_refused_api_versions(wire: Wire, version: str | None, code: str) -> None:
    for method, path, body in (
        ("GET", f"{registry_path()}/cacheRules", None),
        (
            "PUT",
            f"{registry_path()}/cacheRules/versioned",
            {"properties": {"sourceRepository": "quay.io/v/x", "targetRepository": "versioned"}},
        ),
        ("DELETE", f"{registry_path()}/cacheRules/versioned", None),
    ):
        response = wire(method, path, body, api=version)
        assert response.status_code == 400, (method, response.text)
        assert error_of(response)["code"] == code
        assert response.headers["x-ms-request-id"]
    assert wire("GET", f"{registry_path()}/cacheRules/versioned").status_code == 404


def test_authentication(wire: Wire, server: Server) -> None:
    path = f"{registry_path()}/cacheRules"
    none = wire("GET", path, headers={})
    assert none.status_code == 401
    assert error_of(none)["code"] == "AuthenticationFailed"
    assert none.headers["WWW-Authenticate"].lower().startswith("bearer")
    for header in ("Bearer wrong-token", "Bearer ", f"Basic {server.token}", "Bearer"):
        bad = wire("GET", path, headers={"Authorization": header})
        assert bad.status_code == 401, header
        assert error_of(bad)["code"] in ("InvalidAuthenticationToken", "AuthenticationFailed")
    wrong = wire("GET", path, headers={"Authorization": "Bearer wrong-token"})
    assert error_of(wrong)["code"] == "InvalidAuthenticationToken"
    # A refused write changes nothing.
    put = wire(
        "PUT",
        f"{path}/unauthed",
        {"properties": {"sourceRepository": "quay.io/a/b", "targetRepository": "unauthed"}},
        headers={},
    )
    assert put.status_code == 401
    assert wire("GET", f"{path}/unauthed").status_code == 404

    health = wire("GET", "", url=f"{server.url}/healthz", headers={})
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert wire("GET", path).status_code == 200
    assert all(r.headers.get("x-ms-request-id") for r in wire.responses)


def test_client_request_id_is_echoed(wire: Wire, server: Server) -> None:
    headers = {**server.headers(), "x-ms-client-request-id": "abc-123"}
    response = wire("GET", f"{registry_path()}/cacheRules", headers=headers)
    assert response.headers["x-ms-client-request-id"] == "abc-123"
    assert response.headers["x-ms-request-id"] != "abc-123"


def test_sdk_is_the_genuine_15() -> None:
    from azure.mgmt.containerregistry import _version

    assert _version.VERSION.startswith("15."), _version.VERSION


@pytest.mark.slow
def test_slow_operations_are_polled(server_factory: Any) -> None:
    """With operations that take a while, the wire shows them running and the SDK waits."""
    slow = server_factory(env={"ENTREPOT_ARM_OPERATION_MIN_SECONDS": "1.8"})
    wire = Wire(slow)
    path = f"{registry_path()}/cacheRules/slowrule"
    body = {"properties": {"sourceRepository": "quay.io/slow/x", "targetRepository": "slow"}}
    created = wire("PUT", path, body)
    assert created.status_code == 201
    assert created.json()["properties"]["provisioningState"] == "Creating"
    status_url = created.headers["Azure-AsyncOperation"]
    running = wire("GET", "", url=status_url)
    assert running.status_code == 200
    assert running.json()["status"] == "InProgress"
    assert re.fullmatch(r"[0-9]+", running.headers["Retry-After"])
    assert wire("GET", path).json()["properties"]["provisioningState"] == "Creating"
    busy = wire("PUT", path, body)
    assert busy.status_code == 409
    assert error_of(busy)["code"] == "AnotherOperationInProgress"
    assert poll_status(wire, status_url)["status"] == "Succeeded"
    assert wire("GET", path).json()["properties"]["provisioningState"] == "Succeeded"

    deleted = wire("DELETE", path)
    assert deleted.status_code == 202
    pending = wire("GET", "", url=deleted.headers["Location"])
    assert pending.status_code == 202
    assert_absolute_with_version(slow, pending.headers["Location"], API)
    assert wire("GET", path).json()["properties"]["provisioningState"] == "Deleting"
    deadline = time.monotonic() + 15
    while wire("GET", "", url=deleted.headers["Location"]).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert wire("GET", "", url=deleted.headers["Location"]).status_code == 204
    assert wire("GET", path).status_code == 404

    sdk = slow.sdk_client()
    started = time.monotonic()
    rule = sdk.cache_rules.begin_create(
        RG, REGISTRY, "slowsdk", CacheRule(source_repository="quay.io/s/y", target_repository="y")
    ).result()
    assert time.monotonic() - started >= 1.2  # it really waited for the operation
    assert rule.provisioning_state == ProvisioningState.SUCCEEDED
    assert sdk.cache_rules.begin_delete(RG, REGISTRY, "slowsdk").result() is None
    with pytest.raises(ResourceNotFoundError):
        sdk.cache_rules.get(RG, REGISTRY, "slowsdk")
