"""The registry face's front half against real servers: routes of the pull API, cache-rule
resolution (and mirror mode), read-only rule targets, data-plane authentication, and rules
changed by another process. ``skopeo`` (a real client) checks the wire behaviour.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import InProcessServer, Server, ServerProcess
from tests.registries import Registry
from tests.test_registry_face import assert_oci_error, raw_get

API = "2025-04-01"
DIGEST = "sha256:" + "a" * 64
Factory = Callable[..., InProcessServer]
NO_ANONYMOUS = {"ENTREPOT_REGISTRY_ANONYMOUS_PULL": "false"}


def put_rule(server: Server, name: str, source: str, target: str) -> None:
    response = requests.put(
        f"{server.url}{server.registry_path}/cacheRules/{name}",
        params={"api-version": API},
        json={"properties": {"sourceRepository": source, "targetRepository": target}},
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text


def delete_rule(server: Server, name: str) -> None:
    response = requests.delete(
        f"{server.url}{server.registry_path}/cacheRules/{name}",
        params={"api-version": API},
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code in (200, 202, 204), response.text


def make_token(server: Server, name: str, role: str) -> str:
    response = requests.put(
        f"{server.url}/entrepot/tokens/{name}",
        json={"role": role},
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["value"])


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def v2(
    server: Server,
    path: str,
    method: str = "GET",
    auth: str | None = None,
    params: dict[str, str] | None = None,
) -> requests.Response:
    headers = {"Authorization": auth} if auth else {}
    return requests.request(
        method, f"{server.url}{path}", headers=headers, params=params, timeout=30
    )


def stand_in(upstream: Registry) -> str:
    """Config TOML that sends docker.io and quay.io to ``upstream`` (an empty local registry),
    so the engine's answer for anything there is a quick 404 from upstream, never the network."""
    return "".join(
        f'\n[upstreams."{name}"]\nurl = "{upstream.url}"\n' for name in ("docker.io", "quay.io")
    )


@pytest.fixture
def ruled(server_factory: Factory, open_registry: Registry) -> InProcessServer:
    """A server (anonymous pull: it listens on loopback) with a few rules; the refresh interval
    is an hour, so anything seen at once was dropped by this process's own change. Its
    docker.io and quay.io are an empty local registry (:func:`stand_in`)."""
    server = server_factory(
        stand_in(open_registry), env={"ENTREPOT_REGISTRY_RULES_REFRESH_SECONDS": "3600"}
    )
    put_rule(server, "hub-all", "docker.io/*", "hub/*")
    put_rule(server, "ubuntu-pin", "docker.io/library/ubuntu", "ubuntu")
    put_rule(server, "quay-team", "quay.io/team/*", "qt/*")
    return server


# -- resolution -----------------------------------------------------------------------------------
def test_a_covered_repository_reaches_the_engine_and_says_so(ruled: InProcessServer) -> None:
    error = assert_oci_error(v2(ruled, "/v2/hub/alpine/manifests/3.20"), 404, "MANIFEST_UNKNOWN")
    message = error["message"]
    assert "'3.20'" in message and "'hub/alpine'" in message and "'hub-all'" in message
    assert "docker.io/library/alpine" in message and "not cached" in message
    error = assert_oci_error(v2(ruled, f"/v2/ubuntu/blobs/{DIGEST}"), 404, "BLOB_UNKNOWN")
    assert DIGEST in error["message"] and "docker.io/library/ubuntu" in error["message"]
    by_digest = v2(ruled, f"/v2/qt/app/manifests/{DIGEST}")
    assert "quay.io/team/app" in assert_oci_error(by_digest, 404, "MANIFEST_UNKNOWN")["message"]
    referrers = v2(ruled, f"/v2/qt/app/referrers/{DIGEST}")  # the upstream has none
    assert referrers.status_code == 200 and referrers.json()["manifests"] == []
    head = v2(ruled, f"/v2/hub/alpine/blobs/{DIGEST}", method="HEAD")
    assert head.status_code == 404 and head.content == b""
    assert head.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    # the cached tags: none yet, paged
    tags = v2(ruled, "/v2/hub/library/alpine/tags/list")
    assert tags.status_code == 200, tags.text
    assert tags.json() == {"name": "hub/library/alpine", "tags": []}
    assert tags.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    for n in ("0", "5", "99999999999999999999"):
        response = v2(ruled, "/v2/ubuntu/tags/list", params={"n": n, "last": "x"})
        assert response.status_code == 200 and response.json()["tags"] == []
        assert "Link" not in response.headers


def test_mirror_mode_resolves_by_source(ruled: InProcessServer) -> None:
    """What containerd sends to a docker.io mirror configured in hosts.toml."""
    for ns, name, target, upstream in [
        ("docker.io", "library/alpine", "hub/alpine", "docker.io/library/alpine"),
        ("docker.io", "alpine", "hub/alpine", "docker.io/library/alpine"),
        ("registry-1.docker.io", "grafana/grafana", "hub/grafana/grafana", "grafana/grafana"),
        ("docker.io", "library/ubuntu", "ubuntu", "docker.io/library/ubuntu"),
        ("quay.io", "team/app", "qt/app", "quay.io/team/app"),
    ]:
        response = v2(ruled, f"/v2/{name}/manifests/latest", params={"ns": ns})
        message = assert_oci_error(response, 404, "MANIFEST_UNKNOWN")["message"]
        assert f"repository '{target}'" in message and upstream in message, message
    error = assert_oci_error(
        v2(ruled, "/v2/other/app/manifests/latest", params={"ns": "quay.io"}), 404, "NAME_UNKNOWN"
    )
    assert "'quay.io/other/app' (mirror mode)" in error["message"]
    assert "'my-registry'" in error["message"] and "sourceRepository" in error["message"]
    assert_oci_error(
        v2(ruled, "/v2/x/manifests/latest", params={"ns": "not a host"}), 400, "NAME_INVALID"
    )
    assert v2(ruled, "/v2/", params={"ns": "docker.io"}).status_code == 200


def test_uncovered_and_invalid_names(ruled: InProcessServer) -> None:
    for path in (
        "/v2/library/alpine/manifests/latest",
        "/v2/hub/tags/list",
        "/v2/ubuntu/x/tags/list",
    ):
        error = assert_oci_error(v2(ruled, path), 404, "NAME_UNKNOWN")
        assert "No cache rule of registry 'my-registry' covers the repository" in error["message"]
        assert "targetRepository" in error["message"]
    for path in (
        "/v2/Hub/alpine/manifests/latest",
        "/v2/hub/%2E%2E/alpine/manifests/latest",  # requests would resolve a plain '..'
        "/v2/..%2Fhub/alpine/manifests/latest",
        "/v2/hub/a..b/manifests/latest",
        "/v2/hub//alpine/manifests/latest",
        "/v2/-hub/alpine/tags/list",
        "/v2/" + "a" * 256 + "/manifests/latest",
    ):
        assert_oci_error(v2(ruled, path), 400, "NAME_INVALID")
    status, _headers, body = raw_get(
        ruled,
        b"GET /v2/hub/../alpine/manifests/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "NAME_INVALID"
    assert_oci_error(v2(ruled, "/v2/hub/alpine/manifests/-bad"), 400, "TAG_INVALID")
    assert_oci_error(v2(ruled, "/v2/hub/alpine/manifests/" + "t" * 129), 400, "TAG_INVALID")
    for digest in ("sha256:abc", "md5:" + "a" * 32, "sha256:" + "A" * 64, "nope"):
        assert_oci_error(v2(ruled, f"/v2/hub/alpine/blobs/{digest}"), 400, "DIGEST_INVALID")
    assert_oci_error(v2(ruled, "/v2/hub/alpine/manifests/sha256:zz"), 400, "DIGEST_INVALID")
    for n in ("-1", "x", "1.5", "\u0661"):
        response = v2(ruled, "/v2/hub/alpine/tags/list", params={"n": n})
        assert_oci_error(response, 400, "PAGINATION_NUMBER_INVALID")
    assert_oci_error(v2(ruled, "/v2/hub/alpine/tags/list", method="POST"), 405, "UNSUPPORTED")


def test_rule_changes_apply_at_once_in_this_process(ruled: InProcessServer) -> None:
    path = "/v2/fresh/x/manifests/latest"
    assert_oci_error(v2(ruled, path), 404, "NAME_UNKNOWN")  # now remembered for an hour
    put_rule(ruled, "fresh-rule", "quay.io/fresh/*", "fresh/*")
    assert_oci_error(v2(ruled, path), 404, "MANIFEST_UNKNOWN")
    delete_rule(ruled, "fresh-rule")
    assert_oci_error(v2(ruled, path), 404, "NAME_UNKNOWN")


# -- read-only targets ----------------------------------------------------------------------------
PUSHES = [
    ("POST", "blobs/uploads/"),
    ("POST", "blobs/uploads"),
    ("PATCH", "blobs/uploads/0f6b3c38-9c5a-4d39-8b48-0c0a4c1b5b0e"),
    ("PUT", f"blobs/uploads/0f6b3c38-9c5a-4d39-8b48-0c0a4c1b5b0e?digest={DIGEST}"),
    ("DELETE", "blobs/uploads/0f6b3c38-9c5a-4d39-8b48-0c0a4c1b5b0e"),
    ("GET", "blobs/uploads/0f6b3c38-9c5a-4d39-8b48-0c0a4c1b5b0e"),
    ("PUT", "manifests/latest"),
    ("PUT", f"manifests/{DIGEST}"),
    ("DELETE", "manifests/latest"),
    ("DELETE", f"blobs/{DIGEST}"),
]


@pytest.mark.parametrize(("method", "rest"), PUSHES)
def test_pushes_are_refused(ruled: InProcessServer, method: str, rest: str) -> None:
    denied = assert_oci_error(v2(ruled, f"/v2/hub/alpine/{rest}", method), 403, "DENIED")
    assert "'hub/alpine'" in denied["message"] and "cache rule 'hub-all'" in denied["message"]
    assert "read-only" in denied["message"]
    mirrored = v2(ruled, f"/v2/library/ubuntu/{rest}", method, params={"ns": "docker.io"})
    assert "cache rule 'ubuntu-pin'" in assert_oci_error(mirrored, 403, "DENIED")["message"]
    other = assert_oci_error(v2(ruled, f"/v2/mine/app/{rest}", method), 405, "UNSUPPORTED")
    assert "does not accept pushes" in other["message"] and "'mine/app'" in other["message"]


# -- data-plane access ----------------------------------------------------------------------------
def test_anonymous_pull_is_on_by_default_on_loopback(ruled: InProcessServer) -> None:
    assert v2(ruled, "/v2/").status_code == 200
    # credentials that are sent are checked all the same
    refused = v2(ruled, "/v2/", auth=basic("admin", "wrong"))
    assert_oci_error(refused, 401, "UNAUTHORIZED")
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="entrepot"'
    assert v2(ruled, "/v2/", auth=basic("admin", ruled.token)).status_code == 200


def test_without_anonymous_pull_a_token_is_needed(
    server_factory: Factory, open_registry: Registry
) -> None:
    server = server_factory(stand_in(open_registry), env=NO_ANONYMOUS)
    put_rule(server, "hub-all", "docker.io/*", "hub/*")
    pull = make_token(server, "puller", "pull")
    manifest = "/v2/hub/alpine/manifests/latest"
    for path in ("/v2/", "/v2", manifest, "/v2/nothing/here", "/v2/hub/alpine/blobs/uploads/"):
        for method in ("GET", "HEAD", "POST"):
            response = v2(server, path, method)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"] == 'Basic realm="entrepot"'
            if method != "HEAD":
                message = assert_oci_error(response, 401, "UNAUTHORIZED")["message"]
                assert "Basic" in message
    for auth in (
        basic("puller", pull),
        basic("PULLER", pull),  # token names are case-insensitive
        basic("admin", server.token),
        f"Bearer {pull}",
        f"Bearer {server.token}",
    ):
        assert v2(server, "/v2/", auth=auth).status_code == 200, auth
        assert_oci_error(v2(server, manifest, auth=auth), 404, "MANIFEST_UNKNOWN")
        assert_oci_error(v2(server, manifest, "PUT", auth=auth), 403, "DENIED")
    for auth in (
        basic("puller", "not-the-token"),
        basic("admin", pull),  # the token of another name
        basic("nobody", pull),
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Bearer nope",
        "Digest x",
    ):
        response = v2(server, "/v2/", auth=auth)
        assert_oci_error(response, 401, "UNAUTHORIZED")
        assert response.headers["WWW-Authenticate"] == 'Basic realm="entrepot"'
        assert pull not in response.text and server.token not in response.text
    # revoked: refused from the next request on
    response = requests.delete(
        f"{server.url}/entrepot/tokens/puller", headers=server.headers(), timeout=30
    )
    assert response.status_code == 204
    assert_oci_error(v2(server, "/v2/", auth=basic("puller", pull)), 401, "UNAUTHORIZED")
    assert_oci_error(v2(server, manifest, auth=f"Bearer {pull}"), 401, "UNAUTHORIZED")


SKOPEO = shutil.which("skopeo")


def skopeo(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    assert SKOPEO is not None
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home)}
    return subprocess.run(
        [SKOPEO, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_skopeo_login_and_creds(
    server_factory: Factory, tmp_path: Path, open_registry: Registry
) -> None:
    server = server_factory(stand_in(open_registry), env=NO_ANONYMOUS)
    put_rule(server, "hub-all", "docker.io/*", "hub/*")
    pull = make_token(server, "ci", "pull")
    address = f"127.0.0.1:{server.port}"
    image = f"docker://{address}/hub/alpine:3.20"
    authfile = tmp_path / "auth.json"

    anonymous = skopeo("inspect", "--tls-verify=false", "--no-creds", image, home=tmp_path)
    assert anonymous.returncode != 0
    assert "unauthorized" in anonymous.stderr.lower() or "authentication" in anonymous.stderr

    wrong = skopeo(
        "login", "--tls-verify=false", "--authfile", str(authfile), "-u", "ci", "-p", "nope",
        address, home=tmp_path,
    )  # fmt: skip
    assert wrong.returncode != 0, wrong.stdout
    assert not authfile.exists() or address not in authfile.read_text()

    login = skopeo(
        "login", "--tls-verify=false", "--authfile", str(authfile), "-u", "ci", "-p", pull,
        address, home=tmp_path,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    assert "Login Succeeded" in login.stdout
    assert address in json.loads(authfile.read_text())["auths"]

    for auth in (["--authfile", str(authfile)], ["--creds", f"ci:{pull}"]):
        inspected = skopeo("inspect", "--tls-verify=false", *auth, image, home=tmp_path)
        assert inspected.returncode != 0  # authenticated: the engine's honest answer
        assert "manifest unknown" in inspected.stderr.lower(), inspected.stderr
        assert "not cached" in inspected.stderr, inspected.stderr
        uncovered = skopeo(
            "inspect", "--tls-verify=false", *auth, f"docker://{address}/nope/x:1", home=tmp_path
        )
        assert "name unknown" in uncovered.stderr.lower(), uncovered.stderr
        assert "No cache rule" in uncovered.stderr, uncovered.stderr
        tags = skopeo(
            "list-tags", "--tls-verify=false", *auth, image.rsplit(":", 1)[0], home=tmp_path
        )
        assert tags.returncode == 0, tags.stderr
        assert json.loads(tags.stdout)["Tags"] == []

    revoked = requests.delete(
        f"{server.url}/entrepot/tokens/ci", headers=server.headers(), timeout=30
    )
    assert revoked.status_code == 204
    refused = skopeo("inspect", "--tls-verify=false", "--creds", f"ci:{pull}", image, home=tmp_path)
    assert refused.returncode != 0
    assert "manifest unknown" not in refused.stderr.lower()
    assert "unauthorized" in refused.stderr.lower() or "authentication" in refused.stderr


# -- several processes ----------------------------------------------------------------------------
def test_rules_changed_by_another_process_apply_within_the_refresh_interval(
    process_factory: Callable[..., ServerProcess], database_url: str, open_registry: Registry
) -> None:
    master_key = base64.b64encode(os.urandom(32)).decode()
    refresh = 0.5
    shared = {
        "ENTREPOT_DATABASE_URL": database_url,
        "ENTREPOT_MASTER_KEY": master_key,
        "ENTREPOT_REGISTRY_RULES_REFRESH_SECONDS": str(refresh),
    }
    a = process_factory(stand_in(open_registry), env=shared, name="a")
    b = process_factory(stand_in(open_registry), env=shared, name="b")
    path = "/v2/team/app/manifests/latest"

    def wait_for(code: str, status: int) -> float:
        """Seconds until b answers ``code``; b is asked as often as a client could."""
        started = time.monotonic()
        while True:
            response = v2(b, path)
            if response.json()["errors"][0]["code"] == code:
                assert_oci_error(response, status, code)
                return time.monotonic() - started
            assert time.monotonic() - started < refresh + 5, response.text

    assert_oci_error(v2(b, path), 404, "NAME_UNKNOWN")  # b holds "no rule" now
    put_rule(a, "team-rule", "quay.io/team/*", "team/*")
    assert wait_for("MANIFEST_UNKNOWN", 404) <= refresh + 1.5
    delete_rule(a, "team-rule")
    assert wait_for("NAME_UNKNOWN", 404) <= refresh + 1.5
    # b answers from memory meanwhile: many requests, well within the interval
    started = time.monotonic()
    for _ in range(50):
        assert_oci_error(v2(b, path), 404, "NAME_UNKNOWN")
    assert time.monotonic() - started < 30


# -- configuration --------------------------------------------------------------------------------
def test_registry_config(tmp_path: Path) -> None:
    from entrepot.config import ConfigError, load_config

    def load(text: str = "", **env: str) -> Any:
        path = tmp_path / "c.toml"
        path.write_text(text)
        return load_config(path, env=env)

    assert load().anonymous_pull is True  # listens on 127.0.0.1 by default
    assert load().registry.rules_refresh_seconds == 1.0
    off_loopback = '[server]\nlisten = "0.0.0.0:5000"\nallow_insecure_http = true\n'
    assert load(off_loopback).anonymous_pull is False
    assert load(off_loopback + "[registry]\nanonymous_pull = true\n").anonymous_pull is True
    assert load("[registry]\nanonymous_pull = false\n").anonymous_pull is False
    assert load(ENTREPOT_REGISTRY_ANONYMOUS_PULL="false").anonymous_pull is False
    assert load(off_loopback, ENTREPOT_REGISTRY_ANONYMOUS_PULL="auto").anonymous_pull is False
    assert load(ENTREPOT_REGISTRY_RULES_REFRESH_SECONDS="0").registry.rules_refresh_seconds == 0
    for text, key in [
        ('[registry]\nanonymous_pull = "auto"\n', "registry.anonymous_pull"),
        ("[registry]\nrules_refresh_seconds = -1\n", "registry.rules_refresh_seconds"),
        ("[registry]\nnope = 1\n", "registry.nope"),
    ]:
        with pytest.raises(ConfigError) as excinfo:
            load(text)
        assert key in str(excinfo.value)
