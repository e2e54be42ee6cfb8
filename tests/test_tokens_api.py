"""API tokens through real ``entrepot serve`` processes.

The token routes (``/entrepot/tokens``), roles on every management face, revocation seen at once
by another process on the same PostgreSQL database, and a database of revision 0003 upgraded by
``serve`` (its admin token keeps working).
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from entrepot.config import database_url as async_database_url
from entrepot.management.tokens import hash_token
from entrepot.metadata.migrate import alembic_config
from tests.conftest import ServerProcess, base_config, free_port

API = "2025-11-01"
Factory = Callable[..., ServerProcess]
TOKENS = "/entrepot/tokens"


def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    data: bytes | None = None,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or server.token}"} if token != "" else {}
    params = {"api-version": API} if path.startswith("/subscriptions") else None
    return requests.request(
        method,
        f"{server.url}{path}",
        params=params,
        json=body,
        data=data,
        headers=headers,
        timeout=30,
    )


def error_code(response: requests.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert response.headers.get("x-ms-request-id")
    return str(body["error"]["code"])


def _rule_path(server: ServerProcess, name: str) -> str:
    return f"{server.registry_path}/cacheRules/{name}"


# -- the token routes -----------------------------------------------------------------------------
def test_tokens_api_create_list_rotate_revoke(server_factory: Factory) -> None:
    server = server_factory()
    bootstrap = server.token
    seen: list[str] = []  # every response body and headers, to check where secrets appear

    def api(method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
        response = call(server, method, path, body, **kw)
        seen.append(response.text + repr(dict(response.headers)))
        return response

    listed = api("GET", TOKENS)
    assert listed.status_code == 200
    [admin] = listed.json()["value"]
    assert set(admin) == {"name", "role", "description", "created", "createdBy"}
    assert (admin["name"], admin["role"], admin["createdBy"]) == ("admin", "admin", "entrepot")

    created = api("PUT", f"{TOKENS}/CI-Puller", {"role": "pull", "description": "CI"})
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    body = created.json()
    pull = body.pop("value")
    assert len(pull) == 43
    assert body["name"] == "CI-Puller" and body["role"] == "pull" and body["createdBy"] == "admin"
    assert body["description"] == "CI" and body["created"].endswith("Z")

    # The secret is shown once: never by list or get.
    for response in (api("GET", TOKENS), api("GET", f"{TOKENS}/ci-puller")):
        assert response.status_code == 200 and pull not in response.text
    assert api("GET", f"{TOKENS}/ci-puller").json() == body
    assert api("GET", TOKENS).json()["value"] == [admin, body]

    # A pull token may not use any management API: 403 AuthorizationFailed, ARM-shaped.
    for method, path in [
        ("GET", TOKENS),
        ("PUT", f"{TOKENS}/mine"),
        ("GET", server.registry_path),
        ("PUT", _rule_path(server, "some-rule")),
        ("GET", "/entrepot/vaults"),
        ("PUT", "/entrepot/vaults/myvault"),
    ]:
        refused = api(method, path, {"role": "admin"}, token=pull)
        assert refused.status_code == 403, (method, path, refused.text)
        assert error_code(refused) == "AuthorizationFailed"
        assert pull not in refused.text
    assert api("GET", TOKENS, token="").status_code == 401
    assert error_code(api("GET", TOKENS, token="not-a-token")) == "InvalidAuthenticationToken"

    # A second admin token acts under its own name.
    ops = api("PUT", f"{TOKENS}/ops", {"role": "ADMIN"}).json()["value"]
    rule = api(
        "PUT",
        _rule_path(server, "ops-rule"),
        {"properties": {"sourceRepository": "docker.io/library/ubuntu", "targetRepository": "u"}},
        token=ops,
    )
    assert rule.status_code in (200, 201), rule.text
    assert rule.json()["systemData"]["createdBy"] == "ops"

    # Validation: ARM errors naming the field.
    for name, payload, status, code in [
        ("ci-puller", {"role": "pull"}, 409, "ResourceExists"),
        ("-bad", {"role": "pull"}, 400, "InvalidResourceName"),
        ("ok", {"role": "root"}, 400, "InvalidPropertyValue"),
        ("ok", {}, 400, "MissingRequiredProperty"),
        ("ok", {"role": "pull", "value": "chosen"}, 400, "InvalidPropertyValue"),
        ("ok", {"role": "pull", "description": 5}, 400, "InvalidPropertyValue"),
        ("admin", {"role": "pull"}, 400, "InvalidPropertyValue"),
    ]:
        response = api("PUT", f"{TOKENS}/{name}", payload)
        assert (response.status_code, error_code(response)) == (status, code), response.text
    for raw in (b"", b"not json", b"[]"):
        response = api("PUT", f"{TOKENS}/ok", data=raw)
        assert (response.status_code, error_code(response)) == (400, "InvalidRequestContent")
    for method, path in [
        ("GET", f"{TOKENS}/nobody"),
        ("DELETE", f"{TOKENS}/nobody"),
        ("POST", f"{TOKENS}/nobody/rotate"),
    ]:
        response = api(method, path)
        assert (response.status_code, error_code(response)) == (404, "ResourceNotFound")
    assert api("GET", f"{TOKENS}/ok").status_code == 404  # nothing was created

    # Rotation: the old secret stops working at once, the new one keeps the role.
    rotated = api("POST", f"{TOKENS}/ci-puller/rotate")
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    new_pull = rotated.json()["value"]
    assert new_pull != pull and rotated.json()["role"] == "pull"
    assert error_code(api("GET", TOKENS, token=pull)) == "InvalidAuthenticationToken"
    assert error_code(api("GET", TOKENS, token=new_pull)) == "AuthorizationFailed"

    # Rotating "admin" rewrites the server's admin-token file (mode 0600).
    new_admin = api("POST", f"{TOKENS}/admin/rotate").json()["value"]
    assert server.token == new_admin != bootstrap
    assert stat.S_IMODE((server.data_dir / "admin-token").stat().st_mode) == 0o600
    assert api("GET", TOKENS, token=bootstrap).status_code == 401
    assert api("GET", TOKENS).status_code == 200

    # Revocation; the last admin token stays.
    assert api("DELETE", f"{TOKENS}/CI-PULLER").status_code == 204
    assert error_code(api("GET", TOKENS, token=new_pull)) == "InvalidAuthenticationToken"
    assert api("DELETE", f"{TOKENS}/ops", token=ops).status_code == 204  # itself
    assert api("GET", TOKENS, token=ops).status_code == 401
    last = api("DELETE", f"{TOKENS}/admin")
    assert (last.status_code, error_code(last)) == (409, "Conflict")
    assert [t["name"] for t in api("GET", TOKENS).json()["value"]] == ["admin"]

    # Secrets appear only in the answers that issued them, and never in the log.
    for secret in (pull, new_pull, ops, new_admin):
        assert sum(secret in text for text in seen) == 1, secret
        assert secret not in server.log()


@pytest.mark.slow
def test_revocation_is_immediate_on_another_process(
    process_factory: Factory, postgres_database: str
) -> None:
    master_key = base64.b64encode(os.urandom(32)).decode()
    shared = {"ENTREPOT_DATABASE_URL": postgres_database, "ENTREPOT_MASTER_KEY": master_key}
    a = process_factory(env=shared, name="a")
    b = process_factory(env=shared, name="b")
    admin = a.token
    ops = call(a, "PUT", f"{TOKENS}/ops", {"role": "admin"}).json()["value"]
    pull = call(a, "PUT", f"{TOKENS}/puller", {"role": "pull"}).json()["value"]
    for _ in range(5):  # b has just accepted both: a cache would keep them
        assert call(b, "GET", b.registry_path, token=ops).status_code == 200
        assert call(b, "GET", b.registry_path, token=pull).status_code == 403

    assert call(a, "DELETE", f"{TOKENS}/ops", token=admin).status_code == 204
    assert call(a, "DELETE", f"{TOKENS}/puller", token=admin).status_code == 204
    refused = call(b, "GET", b.registry_path, token=ops)
    assert (refused.status_code, error_code(refused)) == (401, "InvalidAuthenticationToken")
    assert call(b, "GET", b.registry_path, token=pull).status_code == 401

    # Rotation on b is seen by a at once too.
    rotated = call(b, "POST", f"{TOKENS}/admin/rotate", token=admin).json()["value"]
    assert call(a, "GET", a.registry_path, token=admin).status_code == 401
    assert call(a, "GET", a.registry_path, token=rotated).status_code == 200


# -- a database of revision 0003 ------------------------------------------------------------------
async def _database_at_0003(url: str, token: str) -> None:
    def migrate(connection: sa.Connection) -> None:
        command.upgrade(alembic_config(connection), "0003")

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate)
            await conn.execute(
                sa.text(
                    "INSERT INTO admin_tokens (token_hash, description, created_at) "
                    "VALUES (:h, 'admin', CURRENT_TIMESTAMP)"
                ),
                {"h": hash_token(token)},
            )
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_serve_upgrades_a_0003_database_and_its_admin_token_keeps_working(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    old_token = "the-admin-token-of-an-older-entrepot"
    port = free_port()
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    env: dict[str, str] = {}
    if backend == "postgresql":
        env["ENTREPOT_DATABASE_URL"] = request.getfixturevalue("postgres_database")
        url = async_database_url(env["ENTREPOT_DATABASE_URL"], data_dir)
    else:
        url = async_database_url("", data_dir)
    asyncio.run(_database_at_0003(url, old_token))
    (data_dir / "admin-token").write_text(old_token + "\n")
    config = tmp_path / "entrepot.toml"
    config.write_text(base_config(port, data_dir))
    server = ServerProcess(config, data_dir, port, env=env)
    server.start()
    try:
        assert server.token == old_token  # not re-bootstrapped
        assert "created the admin API token" not in server.log()
        assert call(server, "GET", server.registry_path).status_code == 200
        [admin] = call(server, "GET", TOKENS).json()["value"]
        assert (admin["name"], admin["role"]) == ("admin", "admin")
        pull = call(server, "PUT", f"{TOKENS}/puller", {"role": "pull"})
        assert pull.status_code == 201
        assert call(server, "GET", TOKENS, token=pull.json()["value"]).status_code == 403
    finally:
        server.stop()
