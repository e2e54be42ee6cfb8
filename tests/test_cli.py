"""End-to-end tests of the ``entrepot`` command line against a real ``entrepot serve``.

Every command runs as a subprocess (``python -m entrepot.cli``), as a user would run it; the
server is the ``server`` fixture of ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION

CRED_PREFIX = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    f"/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}/credentialSets/"
)
VAULT = "https://cli-vault.vault.azure.net/secrets"
WHERE = ["-r", REGISTRY, "-g", RESOURCE_GROUP, "--subscription", SUBSCRIPTION]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTREPOT_")}
    # A narrow "terminal" and no colour opt-outs: tables must still print values in full and
    # without ANSI escapes because stdout is a pipe.
    env["COLUMNS"] = "40"
    env.pop("NO_COLOR", None)
    return env


def run(
    server: Any,
    *args: str,
    env: dict[str, str] | None = None,
    with_env: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``entrepot *args`` with ENTREPOT_URL/ENTREPOT_TOKEN set (unless ``with_env`` is false)."""
    full_env = _base_env()
    if with_env:
        full_env["ENTREPOT_URL"] = server.url
        full_env["ENTREPOT_TOKEN"] = server.token
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "entrepot.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "\x1b[" not in result.stdout
    return result


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


def table_rows(stdout: str) -> list[list[str]]:
    """The whitespace-separated cells of every line of a table (values contain no spaces)."""
    return [line.split() for line in stdout.splitlines() if line.strip()]


def failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return result.stderr


# -- registries ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_registry_create_show_list_delete(server: Any) -> None:
    name = "cli-registry-one"
    created = ok_json(
        run(
            server,
            "registry",
            "create",
            "-n",
            name,
            "-g",
            RESOURCE_GROUP,
            "-l",
            "westeurope",
            "--subscription",
            SUBSCRIPTION,
        )
    )
    assert created["name"] == name
    assert created["location"] == "westeurope"
    assert created["resourceGroup"] == RESOURCE_GROUP
    assert created["provisioningState"] == "Succeeded"
    assert created["id"] == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
        f"/providers/Microsoft.ContainerRegistry/registries/{name}"
    )

    env = {"ENTREPOT_RESOURCE_GROUP": RESOURCE_GROUP, "ENTREPOT_SUBSCRIPTION": SUBSCRIPTION}
    shown = ok_json(run(server, "registry", "show", "-n", name, env=env))
    assert shown["id"] == created["id"]
    assert shown["location"] == "westeurope"

    listed = ok_json(run(server, "registry", "list", env=env))
    assert isinstance(listed, list)
    assert {REGISTRY, name} <= {r["name"] for r in listed}

    table = ok(run(server, "registry", "list", "-o", "table", env=env)).stdout
    rows = table_rows(table)
    assert rows[0][:2] == ["Name", "Resource"]
    row = next(r for r in rows if r[0] == name)
    assert row[1] == RESOURCE_GROUP
    assert "westeurope" in row
    assert "Succeeded" in row
    assert shown["loginServer"]
    assert shown["loginServer"] in row

    ok(run(server, "registry", "delete", "-n", name, "--yes", env=env))
    stderr = failed(run(server, "registry", "show", "-n", name, env=env), 1)
    assert stderr.startswith("error: (ResourceNotFound)")
    # Deleting what does not exist succeeds silently.
    assert ok(run(server, "registry", "delete", "-n", name, env=env)).stdout == ""


# -- credential sets -----------------------------------------------------------------------------
@pytest.mark.slow
def test_credential_set_lifecycle(server: Any) -> None:
    name = "cli-creds-one"
    created = ok_json(
        run(
            server,
            "credential-set",
            "create",
            "-n",
            name,
            *WHERE,
            "-l",
            "quay.io",
            "-u",
            f"{VAULT}/quay-user",
            "-p",
            f"{VAULT}/quay-pass",
        )
    )
    assert created["name"] == name
    assert created["id"] == CRED_PREFIX + name
    assert created["loginServer"] == "quay.io"
    assert created["resourceGroup"] == RESOURCE_GROUP
    assert created["provisioningState"] == "Succeeded"
    assert created["identity"]["type"] == "SystemAssigned"
    [cred] = created["authCredentials"]
    assert cred["name"] == "Credential1"
    assert cred["usernameSecretIdentifier"] == f"{VAULT}/quay-user"
    assert cred["passwordSecretIdentifier"] == f"{VAULT}/quay-pass"

    shown = ok_json(run(server, "credential-set", "show", "-n", name, *WHERE))
    assert shown["id"] == created["id"]
    assert shown["authCredentials"][0]["usernameSecretIdentifier"] == f"{VAULT}/quay-user"

    listed = ok_json(run(server, "credential-set", "list", *WHERE))
    assert name in [c["name"] for c in listed]

    table = ok(run(server, "credential-set", "list", *WHERE, "-o", "table")).stdout
    row = next(r for r in table_rows(table) if r[0] == name)
    assert row[1:4] == ["quay.io", f"{VAULT}/quay-user", f"{VAULT}/quay-pass"]
    assert row[-1] == "Succeeded"

    yaml_out = yaml.safe_load(
        ok(run(server, "credential-set", "show", "-n", name, *WHERE, "-o", "yaml")).stdout
    )
    assert yaml_out["id"] == created["id"]
    assert yaml_out["authCredentials"][0]["passwordSecretIdentifier"] == f"{VAULT}/quay-pass"

    # Only the password changes; the username is carried over from a GET.
    updated = ok_json(
        run(server, "credential-set", "update", "-n", name, *WHERE, "-p", f"{VAULT}/new-pass")
    )
    [cred] = updated["authCredentials"]
    assert cred["passwordSecretIdentifier"] == f"{VAULT}/new-pass"
    assert cred["usernameSecretIdentifier"] == f"{VAULT}/quay-user"
    updated = ok_json(
        run(server, "credential-set", "update", "-n", name, *WHERE, "-u", f"{VAULT}/new-user")
    )
    [cred] = updated["authCredentials"]
    assert cred["usernameSecretIdentifier"] == f"{VAULT}/new-user"
    assert cred["passwordSecretIdentifier"] == f"{VAULT}/new-pass"

    stderr = failed(run(server, "credential-set", "update", "-n", name, *WHERE), 2)
    assert "You must update either the username secret ID, password secret ID, or both." in stderr

    ok(run(server, "credential-set", "delete", "-n", name, *WHERE))
    stderr = failed(run(server, "credential-set", "show", "-n", name, *WHERE), 1)
    assert stderr.startswith("error: (ResourceNotFound)")
    ok(run(server, "credential-set", "delete", "-n", name, *WHERE))


# -- cache rules ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_cache_rule_lifecycle(server: Any) -> None:
    creds = "cli-creds-rules"
    ok(
        run(
            server,
            "credential-set",
            "create",
            "-n",
            creds,
            *WHERE,
            "-l",
            "docker.io",
            "-u",
            f"{VAULT}/hub-user",
            "-p",
            f"{VAULT}/hub-pass",
        )
    )

    long_source = "docker.io/library/a-rather-long-repository-name-that-would-wrap-in-a-table"
    long_target = "mirrors/a-rather-long-repository-name-that-would-wrap-in-a-table"
    plain = ok_json(
        run(
            server,
            "cache",
            "create",
            "-n",
            "cli-rule-plain",
            *WHERE,
            "-s",
            long_source,
            "-t",
            long_target,
        )
    )
    assert plain["name"] == "cli-rule-plain"
    assert plain["sourceRepository"] == long_source
    assert plain["targetRepository"] == long_target
    assert "credentialSetResourceId" in plain
    assert plain["credentialSetResourceId"] is None
    assert plain["provisioningState"] == "Succeeded"
    assert plain["resourceGroup"] == RESOURCE_GROUP
    assert plain["creationDate"]

    with_creds = ok_json(
        run(
            server,
            "cache",
            "create",
            "--name",
            "cli-rule-creds",
            "--registry",
            REGISTRY,
            "--resource-group",
            RESOURCE_GROUP,
            "--subscription",
            SUBSCRIPTION,
            "--source-repo",
            "docker.io/bitnami/*",
            "--target-repo",
            "bitnami/*",
            "--cred-set",
            creds,
        )
    )
    assert with_creds["credentialSetResourceId"] == CRED_PREFIX + creds
    assert with_creds["targetRepository"] == "bitnami/*"

    shown = ok_json(run(server, "cache", "show", "-n", "cli-rule-creds", *WHERE))
    assert shown["id"] == with_creds["id"]
    assert shown["credentialSetResourceId"] == CRED_PREFIX + creds

    listed = ok_json(run(server, "cache", "list", *WHERE))
    by_name = {r["name"]: r for r in listed}
    assert by_name["cli-rule-plain"]["sourceRepository"] == long_source
    assert by_name["cli-rule-creds"]["sourceRepository"] == "docker.io/bitnami/*"

    table = ok(run(server, "cache", "list", *WHERE, "-o", "table")).stdout
    rows = table_rows(table)
    assert rows[0] == ["Name", "Source", "Target", "Credential", "Set", "State"]
    assert ["cli-rule-plain", long_source, long_target, "Succeeded"] in rows
    assert ["cli-rule-creds", "docker.io/bitnami/*", "bitnami/*", creds, "Succeeded"] in rows

    # update -c on the plain rule
    updated = ok_json(run(server, "cache", "update", "-n", "cli-rule-plain", *WHERE, "-c", creds))
    assert updated["credentialSetResourceId"] == CRED_PREFIX + creds
    assert updated["sourceRepository"] == long_source

    # --remove-cred-set on the other one; the server keeps it removed
    removed = ok_json(
        run(server, "cache", "update", "-n", "cli-rule-creds", *WHERE, "--remove-cred-set")
    )
    assert "credentialSetResourceId" in removed
    assert removed["credentialSetResourceId"] is None
    shown = ok_json(run(server, "cache", "show", "-n", "cli-rule-creds", *WHERE))
    assert shown["credentialSetResourceId"] is None

    stderr = failed(run(server, "cache", "update", "-n", "cli-rule-creds", *WHERE), 2)
    assert "You must either update the credential set ID or remove it." in stderr

    # a target that overlaps an existing rule's: the server refuses, exit 1
    stderr = failed(
        run(
            server,
            "cache",
            "create",
            "-n",
            "cli-rule-clash",
            *WHERE,
            "-s",
            "quay.io/bitnami/*",
            "-t",
            "bitnami/*",
        ),
        1,
    )
    assert stderr.startswith("error: (CacheRuleTargetConflict) ")
    assert "cli-rule-clash" not in [
        r["name"] for r in ok_json(run(server, "cache", "list", *WHERE))
    ]

    for rule in ("cli-rule-plain", "cli-rule-creds"):
        ok(run(server, "cache", "delete", "-n", rule, *WHERE))
        stderr = failed(run(server, "cache", "show", "-n", rule, *WHERE), 1)
        assert stderr.startswith("error: (ResourceNotFound)")
    assert ok(run(server, "cache", "delete", "-n", "cli-rule-plain", *WHERE)).stdout == ""
    ok(run(server, "credential-set", "delete", "-n", creds, *WHERE))


def test_show_missing_rule(server: Any) -> None:
    stderr = failed(run(server, "cache", "show", "-n", "no-such-rule", *WHERE), 1)
    assert stderr.startswith("error: (ResourceNotFound) ")
    assert stderr.count("\n") == 1


def test_cache_update_rejects_both_flags(server: Any) -> None:
    stderr = failed(
        run(server, "cache", "update", "-n", "whatever", *WHERE, "-c", "x", "--remove-cred-set"), 2
    )
    assert "--remove-cred-set" in stderr


def test_rejected_token(server: Any) -> None:
    result = run(server, "cache", "list", *WHERE, env={"ENTREPOT_TOKEN": "not-the-token"})
    stderr = failed(result, 1)
    assert stderr.startswith("error: (")
    assert "not-the-token" not in stderr


# -- finding the server from the configuration ---------------------------------------------------
def test_url_and_token_from_config(server: Any) -> None:
    args = [
        "cache",
        "create",
        "-n",
        "cli-rule-config",
        *WHERE,
        "--config",
        str(server.config_path),
        "-s",
        "docker.io/library/busybox",
        "-t",
        "config/busybox",
    ]
    created = ok_json(run(server, *args, with_env=False))
    assert created["targetRepository"] == "config/busybox"
    where = [*WHERE, "--config", str(server.config_path)]
    env = {"ENTREPOT_CONFIG": "/nonexistent/should-not-be-read.toml"}
    listed = ok_json(run(server, "cache", "list", *where, with_env=False, env=env))
    assert "cli-rule-config" in [r["name"] for r in listed]
    ok(run(server, "cache", "delete", "-n", "cli-rule-config", *where, with_env=False))
    listed = ok_json(run(server, "cache", "list", *where, with_env=False))
    assert "cli-rule-config" not in [r["name"] for r in listed]


def test_url_and_token_from_env_config(server: Any) -> None:
    env = {"ENTREPOT_CONFIG": str(server.config_path)}
    listed = ok_json(
        run(
            server,
            "registry",
            "list",
            "-g",
            RESOURCE_GROUP,
            "--subscription",
            SUBSCRIPTION,
            with_env=False,
            env=env,
        )
    )
    assert REGISTRY in [r["name"] for r in listed]


def test_missing_token_file(tmp_path: Path, server: Any) -> None:
    config = tmp_path / "entrepot.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:9"\ndata_dir = "{tmp_path / "empty"}"\n', encoding="utf-8"
    )
    stderr = failed(
        run(server, "cache", "list", *WHERE, "--config", str(config), with_env=False), 1
    )
    assert "entrepot serve" in stderr
    assert "ENTREPOT_TOKEN" in stderr
    assert str(tmp_path / "empty" / "admin-token") in stderr


def test_invalid_config_file(tmp_path: Path, server: Any) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nlisten = "nonsense"\n', encoding="utf-8")
    stderr = failed(
        run(server, "cache", "list", *WHERE, "--config", str(config), with_env=False), 2
    )
    assert "server.listen" in stderr


@pytest.mark.slow
def test_unreachable_server(server: Any) -> None:
    result = run(
        server,
        "cache",
        "show",
        "-n",
        "some-rule",
        *WHERE,
        env={"ENTREPOT_URL": "http://127.0.0.1:9"},
    )
    stderr = failed(result, 1)
    assert "http://127.0.0.1:9" in stderr


# -- serve ---------------------------------------------------------------------------------------
def test_serve_rejects_bad_listen(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTREPOT_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "entrepot.cli",
            "serve",
            "--listen",
            "nonsense",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "server.listen" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        *[["cache", c] for c in ("create", "update", "show", "list", "delete")],
        *[["credential-set", c] for c in ("create", "update", "show", "list", "delete")],
        *[["registry", c] for c in ("create", "show", "list", "delete")],
    ],
)
def test_help(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "entrepot.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: entrepot" in result.stdout
