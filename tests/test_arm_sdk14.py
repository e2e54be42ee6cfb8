"""The core flows through the genuine ``azure-mgmt-containerregistry`` 14.x (default 2025-04-01).

14.x cannot share the venv with 15.x, so ``scripts/test`` installs it into ``$VENV/sdk14``
(``ensure_sdk14`` in ``scripts/_env.sh``). The flows run in a subprocess with that directory
first on ``PYTHONPATH``, so 14.x shadows 15.x while azure-core and azure-mgmt-core come from the
venv. The script only records what happened as JSON; the assertions are made here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, Server

pytestmark = pytest.mark.slow  # the genuine SDK 14 runs in a Python process of its own

SDK14_DIR = Path(sys.prefix) / "sdk14"

SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import time
    from urllib.parse import parse_qs, urlsplit

    from azure.core.credentials import AccessToken
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

    import azure.mgmt.containerregistry as package
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry._version import VERSION
    from azure.mgmt.containerregistry.v2025_04_01.models import (
        AuthCredential,
        CacheRule,
        CacheRuleUpdateParameters,
        CredentialName,
        CredentialSet,
        CredentialSetUpdateParameters,
        IdentityProperties,
        ResourceIdentityType,
    )

    url, token, subscription, rg, registry = sys.argv[1:6]
    requests_seen = []


    def hook(pipeline_request):
        request = pipeline_request.http_request
        query = parse_qs(urlsplit(request.url).query)
        requests_seen.append([request.method, query.get("api-version", [])])


    class LoopbackPolicy(ARMChallengeAuthenticationPolicy):
        def on_request(self, request):
            request.context["enforce_https"] = False
            super().on_request(request)


    def make_client(secret):
        class Token:
            def get_token(self, *scopes, **kwargs):
                return AccessToken(secret, int(time.time()) + 3600)

        cred = Token()
        return ContainerRegistryManagementClient(
            cred,
            subscription,
            base_url=url,
            authentication_policy=LoopbackPolicy(cred, "https://management.azure.com/.default"),
            polling_interval=0.05,
            retry_total=0,
            raw_request_hook=hook,
        )


    def enum(value):
        return getattr(value, "value", value)


    def error(exc):
        return {
            "class": type(exc).__name__,
            "status": exc.status_code,
            "code": exc.error.code if exc.error else None,
        }


    def rule_view(rule):
        return {
            "id": rule.id,
            "name": rule.name,
            "type": rule.type,
            "source": rule.source_repository,
            "target": rule.target_repository,
            "set": rule.credential_set_resource_id,
            "state": enum(rule.provisioning_state),
            "created": rule.creation_date.isoformat() if rule.creation_date else None,
        }


    client = make_client(token)
    out = {"version": VERSION, "package": package.__file__}
    base = (
        f"/subscriptions/{subscription}/resourceGroups/{rg}"
        f"/providers/Microsoft.ContainerRegistry/registries/{registry}"
    )


    def credential(user):
        return AuthCredential(
            name=CredentialName.CREDENTIAL1,
            username_secret_identifier=f"https://myvault.vault.azure.net/secrets/{user}",
            password_secret_identifier="https://myvault.vault.azure.net/secrets/p",
        )


    sets = {}
    for name in ("sdk14-set-a", "sdk14-set-b"):
        made = client.credential_sets.begin_create(
            rg,
            registry,
            name,
            CredentialSet(
                identity=IdentityProperties(type=ResourceIdentityType.SYSTEM_ASSIGNED),
                login_server="quay.io",
                auth_credentials=[credential("u")],
            ),
        ).result()
        sets[name] = {
            "name": made.name,
            "login": made.login_server,
            "principal": made.identity.principal_id,
            "tenant": made.identity.tenant_id,
            "identity": enum(made.identity.type),
            "state": enum(made.provisioning_state),
        }
    out["sets"] = sets
    updated_set = client.credential_sets.begin_update(
        rg,
        registry,
        "sdk14-set-a",
        CredentialSetUpdateParameters(auth_credentials=[credential("u2")]),
    ).result()
    out["set_update"] = {
        "user": updated_set.auth_credentials[0].username_secret_identifier,
        "principal": updated_set.identity.principal_id,
    }
    set_a = f"{base}/credentialSets/sdk14-set-a"
    set_b = f"{base}/credentialSets/sdk14-set-b"

    created = client.cache_rules.begin_create(
        rg,
        registry,
        "sdk14-rule",
        CacheRule(
            source_repository="quay.io/sdk14/*",
            target_repository="sdk14/*",
            credential_set_resource_id=set_a,
        ),
    ).result()
    out["created"] = rule_view(created)
    out["got"] = rule_view(client.cache_rules.get(rg, registry, "sdk14-rule"))
    out["updated"] = rule_view(
        client.cache_rules.begin_update(
            rg, registry, "sdk14-rule", CacheRuleUpdateParameters(credential_set_resource_id=set_b)
        ).result()
    )
    out["got_after_update"] = rule_view(client.cache_rules.get(rg, registry, "sdk14-rule"))

    for i in range(14):
        client.cache_rules.begin_create(
            rg,
            registry,
            f"sdk14-page-{i:02d}",
            CacheRule(source_repository=f"quay.io/page/p{i}", target_repository=f"page-{i}"),
        ).result()
    out["pages"] = [
        [rule.name for rule in page] for page in client.cache_rules.list(rg, registry).by_page()
    ]
    out["set_pages"] = [
        [s.name for s in page] for page in client.credential_sets.list(rg, registry).by_page()
    ]

    try:
        client.cache_rules.begin_create(
            rg,
            registry,
            "sdk14-conflict",
            CacheRule(source_repository="quay.io/other/*", target_repository="sdk14/sub/*"),
        ).result()
        out["conflict"] = None
    except HttpResponseError as exc:
        out["conflict"] = error(exc)
    try:
        client.credential_sets.begin_delete(rg, registry, "sdk14-set-b").result()
        out["in_use"] = None
    except HttpResponseError as exc:
        out["in_use"] = error(exc)
    try:
        client.cache_rules.get(rg, "nosuchregistry", "sdk14-rule")
        out["no_registry"] = None
    except HttpResponseError as exc:
        out["no_registry"] = error(exc)
    try:
        make_client("wrong-token").cache_rules.get(rg, registry, "sdk14-rule")
        out["bad_token"] = None
    except HttpResponseError as exc:
        out["bad_token"] = error(exc)

    out["deleted"] = client.cache_rules.begin_delete(rg, registry, "sdk14-rule").result()
    try:
        client.cache_rules.get(rg, registry, "sdk14-rule")
        out["after_delete"] = None
    except HttpResponseError as exc:
        out["after_delete"] = error(exc)
    out["set_deleted"] = client.credential_sets.begin_delete(rg, registry, "sdk14-set-b").result()
    out["remaining_sets"] = sorted(s.name for s in client.credential_sets.list(rg, registry))
    out["requests"] = requests_seen
    print(json.dumps(out))
    """
)


def run_sdk14(server: Server, tmp_path: Path) -> dict[str, Any]:
    if not (SDK14_DIR / "azure" / "mgmt" / "containerregistry").is_dir():
        pytest.skip(
            f"azure-mgmt-containerregistry 14.x is not installed in {SDK14_DIR}; scripts/test "
            "installs it (or run: bash -c 'source scripts/_env.sh; ensure_sdk14')"
        )
    script = tmp_path / "sdk14_flows.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SDK14_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            server.url,
            server.token,
            SUBSCRIPTION,
            RESOURCE_GROUP,
            REGISTRY,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_core_flows_through_sdk14(server: Server, tmp_path: Path) -> None:
    out = run_sdk14(server, tmp_path)

    # It really was 14.x from its own directory, speaking 2025-04-01 on every request.
    assert out["version"].startswith("14."), out["version"]
    assert Path(out["package"]).resolve().is_relative_to(SDK14_DIR.resolve())
    assert out["requests"], "no request recorded"
    assert {tuple(v) for _, v in out["requests"]} == {("2025-04-01",)}, out["requests"]
    assert {m for m, _ in out["requests"]} == {"GET", "PUT", "PATCH", "DELETE"}

    base = server.registry_path
    set_a = f"{base}/credentialSets/sdk14-set-a"
    set_b = f"{base}/credentialSets/sdk14-set-b"
    for name, made in out["sets"].items():
        assert made["name"] == name
        assert made["login"] == "quay.io"
        assert made["identity"] == "SystemAssigned"
        assert made["state"] == "Succeeded"
        assert made["principal"] and made["tenant"]
    assert out["sets"]["sdk14-set-a"]["principal"] != out["sets"]["sdk14-set-b"]["principal"]
    assert out["set_update"]["user"].endswith("/secrets/u2")
    assert out["set_update"]["principal"] == out["sets"]["sdk14-set-a"]["principal"]

    created = out["created"]
    assert created["id"] == f"{base}/cacheRules/sdk14-rule"
    assert created["name"] == "sdk14-rule"
    assert created["type"] == "Microsoft.ContainerRegistry/registries/cacheRules"
    assert (created["source"], created["target"]) == ("quay.io/sdk14/*", "sdk14/*")
    assert created["set"].lower() == set_a.lower()
    assert created["state"] == "Succeeded"
    assert created["created"]
    assert out["got"] == created

    for view in (out["updated"], out["got_after_update"]):
        assert view["set"].lower() == set_b.lower()
        assert (view["source"], view["target"]) == ("quay.io/sdk14/*", "sdk14/*")
        assert view["state"] == "Succeeded"

    pages = out["pages"]
    assert [len(p) for p in pages] == [10, 5]  # 15 rules, page size 10
    names = [n for page in pages for n in page]
    assert sorted(names) == sorted(["sdk14-rule", *(f"sdk14-page-{i:02d}" for i in range(14))])
    assert [sorted(page) for page in out["set_pages"]] == [["sdk14-set-a", "sdk14-set-b"]]

    assert out["conflict"] == {
        "class": "ResourceExistsError",
        "status": 409,
        "code": "CacheRuleTargetConflict",
    }
    assert out["in_use"] == {
        "class": "ResourceExistsError",
        "status": 409,
        "code": "CredentialSetInUse",
    }
    assert out["no_registry"] == {
        "class": "ResourceNotFoundError",
        "status": 404,
        "code": "ParentResourceNotFound",
    }
    assert out["bad_token"] == {
        "class": "ClientAuthenticationError",
        "status": 401,
        "code": "InvalidAuthenticationToken",
    }
    assert out["deleted"] is None
    assert out["after_delete"] == {
        "class": "ResourceNotFoundError",
        "status": 404,
        "code": "ResourceNotFound",
    }
    assert out["set_deleted"] is None
    assert out["remaining_sets"] == ["sdk14-set-a"]
