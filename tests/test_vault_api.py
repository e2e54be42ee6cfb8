"""The vault's management routes over real HTTP.

The application is built by the real :func:`entrepot.app.build_app` over a real SQLite
:class:`MetadataStore` in a temporary data dir; the vault routes are added to it as the
composition root will add them (``setup_vault_routes`` + ``vault.unlock`` at start-up), and it
is served by aiohttp's ``TestServer`` on a loopback port.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from entrepot.app import build_app
from entrepot.config import Config, ServerConfig
from entrepot.secrets import BuiltinVault
from entrepot.secrets.keys import MASTER_KEY_ENV
from entrepot.web.vault import VAULT_KEY

VALUE = "api-s3cr3t-Välue ✓ do-not-echo"
PRINCIPAL = "6a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
KEY = base64.b64encode(bytes(range(32))).decode()
SUB = "00000000-0000-0000-0000-000000000000"


class Api:
    """A TestClient that records every response body, to check none carries the value."""

    def __init__(self, client: TestClient[Any, Any], token: str, vault: BuiltinVault) -> None:
        self.client = client
        self.token = token
        self.vault = vault
        self.bodies: list[str] = []

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        auth: bool = True,
        token: str | None = None,
    ) -> tuple[int, Any, ClientResponse]:
        headers = {"Authorization": f"Bearer {token or self.token}"} if auth else {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        resp = await self.client.request(method, path, json=json, data=data, headers=headers)
        text = await resp.text()
        self.bodies.append(text + repr(dict(resp.headers)))
        body = await resp.json() if text and resp.content_type == "application/json" else None
        return resp.status, body, resp


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    """The real application of ``build_app`` (vault routes, ARM auth), served on 127.0.0.1."""
    monkeypatch.setenv(MASTER_KEY_ENV, KEY)
    config = Config(server=ServerConfig(data_dir=str(tmp_path / "data")))
    app = build_app(config)
    server = TestServer(app, host="127.0.0.1")
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    try:
        token = config.token_file.read_text().strip()
        yield Api(client, token, app[VAULT_KEY])
    finally:
        await client.close()


def _error(body: Any) -> tuple[str, str]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    return body["error"]["code"], body["error"]["message"]


async def test_every_route_needs_the_token(api: Api) -> None:
    await api.call("PUT", "/entrepot/vaults/myvault")
    routes = [
        ("GET", "/entrepot/vaults"),
        ("PUT", "/entrepot/vaults/other"),
        ("GET", "/entrepot/vaults/myvault"),
        ("DELETE", "/entrepot/vaults/myvault"),
        ("GET", "/entrepot/vaults/myvault/secrets"),
        ("PUT", "/entrepot/vaults/myvault/secrets/pw"),
        ("GET", "/entrepot/vaults/myvault/secrets/pw"),
        ("GET", "/entrepot/vaults/myvault/secrets/pw/versions"),
        ("GET", f"/entrepot/vaults/myvault/secrets/pw/{'0' * 32}"),
        ("DELETE", "/entrepot/vaults/myvault/secrets/pw"),
        ("GET", "/entrepot/vaults/myvault/grants"),
        ("PUT", "/entrepot/vaults/myvault/grants"),
        ("DELETE", f"/entrepot/vaults/myvault/grants/{PRINCIPAL}/get"),
    ]
    for method, path in routes:
        status, body, resp = await api.call(method, path, json={"value": VALUE}, auth=False)
        assert status == 401, (method, path)
        assert _error(body)[0] == "AuthenticationFailed"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.headers.get("x-ms-request-id")
        status, body, _ = await api.call(method, path, token="wrong-token")
        assert status == 401 and _error(body)[0] == "InvalidAuthenticationToken"
    # nothing happened
    assert [v.name for v in await api.vault.list_vaults()] == ["myvault"]
    assert await api.vault.list_secrets("myvault") == []


async def test_vault_lifecycle(api: Api) -> None:
    status, body, _ = await api.call("PUT", "/entrepot/vaults/MyVault")
    assert status == 201
    assert body["name"] == "MyVault" and body["vaultUri"] == "https://myvault.vault.azure.net/"
    status, body, _ = await api.call("PUT", "/entrepot/vaults/myvault", json={})
    assert status == 200 and body["name"] == "MyVault"
    await api.call("PUT", "/entrepot/vaults/another")
    status, body, _ = await api.call("GET", "/entrepot/vaults")
    assert status == 200 and [v["name"] for v in body["value"]] == ["another", "MyVault"]
    status, body, _ = await api.call("GET", "/entrepot/vaults/MYVAULT")
    assert status == 200 and body["name"] == "MyVault"
    status, body, _ = await api.call("DELETE", "/entrepot/vaults/another")
    assert status == 204 and body is None
    status, body, _ = await api.call("GET", "/entrepot/vaults/another")
    assert status == 404 and _error(body)[0] == "ResourceNotFound"
    status, body, _ = await api.call("DELETE", "/entrepot/vaults/another")
    assert status == 404


async def test_secrets_are_written_but_never_read_back(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await api.call("PUT", "/entrepot/vaults/myvault")
    base = "/entrepot/vaults/myvault/secrets"
    status, v1, _ = await api.call("PUT", f"{base}/registry-password", json={"value": "old-one"})
    assert status == 201
    status, v2, _ = await api.call(
        "PUT",
        f"{base}/registry-password",
        json={"value": VALUE, "contentType": "text/plain"},
    )
    assert status == 201
    assert set(v2) == {
        "id",
        "versionlessId",
        "vault",
        "name",
        "version",
        "contentType",
        "enabled",
        "created",
    }
    assert v2["id"] == (
        f"https://myvault.vault.azure.net/secrets/registry-password/{v2['version']}"
    )
    assert v2["versionlessId"] == "https://myvault.vault.azure.net/secrets/registry-password"
    assert v2["contentType"] == "text/plain" and v2["enabled"] is True
    await api.call("PUT", f"{base}/registry-username", json={"value": "alice"})

    status, body, _ = await api.call("GET", base)
    assert status == 200
    assert [(s["name"], s["version"]) for s in body["value"]] == [
        ("registry-password", v2["version"]),
        ("registry-username", body["value"][1]["version"]),
    ]
    status, body, _ = await api.call("GET", f"{base}/registry-password")
    assert status == 200 and body["version"] == v2["version"]
    status, body, _ = await api.call("GET", f"{base}/registry-password/{v1['version']}")
    assert status == 200 and body["version"] == v1["version"]
    status, body, _ = await api.call("GET", f"{base}/registry-password/versions")
    assert [s["version"] for s in body["value"]] == [v2["version"], v1["version"]]
    status, body, _ = await api.call("GET", f"{base}/registry-password/{'0' * 32}")
    assert status == 404 and _error(body)[0] == "ResourceNotFound"
    status, body, _ = await api.call("GET", f"{base}/nope")
    assert status == 404

    # the value really is stored: a granted principal resolves it
    await api.call("PUT", "/entrepot/vaults/myvault/grants", json={"principalId": PRINCIPAL})
    secret = await api.vault.resolve(v2["versionlessId"], PRINCIPAL)
    assert secret.reveal() == VALUE

    status, _, _ = await api.call("DELETE", f"{base}/registry-password")
    assert status == 204
    status, body, _ = await api.call("GET", f"{base}/registry-password")
    assert status == 404
    status, body, _ = await api.call("DELETE", f"{base}/registry-password")
    assert status == 404

    for text in api.bodies:
        assert VALUE not in text and "old-one" not in text
    assert VALUE not in caplog.text and "old-one" not in caplog.text


async def test_grants(api: Api) -> None:
    await api.call("PUT", "/entrepot/vaults/myvault")
    path = "/entrepot/vaults/myvault/grants"
    status, body, _ = await api.call(
        "PUT", path, json={"principalId": PRINCIPAL.upper(), "permission": "get"}
    )
    assert status == 201
    assert body["principalId"] == PRINCIPAL and body["permission"] == "get"
    assert body["vault"] == "myvault"
    status, body, _ = await api.call("PUT", path, json={"principalId": PRINCIPAL})
    assert status == 200
    status, body, _ = await api.call("GET", path)
    assert [(g["principalId"], g["permission"]) for g in body["value"]] == [(PRINCIPAL, "get")]
    status, body, _ = await api.call("DELETE", f"{path}/{PRINCIPAL}/get")
    assert status == 204
    status, body, _ = await api.call("DELETE", f"{path}/{PRINCIPAL}/get")
    assert status == 404 and _error(body)[0] == "ResourceNotFound"
    status, body, _ = await api.call("GET", path)
    assert body == {"value": []}
    status, body, _ = await api.call(
        "PUT", path, json={"principalId": PRINCIPAL, "permission": "set"}
    )
    assert status == 400 and _error(body)[0] == "InvalidPropertyValue"
    assert body["error"]["target"] == "permission"
    status, body, _ = await api.call("PUT", path, json={"permission": "get"})
    assert status == 400 and _error(body)[0] == "MissingRequiredProperty"
    status, body, _ = await api.call("PUT", path, json={"principalId": "no spaces allowed"})
    assert status == 400 and body["error"]["target"] == "principalId"
    status, body, _ = await api.call(
        "PUT", "/entrepot/vaults/absent/grants", json={"principalId": PRINCIPAL}
    )
    assert status == 404


@pytest.mark.parametrize(
    ("method", "path", "target"),
    [
        ("PUT", "/entrepot/vaults/ab", "vaultName"),
        ("PUT", "/entrepot/vaults/a_b_c", "vaultName"),
        ("PUT", "/entrepot/vaults/1vault", "vaultName"),
        ("PUT", f"/entrepot/vaults/{'v' * 25}", "vaultName"),
        ("GET", "/entrepot/vaults/a%2Fb", "vaultName"),
        ("PUT", "/entrepot/vaults/myvault/secrets/bad_name", "secretName"),
        ("PUT", f"/entrepot/vaults/myvault/secrets/{'s' * 128}", "secretName"),
        ("GET", "/entrepot/vaults/myvault/secrets/pw/not-a-version", "secretVersion"),
    ],
)
async def test_bad_names_are_400_json(api: Api, method: str, path: str, target: str) -> None:
    await api.call("PUT", "/entrepot/vaults/myvault")
    status, body, resp = await api.call(method, path, json={"value": VALUE})
    assert status == 400, body
    assert resp.content_type == "application/json"
    code, _ = _error(body)
    assert code == "InvalidResourceName" and body["error"]["target"] == target
    assert VALUE not in api.bodies[-1]


@pytest.mark.parametrize(
    ("body", "code", "target"),
    [
        (None, "InvalidRequestContent", None),
        (b"", "InvalidRequestContent", None),
        (b'{"value": "' + VALUE.encode() + b'"', "InvalidRequestContent", None),  # bad JSON
        (b'["' + VALUE.encode() + b'"]', "InvalidRequestContent", None),
        ({"value": 42}, "InvalidPropertyValue", "value"),
        ({"value": ""}, "InvalidPropertyValue", "value"),
        ({"value": VALUE + "x" * 30_000}, "InvalidPropertyValue", "value"),
        ({"contentType": "text/plain"}, "MissingRequiredProperty", "value"),
        ({"value": VALUE, "Value": VALUE}, "InvalidPropertyValue", "Value"),
        ({"value": VALUE, "contentType": 5}, "InvalidPropertyValue", "contentType"),
    ],
)
async def test_bad_secret_bodies_never_echo_the_value(
    api: Api, body: Any, code: str, target: str | None
) -> None:
    await api.call("PUT", "/entrepot/vaults/myvault")
    path = "/entrepot/vaults/myvault/secrets/pw"
    if isinstance(body, bytes) or body is None:
        status, out, _ = await api.call("PUT", path, data=body or b"")
    else:
        status, out, _ = await api.call("PUT", path, json=body)
    assert status == 400, out
    assert _error(out)[0] == code
    if target:
        assert out["error"]["target"] == target
    assert VALUE not in api.bodies[-1]
    assert await api.vault.list_secrets("myvault") == []


async def test_unknown_routes_and_methods_are_json_errors(api: Api) -> None:
    await api.call("PUT", "/entrepot/vaults/myvault")
    status, body, _ = await api.call("GET", "/entrepot/vaults/myvault/keys")
    assert status == 404 and _error(body)[0] == "NotFound"
    status, body, _ = await api.call("POST", "/entrepot/vaults/myvault")
    assert status == 405 and _error(body)[0] == "MethodNotAllowed"
    status, body, _ = await api.call(
        "PUT", "/entrepot/vaults/absent/secrets/pw", json={"value": "v"}
    )
    assert status == 404 and _error(body)[0] == "ResourceNotFound"


async def test_vault_client_over_the_management_pipeline(api: Api) -> None:
    """The CLI's client (through the management SDK's pipeline) against the same server."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    from entrepot.mgmt import ContainerRegistryManagementClient, StaticTokenCredential
    from entrepot.mgmt.vault import VaultClient

    base_url = str(api.client.make_url("")).rstrip("/")
    mgmt = ContainerRegistryManagementClient(
        StaticTokenCredential(api.token), SUB, base_url=base_url, retry_total=0
    )
    client = VaultClient(mgmt)

    def scenario() -> dict[str, Any]:
        created = client.create_vault("cli-vault")
        first = client.set_secret("cli-vault", "pw", "one")
        second = client.set_secret("cli-vault", "pw", VALUE, content_type="text/plain")
        grant = client.grant("cli-vault", PRINCIPAL)
        out = {
            "created": created,
            "vaults": client.list_vaults(),
            "show_vault": client.show_vault("cli-vault"),
            "first": first,
            "second": second,
            "list": client.list_secrets("cli-vault"),
            "show": client.show_secret("cli-vault", "pw"),
            "pinned": client.show_secret("cli-vault", "pw", first["version"]),
            "versions": client.list_secret_versions("cli-vault", "pw"),
            "grant": grant,
            "grants": client.list_grants("cli-vault"),
        }
        try:
            client.set_secret("cli-vault", "bad_name", VALUE)
        except HttpResponseError as exc:
            out["bad"] = (exc.status_code, exc.error.code, str(exc))
        client.revoke("cli-vault", PRINCIPAL)
        try:
            client.revoke("cli-vault", PRINCIPAL)
        except ResourceNotFoundError as exc:
            out["missing"] = exc.error.code
        client.delete_secret("cli-vault", "pw")
        client.delete_vault("cli-vault")
        out["after"] = client.list_vaults()
        return out

    try:
        out = await asyncio.to_thread(scenario)
    finally:
        mgmt.close()
    assert out["created"]["name"] == "cli-vault"
    assert [v["name"] for v in out["vaults"]] == ["cli-vault"]
    assert out["show"]["version"] == out["second"]["version"]
    assert out["pinned"]["version"] == out["first"]["version"]
    assert [v["version"] for v in out["versions"]] == [
        out["second"]["version"],
        out["first"]["version"],
    ]
    assert out["grants"][0]["principalId"] == PRINCIPAL
    assert out["bad"][:2] == (400, "InvalidResourceName")
    assert out["missing"] == "ResourceNotFound"
    assert out["after"] == []
    assert VALUE not in repr(out)
