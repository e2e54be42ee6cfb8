"""ARM conformance odds and ends (issue 7, item 10), over HTTP against a real server.

* a body whose ``Content-Type`` is not JSON is a 415 ``UnsupportedMediaType``;
* the fixed path words route in any case (``/SUBSCRIPTIONS/...``), as ARM does;
* a ``$skipToken`` this server did not make is a 400, never a silent restart at page one;
* without a valid token, a malformed name is a 401: authentication comes before validation.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from entrepot.web.arm import decode_skip_token, encode_skip_token
from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, ServerProcess

API = "2025-04-01"
RULE = {"properties": {"sourceRepository": "quay.io/conf/one", "targetRepository": "conf-one"}}


def call(
    server: ServerProcess,
    method: str,
    path: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    auth: bool = True,
    query: str = f"api-version={API}",
) -> requests.Response:
    all_headers = {**(server.headers() if auth else {}), **(headers or {})}
    return requests.request(
        method,
        f"{server.url}{path}?{query}",
        data=data,
        headers=all_headers,
        timeout=30,
    )


def arm_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["x-ms-request-id"]
    error = response.json()["error"]
    assert error["code"] == code, error
    return dict(error)


# -- 415 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content_type", "name"),
    [
        ("text/plain", "conf-text"),
        ("application/x-www-form-urlencoded", "conf-form"),
        ("application/xml", "conf-xml"),
        ("multipart/form-data", "conf-multipart"),
    ],
)
def test_put_and_patch_with_a_body_that_is_not_json_is_415(
    server: ServerProcess, content_type: str, name: str
) -> None:
    rule = f"{server.registry_path}/cacheRules/{name}"
    body = (
        f'{{"properties": {{"sourceRepository": "quay.io/conf/{name}", '
        f'"targetRepository": "{name}"}}}}'
    ).encode()
    refused = call(server, "PUT", rule, data=body, headers={"Content-Type": content_type})
    error = arm_error(refused, 415, "UnsupportedMediaType")
    assert error["target"] == "Content-Type"
    assert "application/json" in error["message"]
    assert call(server, "GET", rule).status_code == 404  # nothing was created

    created = call(server, "PUT", rule, data=body, headers={"Content-Type": "application/json"})
    assert created.status_code == 201, created.text
    patch = b'{"properties": {"credentialSetResourceId": null}}'
    arm_error(
        call(server, "PATCH", rule, data=patch, headers={"Content-Type": content_type}),
        415,
        "UnsupportedMediaType",
    )
    registry = call(
        server,
        "PUT",
        server.registry_path,
        data=b'{"location": "local"}',
        headers={"Content-Type": content_type},
    )
    arm_error(registry, 415, "UnsupportedMediaType")
    assert call(server, "DELETE", rule).status_code in (202, 204)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "text/json"],
)
def test_json_media_types_are_accepted(server: ServerProcess, content_type: str) -> None:
    rule = f"{server.registry_path}/cacheRules/conf-json"
    body = b'{"properties": {"sourceRepository": "quay.io/conf/j", "targetRepository": "conf-j"}}'
    put = call(server, "PUT", rule, data=body, headers={"Content-Type": content_type})
    assert put.status_code in (200, 201), put.text


# -- path words in any case ------------------------------------------------------------------------
def test_fixed_path_words_route_in_any_case(server: ServerProcess) -> None:
    canonical = call(server, "GET", server.registry_path)
    assert canonical.status_code == 200
    for path in (
        f"/SUBSCRIPTIONS/{SUBSCRIPTION}/RESOURCEGROUPS/{RESOURCE_GROUP}/PROVIDERS"
        f"/MICROSOFT.CONTAINERREGISTRY/REGISTRIES/{REGISTRY}",
        f"/Subscriptions/{SUBSCRIPTION}/resourcegroups/{RESOURCE_GROUP}/Providers"
        f"/microsoft.containerregistry/Registries/{REGISTRY.upper()}",
        f"/sUbScRiPtIoNs/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers"
        f"/Microsoft.ContainerRegistry/registries/{REGISTRY}",
    ):
        response = call(server, "GET", path)
        assert response.status_code == 200, (path, response.text)
        assert response.json() == canonical.json()
        assert response.headers["x-ms-request-id"]

    upper = (
        f"/SUBSCRIPTIONS/{SUBSCRIPTION}/RESOURCEGROUPS/{RESOURCE_GROUP}/PROVIDERS"
        f"/MICROSOFT.CONTAINERREGISTRY/REGISTRIES/{REGISTRY}/CACHERULES"
    )
    put = call(
        server,
        "PUT",
        f"{upper}/conf-upper",
        data=b'{"properties": {"sourceRepository": "quay.io/u/p", "targetRepository": "conf-u"}}',
        headers={"Content-Type": "application/json"},
    )
    assert put.status_code == 201, put.text
    assert put.json()["id"] == f"{server.registry_path}/cacheRules/conf-upper"
    assert put.headers["Azure-AsyncOperation"].startswith(
        f"{server.url}{server.registry_path}/cacheRules/conf-upper/operationStatuses/"
    )
    listed = call(server, "GET", upper)
    assert "conf-upper" in [r["name"] for r in listed.json()["value"]]
    assert call(server, "DELETE", f"{upper}/conf-upper").status_code in (202, 204)

    # Case variants are the ARM face: the same errors, authentication first.
    arm_error(call(server, "GET", upper, auth=False), 401, "AuthenticationFailed")
    arm_error(call(server, "GET", "/SUBSCRIPTIONS"), 404, "NotFound")
    arm_error(call(server, "GET", upper, query=""), 400, "MissingApiVersionParameter")
    # Other faces and the root keep their exact paths.
    assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
    arm_error(requests.post(f"{server.url}/healthz", timeout=30), 405, "MethodNotAllowed")
    arm_error(requests.get(f"{server.url}/HEALTHZ", timeout=30), 404, "NotFound")
    arm_error(requests.get(f"{server.url}/subscriptionsx", timeout=30), 404, "NotFound")


# -- $skipToken -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "token",
    ["", "k", "x", "kAAAA", "k!!!!", "k%FF%FE", "kYWJj=", "kYWJjZA==", "kQUJD", "k" + "A" * 5],
)
def test_malformed_skip_token_is_400(server: ServerProcess, token: str) -> None:
    rules = f"{server.registry_path}/cacheRules"
    response = call(server, "GET", rules, query=f"api-version={API}&$skipToken={token}")
    error = arm_error(response, 400, "InvalidPropertyValue")
    assert error["target"] == "$skipToken"


def test_skip_tokens_round_trip_and_next_links_work(server: ServerProcess) -> None:
    for after in ("a", "conf-rule-09", "my-registry", "x" * 50):
        assert decode_skip_token(encode_skip_token(after)) == after
    assert decode_skip_token(None) == ""
    names = [f"conf-page-{i:02d}" for i in range(12)]  # page_size is 10
    for name in names:
        body = f'{{"properties": {{"sourceRepository": "quay.io/p/{name}", '
        body += f'"targetRepository": "{name}"}}}}'
        put = call(
            server,
            "PUT",
            f"{server.registry_path}/cacheRules/{name}",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert put.status_code in (200, 201), put.text
    seen: list[str] = []
    response = call(server, "GET", f"{server.registry_path}/cacheRules")
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [r["name"] for r in page["value"]]
        if "nextLink" not in page:
            break
        response = requests.get(page["nextLink"], headers=server.headers(), timeout=30)
    assert set(names) <= set(seen)
    assert len(seen) == len(set(seen))


# -- authentication before validation ------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        f"/subscriptions/%2F/resourceGroups/{RESOURCE_GROUP}"
        "/providers/Microsoft.ContainerRegistry/registries",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/a%2Fb"
        "/providers/Microsoft.ContainerRegistry/registries",
        "{registry}/cacheRules/a%2Fb",
        "{registry}/credentialSets/a%2Fb",
        "{registry}/credentialSets/a%2Fb/validate",
        "{registry}/cacheRules/x%2Fy/operationStatuses/abc",
        f"/SUBSCRIPTIONS/{SUBSCRIPTION}/RESOURCEGROUPS/a%2Fb"
        "/PROVIDERS/MICROSOFT.CONTAINERREGISTRY/REGISTRIES",
    ],
)
def test_malformed_names_are_401_without_a_valid_token(server: ServerProcess, path: str) -> None:
    path = path.format(registry=server.registry_path)
    method = "POST" if path.endswith("/validate") else "GET"
    arm_error(call(server, method, path, auth=False), 401, "AuthenticationFailed")
    arm_error(
        call(server, method, path, auth=False, headers={"Authorization": "Bearer nope"}),
        401,
        "InvalidAuthenticationToken",
    )
    put = call(server, "PUT", path, auth=False, data=b"{", headers={"Content-Type": "text/plain"})
    arm_error(put, 401, "AuthenticationFailed")
    arm_error(call(server, method, path), 400, "InvalidResourceName")  # with the token
