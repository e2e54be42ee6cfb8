"""Unit tests of the client SDK ``entrepot.mgmt``, without the entrepot server.

What is checked here:

* the public API: ``__all__`` of ``entrepot.mgmt`` and ``entrepot.mgmt.models``, the seed's
  method signatures, and that the SDK imports nothing of the server;
* the requests the client would send, built with the request-builder functions (URL, method,
  query, headers, JSON body);
* the credential and the loopback-only relaxation of azure-core's https rule;
* the whole azure-core pipeline, LRO polling, paging and error mapping, driven against a real
  HTTP server on 127.0.0.1 that answers with scripted responses and records what it received.
"""

from __future__ import annotations
import __future__

import datetime as dt
import inspect
import io
import json
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AccessToken, SupportsTokenInfo, TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.paging import ItemPaged
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.polling import LROPoller
from azure.core.rest import HttpRequest
from azure.mgmt.core.polling.arm_polling import ARMPolling

import entrepot.mgmt
import entrepot.mgmt.models
import entrepot.models
from entrepot.mgmt import (
    ContainerRegistryManagementClient,
    LoopbackARMChallengeAuthenticationPolicy,
    StaticTokenCredential,
)
from entrepot.mgmt import _requests as rb
from entrepot.mgmt._credentials import is_loopback_url
from entrepot.mgmt.models import (
    AuthCredential,
    CacheRule,
    CacheRuleUpdateParameters,
    CredentialHealth,
    CredentialHealthStatus,
    CredentialName,
    CredentialSet,
    CredentialSetUpdateParameters,
    IdentityProperties,
    ProvisioningState,
    Registry,
    ResourceIdentityType,
    Sku,
    SkuName,
    SystemData,
)

SUB = "00000000-0000-0000-0000-000000000000"
P = (
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry"
    "/registries/myregistry"
)
API = "2025-11-01"
CS_ID = f"{P}/credentialSets/dockerhub-creds"


# -- helpers ------------------------------------------------------------------------------------
def _split(request: HttpRequest) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(request.url)
    return parts.path, parse_qs(parts.query, keep_blank_values=True)


def _json_body(request: HttpRequest) -> Any:
    assert request.headers["Content-Type"] == "application/json"
    content = request.content
    assert isinstance(content, bytes)
    assert request.headers["Content-Length"] == str(len(content))
    return json.loads(content)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """A real HTTP server on 127.0.0.1: answers scripted replies in order, then ``200 {}``.

    ``{base}`` in a reply header or a string body is replaced with the server's root URL.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with server._lock:
                    server.requests.append(
                        Recorded(
                            self.command,
                            parts.path,
                            parse_qs(parts.query, keep_blank_values=True),
                            dict(self.headers.items()),
                            body,
                        )
                    )
                    reply = server.replies.popleft() if server.replies else Reply()
                payload = b""
                if reply.body is not None:
                    text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                    payload = text.replace("{base}", server.url).encode()
                self.send_response(reply.status)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value.replace("{base}", server.url))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


def _client(base_url: str, **kwargs: Any) -> ContainerRegistryManagementClient:
    kwargs.setdefault("polling_interval", 0)
    kwargs.setdefault("retry_total", 0)
    return ContainerRegistryManagementClient(
        StaticTokenCredential("secret-token"), SUB, base_url=base_url, **kwargs
    )


@pytest.fixture
def client(server: ScriptedServer) -> Iterator[ContainerRegistryManagementClient]:
    with _client(server.url) as c:
        yield c


def _rule_json(state: str = "Succeeded", name: str = "hub") -> dict[str, Any]:
    return {
        "id": f"{P}/cacheRules/{name}",
        "name": name,
        "type": "Microsoft.ContainerRegistry/registries/cacheRules",
        "properties": {
            "sourceRepository": "docker.io/library/*",
            "targetRepository": "hub/*",
            "provisioningState": state,
            "creationDate": "2024-01-02T03:04:05Z",
        },
    }


# -- public API ---------------------------------------------------------------------------------
def _public_names(module: Any) -> set[str]:
    return {
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), __future__._Feature)
    }


@pytest.mark.parametrize("module", [entrepot.mgmt, entrepot.mgmt.models])
def test_all_is_sorted_complete_and_resolvable(module: Any) -> None:
    assert module.__all__ == sorted(module.__all__)
    assert len(set(module.__all__)) == len(module.__all__)
    assert _public_names(module) == set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_mgmt_all_names() -> None:
    assert entrepot.mgmt.__all__ == [
        "ContainerRegistryManagementClient",
        "LoopbackARMChallengeAuthenticationPolicy",
        "StaticTokenCredential",
        "loopback_policy",
        "models",
    ]
    assert entrepot.mgmt.models is sys.modules["entrepot.mgmt.models"]


def test_models_reexports_exactly_entrepot_models() -> None:
    assert entrepot.mgmt.models.__all__ == entrepot.models.__all__
    for name in entrepot.models.__all__:
        assert getattr(entrepot.mgmt.models, name) is getattr(entrepot.models, name)


def test_seed_import_line_works() -> None:
    from entrepot.mgmt.models import (  # noqa: F401
        AuthCredential,
        CacheRule,
        CacheRuleUpdateParameters,
        CredentialHealthStatus,
        CredentialName,
        CredentialSet,
        CredentialSetUpdateParameters,
        IdentityProperties,
        ProvisioningState,
        Registry,
        ResourceIdentityType,
        Sku,
        SystemData,
        UserIdentityProperties,
    )


def test_sdk_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, entrepot.mgmt, entrepot.mgmt.models;"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('entrepot'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    allowed = {"entrepot", "entrepot.models", "entrepot.errors"}
    assert {m for m in out if not m.startswith("entrepot.mgmt")} <= allowed, out


_SEED_SIGNATURES = {
    ("cache_rules", "begin_create"): [
        "resource_group_name",
        "registry_name",
        "cache_rule_name",
        "cache_rule_create_parameters",
    ],
    ("cache_rules", "begin_update"): [
        "resource_group_name",
        "registry_name",
        "cache_rule_name",
        "cache_rule_update_parameters",
    ],
    ("cache_rules", "begin_delete"): ["resource_group_name", "registry_name", "cache_rule_name"],
    ("cache_rules", "get"): ["resource_group_name", "registry_name", "cache_rule_name"],
    ("cache_rules", "list"): ["resource_group_name", "registry_name"],
    ("credential_sets", "begin_create"): [
        "resource_group_name",
        "registry_name",
        "credential_set_name",
        "credential_set_create_parameters",
    ],
    ("credential_sets", "begin_update"): [
        "resource_group_name",
        "registry_name",
        "credential_set_name",
        "credential_set_update_parameters",
    ],
    ("credential_sets", "begin_delete"): [
        "resource_group_name",
        "registry_name",
        "credential_set_name",
    ],
    ("credential_sets", "get"): ["resource_group_name", "registry_name", "credential_set_name"],
    ("credential_sets", "list"): ["resource_group_name", "registry_name"],
    ("registries", "begin_create"): ["resource_group_name", "registry_name", "registry"],
    ("registries", "begin_delete"): ["resource_group_name", "registry_name"],
    ("registries", "get"): ["resource_group_name", "registry_name"],
    ("registries", "list_by_resource_group"): ["resource_group_name"],
}


@pytest.mark.parametrize(("group", "method"), sorted(_SEED_SIGNATURES))
def test_operation_signatures_match_the_seed(group: str, method: str) -> None:
    client = ContainerRegistryManagementClient(StaticTokenCredential("t"), SUB)
    params = list(inspect.signature(getattr(getattr(client, group), method)).parameters.values())
    assert [p.name for p in params[:-1]] == _SEED_SIGNATURES[(group, method)]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:-1])
    assert params[-1].kind is params[-1].VAR_KEYWORD


def test_client_defaults_and_config() -> None:
    cred = StaticTokenCredential("t")
    client = ContainerRegistryManagementClient(cred, SUB)
    assert client._config.subscription_id == SUB
    assert client._config.base_url == "http://127.0.0.1:5000"
    assert client._config.api_version == "2025-11-01"
    assert client._config.polling_interval == 30
    assert client._config.credential_scopes == ["https://management.azure.com/.default"]
    assert client._config.credential is cred
    assert isinstance(
        client._config.authentication_policy, LoopbackARMChallengeAuthenticationPolicy
    )
    assert {"cache_rules", "credential_sets", "registries"} <= set(vars(client))
    assert SUB in repr(client)
    client.close()


def test_client_keywords_reach_the_config() -> None:
    client = ContainerRegistryManagementClient(
        StaticTokenCredential("t"),
        SUB,
        base_url="https://entrepot.example:8443/arm/",
        api_version="2025-04-01",
        polling_interval=0.5,
        credential_scopes=["api://entrepot/.default"],
        retry_total=3,
        retry_backoff_factor=0.1,
    )
    config = client._config
    assert config.base_url == "https://entrepot.example:8443/arm"
    assert config.api_version == "2025-04-01"
    assert config.polling_interval == 0.5
    assert config.credential_scopes == ["api://entrepot/.default"]
    assert config.retry_policy.total_retries == 3
    assert config.retry_policy.backoff_factor == 0.1
    assert config.authentication_policy._scopes == ("api://entrepot/.default",)


@pytest.mark.parametrize(
    ("credential", "subscription_id", "base_url"),
    [
        (None, SUB, "http://127.0.0.1:5000"),
        (StaticTokenCredential("t"), "", "http://127.0.0.1:5000"),
        (StaticTokenCredential("t"), SUB, "127.0.0.1:5000"),
        (StaticTokenCredential("t"), SUB, "ftp://127.0.0.1"),
        (StaticTokenCredential("t"), SUB, "http://127.0.0.1:5000/?x=1"),
    ],
)
def test_client_rejects_bad_arguments(credential: Any, subscription_id: str, base_url: str) -> None:
    with pytest.raises(ValueError):
        ContainerRegistryManagementClient(credential, subscription_id, base_url=base_url)


# -- request builders: what would be sent -------------------------------------------------------
def test_cache_rule_create_request() -> None:
    rule = CacheRule(
        source_repository="docker.io/library/*",
        target_repository="dockerhub-cache/*",
        credential_set_resource_id=CS_ID,
    )
    request = rb.build_cache_rules_create_request(
        subscription_id=SUB,
        resource_group_name="rg",
        registry_name="myregistry",
        cache_rule_name="dockerhub-cache",
        body=rule,
    )
    assert request.method == "PUT"
    assert _split(request) == (f"{P}/cacheRules/dockerhub-cache", {"api-version": [API]})
    assert request.headers["Accept"] == "application/json"
    assert _json_body(request) == {
        "properties": {
            "sourceRepository": "docker.io/library/*",
            "targetRepository": "dockerhub-cache/*",
            "credentialSetResourceId": CS_ID,
        }
    }


def test_cache_rule_without_credential_set_omits_the_key() -> None:
    rule = CacheRule(
        source_repository="docker.io/library/*",
        target_repository="hub/*",
        credential_set_resource_id=None,
    )
    request = rb.build_cache_rules_create_request(
        subscription_id=SUB,
        resource_group_name="rg",
        registry_name="myregistry",
        cache_rule_name="hub",
        body=rule,
    )
    assert _json_body(request) == {
        "properties": {"sourceRepository": "docker.io/library/*", "targetRepository": "hub/*"}
    }


def test_read_only_fields_are_never_sent() -> None:
    now = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    rule = CacheRule(
        id="/x",
        name="hub",
        type="t",
        system_data=SystemData(created_by="me", created_at=now),
        provisioning_state=ProvisioningState.SUCCEEDED,
        creation_date=now,
        source_repository="docker.io/library/*",
        target_repository="hub/*",
    )
    cred_set = CredentialSet(
        id="/x",
        name="creds",
        identity=IdentityProperties(
            type=ResourceIdentityType.SYSTEM_ASSIGNED, principal_id="p", tenant_id="t"
        ),
        provisioning_state=ProvisioningState.CREATING,
        creation_date=now,
        login_server="quay.io",
        auth_credentials=[
            AuthCredential(
                name=CredentialName.CREDENTIAL1,
                username_secret_identifier="u",
                password_secret_identifier="p",
                credential_health=CredentialHealth(
                    status=CredentialHealthStatus.UNHEALTHY, error_code="E", error_message="m"
                ),
            )
        ],
    )
    registry = Registry(
        id="/x",
        location="westeurope",
        sku=Sku(name=SkuName.PREMIUM, tier="Premium"),
        login_server="myregistry.example",
        provisioning_state=ProvisioningState.SUCCEEDED,
        tags={"env": "test"},
    )
    common: dict[str, Any] = {
        "subscription_id": SUB,
        "resource_group_name": "rg",
        "registry_name": "myregistry",
    }
    assert _json_body(
        rb.build_cache_rules_create_request(**common, cache_rule_name="hub", body=rule)
    ) == {"properties": {"sourceRepository": "docker.io/library/*", "targetRepository": "hub/*"}}
    assert _json_body(
        rb.build_credential_sets_create_request(
            **common, credential_set_name="creds", body=cred_set
        )
    ) == {
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "loginServer": "quay.io",
            "authCredentials": [
                {
                    "name": "Credential1",
                    "usernameSecretIdentifier": "u",
                    "passwordSecretIdentifier": "p",
                }
            ],
        },
    }
    assert _json_body(rb.build_registries_create_request(**common, body=registry)) == {
        "location": "westeurope",
        "sku": {"name": "Premium"},
        "tags": {"env": "test"},
    }


def test_credential_set_create_request_as_in_the_seed() -> None:
    params = CredentialSet(
        identity=IdentityProperties(type=ResourceIdentityType.SYSTEM_ASSIGNED),
        login_server="private-registry.company.com",
        auth_credentials=[
            AuthCredential(
                name=CredentialName.CREDENTIAL1,
                username_secret_identifier="https://myvault.vault.azure.net/secrets/registry-username",
                password_secret_identifier="https://myvault.vault.azure.net/secrets/registry-password",
            )
        ],
    )
    request = rb.build_credential_sets_create_request(
        subscription_id=SUB,
        resource_group_name="rg",
        registry_name="myregistry",
        credential_set_name="private-registry-creds",
        body=params,
    )
    assert request.method == "PUT"
    assert _split(request) == (
        f"{P}/credentialSets/private-registry-creds",
        {"api-version": [API]},
    )
    assert _json_body(request) == {
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "loginServer": "private-registry.company.com",
            "authCredentials": [
                {
                    "name": "Credential1",
                    "usernameSecretIdentifier": "https://myvault.vault.azure.net/secrets/registry-username",
                    "passwordSecretIdentifier": "https://myvault.vault.azure.net/secrets/registry-password",
                }
            ],
        },
    }


def test_credential_set_update_request_is_a_patch_without_identity_or_login_server() -> None:
    params = CredentialSetUpdateParameters(
        auth_credentials=[
            AuthCredential(
                name=CredentialName.CREDENTIAL1,
                username_secret_identifier="u2",
                password_secret_identifier="p2",
            )
        ]
    )
    request = rb.build_credential_sets_update_request(
        subscription_id=SUB,
        resource_group_name="rg",
        registry_name="myregistry",
        credential_set_name="creds",
        body=params,
    )
    assert request.method == "PATCH"
    assert _split(request) == (f"{P}/credentialSets/creds", {"api-version": [API]})
    assert _json_body(request) == {
        "properties": {
            "authCredentials": [
                {
                    "name": "Credential1",
                    "usernameSecretIdentifier": "u2",
                    "passwordSecretIdentifier": "p2",
                }
            ]
        }
    }


def test_cache_rule_update_requests() -> None:
    common: dict[str, Any] = {
        "subscription_id": SUB,
        "resource_group_name": "rg",
        "registry_name": "myregistry",
        "cache_rule_name": "hub",
    }
    with_id = rb.build_cache_rules_update_request(
        **common, body=CacheRuleUpdateParameters(credential_set_resource_id=CS_ID)
    )
    assert with_id.method == "PATCH"
    assert _split(with_id) == (f"{P}/cacheRules/hub", {"api-version": [API]})
    assert _json_body(with_id) == {"properties": {"credentialSetResourceId": CS_ID}}
    # None deletes the key: the model cannot express "remove the credential set" (the genuine
    # SDK sends {"properties": {}}, entrepot.models leaves the empty object out: both no-ops) ...
    no_op = rb.build_cache_rules_update_request(
        **common, body=CacheRuleUpdateParameters(credential_set_resource_id=None)
    )
    assert _json_body(no_op) == {}
    # ... a dict can: it is sent as is, explicit null included.
    removal = rb.build_cache_rules_update_request(
        **common, body={"properties": {"credentialSetResourceId": None}}
    )
    assert removal.content == b'{"properties":{"credentialSetResourceId":null}}'


def test_dict_bodies_convert_nested_models_enums_and_datetimes() -> None:
    body = {
        "identity": IdentityProperties(type=ResourceIdentityType.SYSTEM_ASSIGNED, principal_id="p"),
        "properties": {
            "authCredentials": [
                AuthCredential(name=CredentialName.CREDENTIAL1, username_secret_identifier="u")
            ],
            "state": ProvisioningState.SUCCEEDED,
            "when": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        },
    }
    request = rb.build_credential_sets_update_request(
        subscription_id=SUB,
        resource_group_name="rg",
        registry_name="myregistry",
        credential_set_name="creds",
        body=body,
    )
    assert _json_body(request) == {
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "authCredentials": [{"name": "Credential1", "usernameSecretIdentifier": "u"}],
            "state": "Succeeded",
            "when": "2024-01-02T03:04:05.000000Z",
        },
    }


def test_bytes_and_file_bodies_are_sent_verbatim() -> None:
    common: dict[str, Any] = {
        "subscription_id": SUB,
        "resource_group_name": "rg",
        "registry_name": "myregistry",
    }
    raw = rb.build_cache_rules_create_request(**common, cache_rule_name="hub", body=b'{"a":1}')
    assert raw.content == b'{"a":1}'
    assert raw.headers["Content-Type"] == "application/json"
    stream = io.BytesIO(b'{"b":2}')
    from_file = rb.build_cache_rules_create_request(**common, cache_rule_name="hub", body=stream)
    assert from_file.content is stream


@pytest.mark.parametrize("bad", [42, ["a"], "text", {"x": object()}, {"x": float("nan")}])
def test_unserialisable_bodies_are_refused(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        rb.build_cache_rules_create_request(
            subscription_id=SUB,
            resource_group_name="rg",
            registry_name="myregistry",
            cache_rule_name="hub",
            body=bad,
        )


def test_get_delete_and_list_requests() -> None:
    common: dict[str, Any] = {
        "subscription_id": SUB,
        "resource_group_name": "rg",
        "registry_name": "myregistry",
    }
    get = rb.build_cache_rules_get_request(**common, cache_rule_name="hub")
    assert (get.method, _split(get)) == ("GET", (f"{P}/cacheRules/hub", {"api-version": [API]}))
    assert get.headers["Accept"] == "application/json"
    assert get.content is None

    delete = rb.build_credential_sets_delete_request(**common, credential_set_name="creds")
    assert delete.method == "DELETE"
    assert _split(delete) == (f"{P}/credentialSets/creds", {"api-version": [API]})
    assert delete.content is None
    assert "Content-Type" not in delete.headers
    assert "Accept" not in delete.headers

    rules = rb.build_cache_rules_list_request(**common)
    sets = rb.build_credential_sets_list_request(**common)
    assert (rules.method, _split(rules)) == ("GET", (f"{P}/cacheRules", {"api-version": [API]}))
    assert _split(sets) == (f"{P}/credentialSets", {"api-version": [API]})

    registry = rb.build_registries_get_request(**common)
    assert _split(registry) == (P, {"api-version": [API]})
    registry_delete = rb.build_registries_delete_request(**common)
    assert (registry_delete.method, _split(registry_delete)[0]) == ("DELETE", P)
    registries = rb.build_registries_list_by_resource_group_request(
        subscription_id=SUB, resource_group_name="rg"
    )
    assert _split(registries) == (P.rsplit("/", 1)[0], {"api-version": [API]})


def test_every_path_segment_is_percent_encoded() -> None:
    request = rb.build_cache_rules_get_request(
        subscription_id="sub/1",
        resource_group_name="my rg(1)",
        registry_name="a/b",
        cache_rule_name="x?y#z%",
    )
    assert request.url.split("?")[0] == (
        "/subscriptions/sub%2F1/resourceGroups/my%20rg%281%29/providers/"
        "Microsoft.ContainerRegistry/registries/a%2Fb/cacheRules/x%3Fy%23z%25"
    )


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_names_that_would_change_the_route_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        rb.build_cache_rules_delete_request(
            subscription_id=SUB,
            resource_group_name="rg",
            registry_name="myregistry",
            cache_rule_name=name,
        )


def test_non_string_names_are_refused() -> None:
    with pytest.raises(TypeError):
        rb.build_registries_get_request(
            subscription_id=SUB,
            resource_group_name="rg",
            registry_name=None,  # type: ignore[arg-type]
        )


def test_api_version_headers_and_params() -> None:
    request = rb.build_cache_rules_get_request(
        subscription_id=SUB,
        resource_group_name="rg",
        registry_name="myregistry",
        cache_rule_name="hub",
        api_version="2025-04-01",
        headers={"x-custom": "1", "Accept": "application/json;q=1"},
        params={"API-VERSION": "bogus", "extra": "v"},
    )
    _, query = _split(request)
    assert query == {"api-version": ["2025-04-01"], "extra": ["v"]}
    assert request.headers["x-custom"] == "1"
    assert request.headers["Accept"] == "application/json;q=1"


def test_next_link_request_keeps_the_link_but_uses_our_api_version() -> None:
    link = (
        "http://other-host:8080/prefix/subscriptions/x/cacheRules"
        "?api-version=2099-01-01&%24skipToken=a%2Fb%2Bc%3D&empty="
    )
    request = rb.build_next_link_request(link, api_version=API)
    parts = urlsplit(request.url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "http",
        "other-host:8080",
        "/prefix/subscriptions/x/cacheRules",
    )
    assert sorted(parts.query.split("&")) == ["$skipToken=a/b%2Bc%3D", f"api-version={API}"]
    assert request.method == "GET"
    assert request.headers["Accept"] == "application/json"

    relative = rb.build_next_link_request("/subscriptions/x/cacheRules?page=2", api_version=API)
    assert relative.url == f"/subscriptions/x/cacheRules?page=2&api-version={API}"


# -- credentials and the loopback rule ----------------------------------------------------------
def test_static_token_credential() -> None:
    cred = StaticTokenCredential("abc.def")
    before = int(time.time())
    token = cred.get_token("https://management.azure.com/.default", claims="c", tenant_id="t")
    assert isinstance(token, AccessToken)
    assert token.token == "abc.def"
    assert before + 3600 <= token.expires_on <= int(time.time()) + 3600
    info = cred.get_token_info("scope", options={"claims": "c"})
    assert (info.token, info.token_type) == ("abc.def", "Bearer")
    assert before + 3600 <= info.expires_on <= int(time.time()) + 3600
    assert isinstance(cred, TokenCredential)
    assert isinstance(cred, SupportsTokenInfo)
    assert "abc.def" not in repr(cred)
    with cred as same:
        assert same is cred
    cred.close()
    assert StaticTokenCredential("t", lifetime=60).get_token().expires_on <= int(time.time()) + 60


@pytest.mark.parametrize("bad", ["", "a b", "a\nb", "tok\r\nX-Injected: 1"])
def test_static_token_credential_refuses_tokens_that_cannot_be_a_header(bad: str) -> None:
    with pytest.raises(ValueError):
        StaticTokenCredential(bad)


def test_static_token_credential_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        StaticTokenCredential(b"token")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:5000/x", True),
        ("http://127.1.2.3/", True),
        ("http://[::1]:8080/", True),
        ("http://localhost:5000", True),
        ("http://LOCALHOST/", True),
        ("http://[::ffff:127.0.0.1]/", True),
        ("http://10.0.0.1/", False),
        ("http://0.0.0.0/", False),
        ("http://128.0.0.1/", False),
        ("http://localhost.example.com/", False),
        ("http://127.0.0.1.nip.io/", False),
        ("http://example.com/", False),
        ("/relative/path", False),
        ("http://[::1/", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_loopback_http_sends_the_token_and_sdk_headers(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    rule = client.cache_rules.get("rg", "myregistry", "hub")
    assert rule == CacheRule()  # the server answered {}
    (request,) = server.requests
    assert (request.method, request.path) == ("GET", f"{P}/cacheRules/hub")
    assert request.query == {"api-version": [API]}
    assert request.headers["Authorization"] == "Bearer secret-token"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith(f"entrepot-mgmt/{entrepot.mgmt.__version__} ")
    assert request.headers["x-ms-client-request-id"]


def test_names_reach_the_server_percent_encoded(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    client.cache_rules.get("rg", "myregistry", "a/b c")
    assert server.requests[0].path == f"{P}/cacheRules/a%2Fb%20c"


def test_user_agent_keyword_is_put_in_front(server: ScriptedServer) -> None:
    with _client(server.url, user_agent="my-app/1.0") as client:
        client.registries.get("rg", "myregistry")
    assert server.requests[0].headers["User-Agent"].startswith("my-app/1.0 entrepot-mgmt/")


def test_non_loopback_http_with_a_token_is_refused(server: ScriptedServer) -> None:
    client = _client("http://entrepot.example.invalid:5000")
    with client, pytest.raises(ServiceRequestError, match="non-TLS"):
        client.cache_rules.get("rg", "myregistry", "hub")
    assert server.requests == []


def test_a_redirect_from_loopback_to_a_remote_http_host_is_refused(server: ScriptedServer) -> None:
    server.script(Reply(307, None, {"Location": "http://entrepot.example.invalid/elsewhere"}))
    client = _client(server.url)
    with client, pytest.raises(ServiceRequestError, match="non-TLS"):
        client.cache_rules.get("rg", "myregistry", "hub")
    assert len(server.requests) == 1


def test_a_redirect_within_loopback_keeps_the_token(server: ScriptedServer) -> None:
    server.script(Reply(307, None, {"Location": "{base}/moved"}), Reply(200, _rule_json()))
    with _client(server.url) as client:
        rule = client.cache_rules.get("rg", "myregistry", "hub")
    assert rule.name == "hub"
    assert [r.path for r in server.requests] == [f"{P}/cacheRules/hub", "/moved"]
    assert server.requests[1].headers["Authorization"] == "Bearer secret-token"


def test_authentication_policy_can_be_replaced(server: ScriptedServer) -> None:
    with _client(server.url, authentication_policy=SansIOHTTPPolicy()) as client:
        client.cache_rules.get("rg", "myregistry", "hub")
    assert "Authorization" not in server.requests[0].headers


def test_base_url_path_prefix_is_kept(server: ScriptedServer) -> None:
    with _client(server.url + "/arm/") as client:
        client.credential_sets.get("rg", "myregistry", "creds")
    assert server.requests[0].path == f"/arm{P}/credentialSets/creds"


# -- operations through the pipeline ------------------------------------------------------------
def test_get_deserialises_the_resource(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(200, _rule_json()))
    rule = client.cache_rules.get("rg", "myregistry", "hub")
    assert isinstance(rule, CacheRule)
    assert rule.name == "hub"
    assert rule.source_repository == "docker.io/library/*"
    assert rule.provisioning_state is ProvisioningState.SUCCEEDED
    assert rule.creation_date == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_cls_keyword_replaces_the_return_value(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(200, _rule_json(), {"x-extra": "1"}))
    result: Any = client.cache_rules.get(
        "rg", "myregistry", "hub", cls=lambda pr, d, h: (pr.http_response.status_code, d)
    )
    status, rule = result
    assert status == 200
    assert rule.name == "hub"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, ClientAuthenticationError),
        (404, ResourceNotFoundError),
        (409, ResourceExistsError),
        (400, HttpResponseError),
        (403, HttpResponseError),
    ],
)
def test_errors_are_mapped_and_carry_the_arm_error(
    server: ScriptedServer,
    client: ContainerRegistryManagementClient,
    status: int,
    error_type: type[HttpResponseError],
) -> None:
    body = {"error": {"code": "SomeCode", "message": "Something went wrong.", "target": "name"}}
    server.script(Reply(status, body))
    with pytest.raises(error_type) as info:
        client.cache_rules.get("rg", "myregistry", "hub")
    assert type(info.value) is error_type
    assert info.value.status_code == status
    assert info.value.error is not None
    assert info.value.error.code == "SomeCode"
    assert info.value.error.message == "Something went wrong."
    assert "(SomeCode) Something went wrong." in str(info.value)


def test_a_non_json_error_body_still_raises_http_response_error(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(400, "not json"))
    with pytest.raises(HttpResponseError) as info:
        client.cache_rules.get("rg", "myregistry", "hub")
    assert info.value.status_code == 400


def test_retriable_statuses_are_retried(server: ScriptedServer) -> None:
    server.script(Reply(503, {"error": {"code": "Busy", "message": "later"}}), Reply(200, {}))
    with _client(server.url, retry_total=1, retry_backoff_factor=0) as client:
        client.cache_rules.get("rg", "myregistry", "hub")
    assert len(server.requests) == 2


def test_begin_create_follows_azure_async_operation(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    status_url = f"{{base}}{P}/cacheRules/hub/operationStatuses/op1?api-version={API}"
    server.script(
        Reply(201, _rule_json("Creating"), {"Azure-AsyncOperation": status_url}),
        Reply(200, {"id": "op1", "name": "op1", "status": "InProgress"}),
        Reply(200, {"id": "op1", "name": "op1", "status": "Succeeded"}),
        Reply(200, _rule_json("Succeeded")),
    )
    poller = client.cache_rules.begin_create(
        "rg",
        "myregistry",
        "hub",
        CacheRule(source_repository="docker.io/library/*", target_repository="hub/*"),
    )
    assert isinstance(poller, LROPoller)
    rule = poller.result(timeout=10)
    assert isinstance(rule, CacheRule)
    assert rule.provisioning_state is ProvisioningState.SUCCEEDED
    assert poller.status() == "Succeeded"
    methods_paths = [(r.method, r.path) for r in server.requests]
    assert methods_paths == [
        ("PUT", f"{P}/cacheRules/hub"),
        ("GET", f"{P}/cacheRules/hub/operationStatuses/op1"),
        ("GET", f"{P}/cacheRules/hub/operationStatuses/op1"),
        ("GET", f"{P}/cacheRules/hub"),
    ]
    assert all(r.query["api-version"] == [API] for r in server.requests)
    put = server.requests[0]
    assert put.headers["Content-Type"] == "application/json"
    assert json.loads(put.body) == {
        "properties": {"sourceRepository": "docker.io/library/*", "targetRepository": "hub/*"}
    }
    request_ids = {r.headers["x-ms-client-request-id"] for r in server.requests}
    assert len(request_ids) == 1  # polls re-use the initial request id


def test_begin_create_synchronous_200(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(200, _rule_json("Succeeded")))
    rule = client.cache_rules.begin_create(
        "rg", "myregistry", "hub", {"properties": {"sourceRepository": "a/*"}}
    ).result(timeout=10)
    assert rule.name == "hub"
    assert len(server.requests) == 1


def test_begin_create_with_a_relative_status_url_and_provisioning_state_polling(
    server: ScriptedServer,
) -> None:
    server.script(
        Reply(201, _rule_json("Creating"), {"Azure-AsyncOperation": "/ops/1?api-version=x"}),
        Reply(200, {"status": "Succeeded"}),
        Reply(200, _rule_json("Succeeded")),
    )
    with _client(server.url + "/arm") as client:
        client.cache_rules.begin_create("rg", "myregistry", "hub", CacheRule()).result(timeout=10)
    assert [r.path for r in server.requests] == [
        f"/arm{P}/cacheRules/hub",
        "/arm/ops/1",
        f"/arm{P}/cacheRules/hub",
    ]

    server.requests.clear()
    server.script(
        Reply(201, _rule_json("Creating")),
        Reply(200, _rule_json("Creating")),
        Reply(200, _rule_json("Succeeded")),
    )
    with _client(server.url) as client:
        rule = client.cache_rules.begin_create("rg", "myregistry", "hub", CacheRule()).result(
            timeout=10
        )
    assert rule.provisioning_state is ProvisioningState.SUCCEEDED
    assert [r.method for r in server.requests] == ["PUT", "GET", "GET"]


def test_begin_create_failure_raises_with_the_operation_error(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(
        Reply(201, _rule_json("Creating"), {"Azure-AsyncOperation": "{base}/ops/2"}),
        Reply(200, {"status": "Failed", "error": {"code": "UpstreamDown", "message": "no"}}),
    )
    poller = client.cache_rules.begin_create("rg", "myregistry", "hub", CacheRule())
    with pytest.raises(HttpResponseError) as info:
        poller.result(timeout=10)
    assert info.value.error is not None
    assert info.value.error.code == "UpstreamDown"


def test_begin_create_refused_up_front(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(400, {"error": {"code": "WildcardMismatch", "message": "m"}}))
    with pytest.raises(HttpResponseError) as info:
        client.cache_rules.begin_create("rg", "myregistry", "hub", CacheRule())
    assert info.value.error is not None
    assert info.value.error.code == "WildcardMismatch"
    server.script(Reply(202, {}))
    with pytest.raises(HttpResponseError):
        client.cache_rules.begin_create("rg", "myregistry", "hub", CacheRule())


def test_begin_update_sends_a_patch(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    cred_json = {
        "id": f"{P}/credentialSets/creds",
        "name": "creds",
        "identity": {"type": "SystemAssigned", "principalId": "p", "tenantId": "t"},
        "properties": {
            "loginServer": "quay.io",
            "provisioningState": "Succeeded",
            "authCredentials": [{"name": "Credential1", "credentialHealth": {"status": "Healthy"}}],
        },
    }
    server.script(Reply(200, cred_json))
    result = client.credential_sets.begin_update(
        "rg",
        "myregistry",
        "creds",
        CredentialSetUpdateParameters(
            auth_credentials=[
                AuthCredential(
                    name=CredentialName.CREDENTIAL1,
                    username_secret_identifier="u",
                    password_secret_identifier="p",
                )
            ]
        ),
    ).result(timeout=10)
    assert isinstance(result, CredentialSet)
    assert result.identity is not None
    assert result.identity.type is ResourceIdentityType.SYSTEM_ASSIGNED
    assert result.auth_credentials is not None
    health = result.auth_credentials[0].credential_health
    assert health is not None
    assert health.status is CredentialHealthStatus.HEALTHY
    (patch,) = server.requests
    assert (patch.method, patch.path) == ("PATCH", f"{P}/credentialSets/creds")
    assert json.loads(patch.body) == {
        "properties": {
            "authCredentials": [
                {
                    "name": "Credential1",
                    "usernameSecretIdentifier": "u",
                    "passwordSecretIdentifier": "p",
                }
            ]
        }
    }


def test_begin_delete_follows_location(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    location = f"{{base}}{P}/cacheRules/hub/operationResults/op3?api-version={API}"
    server.script(
        Reply(202, None, {"Location": location}),
        Reply(202, None, {"Location": location}),
        Reply(204, None),
    )
    poller = client.cache_rules.begin_delete("rg", "myregistry", "hub")
    assert poller.result(timeout=10) is None
    assert [(r.method, r.path) for r in server.requests] == [
        ("DELETE", f"{P}/cacheRules/hub"),
        ("GET", f"{P}/cacheRules/hub/operationResults/op3"),
        ("GET", f"{P}/cacheRules/hub/operationResults/op3"),
    ]
    assert server.requests[0].body == b""


def test_begin_delete_with_both_headers_gets_location_last(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(
        Reply(202, None, {"Azure-AsyncOperation": "{base}/ops/4", "Location": "{base}/results/4"}),
        Reply(200, {"status": "InProgress"}),
        Reply(200, {"status": "Succeeded"}),
        Reply(204, None),
    )
    assert client.credential_sets.begin_delete("rg", "myregistry", "creds").result(10) is None
    assert [r.path for r in server.requests] == [
        f"{P}/credentialSets/creds",
        "/ops/4",
        "/ops/4",
        "/results/4",
    ]


@pytest.mark.parametrize("status", [200, 201])
def test_begin_delete_refuses_statuses_other_than_202_and_204(
    server: ScriptedServer, client: ContainerRegistryManagementClient, status: int
) -> None:
    server.script(Reply(status, {}))
    with pytest.raises(HttpResponseError):
        client.cache_rules.begin_delete("rg", "myregistry", "hub")


def test_begin_delete_synchronous_204_and_not_found(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(204, None))
    assert client.cache_rules.begin_delete("rg", "myregistry", "hub").result(10) is None
    server.script(Reply(404, {"error": {"code": "ResourceNotFound", "message": "gone"}}))
    with pytest.raises(ResourceNotFoundError):
        client.cache_rules.begin_delete("rg", "myregistry", "hub")


def test_polling_false_returns_the_initial_response(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(201, _rule_json("Creating"), {"Azure-AsyncOperation": "{base}/ops/5"}))
    rule = client.cache_rules.begin_create(
        "rg", "myregistry", "hub", CacheRule(), polling=False
    ).result()
    assert rule.provisioning_state is ProvisioningState.CREATING
    assert len(server.requests) == 1


class _PausedPolling(ARMPolling):
    """ARMPolling that stops after the initial response: a caller-supplied polling method."""

    def run(self) -> None:
        pass


def test_custom_polling_method_and_continuation_token(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(201, _rule_json("Creating"), {"Azure-AsyncOperation": "{base}/ops/6"}))
    paused = client.cache_rules.begin_create(
        "rg", "myregistry", "hub", CacheRule(), polling=_PausedPolling(0)
    )
    paused.wait(timeout=10)
    token = paused.continuation_token()
    assert len(server.requests) == 1
    server.script(Reply(200, {"status": "Succeeded"}), Reply(200, _rule_json("Succeeded")))
    resumed = client.cache_rules.begin_create(
        "rg", "myregistry", "hub", CacheRule(), continuation_token=token
    )
    rule = resumed.result(timeout=10)
    assert rule.provisioning_state is ProvisioningState.SUCCEEDED
    assert [(r.method, r.path) for r in server.requests] == [
        ("PUT", f"{P}/cacheRules/hub"),
        ("GET", "/ops/6"),
        ("GET", f"{P}/cacheRules/hub"),
    ]


def test_per_call_polling_interval(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(
        Reply(201, _rule_json("Creating"), {"Azure-AsyncOperation": "{base}/ops/7"}),
        Reply(200, {"status": "InProgress"}),
        Reply(200, {"status": "Succeeded"}),
        Reply(200, _rule_json("Succeeded")),
    )
    started = time.monotonic()
    client.cache_rules.begin_create(
        "rg", "myregistry", "hub", CacheRule(), polling_interval=0.2
    ).result(timeout=10)
    assert time.monotonic() - started >= 0.2


def test_list_follows_next_links_with_our_api_version(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    page1 = {
        "value": [_rule_json(name="r1"), _rule_json(name="r2")],
        "nextLink": f"{{base}}{P}/cacheRules?api-version=2020-01-01&%24skipToken=a%2Fb%2Bc",
    }
    page2 = {"value": [_rule_json(name="r3")], "nextLink": f"{P}/cacheRules?page=3"}
    page3 = {"value": [_rule_json(name="r4")], "nextLink": None}
    server.script(Reply(200, page1), Reply(200, page2), Reply(200, page3))
    pager = client.cache_rules.list("rg", "myregistry")
    assert isinstance(pager, ItemPaged)
    assert server.requests == []  # lazy
    names = [rule.name for rule in pager]
    assert names == ["r1", "r2", "r3", "r4"]
    queries = [r.query for r in server.requests]
    assert [r.path for r in server.requests] == [f"{P}/cacheRules"] * 3
    assert queries[0] == {"api-version": [API]}
    assert queries[1] == {"api-version": [API], "$skipToken": ["a/b+c"]}
    assert queries[2] == {"api-version": [API], "page": ["3"]}
    assert all(r.headers["Authorization"] == "Bearer secret-token" for r in server.requests)


def test_list_by_page_and_empty_lists(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(200, {"value": []}))
    assert list(client.credential_sets.list("rg", "myregistry")) == []
    server.script(Reply(200, {"value": [_rule_json(name="a")], "nextLink": ""}))
    pages = [list(page) for page in client.cache_rules.list("rg", "myregistry").by_page()]
    assert [[r.name for r in page] for page in pages] == [["a"]]


def test_list_refuses_a_bare_array(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(200, [_rule_json()]))
    with pytest.raises(DecodeError):
        list(client.cache_rules.list("rg", "myregistry"))


def test_list_error_is_raised_while_iterating(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(404, {"error": {"code": "ParentResourceNotFound", "message": "m"}}))
    pager = client.credential_sets.list("rg", "nope1")
    with pytest.raises(ResourceNotFoundError) as info:
        next(iter(pager))
    assert info.value.error is not None
    assert info.value.error.code == "ParentResourceNotFound"


def test_registries(server: ScriptedServer, client: ContainerRegistryManagementClient) -> None:
    registry_json = {
        "id": P,
        "name": "myregistry",
        "type": "Microsoft.ContainerRegistry/registries",
        "location": "westeurope",
        "sku": {"name": "Premium", "tier": "Premium"},
        "properties": {"loginServer": "127.0.0.1:5000", "provisioningState": "Succeeded"},
    }
    server.script(Reply(200, registry_json))
    created = client.registries.begin_create(
        "rg", "myregistry", Registry(location="westeurope", sku=Sku(name=SkuName.PREMIUM))
    ).result(timeout=10)
    assert isinstance(created, Registry)
    assert created.login_server == "127.0.0.1:5000"
    assert json.loads(server.requests[0].body) == {
        "location": "westeurope",
        "sku": {"name": "Premium"},
    }
    server.script(Reply(200, registry_json))
    assert client.registries.get("rg", "myregistry").sku == Sku(
        name=SkuName.PREMIUM, tier="Premium"
    )
    server.script(Reply(200, {"value": [registry_json]}))
    assert [r.name for r in client.registries.list_by_resource_group("rg")] == ["myregistry"]
    assert server.requests[-1].path == P.rsplit("/", 1)[0]
    server.script(Reply(200, None))  # registries accept 200 on delete, as the genuine SDK
    assert client.registries.begin_delete("rg", "myregistry").result(timeout=10) is None
    assert server.requests[-1].method == "DELETE"


def test_send_request_joins_relative_urls(
    server: ScriptedServer, client: ContainerRegistryManagementClient
) -> None:
    server.script(Reply(418, {"x": 1}))
    request = HttpRequest("GET", "/healthz")
    response = client.send_request(request)
    assert response.status_code == 418
    assert response.json() == {"x": 1}
    assert request.url == "/healthz"
    assert server.requests[0].path == "/healthz"
    assert server.requests[0].headers["Authorization"] == "Bearer secret-token"
