"""``entrepot serve`` as a command: start-up, the admin token, config errors, absolute URLs.

Every test runs the real command in a subprocess and talks HTTP to it.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, Server, free_port

API = "2025-04-01"
PUBLIC = "https://entrepot.example.test/prefix"
TOKEN_BANNER = "created the admin API token"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTREPOT_")}
    env.update(extra)
    return env


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"entrepot serve exited with {process.returncode}"
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError("entrepot serve did not become healthy")


def refused(url: str) -> bool:
    try:
        requests.get(f"{url}/healthz", timeout=1)
    except requests.ConnectionError:
        return True
    return False


class Serve:
    """``python -m entrepot serve ...`` with stdout and stderr captured in files."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []
        self.runs = 0

    def start(self, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        self.runs += 1
        out = self.tmp_path / f"stdout-{self.runs}.txt"
        err = self.tmp_path / f"stderr-{self.runs}.txt"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "entrepot", "serve", *args],
                stdout=stdout,
                stderr=stderr,
                env=env,
            )
        self.processes.append(process)
        return process, out

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        process.terminate()
        return process.wait(timeout=20)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    runner = Serve(tmp_path)
    yield runner
    runner.close()


def run_serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``entrepot serve`` that is expected to exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "entrepot", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_config_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- the command line -------------------------------------------------------------------------
@pytest.mark.slow
def test_serve_command_line_and_token_printed_once(serve: Serve, tmp_path: Path) -> None:
    file_port, port = free_port(), free_port()
    file_data = tmp_path / "data-from-file"
    data = tmp_path / "data-from-flag"
    config = tmp_path / "entrepot.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{file_port}"\ndata_dir = "{file_data}"\n'
        f'[[registries]]\nsubscription = "{SUBSCRIPTION}"\nresource_group = "{RESOURCE_GROUP}"\n'
        f'name = "{REGISTRY}"\n'
    )
    args = ["--config", str(config), "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)]
    url = f"http://127.0.0.1:{port}"

    process, stdout = serve.start(args, clean_env())
    wait_healthy(url, process)
    health = requests.get(f"{url}/healthz", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert refused(f"http://127.0.0.1:{file_port}")  # --listen won over the file
    token_file = data / "admin-token"
    assert token_file.is_file()
    assert not (file_data / "admin-token").exists()  # --data-dir won over the file
    assert (data / "entrepot.db").is_file()
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert token_file.stat().st_mode & 0o777 == 0o600
    # It is a working admin token.
    registry = (
        f"{url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
        f"/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}"
    )
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(registry, params={"api-version": API}, headers=auth).status_code == 200
    assert serve.stop(process) == 0
    first_out = stdout.read_text()
    assert first_out.count(token) == 1, first_out
    assert TOKEN_BANNER in first_out
    assert str(token_file) in first_out

    process, stdout = serve.start(args, clean_env())
    wait_healthy(url, process)
    assert requests.get(registry, params={"api-version": API}, headers=auth).status_code == 200
    assert serve.stop(process) == 0
    second_out = stdout.read_text()
    assert token not in second_out
    assert TOKEN_BANNER not in second_out
    assert token_file.read_text().strip() == token


@pytest.mark.slow
def test_serve_reads_entrepot_config_and_environment(serve: Serve, tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "entrepot.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:1"\ndata_dir = "{data}"\n')
    env = clean_env(ENTREPOT_CONFIG=str(config), ENTREPOT_SERVER_LISTEN=f"127.0.0.1:{port}")
    process, _ = serve.start([], env)
    wait_healthy(f"http://127.0.0.1:{port}", process)
    assert (data / "admin-token").is_file()
    assert serve.stop(process) == 0


@pytest.mark.parametrize(
    ("env", "args", "needles"),
    [
        ({"ENTREPOT_ARM_PAGE_SIZE": "0"}, [], ["arm.page_size"]),
        ({"ENTREPOT_ARM_PAGE_SIZE": "many"}, [], ["arm.page_size", "'many'"]),
        ({"ENTREPOT_SERVER_COLOUR": "blue"}, [], ["ENTREPOT_SERVER_COLOUR", "unknown key"]),
        ({"ENTREPOT_SERVER_PUBLIC_URL": "example.test"}, [], ["server.public_url"]),
        ({"ENTREPOT_DATABASE_URL": "mysql://u:topsecret@db/x"}, [], ["database.url", "***"]),
        ({}, ["--listen", "no-port-here"], ["server.listen"]),
        (
            {"ENTREPOT_SERVER_REGISTRY_DOMAIN": "https://cache.example.com"},
            [],
            ["server.registry_domain", "'https://cache.example.com'"],
        ),
        (
            {"ENTREPOT_SERVER_DEFAULT_REGISTRY": "my_registry"},
            [],
            ["server.default_registry", "'my_registry'"],
        ),
    ],
)
def test_config_errors_exit_2_with_one_line(
    tmp_path: Path, env: dict[str, str], args: list[str], needles: list[str]
) -> None:
    config = tmp_path / "entrepot.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{free_port()}"\ndata_dir = "{tmp_path}"\n')
    result = run_serve(["--config", str(config), *args], clean_env(**env))
    line = assert_config_error(result, *needles)
    assert "topsecret" not in line
    assert not (tmp_path / "admin-token").exists()  # nothing was started


@pytest.mark.slow
def test_config_file_errors_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert_config_error(run_serve(["--config", str(missing)], clean_env()), str(missing))
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    assert_config_error(run_serve(["--config", str(broken)], clean_env()), "not valid TOML")
    bad_registry = tmp_path / "bad-registry.toml"
    bad_registry.write_text(
        '[[registries]]\nsubscription = "s"\nresource_group = "g"\nname = "x"\n'
    )
    assert_config_error(
        run_serve(["--config", str(bad_registry)], clean_env()), "registries[0].name"
    )


@pytest.mark.slow
def test_port_in_use_fails_without_hanging(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_serve(
            ["--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d")], clean_env()
        )
    assert result.returncode != 0


# -- absolute URLs ----------------------------------------------------------------------------
def rule_body(name: str) -> dict[str, Any]:
    return {
        "properties": {
            "sourceRepository": f"docker.io/library/{name}",
            "targetRepository": name,
        }
    }


def wait_deleted(server: Server, location: str, timeout: float = 20) -> None:
    """Poll a delete's operationResults URL (made local) until it answers 204."""
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(location, headers=server.headers(), timeout=30)
        if response.status_code == 204:
            return
        assert response.status_code == 202, response.text
        assert time.monotonic() < deadline, "delete did not finish"
        time.sleep(0.05)


def make_rules(server: Server, count: int, headers: dict[str, str] | None = None) -> None:
    for i in range(count):
        name = f"rule-{i:02d}"
        response = requests.put(
            f"{server.url}{server.registry_path}/cacheRules/{name}",
            params={"api-version": API},
            json=rule_body(name),
            headers={**server.headers(), **(headers or {})},
            timeout=30,
        )
        assert response.status_code == 201, response.text


def test_public_url_is_used_in_lro_headers_and_next_link(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(env={"ENTREPOT_SERVER_PUBLIC_URL": PUBLIC})
    rules = f"{server.registry_path}/cacheRules"
    put = requests.put(
        f"{server.url}{rules}/first-rule",
        params={"api-version": API},
        json=rule_body("first"),
        headers=server.headers(),
        timeout=30,
    )
    assert put.status_code == 201, put.text
    status_url = put.headers["Azure-AsyncOperation"]
    assert status_url.startswith(f"{PUBLIC}{rules}/first-rule/operationStatuses/"), status_url
    assert status_url.endswith(f"?api-version={API}")
    # Behind the proxy the prefix is stripped: the same path answers on the server itself.
    local = status_url.replace(PUBLIC, server.url)
    status = requests.get(local, headers=server.headers(), timeout=30)
    assert status.status_code == 200 and status.json()["status"] in ("InProgress", "Succeeded")

    delete = requests.delete(
        f"{server.url}{rules}/first-rule",
        params={"api-version": API},
        headers=server.headers(),
        timeout=30,
    )
    assert delete.status_code == 202, delete.text
    location = delete.headers["Location"]
    assert location.startswith(f"{PUBLIC}{rules}/first-rule/operationResults/"), location
    wait_deleted(server, location.replace(PUBLIC, server.url))

    make_rules(server, 11)  # page_size is 10
    page = requests.get(
        f"{server.url}{rules}", params={"api-version": API}, headers=server.headers(), timeout=30
    )
    assert page.status_code == 200
    body = page.json()
    assert len(body["value"]) == 10
    next_link = body["nextLink"]
    assert next_link.startswith(f"{PUBLIC}{rules}?api-version={API}&$skipToken="), next_link
    second = requests.get(
        next_link.replace(PUBLIC, server.url), headers=server.headers(), timeout=30
    )
    assert second.status_code == 200
    names = [r["name"] for r in body["value"] + second.json()["value"]]
    assert names == [f"rule-{i:02d}" for i in range(11)]
    assert "nextLink" not in second.json()

    registry = requests.get(
        f"{server.url}{server.registry_path}",
        params={"api-version": API},
        headers=server.headers(),
        timeout=30,
    ).json()
    assert registry["properties"]["loginServer"] == "entrepot.example.test"


def lro_urls(server: Server, name: str, headers: dict[str, str]) -> tuple[str, str, str]:
    """``(Azure-AsyncOperation, Location, nextLink)`` of a PUT, a DELETE and a list of rules,
    each sent with ``headers``; the rule is created, and its deletion started."""
    rules = f"{server.registry_path}/cacheRules"
    put = requests.put(
        f"{server.url}{rules}/{name}",
        params={"api-version": API},
        json=rule_body(name),
        headers={**server.headers(), **headers},
        timeout=30,
    )
    assert put.status_code in (200, 201), put.text
    page = requests.get(
        f"{server.url}{rules}",
        params={"api-version": API},
        headers={**server.headers(), **headers},
        timeout=30,
    )
    assert page.status_code == 200, page.text
    delete = requests.delete(
        f"{server.url}{rules}/{name}",
        params={"api-version": API},
        headers={**server.headers(), **headers},
        timeout=30,
    )
    assert delete.status_code == 202, delete.text
    return put.headers["Azure-AsyncOperation"], delete.headers["Location"], page.json()["nextLink"]


def test_absolute_urls_never_follow_the_host_header(
    server_factory: Callable[..., Server],
) -> None:
    """Issue 7.5: without public_url, ``Host`` (and forwarded headers from an untrusted peer)
    never reach an absolute URL; they point at the listen address, which the SDK follows."""
    server = server_factory()
    make_rules(server, 11)  # page_size is 10: every list has a nextLink
    rules = f"{server.registry_path}/cacheRules"
    hostile = [
        {"Host": "evil.example:8443"},
        {"X-Forwarded-Host": "evil.example:8443", "X-Forwarded-Proto": "https"},
        {"Forwarded": "proto=https;host=evil.example:8443"},
        {"Host": "evil.example:8443", "X-Forwarded-Host": "evil.example"},
    ]
    for i, headers in enumerate(hostile):
        status_url, location, next_link = lro_urls(server, f"host-rule-{i}", headers)
        assert status_url.startswith(f"{server.url}{rules}/host-rule-{i}/operationStatuses/"), (
            headers,
            status_url,
        )
        assert location.startswith(f"{server.url}{rules}/host-rule-{i}/operationResults/")
        assert next_link.startswith(f"{server.url}{rules}?api-version={API}&$skipToken=")
        for url in (status_url, location, next_link):
            assert "evil" not in url
    # The URLs work as they are.
    second = requests.get(next_link, headers=server.headers(), timeout=30)
    assert second.status_code == 200
    assert "rule-10" in [r["name"] for r in second.json()["value"]]


def test_forwarded_headers_count_only_from_trusted_proxies(
    server_factory: Callable[..., Server],
) -> None:
    """With ``trusted_proxies`` holding the peer's address, its X-Forwarded-* / Forwarded
    values make the base; malformed values fall back to the listen address; Host never counts;
    public_url, when set, wins over everything."""
    server = server_factory(env={"ENTREPOT_SERVER_TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1"})
    rules = f"{server.registry_path}/cacheRules"
    make_rules(server, 11)
    cases = [
        (
            {"X-Forwarded-Host": "cache.example.org", "X-Forwarded-Proto": "https"},
            "https://cache.example.org",
        ),
        (
            {"X-Forwarded-Host": "client-sent.example, cache.example.org:8443"},
            "http://cache.example.org:8443",
        ),
        (
            {"Forwarded": 'for=1.2.3.4;proto=https;host="cache.example.org"'},
            "https://cache.example.org",
        ),
        (
            {"Forwarded": "proto=https;host=client-sent.example, proto=http;host=proxy.example"},
            "http://proxy.example",
        ),
        (
            {"X-Forwarded-Host": "evil.example/path?x=", "X-Forwarded-Proto": "javascript"},
            server.url,
        ),
        ({"Host": "evil.example:8443"}, server.url),
        (  # both kinds: the proxy wrote one and passed the client's other through; trust none
            {
                "Forwarded": "host=evil.example;proto=https",
                "X-Forwarded-Host": "cache.example.org",
                "X-Forwarded-Proto": "https",
            },
            server.url,
        ),
    ]
    for i, (headers, base) in enumerate(cases):
        status_url, location, next_link = lro_urls(server, f"fwd-rule-{i}", headers)
        assert status_url.startswith(f"{base}{rules}/fwd-rule-{i}/operationStatuses/"), (
            headers,
            status_url,
        )
        assert location.startswith(f"{base}{rules}/fwd-rule-{i}/operationResults/"), location
        assert next_link.startswith(f"{base}{rules}?api-version={API}&"), next_link

    fixed = server_factory(
        env={
            "ENTREPOT_SERVER_TRUSTED_PROXIES": "127.0.0.1",
            "ENTREPOT_SERVER_PUBLIC_URL": PUBLIC,
        }
    )
    make_rules(fixed, 11)
    urls = lro_urls(fixed, "fixed-rule", {"X-Forwarded-Host": "cache.example.org"})
    assert all(url.startswith(f"{PUBLIC}{fixed.registry_path}/cacheRules") for url in urls), urls


# -- registries from the configuration --------------------------------------------------------
def registry_doc(server: Server, path: str) -> requests.Response:
    return requests.get(
        f"{server.url}{path}", params={"api-version": API}, headers=server.headers(), timeout=30
    )


def test_registries_from_the_config_exist_at_start(
    server_factory: Callable[..., Server],
) -> None:
    other_sub = "11111111-2222-3333-4444-555555555555"
    extra = f"""
[[registries]]
subscription = "{other_sub}"
resource_group = "Second-RG"
name = "SecondRegistry"
location = "northeurope"
"""
    before = dt.datetime.now(dt.UTC)
    server = server_factory(extra)
    after = dt.datetime.now(dt.UTC)

    first = registry_doc(server, server.registry_path)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["name"] == REGISTRY
    assert doc["id"] == server.registry_path
    assert doc["location"] == "local"
    assert doc["properties"]["loginServer"] == f"127.0.0.1:{server.port}"
    assert doc["properties"]["provisioningState"] == "Succeeded"
    created = dt.datetime.fromisoformat(doc["properties"]["creationDate"].replace("Z", "+00:00"))
    assert before - dt.timedelta(seconds=1) <= created <= after + dt.timedelta(seconds=1)

    second_path = (
        f"/subscriptions/{other_sub}/resourceGroups/Second-RG"
        "/providers/Microsoft.ContainerRegistry/registries/SecondRegistry"
    )
    second = registry_doc(server, second_path.lower())  # names are case-insensitive
    assert second.status_code == 200, second.text
    assert second.json()["name"] == "SecondRegistry"
    assert second.json()["location"] == "northeurope"
    assert second.json()["properties"]["provisioningState"] == "Succeeded"

    listed = registry_doc(
        server,
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
        "/providers/Microsoft.ContainerRegistry/registries",
    ).json()
    assert [r["name"] for r in listed["value"]] == [REGISTRY]

    missing = registry_doc(server, server.registry_path + "-nope")
    assert missing.status_code == 404

    # Seeding again on restart changes nothing.
    server.restart()
    again = registry_doc(server, server.registry_path)
    assert again.status_code == 200
    assert again.json()["properties"]["creationDate"] == doc["properties"]["creationDate"]
    assert again.json()["systemData"] == doc["systemData"]
