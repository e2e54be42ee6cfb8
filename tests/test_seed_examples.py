"""Every usage example of the seed, run through ``entrepot.mgmt`` against a real server.

Only the import and the client construction change, plus the adaptations a faithful server
forces (azure-sdk-wire.md §9): credential sets that the examples reference are created first,
resource ids name this server's subscription, resource group and registry, and example 7 runs
after the clean-up of example 8 (it reuses example 3's targets).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from entrepot.mgmt.models import (
    AuthCredential,
    CacheRule,
    CredentialHealthStatus,
    CredentialName,
    CredentialSet,
    CredentialSetUpdateParameters,
    IdentityProperties,
    ProvisioningState,
    ResourceIdentityType,
)
from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, Server

RG = RESOURCE_GROUP
REGISTRY_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}"
    f"/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}"
)


def set_id(name: str) -> str:
    return f"{REGISTRY_ID}/credentialSets/{name}"


def make_credential_set(client: Any, name: str, login_server: str) -> None:
    client.credential_sets.begin_create(
        RG,
        REGISTRY,
        name,
        CredentialSet(
            identity=IdentityProperties(type=ResourceIdentityType.SYSTEM_ASSIGNED),
            login_server=login_server,
            auth_credentials=[
                AuthCredential(
                    name=CredentialName.CREDENTIAL1,
                    username_secret_identifier=f"https://myvault.vault.azure.net/secrets/{name}-u",
                    password_secret_identifier=f"https://myvault.vault.azure.net/secrets/{name}-p",
                )
            ],
        ),
    ).result()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Any]:
    with server.client() as c:
        yield c


def cleanup_cache_resources(client: Any, resource_group: str, registry_name: str) -> None:
    """Example 8, verbatim in its calls."""
    cache_rules = list(client.cache_rules.list(resource_group, registry_name))
    for rule in cache_rules:
        try:
            client.cache_rules.begin_delete(resource_group, registry_name, rule.name).result()
            print(f"Deleted cache rule: {rule.name}")
        except Exception as e:
            print(f"Failed to delete cache rule {rule.name}: {e}")
    credential_sets = list(client.credential_sets.list(resource_group, registry_name))
    for cred_set in credential_sets:
        try:
            client.credential_sets.begin_delete(
                resource_group, registry_name, cred_set.name
            ).result()
            print(f"Deleted credential set: {cred_set.name}")
        except Exception as e:
            print(f"Failed to delete credential set {cred_set.name}: {e}")


def test_seed_examples_in_order(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Example 1: Create Cache Rule for Docker Hub (its credential set created first).
    make_credential_set(client, "dockerhub-creds", "docker.io")
    dockerhub_cache_rule = CacheRule(
        source_repository="docker.io/library/*",
        target_repository="dockerhub-cache/*",
        credential_set_resource_id=set_id("dockerhub-creds"),
    )
    cache_rule = client.cache_rules.begin_create(
        RG, REGISTRY, "dockerhub-cache", dockerhub_cache_rule
    ).result()
    print(f"Created cache rule: {cache_rule.name}")
    print(f"Source: {cache_rule.source_repository}")
    print(f"Target: {cache_rule.target_repository}")
    out = capsys.readouterr().out
    assert "Created cache rule: dockerhub-cache\nSource: docker.io/library/*\n" in out
    assert "Target: dockerhub-cache/*" in out
    assert cache_rule.provisioning_state == ProvisioningState.SUCCEEDED
    assert cache_rule.credential_set_resource_id == set_id("dockerhub-creds")
    assert cache_rule.id == f"{REGISTRY_ID}/cacheRules/dockerhub-cache"
    assert cache_rule.type == "Microsoft.ContainerRegistry/registries/cacheRules"
    assert cache_rule.creation_date is not None

    # Example 2: Create Credential Set for Private Registry.
    credential_set_params = CredentialSet(
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
    credential_set = client.credential_sets.begin_create(
        RG, REGISTRY, "private-registry-creds", credential_set_params
    ).result()
    print(f"Created credential set: {credential_set.name}")
    print(f"Login server: {credential_set.login_server}")
    out = capsys.readouterr().out
    assert "Created credential set: private-registry-creds" in out
    assert "Login server: private-registry.company.com" in out
    assert credential_set.identity.type == ResourceIdentityType.SYSTEM_ASSIGNED
    assert credential_set.identity.principal_id and credential_set.identity.tenant_id
    principal = credential_set.identity.principal_id
    cred = credential_set.auth_credentials[0]
    assert cred.name == CredentialName.CREDENTIAL1
    assert cred.password_secret_identifier.endswith("/secrets/registry-password")

    # Example 3: Set Up Comprehensive Caching Strategy (quay-creds and company-creds first).
    make_credential_set(client, "quay-creds", "quay.io")
    make_credential_set(client, "company-creds", "company-registry.local")
    cache_configurations = [
        {
            "name": "dockerhub-official",
            "source": "docker.io/library/*",
            "target": "cache/dockerhub/*",
            "credential_set": None,
        },
        {
            "name": "mcr-dotnet",
            "source": "mcr.microsoft.com/dotnet/*",
            "target": "cache/mcr-dotnet/*",
            "credential_set": None,
        },
        {
            "name": "quay-bitnami",
            "source": "quay.io/bitnami/*",
            "target": "cache/bitnami/*",
            "credential_set": set_id("quay-creds"),
        },
        {
            "name": "private-company",
            "source": "company-registry.local/*",
            "target": "cache/company/*",
            "credential_set": set_id("company-creds"),
        },
    ]
    created_cache_rules = []
    for config in cache_configurations:
        cache_rule_params = CacheRule(
            source_repository=config["source"],
            target_repository=config["target"],
            credential_set_resource_id=config["credential_set"],
        )
        cache_rule = client.cache_rules.begin_create(
            RG, REGISTRY, config["name"], cache_rule_params
        ).result()
        created_cache_rules.append(cache_rule)
        print(f"Created cache rule '{config['name']}': {config['source']} -> {config['target']}")
    print(f"\nTotal cache rules created: {len(created_cache_rules)}")
    out = capsys.readouterr().out
    assert "Total cache rules created: 4" in out
    assert "'quay-bitnami': quay.io/bitnami/* -> cache/bitnami/*" in out
    by_name = {r.name: r for r in created_cache_rules}
    assert by_name["dockerhub-official"].credential_set_resource_id is None
    assert by_name["private-company"].credential_set_resource_id == set_id("company-creds")

    # Example 4: Monitor Credential Health.
    credential_sets = client.credential_sets.list(RG, REGISTRY)
    print("Credential Set Health Report:")
    print("-" * 50)
    seen = []
    for cred_set in credential_sets:
        seen.append(cred_set.name)
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
    out = capsys.readouterr().out
    assert sorted(seen) == sorted(
        ["dockerhub-creds", "private-registry-creds", "quay-creds", "company-creds"]
    )
    assert " Provisioning State: Succeeded" in out
    assert " Login Server: quay.io" in out
    assert out.count(" Credential Credential1:") == 4

    # Example 5: Update Credential Set with New Credentials.
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
        RG, REGISTRY, "private-registry-creds", update_params
    ).result()
    print(f"Updated credential set: {updated_cred_set.name}")
    print("New credential identifiers configured")
    out = capsys.readouterr().out
    assert "Updated credential set: private-registry-creds" in out
    new_cred = updated_cred_set.auth_credentials[0]
    assert new_cred.username_secret_identifier.endswith("/secrets/new-registry-username")
    assert new_cred.password_secret_identifier.endswith("/secrets/new-registry-password")
    assert updated_cred_set.identity.principal_id == principal  # stable across updates
    assert updated_cred_set.login_server == "private-registry.company.com"

    # Example 6: Cache Performance Analysis.
    def analyze_cache_performance(client: Any, resource_group: str, registry_name: str) -> Any:
        cache_rules = list(client.cache_rules.list(resource_group, registry_name))
        analysis: dict[str, Any] = {
            "total_cache_rules": len(cache_rules),
            "active_rules": 0,
            "failed_rules": 0,
            "rules_by_source": {},
            "credential_usage": {},
        }
        for rule in cache_rules:
            if rule.provisioning_state == ProvisioningState.SUCCEEDED:
                analysis["active_rules"] += 1
            elif rule.provisioning_state == ProvisioningState.FAILED:
                analysis["failed_rules"] += 1
            source_domain = rule.source_repository.split("/")[0]
            if source_domain not in analysis["rules_by_source"]:
                analysis["rules_by_source"][source_domain] = []
            analysis["rules_by_source"][source_domain].append(rule.name)
            if rule.credential_set_resource_id:
                cred_set_name = rule.credential_set_resource_id.split("/")[-1]
                if cred_set_name not in analysis["credential_usage"]:
                    analysis["credential_usage"][cred_set_name] = []
                analysis["credential_usage"][cred_set_name].append(rule.name)
        return analysis

    performance = analyze_cache_performance(client, RG, REGISTRY)
    assert performance["total_cache_rules"] == 5
    assert performance["active_rules"] == 5
    assert performance["failed_rules"] == 0
    assert sorted(performance["rules_by_source"]["docker.io"]) == [
        "dockerhub-cache",
        "dockerhub-official",
    ]
    assert performance["rules_by_source"]["quay.io"] == ["quay-bitnami"]
    assert performance["credential_usage"] == {
        "dockerhub-creds": ["dockerhub-cache"],
        "quay-creds": ["quay-bitnami"],
        "company-creds": ["private-company"],
    }

    # Example 8: Clean Up Cache Resources.
    cleanup_cache_resources(client, RG, REGISTRY)
    out = capsys.readouterr().out
    assert "Failed" not in out
    assert out.count("Deleted cache rule:") == 5
    assert out.count("Deleted credential set:") == 4
    assert list(client.cache_rules.list(RG, REGISTRY)) == []
    assert list(client.credential_sets.list(RG, REGISTRY)) == []

    # Example 7: Automated Cache Rule Management (after the clean-up; see module docstring).
    def setup_cache_infrastructure(
        client: Any, resource_group: str, registry_name: str, cache_config: Any
    ) -> Any:
        created_resources: dict[str, list[Any]] = {"credential_sets": [], "cache_rules": []}
        for cred_config in cache_config.get("credential_sets", []):
            credential_set_params = CredentialSet(
                identity=IdentityProperties(type=ResourceIdentityType.SYSTEM_ASSIGNED),
                login_server=cred_config["login_server"],
                auth_credentials=[
                    AuthCredential(
                        name=CredentialName.CREDENTIAL1,
                        username_secret_identifier=cred_config["username_secret"],
                        password_secret_identifier=cred_config["password_secret"],
                    )
                ],
            )
            cred_set = client.credential_sets.begin_create(
                resource_group, registry_name, cred_config["name"], credential_set_params
            ).result()
            created_resources["credential_sets"].append(cred_set)
            print(f"Created credential set: {cred_set.name}")
        for cache_config_rule in cache_config.get("cache_rules", []):
            credential_set_id = None
            if cache_config_rule.get("credential_set"):
                credential_set_id = (
                    f"/subscriptions/{client._config.subscription_id}/resourceGroups/"
                    f"{resource_group}/providers/Microsoft.ContainerRegistry/registries/"
                    f"{registry_name}/credentialSets/{cache_config_rule['credential_set']}"
                )
            cache_rule_params = CacheRule(
                source_repository=cache_config_rule["source"],
                target_repository=cache_config_rule["target"],
                credential_set_resource_id=credential_set_id,
            )
            cache_rule = client.cache_rules.begin_create(
                resource_group, registry_name, cache_config_rule["name"], cache_rule_params
            ).result()
            created_resources["cache_rules"].append(cache_rule)
            print(f"Created cache rule: {cache_rule.name}")
        return created_resources

    cache_infrastructure_config = {
        "credential_sets": [
            {
                "name": "dockerhub-pro-creds",
                "login_server": "registry-1.docker.io",
                "username_secret": "https://myvault.vault.azure.net/secrets/dockerhub-username",
                "password_secret": "https://myvault.vault.azure.net/secrets/dockerhub-password",
            },
            {
                "name": "quay-creds",
                "login_server": "quay.io",
                "username_secret": "https://myvault.vault.azure.net/secrets/quay-username",
                "password_secret": "https://myvault.vault.azure.net/secrets/quay-password",
            },
        ],
        "cache_rules": [
            {
                "name": "dockerhub-official-cache",
                "source": "docker.io/library/*",
                "target": "cache/dockerhub-official/*",
                "credential_set": None,
            },
            {
                "name": "dockerhub-pro-cache",
                "source": "docker.io/company/*",
                "target": "cache/dockerhub-company/*",
                "credential_set": "dockerhub-pro-creds",
            },
            {
                "name": "quay-bitnami-cache",
                "source": "quay.io/bitnami/*",
                "target": "cache/bitnami/*",
                "credential_set": "quay-creds",
            },
        ],
    }
    infrastructure = setup_cache_infrastructure(client, RG, REGISTRY, cache_infrastructure_config)
    print("\nCache infrastructure setup completed:")
    print(f" Credential sets: {len(infrastructure['credential_sets'])}")
    print(f" Cache rules: {len(infrastructure['cache_rules'])}")
    out = capsys.readouterr().out
    assert " Credential sets: 2\n Cache rules: 3" in out
    rules = {r.name: r for r in client.cache_rules.list(RG, REGISTRY)}
    assert rules["dockerhub-pro-cache"].credential_set_resource_id == set_id("dockerhub-pro-creds")
    assert rules["dockerhub-official-cache"].credential_set_resource_id is None
    assert rules["quay-bitnami-cache"].target_repository == "cache/bitnami/*"

    cleanup_cache_resources(client, RG, REGISTRY)
    assert "Failed" not in capsys.readouterr().out
    assert list(client.cache_rules.list(RG, REGISTRY)) == []


def test_seed_example_3_before_creating_its_credential_sets_is_refused(client: Any) -> None:
    """Unadapted, example 3's quay rule names a credential set nobody created: refused, cleanly."""
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as info:
        client.cache_rules.begin_create(
            RG,
            REGISTRY,
            "quay-bitnami",
            CacheRule(
                source_repository="quay.io/bitnami/*",
                target_repository="cache/bitnami/*",
                credential_set_resource_id=set_id("quay-creds"),
            ),
        ).result()
    assert info.value.status_code == 400
    assert info.value.error.code == "CredentialSetNotFound"
    assert [r.name for r in client.cache_rules.list(RG, REGISTRY)] == []
