"""Credential health, measured for real: vault secrets, upstream logins, the timer, the CLI.

Every test runs the real server (``server_factory``: the app of ``build_app`` over HTTP; the
hygiene sweep runs the ``entrepot serve`` process itself) and Debian's ``docker-registry``
upstreams with htpasswd (Basic) or JWT token auth (``registry_factory``).
Each upstream's login server (``127.0.0.1:PORT``) is mapped to its plain-http URL by an
``[upstreams."127.0.0.1:PORT"]`` entry of the server's configuration.

A credential set names its username and password by Key Vault-shaped identifiers that resolve
against the built-in vault as the set's own identity (``identity.principalId``), which needs a
``get`` grant on the vault; the principal only exists once the set does, so every set starts
``SecretAccessDenied`` until granted. Health is measured inside the create/update LRO, by
``POST .../validate`` and by the ``[health]`` timer.

The last test is the secret-hygiene sweep: after a run that sets, resolves, rotates and fails
secrets, no value appears in any response, log, CLI output or file under the data dir.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from entrepot.mgmt import models as entrepot_models
from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, Server, free_port
from tests.registries import Registry

RG = RESOURCE_GROUP
ServerFactory = Callable[..., Server]
RegistryFactory = Callable[..., Registry]

API_VERSION = "2025-11-01"  # what entrepot.mgmt and the genuine SDK 15 send
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"


# -- helpers -----------------------------------------------------------------------------------


def distinct(prefix: str) -> str:
    """A random value that cannot occur by chance (the prefix keeps htpasswd from seeing '-')."""
    return f"{prefix}{secrets.token_urlsafe(16)}"


def kv(vault: str, name: str, version: str | None = None) -> str:
    """The Key Vault-shaped identifier of a secret of the built-in vault."""
    base = f"https://{vault}.vault.azure.net/secrets/{name}"
    return f"{base}/{version}" if version else base


def upstreams(*login_servers: str) -> str:
    """Extra TOML mapping each ``127.0.0.1:PORT`` login server to its plain-http URL."""
    return "".join(f'\n[upstreams."{h}"]\nurl = "http://{h}"\n' for h in login_servers)


ALLOW_LOOPBACK_REALMS = '\n[policy]\nallowed_upstream_networks = ["127.0.0.1/32"]\n'
"""Extra TOML for token registries: their realm (``http://127.0.0.1:TOKEN_PORT``) comes from the
registry's challenge, not from the config file, so the upstream address guard refuses it (it is
loopback) unless allowed."""


class Seen:
    """Everything a test received from entrepot, to be searched for secret values."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, label: str, text: str) -> None:
        self.items.append((label, text))

    def hook(self, pipeline_response: Any) -> None:
        """An azure-core ``raw_response_hook``: the status line, headers and body."""
        http = pipeline_response.http_response
        if hasattr(http, "read"):  # a streamed response: load (and keep) the body
            http.read()
        self.add(
            f"{http.request.method} {http.request.url} -> {http.status_code}",
            f"{dict(http.headers)}\n{http.text()}",
        )

    def leaks(self, needles: dict[str, bytes]) -> list[str]:
        found = []
        for label, text in self.items:
            data = text.encode()
            found += [f"{label}: {what}" for what, needle in needles.items() if needle in data]
        return found


class Api:
    """The vault HTTP API (``/entrepot/vaults``) through requests; responses go to ``seen``."""

    def __init__(self, server: Server, seen: Seen | None = None) -> None:
        self.server = server
        self.seen = seen or Seen()

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        resp = requests.request(
            method, self.server.url + path, headers=self.server.headers(), timeout=30, **kwargs
        )
        self.seen.add(
            f"{method} {path} -> {resp.status_code}", f"{dict(resp.headers)}\n{resp.text}"
        )
        assert resp.status_code == expect, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def vault(self, name: str) -> Any:
        return self.call("PUT", f"/entrepot/vaults/{name}", 201)

    def secret(self, vault: str, name: str, value: str) -> Any:
        """Store a new version; returns its metadata (``version``, ``id``...)."""
        return self.call(
            "PUT", f"/entrepot/vaults/{vault}/secrets/{name}", 201, json={"value": value}
        )

    def grant(self, vault: str, principal: str) -> Any:
        return self.call(
            "PUT",
            f"/entrepot/vaults/{vault}/grants",
            201,
            json={"principalId": principal, "permission": "get"},
        )

    def validate(self, name: str) -> Any:
        """``POST .../credentialSets/{name}/validate`` (what the genuine SDK has no method for)."""
        return self.call(
            "POST",
            f"{self.server.registry_path}/credentialSets/{name}/validate?api-version={API_VERSION}",
            200,
        )


def credential_set(
    login_server: str, username_id: str, password_id: str, models: ModuleType = entrepot_models
) -> Any:
    return models.CredentialSet(
        identity=models.IdentityProperties(type=models.ResourceIdentityType.SYSTEM_ASSIGNED),
        login_server=login_server,
        auth_credentials=[
            models.AuthCredential(
                name=models.CredentialName.CREDENTIAL1,
                username_secret_identifier=username_id,
                password_secret_identifier=password_id,
            )
        ],
    )


def new_identifiers(
    username_id: str, password_id: str, models: ModuleType = entrepot_models
) -> Any:
    return models.CredentialSetUpdateParameters(
        auth_credentials=[
            models.AuthCredential(
                name=models.CredentialName.CREDENTIAL1,
                username_secret_identifier=username_id,
                password_secret_identifier=password_id,
            )
        ]
    )


def create(client: Any, name: str, login_server: str, username_id: str, password_id: str) -> Any:
    return client.credential_sets.begin_create(
        RG, REGISTRY, name, credential_set(login_server, username_id, password_id)
    ).result()


def _text(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def health(cs: Any) -> tuple[str | None, str | None, str | None]:
    """``(status, errorCode, errorMessage)`` of the set's only credential."""
    assert cs.auth_credentials is not None and len(cs.auth_credentials) == 1
    h = cs.auth_credentials[0].credential_health
    assert h is not None, f"no credentialHealth on {cs.name}"
    return _text(h.status), h.error_code, h.error_message


def health_of_json(body: dict[str, Any]) -> dict[str, Any]:
    """The ARM JSON ``credentialHealth`` of a set's only credential."""
    (cred,) = body["properties"]["authCredentials"]
    return dict(cred["credentialHealth"])


def assert_healthy(cs: Any) -> None:
    assert health(cs) == (HEALTHY, None, None)


def assert_unhealthy(cs: Any, code: str) -> str:
    status, error_code, message = health(cs)
    assert (status, error_code) == (UNHEALTHY, code), message
    assert message
    return message


def get(client: Any, name: str) -> Any:
    return client.credential_sets.get(RG, REGISTRY, name)


def validate(client: Any, name: str) -> Any:
    return client.credential_sets.validate(RG, REGISTRY, name)


def basic(registry_factory: RegistryFactory) -> Registry:
    return registry_factory("basic", username=distinct("u"), password=distinct("p"))


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


# -- 1. basic auth: access denied until granted, then healthy ----------------------------------


def test_basic_registry_access_denied_until_granted_then_healthy(
    server_factory: ServerFactory, registry_factory: RegistryFactory
) -> None:
    reg = basic(registry_factory)
    server = server_factory(upstreams(reg.login_server))
    api = Api(server)
    api.vault("vault1")
    api.secret("vault1", "user", reg.username)
    api.secret("vault1", "pass", reg.password)
    with server.client() as client:
        created = create(
            client, "basic-creds", reg.login_server, kv("vault1", "user"), kv("vault1", "pass")
        )
        # The LRO succeeds: an unhealthy credential is a state, not a failed operation.
        assert _text(created.provisioning_state) == "Succeeded"
        principal = created.identity.principal_id
        assert principal and _text(created.identity.type) == "SystemAssigned"
        message = assert_unhealthy(created, "SecretAccessDenied")
        assert principal in message
        assert kv("vault1", "user") in message
        assert reg.username not in message and reg.password not in message
        assert health(get(client, "basic-creds")) == health(created)

        api.grant("vault1", principal)
        # Granting alone changes nothing stored: health is measured, not inferred.
        assert health(get(client, "basic-creds"))[0] == UNHEALTHY
        assert_healthy(validate(client, "basic-creds"))
        assert_healthy(get(client, "basic-creds"))
        # The wire format too: {"status": "Healthy"} and nothing else.
        body = api.call(
            "GET",
            f"{server.registry_path}/credentialSets/basic-creds?api-version={API_VERSION}",
            200,
        )
        assert health_of_json(body) == {"status": HEALTHY}
        # The principal is stable across the measurement.
        assert get(client, "basic-creds").identity.principal_id == principal


# -- 2. token auth: healthy with the right credentials, then a wrong password ------------------


def test_token_registry_healthy_then_wrong_password(
    server_factory: ServerFactory, registry_factory: RegistryFactory
) -> None:
    reg = registry_factory("token", username=distinct("u"), password=distinct("p"))
    assert reg.token_server is not None
    server = server_factory(upstreams(reg.login_server) + ALLOW_LOOPBACK_REALMS)
    api = Api(server)
    api.vault("tokens")
    api.secret("tokens", "user", reg.username)
    api.secret("tokens", "pass", reg.password)
    with server.client() as client:
        created = create(
            client, "token-creds", reg.login_server, kv("tokens", "user"), kv("tokens", "pass")
        )
        assert_unhealthy(created, "SecretAccessDenied")
        assert not reg.token_server.hits  # no secret was read, so no login was tried
        api.grant("tokens", created.identity.principal_id)

        assert_healthy(validate(client, "token-creds"))
        # The login really went through the JWT issuer, as this user.
        assert any(h.username == reg.username and h.status == 200 for h in reg.token_server.hits)

        wrong = distinct("wrong")
        api.secret("tokens", "pass", wrong)
        before = len(reg.token_server.hits)
        message = assert_unhealthy(validate(client, "token-creds"), "UpstreamAuthenticationFailed")
        assert reg.login_server in message
        assert wrong not in message and reg.username not in message
        # Measured afresh (no cached token): the issuer was asked again and said no.
        assert len(reg.token_server.hits) > before
        assert all(h.status != 200 for h in reg.token_server.hits[before:])
        assert health(get(client, "token-creds"))[1] == "UpstreamAuthenticationFailed"


# -- 3. each error code ------------------------------------------------------------------------


def test_each_error_code(server_factory: ServerFactory, registry_factory: RegistryFactory) -> None:
    reg = basic(registry_factory)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    server = server_factory(upstreams(reg.login_server, dead))
    api = Api(server)
    api.vault("errs")
    api.secret("errs", "user", reg.username)
    api.secret("errs", "pass", reg.password)
    wrong = distinct("wrong")
    api.secret("errs", "wrong", wrong)
    cases = {
        # name: (login server, username id, password id, expected code or None for Healthy)
        "right": (reg.login_server, kv("errs", "user"), kv("errs", "pass"), None),
        "wrong-password": (
            reg.login_server,
            kv("errs", "user"),
            kv("errs", "wrong"),
            "UpstreamAuthenticationFailed",
        ),
        "missing-secret": (
            reg.login_server,
            kv("errs", "user"),
            kv("errs", "nope"),
            "SecretNotFound",
        ),
        "missing-vault": (
            reg.login_server,
            kv("novault", "user"),
            kv("errs", "pass"),
            "SecretNotFound",
        ),
        "unreachable": (dead, kv("errs", "user"), kv("errs", "pass"), "UpstreamUnreachable"),
    }
    with server.client() as client:
        for name, (login_server, user_id, pass_id, _) in cases.items():
            created = create(client, name, login_server, user_id, pass_id)
            assert _text(created.provisioning_state) == "Succeeded"
            api.grant("errs", created.identity.principal_id)
        for name, (login_server, user_id, pass_id, code) in cases.items():
            result = validate(client, name)
            if code is None:
                assert_healthy(result)
                continue
            message = assert_unhealthy(result, code)
            assert health(get(client, name)) == health(result)  # stored as measured
            for value in (reg.username, reg.password, wrong):
                assert value not in message, (name, message)
            if code == "SecretNotFound":
                missing = pass_id if name == "missing-secret" else user_id
                assert missing in message, message
            else:
                assert login_server in message, message
        # A scheme no resolver handles is refused at once: 400, nothing created.
        with pytest.raises(HttpResponseError) as refused:
            client.credential_sets.begin_create(
                RG,
                REGISTRY,
                "env-creds",
                credential_set(reg.login_server, "env:FOO", kv("errs", "pass")),
            )
        assert refused.value.status_code == 400
        assert refused.value.error is not None
        assert refused.value.error.code == "InvalidSecretIdentifier"
        assert "env" in refused.value.error.message
        with pytest.raises(ResourceNotFoundError):
            get(client, "env-creds")
        # The same on update: the set keeps its identifiers and its health.
        with pytest.raises(HttpResponseError) as refused:
            client.credential_sets.begin_update(
                RG, REGISTRY, "right", new_identifiers(kv("errs", "user"), "env:FOO")
            )
        assert refused.value.status_code == 400
        assert refused.value.error.code == "InvalidSecretIdentifier"
        kept = get(client, "right")
        assert kept.auth_credentials[0].password_secret_identifier == kv("errs", "pass")
        assert_healthy(kept)


# -- 4. rotation -------------------------------------------------------------------------------


def test_rotation_new_secret_version_and_new_identifiers(
    server_factory: ServerFactory, registry_factory: RegistryFactory
) -> None:
    reg = basic(registry_factory)
    server = server_factory(upstreams(reg.login_server))
    api = Api(server)
    api.vault("rot")
    api.secret("rot", "user", reg.username)
    first = api.secret("rot", "pass", reg.password)["version"]
    with server.client() as client:
        created = create(
            client, "rot-creds", reg.login_server, kv("rot", "user"), kv("rot", "pass")
        )
        api.grant("rot", created.identity.principal_id)
        assert_healthy(validate(client, "rot-creds"))

        # The password changes upstream: the stored secret is now stale.
        reg.set_password(distinct("p"))
        assert_unhealthy(validate(client, "rot-creds"), "UpstreamAuthenticationFailed")
        # A new version of the same secret: the versionless identifier reads the newest.
        second = api.secret("rot", "pass", reg.password)["version"]
        assert second != first
        assert_healthy(validate(client, "rot-creds"))
        assert_healthy(get(client, "rot-creds"))

        # Pinned versions read exactly that version; the update LRO measures them.
        pinned_old = client.credential_sets.begin_update(
            RG, REGISTRY, "rot-creds", new_identifiers(kv("rot", "user"), kv("rot", "pass", first))
        ).result()
        assert _text(pinned_old.provisioning_state) == "Succeeded"
        assert_unhealthy(pinned_old, "UpstreamAuthenticationFailed")
        pinned_new = client.credential_sets.begin_update(
            RG, REGISTRY, "rot-creds", new_identifiers(kv("rot", "user"), kv("rot", "pass", second))
        ).result()
        assert_healthy(pinned_new)

        # Rotation by new identifiers: break the password again (stored health: Unhealthy),
        # then point the set at new secrets; the LRO result already carries the new health.
        reg.set_password(distinct("p"))
        assert_unhealthy(validate(client, "rot-creds"), "UpstreamAuthenticationFailed")
        api.secret("rot", "user-2", reg.username)
        api.secret("rot", "pass-2", reg.password)
        updated = client.credential_sets.begin_update(
            RG, REGISTRY, "rot-creds", new_identifiers(kv("rot", "user-2"), kv("rot", "pass-2"))
        ).result()
        assert _text(updated.provisioning_state) == "Succeeded"
        cred = updated.auth_credentials[0]
        assert (cred.username_secret_identifier, cred.password_secret_identifier) == (
            kv("rot", "user-2"),
            kv("rot", "pass-2"),
        )
        assert_healthy(updated)
        assert_healthy(get(client, "rot-creds"))
        # ...and to identifiers that do not resolve: Unhealthy straight from the LRO.
        broken = client.credential_sets.begin_update(
            RG, REGISTRY, "rot-creds", new_identifiers(kv("rot", "user-2"), kv("rot", "pass-3"))
        ).result()
        assert _text(broken.provisioning_state) == "Succeeded"
        assert kv("rot", "pass-3") in assert_unhealthy(broken, "SecretNotFound")


# -- 5. the timer ------------------------------------------------------------------------------


@pytest.mark.slow
def test_health_timer_notices_a_broken_password_without_validate(
    server_factory: ServerFactory, registry_factory: RegistryFactory
) -> None:
    reg = basic(registry_factory)
    server = server_factory(
        upstreams(reg.login_server), env={"ENTREPOT_HEALTH_INTERVAL_SECONDS": "1"}
    )
    api = Api(server)
    api.vault("timed")
    api.secret("timed", "user", reg.username)
    api.secret("timed", "pass", reg.password)
    with server.client() as client:
        created = create(
            client, "timed-creds", reg.login_server, kv("timed", "user"), kv("timed", "pass")
        )
        assert_unhealthy(created, "SecretAccessDenied")
        api.grant("timed", created.identity.principal_id)
        # No validate call from here on: only the timer measures.
        wait_for(
            lambda: health(get(client, "timed-creds"))[0] == HEALTHY, 10, "Healthy after the grant"
        )

        reg.set_password(distinct("p"))
        wait_for(
            lambda: health(get(client, "timed-creds"))[1] == "UpstreamAuthenticationFailed",
            10,
            "UpstreamAuthenticationFailed after the password changed upstream",
        )
        api.secret("timed", "pass", reg.password)
        wait_for(
            lambda: health(get(client, "timed-creds"))[0] == HEALTHY, 10, "Healthy after rotation"
        )


# -- 5b. one broken set never stops the others ---------------------------------------------------


async def _insert_set_with_invalid_login_server(config_path: Path, name: str) -> str:
    """Store a credential set whose login server no current version accepts, straight through
    the metadata layer (as an older version could have stored it), settled as Succeeded; return
    its principal."""
    from entrepot.config import load_config
    from entrepot.metadata.database import Database, utcnow
    from entrepot.metadata.records import (
        Changes,
        NewCredentialSet,
        RegistryKey,
        ResourceKind,
        State,
    )
    from entrepot.metadata.resources import SqlResourceStore

    principal = str(uuid.uuid4())
    database = Database(load_config(config_path, env={}).database_url)
    await database.open()
    try:
        store = SqlResourceStore(database)
        async with store.write() as tx:
            registry = await tx.registry(RegistryKey(SUBSCRIPTION, RG, REGISTRY))
            assert registry is not None
            row_id = await tx.insert_credential_set(
                NewCredentialSet(
                    registry_id=registry.id,
                    name=name,
                    login_server="quay.io:99999",
                    identity_type="SystemAssigned",
                    principal_id=principal,
                    auth_credentials=[
                        {
                            "name": "Credential1",
                            "usernameSecretIdentifier": kv("refresh", "user"),
                            "passwordSecretIdentifier": kv("refresh", "pass"),
                        },
                        # damaged: no name, so no health can be recorded on it
                        {"usernameSecretIdentifier": kv("refresh", "user")},
                    ],
                    actor="an older version",
                    now=utcnow(),
                )
            )
            await tx.update(ResourceKind.CREDENTIAL_SET, row_id, Changes(state=State.SUCCEEDED))
    finally:
        await database.close()
    return principal


def test_one_broken_set_never_stops_validate_nor_the_refresh(
    server_factory: ServerFactory, registry_factory: RegistryFactory
) -> None:
    """A stored login server that is invalid (``quay.io:99999``), and a stored credential without
    a name, are that set's Unhealthy health: ``validate`` answers 200, and the timer goes on to
    the sets after it, so a set whose secret was deleted turns Unhealthy without any validate
    call."""
    reg = basic(registry_factory)
    server = server_factory(
        upstreams(reg.login_server), env={"ENTREPOT_HEALTH_INTERVAL_SECONDS": "1"}
    )
    server.stop()
    broken = asyncio.run(_insert_set_with_invalid_login_server(server.config_path, "broken-first"))
    server.start()
    api = Api(server)
    api.vault("refresh")
    api.secret("refresh", "user", reg.username)
    api.secret("refresh", "pass", reg.password)
    api.grant("refresh", broken)  # its secrets resolve: the login server itself is what fails
    with server.client() as client:
        created = create(
            client, "measured-after", reg.login_server, kv("refresh", "user"), kv("refresh", "pass")
        )
        api.grant("refresh", created.identity.principal_id)
        wait_for(
            lambda: health(get(client, "measured-after"))[0] == HEALTHY, 15, "Healthy after grant"
        )

        # validate on the broken set: 200 and an Unhealthy result, not a 500.
        body = api.validate("broken-first")
        named, nameless = body["properties"]["authCredentials"]
        result = named["credentialHealth"]
        assert (result["status"], result["errorCode"]) == (UNHEALTHY, "UpstreamError"), result
        assert "quay.io:99999" in result["errorMessage"]
        assert "credentialHealth" not in nameless and "name" not in nameless
        stored = get(client, "broken-first").auth_credentials[0].credential_health
        assert (_text(stored.status), stored.error_code) == (UNHEALTHY, "UpstreamError")

        # The set after the broken one is still re-measured by the timer.
        api.call("DELETE", "/entrepot/vaults/refresh/secrets/pass", 204)
        wait_for(
            lambda: health(get(client, "measured-after"))[1] == "SecretNotFound",
            15,
            "SecretNotFound after the secret was deleted, the broken set coming first",
        )
        stored = get(client, "broken-first").auth_credentials[0].credential_health
        assert (_text(stored.status), stored.error_code) == (UNHEALTHY, "UpstreamError")
    assert "Traceback" not in server.log()


# -- 6. the seed's examples, through entrepot.mgmt and the genuine SDK --------------------------


def monitor_credential_health(client: Any, CredentialHealthStatus: Any) -> None:
    """The seed's "Monitor Credential Health", verbatim in its calls and prints."""
    # List all credential sets and check their health
    credential_sets = client.credential_sets.list("my-resource-group", "my-registry")

    print("Credential Set Health Report:")
    print("-" * 50)
    for cred_set in credential_sets:
        print(f"Credential Set: {cred_set.name}")
        print(f" Login Server: {cred_set.login_server}")
        print(f" Provisioning State: {cred_set.provisioning_state}")

        if cred_set.auth_credentials:
            for auth_cred in cred_set.auth_credentials:
                print(f" Credential {auth_cred.name}:")
                if auth_cred.credential_health:
                    print(f" Health: {auth_cred.credential_health.status}")
                    if auth_cred.credential_health.status == CredentialHealthStatus.UNHEALTHY:
                        print(f" Error: {auth_cred.credential_health.error_message}")
                else:
                    print(" Health: Not available")
        print()


def update_credential_set_with_new_credentials(client: Any, models: ModuleType) -> Any:
    """The seed's "Update Credential Set with New Credentials", verbatim but for the imports."""
    AuthCredential = models.AuthCredential
    CredentialName = models.CredentialName
    CredentialSetUpdateParameters = models.CredentialSetUpdateParameters

    # Update credential set with new Key Vault secret identifiers
    update_params = CredentialSetUpdateParameters(
        auth_credentials=[
            AuthCredential(
                name=CredentialName.CREDENTIAL1,
                username_secret_identifier="https://myvault.vault.azure.net/secrets/new-registry-username",
                password_secret_identifier="https://myvault.vault.azure.net/secrets/new-registry-password",
            )
        ]
    )

    updated_cred_set = client.credential_sets.begin_update(
        "my-resource-group", "my-registry", "private-registry-creds", update_params
    ).result()

    print(f"Updated credential set: {updated_cred_set.name}")
    print("New credential identifiers configured")
    return updated_cred_set


PRINTED = {
    "entrepot.mgmt": {
        "Succeeded": "Succeeded",
        "Credential1": "Credential1",
        "Healthy": "Healthy",
        "Unhealthy": "Unhealthy",
    },
    "azure-sdk": {
        "Succeeded": "ProvisioningState.SUCCEEDED",
        "Credential1": "CredentialName.CREDENTIAL1",
        "Healthy": "CredentialHealthStatus.HEALTHY",
        "Unhealthy": "CredentialHealthStatus.UNHEALTHY",
    },
}


@pytest.mark.parametrize("flavour", ["entrepot.mgmt", "azure-sdk"])
def test_seed_monitor_and_update_examples(
    flavour: str,
    server_factory: ServerFactory,
    registry_factory: RegistryFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reg = basic(registry_factory)
    server = server_factory(upstreams(reg.login_server))
    api = Api(server)
    stale = distinct("stale")
    api.vault("myvault")
    api.secret("myvault", "registry-username", reg.username)
    api.secret("myvault", "registry-password", stale)  # an outdated password
    api.secret("myvault", "new-registry-username", reg.username)
    api.secret("myvault", "new-registry-password", reg.password)
    if flavour == "entrepot.mgmt":
        client, models = server.client(), entrepot_models
    else:
        from azure.mgmt.containerregistry import models as sdk_models

        client, models = server.sdk_client(), sdk_models
    with client:
        # The seed's "Create Credential Set for Private Registry", with this upstream.
        created = client.credential_sets.begin_create(
            "my-resource-group",
            "my-registry",
            "private-registry-creds",
            credential_set(
                reg.login_server,
                "https://myvault.vault.azure.net/secrets/registry-username",
                "https://myvault.vault.azure.net/secrets/registry-password",
                models,
            ),
        ).result()
        assert isinstance(created, models.CredentialSet)
        assert created.auth_credentials[0].credential_health.status == (
            models.CredentialHealthStatus.UNHEALTHY
        )
        assert created.auth_credentials[0].credential_health.error_code == "SecretAccessDenied"
        api.grant("myvault", created.identity.principal_id)
        if flavour == "entrepot.mgmt":
            assert_unhealthy(
                validate(client, "private-registry-creds"), "UpstreamAuthenticationFailed"
            )
        else:  # the genuine SDK has no validate method: the same POST by hand
            measured = api.validate("private-registry-creds")
            assert health_of_json(measured)["errorCode"] == "UpstreamAuthenticationFailed"
        capsys.readouterr()

        monitor_credential_health(client, models.CredentialHealthStatus)
        out = capsys.readouterr().out
        message = client.credential_sets.get(RG, REGISTRY, "private-registry-creds")
        error = message.auth_credentials[0].credential_health.error_message
        assert error and reg.login_server in error
        # How each client's values print: entrepot.mgmt's enums format as their values; the
        # genuine SDK's (str, Enum) members format as Class.MEMBER on this Python.
        shown = PRINTED[flavour]
        assert out == (
            "Credential Set Health Report:\n"
            + "-" * 50
            + "\n"
            + "Credential Set: private-registry-creds\n"
            + f" Login Server: {reg.login_server}\n"
            + f" Provisioning State: {shown['Succeeded']}\n"
            + f" Credential {shown['Credential1']}:\n"
            + f" Health: {shown['Unhealthy']}\n"
            + f" Error: {error}\n"
            + "\n"
        )
        assert stale not in out and reg.username not in out

        updated = update_credential_set_with_new_credentials(client, models)
        out = capsys.readouterr().out
        assert out == (
            "Updated credential set: private-registry-creds\n"
            "New credential identifiers configured\n"
        )
        assert isinstance(updated, models.CredentialSet)
        # Measured inside the update LRO: healthy with the new secrets at once.
        health_now = updated.auth_credentials[0].credential_health
        assert health_now.status == models.CredentialHealthStatus.HEALTHY
        assert health_now.error_code is None and health_now.error_message is None
        assert updated.auth_credentials[0].password_secret_identifier == (
            "https://myvault.vault.azure.net/secrets/new-registry-password"
        )

        monitor_credential_health(client, models.CredentialHealthStatus)
        out = capsys.readouterr().out
        assert f" Health: {shown['Healthy']}\n" in out
        assert " Error:" not in out and shown["Unhealthy"] not in out


# -- 7. the CLI --------------------------------------------------------------------------------


def cli(
    server: Server, *args: str, stdin: str | None = None, seen: Seen | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m entrepot ARGS`` against ``server`` (ENTREPOT_URL/ENTREPOT_TOKEN)."""
    env = {**os.environ, "ENTREPOT_URL": server.url, "ENTREPOT_TOKEN": server.token}
    env.pop("ENTREPOT_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "entrepot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if seen is not None:
        seen.add(f"cli {' '.join(args)} -> {result.returncode}", result.stdout + result.stderr)
    return result


def cli_json(result: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


def cli_health(body: dict[str, Any]) -> dict[str, Any]:
    (cred,) = body["authCredentials"]
    return dict(cred["credentialHealth"])


@pytest.mark.slow
def test_cli_vault_secret_grant_and_validate_exit_codes(
    server_factory: ServerFactory, registry_factory: RegistryFactory
) -> None:
    reg = basic(registry_factory)
    server = server_factory(upstreams(reg.login_server))
    vault = cli_json(cli(server, "vault", "create", "clivault"))
    assert vault["name"] == "clivault"
    for name, value in (("user", reg.username), ("pass", reg.password)):
        result = cli(
            server, "secret", "set", "clivault", name, "--value-file", "-", stdin=value + "\n"
        )
        info = cli_json(result)
        assert (info["name"], info["versionlessId"]) == (name, kv("clivault", name))
        assert value not in result.stdout + result.stderr
    created = cli_json(
        cli(
            server,
            "credential-set", "create", "-n", "cli-creds", "-r", REGISTRY, "-g", RG,
            "-l", reg.login_server, "-u", kv("clivault", "user"), "-p", kv("clivault", "pass"),
        )
    )  # fmt: skip
    principal = created["identity"]["principalId"]
    validate_args = ("credential-set", "validate", "-n", "cli-creds", "-r", REGISTRY, "-g", RG)

    denied = cli_json(cli(server, *validate_args), 3)
    assert cli_health(denied)["status"] == UNHEALTHY
    assert cli_health(denied)["errorCode"] == "SecretAccessDenied"

    grant = cli_json(
        cli(server, "vault", "grant", "clivault", "--principal", principal, "--permission", "get")
    )
    assert (grant["principalId"], grant["permission"]) == (principal, "get")
    healthy = cli_json(cli(server, *validate_args), 0)
    assert cli_health(healthy) == {"status": HEALTHY, "errorCode": None, "errorMessage": None}
    assert healthy["name"] == "cli-creds"

    # A wrong password, set from stdin as a new version: exit 3 and the reason.
    wrong = distinct("wrong")
    cli_json(cli(server, "secret", "set", "clivault", "pass", "--value-file", "-", stdin=wrong))
    result = cli(server, *validate_args)
    broken = cli_json(result, 3)
    assert cli_health(broken)["errorCode"] == "UpstreamAuthenticationFailed"
    assert reg.login_server in cli_health(broken)["errorMessage"]
    for value in (wrong, reg.username, reg.password):
        assert value not in result.stdout + result.stderr
    # Revoking the grant: access denied again.
    cli_json(
        cli(server, "secret", "set", "clivault", "pass", "--value-file", "-", stdin=reg.password), 0
    )
    assert cli(server, *validate_args).returncode == 0
    revoked = cli(server, "vault", "revoke", "clivault", "--principal", principal)
    assert revoked.returncode == 0, revoked.stderr
    assert cli_health(cli_json(cli(server, *validate_args), 3))["errorCode"] == "SecretAccessDenied"
    # A missing set: an error, not "unhealthy".
    missing = cli(server, "credential-set", "validate", "-n", "nope", "-r", REGISTRY, "-g", RG)
    assert missing.returncode not in (0, 3) and "nope" in missing.stderr


# -- 8. secret hygiene -------------------------------------------------------------------------


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode()).rstrip(b"=")


def files_containing(root: Path, needles: dict[str, bytes]) -> tuple[list[str], int]:
    """``(["FILE: needle label"...], bytes read)`` for every file under ``root``."""
    found, total = [], 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            total += len(data)
            found += [f"{path}: {what}" for what, needle in needles.items() if needle in data]
    return found, total


@pytest.mark.slow
def test_no_secret_value_anywhere_after_set_resolve_rotate_and_fail(
    process_factory: ServerFactory, registry_factory: RegistryFactory
) -> None:
    from azure.mgmt.containerregistry import models as sdk_models

    user1, pass1 = distinct("u"), distinct("p")
    user2, pass2 = distinct("u"), distinct("p")
    basic_reg = registry_factory("basic", username=user1, password=pass1)
    token_reg = registry_factory("token", username=user2, password=pass2)
    assert token_reg.token_server is not None
    server = process_factory(
        upstreams(basic_reg.login_server, token_reg.login_server) + ALLOW_LOOPBACK_REALMS,
        env={"ENTREPOT_SERVER_LOG_LEVEL": "debug"},  # the most the server would ever log
    )
    seen = Seen()
    api = Api(server, seen)
    wrong, pass1b, pass2b = distinct("wrong"), distinct("p"), distinct("p")
    values = {
        "user1": user1,
        "pass1": pass1,
        "user2": user2,
        "pass2": pass2,
        "wrong": wrong,
        "pass1b": pass1b,
        "pass2b": pass2b,
    }

    # Set: through the API (basic) and the CLI from stdin (token).
    api.vault("hygiene")
    api.secret("hygiene", "basic-user", user1)
    api.secret("hygiene", "basic-pass", pass1)
    for name, value in (("token-user", user2), ("token-pass", pass2)):
        result = cli(
            server, "secret", "set", "hygiene", name, "--value-file", "-", stdin=value, seen=seen
        )
        assert result.returncode == 0, result.stderr
    # Refused writes must not echo the value either.
    path = "/entrepot/vaults/hygiene/secrets/refused"
    api.call("PUT", path, 400, data=f'{{"value": "{pass1}"'.encode())
    api.call("PUT", path, 400, json={"value": [pass1]})
    api.call("PUT", path, 400, json={"value": pass1, "note": pass1})
    api.call("PUT", path, 400, json={"valu": pass1})
    api.call("GET", "/entrepot/vaults/hygiene/secrets", 200)
    api.call("GET", "/entrepot/vaults/hygiene/secrets/basic-pass/versions", 200)

    validate_token = ("credential-set", "validate", "-n", "token-creds", "-r", REGISTRY, "-g", RG)
    with (
        server.client(raw_response_hook=seen.hook) as client,
        server.sdk_client(raw_response_hook=seen.hook) as sdk,
    ):
        # Fail (access denied) at create, through both clients.
        b = create(
            client,
            "basic-creds",
            basic_reg.login_server,
            kv("hygiene", "basic-user"),
            kv("hygiene", "basic-pass"),
        )
        assert_unhealthy(b, "SecretAccessDenied")
        t = sdk.credential_sets.begin_create(
            RG,
            REGISTRY,
            "token-creds",
            credential_set(
                token_reg.login_server,
                kv("hygiene", "token-user"),
                kv("hygiene", "token-pass"),
                sdk_models,
            ),
        ).result()
        assert t.auth_credentials[0].credential_health.error_code == "SecretAccessDenied"
        api.grant("hygiene", b.identity.principal_id)
        api.grant("hygiene", t.identity.principal_id)

        # Resolve and log in: the values really are used, and work.
        assert_healthy(validate(client, "basic-creds"))
        assert cli_health(cli_json(cli(server, *validate_token, seen=seen)))["status"] == HEALTHY
        assert any(h.username == user2 and h.status == 200 for h in token_reg.token_server.hits)

        # Fail: a wrong password (basic), a password changed upstream (token).
        api.secret("hygiene", "basic-pass", wrong)
        assert_unhealthy(validate(client, "basic-creds"), "UpstreamAuthenticationFailed")
        token_reg.set_password(pass2b)
        broken = cli_json(cli(server, *validate_token, seen=seen), 3)
        assert cli_health(broken)["errorCode"] == "UpstreamAuthenticationFailed"

        # Rotate: new passwords upstream and new secret versions; healthy again.
        basic_reg.set_password(pass1b)
        api.secret("hygiene", "basic-pass", pass1b)
        assert_healthy(validate(client, "basic-creds"))
        result = cli(
            server,
            "secret", "set", "hygiene", "token-pass", "--value-file", "-",
            stdin=pass2b + "\n", seen=seen,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        same = sdk_models.CredentialSetUpdateParameters(
            auth_credentials=[
                sdk_models.AuthCredential(
                    name="Credential1",
                    username_secret_identifier=kv("hygiene", "token-user"),
                    password_secret_identifier=kv("hygiene", "token-pass"),
                )
            ]
        )
        rotated = sdk.credential_sets.begin_update(RG, REGISTRY, "token-creds", same).result()
        assert rotated.auth_credentials[0].credential_health.status == HEALTHY
        assert any(h.username == user2 and h.status == 200 for h in token_reg.token_server.hits)

        # Fail: a secret that is not there, an identifier nobody resolves.
        missing = client.credential_sets.begin_update(
            RG,
            REGISTRY,
            "basic-creds",
            new_identifiers(kv("hygiene", "basic-user"), kv("hygiene", "gone")),
        ).result()
        assert_unhealthy(missing, "SecretNotFound")
        with pytest.raises(HttpResponseError) as refused:
            client.credential_sets.begin_update(
                RG, REGISTRY, "basic-creds", new_identifiers("env:NOPE", kv("hygiene", "gone"))
            )
        seen.add("refused update", str(refused.value))
        list(client.credential_sets.list(RG, REGISTRY))
        list(sdk.credential_sets.list(RG, REGISTRY))

    # Every value travelled as itself, as base64 alone, and inside a Basic header.
    needles: dict[str, bytes] = {}
    for label, value in values.items():
        needles[label] = value.encode()
        needles[f"base64({label})"] = b64(value)
    pairs = {"user1": ("pass1", "wrong", "pass1b"), "user2": ("pass2", "pass2b")}
    for user, passwords in pairs.items():
        for password in passwords:
            needles[f"Basic {user}:{password}"] = b64(f"{values[user]}:{values[password]}")
    assert len(needles) == 2 * len(values) + 5

    # Non-vacuous: the collection holds what it should.
    labels = " ".join(label for label, _ in seen.items)
    assert "/validate" in labels and "credentialSets/token-creds" in labels  # both hooks ran
    assert "/operationStatuses/" in labels  # the LRO polls too
    assert "cli secret set" in labels and "cli credential-set validate" in labels
    assert any("SecretNotFound" in text for _, text in seen.items)
    assert any("UpstreamAuthenticationFailed" in text for _, text in seen.items)
    assert "InvalidSecretIdentifier" in str(refused.value)

    assert seen.leaks(needles) == []
    log = server.log()
    assert "DEBUG entrepot.upstream" in log  # the debug log of the logins was captured
    assert [label for label, needle in needles.items() if needle in log.encode()] == []

    # Files: the server's whole directory (data dir with the database, its WAL and shm, the
    # master key and the token, plus the config and the log), while running and after stop.
    root = server.data_dir.parent
    control = {"principal": b.identity.principal_id.encode(), "token": server.token.encode()}
    found, total = files_containing(root, needles)
    assert found == []
    assert total > 0
    known, _ = files_containing(root, control)
    assert any("admin-token" in f for f in known)  # the search does find what is there
    assert any("principal" in f and "admin-token" not in f for f in known)  # stored as text
    server.stop()
    found, total = files_containing(root, needles)
    assert found == []
    assert any(p.suffix == ".db" or "db" in p.name for p in server.data_dir.rglob("*"))
