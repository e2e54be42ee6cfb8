"""What survives a restart of the real server: resources, the admin token, operations.

Servers are stopped with SIGTERM (graceful) or SIGKILL (crash) and started again on the same
data dir or database. Operations are stored with a 10 s lease, so an operation left behind by a
killed process is finished by the next process once that lease has expired.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from azure.mgmt.containerregistry.models import (
    AuthCredential,
    CacheRule,
    CredentialName,
    CredentialSet,
    IdentityProperties,
    ProvisioningState,
    ResourceIdentityType,
)

from tests.conftest import REGISTRY, RESOURCE_GROUP, ServerProcess, genuine_sdk_client

pytestmark = pytest.mark.slow  # real restarts, kill -9 and two processes

API = "2025-04-01"
RG = RESOURCE_GROUP
TOKEN_BANNER = "created the admin API token"
LEASE_WAIT = 25.0  # the 10 s lease of a dead owner, a sweep interval and start-up, with margin
Factory = Callable[..., ServerProcess]


# -- helpers ----------------------------------------------------------------------------------
def call(
    server: ServerProcess,
    method: str,
    path: str = "",
    body: Any = None,
    *,
    url: str | None = None,
    token: str | None = None,
) -> requests.Response:
    return requests.request(
        method,
        url or f"{server.url}{path}",
        params=None if url else {"api-version": API},
        json=body,
        headers={"Authorization": f"Bearer {token or server.token}"},
        timeout=30,
    )


def local(server: ServerProcess, url: str) -> str:
    """An absolute URL the server made (with its own host) re-pointed at ``server``."""
    path = url.split("/subscriptions/", 1)[1]
    return f"{server.url}/subscriptions/{path}"


def poll(
    server: ServerProcess, url: str, done: Callable[[requests.Response], bool], timeout: float
) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = call(server, "GET", url=local(server, url))
        if done(response):
            return response
        assert time.monotonic() < deadline, (
            f"not done after {timeout}s: {response.status_code} {response.text}\n{server.log()}"
        )
        time.sleep(0.1)


def status_of(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def rule_body(target: str) -> dict[str, Any]:
    return {
        "properties": {
            "sourceRepository": f"docker.io/library/{target}",
            "targetRepository": target,
        }
    }


def credential_set(user: str) -> CredentialSet:
    return CredentialSet(
        identity=IdentityProperties(type=ResourceIdentityType.SYSTEM_ASSIGNED),
        login_server="docker.io",
        auth_credentials=[
            AuthCredential(
                name=CredentialName.CREDENTIAL1,
                username_secret_identifier=f"https://vault.vault.azure.net/secrets/{user}",
                password_secret_identifier="https://vault.vault.azure.net/secrets/password",
            )
        ],
    )


def snapshot(server: ServerProcess) -> dict[str, Any]:
    """Everything the genuine SDK reports about the registry, its rules and sets (list order)."""
    sdk = server.sdk_client()
    return {
        "sets": [s.as_dict() for s in sdk.credential_sets.list(RG, REGISTRY)],
        "rules": [r.as_dict() for r in sdk.cache_rules.list(RG, REGISTRY)],
        "registry": sdk.registries.get(RG, REGISTRY).as_dict(),
    }


def create_resources(server: ServerProcess) -> None:
    sdk = server.sdk_client()
    hub = sdk.credential_sets.begin_create(RG, REGISTRY, "hub-creds", credential_set("hub"))
    assert hub.result().provisioning_state == ProvisioningState.SUCCEEDED
    sdk.credential_sets.begin_create(RG, REGISTRY, "Other-Creds", credential_set("x")).result()
    set_id = f"{server.registry_path}/credentialSets/hub-creds"
    for name, source, target, creds in [
        ("ubuntu-rule", "docker.io/library/ubuntu", "ubuntu", set_id),
        ("Wild-Rule", "docker.io/team/*", "team/*", None),
        ("quay-rule", "quay.io/coreos/etcd", "etcd", None),
    ]:
        rule = CacheRule(
            source_repository=source, target_repository=target, credential_set_resource_id=creds
        )
        done = sdk.cache_rules.begin_create(RG, REGISTRY, name, rule).result()
        assert done.provisioning_state == ProvisioningState.SUCCEEDED


def check_snapshot(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert [s["name"] for s in before["sets"]] == ["hub-creds", "Other-Creds"]
    assert [r["name"] for r in before["rules"]] == ["quay-rule", "ubuntu-rule", "Wild-Rule"]
    principals = [s["identity"]["principalId"] for s in before["sets"]]
    tenants = {s["identity"]["tenantId"] for s in before["sets"]}
    assert len(set(principals)) == 2 and all(principals)
    assert len(tenants) == 1 and all(tenants)
    for item in before["sets"] + before["rules"] + [before["registry"]]:
        assert item["properties"]["creationDate"]
        assert item["systemData"]["createdAt"] == item["properties"]["creationDate"]
    # Same ids, principal ids, tenant id, creation dates, systemData: the whole documents.
    assert after == before


async def _pg_rows(url: str, query: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


# -- resources --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_resources_survive_a_restart(process_factory: Factory, request: Any, backend: str) -> None:
    env = {}
    if backend == "postgresql":
        env["ENTREPOT_DATABASE_URL"] = request.getfixturevalue("postgres_database")
    server = process_factory(env=env)
    if backend == "postgresql":
        assert not (server.data_dir / "entrepot.db").exists()  # really on PostgreSQL
    create_resources(server)
    before = snapshot(server)

    server.restart()  # SIGTERM, then a new process on the same data
    check_snapshot(before, snapshot(server))

    # And once more after a crash: committed state does not depend on a clean shutdown.
    server.stop(kill=True)
    server.start()
    check_snapshot(before, snapshot(server))
    sdk = server.sdk_client()
    rule = sdk.cache_rules.get(RG, REGISTRY, "UBUNTU-RULE")
    assert rule.credential_set_resource_id.endswith("/credentialSets/hub-creds")


# -- the admin token --------------------------------------------------------------------------
def test_admin_token_survives_restart_and_is_stored_hashed(process_factory: Factory) -> None:
    server = process_factory()
    token_file = server.data_dir / "admin-token"
    token = server.token
    stat = token_file.stat()
    assert stat.st_mode & 0o777 == 0o600
    assert server.log().count(token) == 1
    assert server.log().count(TOKEN_BANNER) == 1
    assert call(server, "GET", server.registry_path).status_code == 200

    server.restart()
    assert token_file.read_text().strip() == token
    again = token_file.stat()
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not rewritten
    assert again.st_mode & 0o777 == 0o600
    assert server.log().count(token) == 1  # the log holds both runs: printed once in all
    assert server.log().count(TOKEN_BANNER) == 1
    assert call(server, "GET", server.registry_path, token=token).status_code == 200
    assert call(server, "GET", server.registry_path, token=token + "x").status_code == 401

    server.stop()
    db_bytes = b"".join(p.read_bytes() for p in server.data_dir.glob("entrepot.db*"))
    assert db_bytes, "no database file found"
    assert token.encode() not in db_bytes
    assert (
        hashlib.sha256(token.encode()).hexdigest().encode() in db_bytes
    )  # grepping the right file


def test_admin_token_on_postgresql_is_stored_hashed(
    process_factory: Factory, postgres_database: str
) -> None:
    server = process_factory(env={"ENTREPOT_DATABASE_URL": postgres_database})
    token = server.token
    server.restart()
    assert server.token == token
    assert server.log().count(token) == 1
    rows = asyncio.run(_pg_rows(postgres_database, "SELECT * FROM admin_tokens"))
    assert len(rows) == 1
    text = repr([dict(r) for r in rows])
    assert token not in text
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()


# -- interrupted operations -------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_operations_interrupted_by_a_kill_finish_after_restart(
    process_factory: Factory, request: Any, backend: str
) -> None:
    env: dict[str, str] = {}
    if backend == "postgresql":
        env["ENTREPOT_DATABASE_URL"] = request.getfixturevalue("postgres_database")
    server = process_factory(env=env)
    rules = f"{server.registry_path}/cacheRules"
    doomed = call(server, "PUT", f"{rules}/doomed-rule", rule_body("doomed"))
    assert doomed.status_code == 201 and doomed.json()["properties"]["provisioningState"] == (
        "Succeeded"
    )

    # Slow operations from now on: they stay InProgress for 30 s.
    server.env["ENTREPOT_ARM_OPERATION_MIN_SECONDS"] = "30"
    server.restart()

    put = call(server, "PUT", f"{rules}/slow-rule", rule_body("slow"))
    assert put.status_code == 201, put.text
    assert put.json()["properties"]["provisioningState"] == "Creating"
    status_url = put.headers["Azure-AsyncOperation"]
    assert f"{rules}/slow-rule/operationStatuses/" in status_url
    first_status = call(server, "GET", url=status_url)
    assert status_of(first_status) == "InProgress"
    assert first_status.headers.get("Retry-After")
    busy = call(server, "PUT", f"{rules}/slow-rule", rule_body("slow"))
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "AnotherOperationInProgress"

    delete = call(server, "DELETE", f"{rules}/doomed-rule")
    assert delete.status_code == 202, delete.text
    location = delete.headers["Location"]
    assert call(server, "GET", url=location).status_code == 202
    deleting = call(server, "GET", f"{rules}/doomed-rule")
    assert deleting.json()["properties"]["provisioningState"] == "Deleting"

    server.stop(kill=True)  # SIGKILL: no cleanup, the leases are left behind
    server.env["ENTREPOT_ARM_OPERATION_MIN_SECONDS"] = "0"
    server.start()

    done = poll(server, status_url, lambda r: status_of(r) != "InProgress", LEASE_WAIT)
    body = done.json()
    assert body["status"] == "Succeeded", body
    assert body["name"] == status_url.split("/operationStatuses/", 1)[1].split("?")[0]
    assert body["endTime"] >= body["startTime"]
    rule = call(server, "GET", f"{rules}/slow-rule")
    assert rule.status_code == 200
    assert rule.json()["properties"]["provisioningState"] == "Succeeded"

    poll(server, location, lambda r: r.status_code != 202, LEASE_WAIT)
    assert call(server, "GET", url=location).status_code == 204
    gone = call(server, "GET", f"{rules}/doomed-rule")
    assert gone.status_code == 404, gone.text
    names = [r["name"] for r in call(server, "GET", rules).json()["value"]]
    assert names == ["slow-rule"]


# -- two servers on one PostgreSQL database ---------------------------------------------------
def test_two_servers_share_one_postgresql_database(
    process_factory: Factory, postgres_database: str
) -> None:
    # Replicas share the database and so must share the vault's master key.
    master_key = base64.b64encode(os.urandom(32)).decode()
    shared = {"ENTREPOT_DATABASE_URL": postgres_database, "ENTREPOT_MASTER_KEY": master_key}
    a = process_factory(env={**shared, "ENTREPOT_ARM_OPERATION_MIN_SECONDS": "30"}, name="a")
    b = process_factory(env=shared, name="b")
    token = a.token
    assert not (b.data_dir / "admin-token").exists()  # the token exists already: not re-created
    assert TOKEN_BANNER not in b.log()
    rules = f"{a.registry_path}/cacheRules"

    # A resource created on one server is visible, identical, on the other.
    sdk_b = genuine_sdk_client(b.url, token)  # b has no token file of its own
    made = sdk_b.credential_sets.begin_create(RG, REGISTRY, "shared-creds", credential_set("s"))
    made_set = made.result()
    seen_set = a.sdk_client().credential_sets.get(RG, REGISTRY, "shared-creds")
    assert seen_set.as_dict() == made_set.as_dict()
    assert seen_set.identity.tenant_id == made_set.identity.tenant_id  # one installation

    # An operation left behind by a killed server is finished by the other.
    put = call(a, "PUT", f"{rules}/from-a", rule_body("from-a"))
    assert put.status_code == 201, put.text
    status_url = put.headers["Azure-AsyncOperation"]
    assert status_of(call(b, "GET", url=local(b, status_url), token=token)) == "InProgress"
    on_b = call(b, "GET", f"{rules}/from-a", token=token)
    assert on_b.status_code == 200
    assert on_b.json()["properties"]["provisioningState"] == "Creating"
    assert on_b.json()["id"] == put.json()["id"]

    # While a is alive it keeps its lease: b's sweeper (every ~3.3 s) must not take it over.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert status_of(call(b, "GET", url=local(b, status_url), token=token)) == "InProgress"
        time.sleep(0.5)

    a.stop(kill=True)
    deadline = time.monotonic() + LEASE_WAIT
    while True:
        response = call(b, "GET", url=local(b, status_url), token=token)
        if status_of(response) != "InProgress":
            break
        assert time.monotonic() < deadline, b.log()
        time.sleep(0.1)
    assert response.json()["status"] == "Succeeded"
    rule = call(b, "GET", f"{rules}/from-a", token=token)
    assert rule.json()["properties"]["provisioningState"] == "Succeeded"
    assert rule.json()["properties"]["creationDate"] == put.json()["properties"]["creationDate"]
