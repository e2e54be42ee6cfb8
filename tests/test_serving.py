"""The HTTP server as an operator and an attacker meet it (issue 7, items 4, 6, 7 and 9).

Every test runs the real ``entrepot serve`` in a subprocess and talks to it over real sockets on
127.0.0.1: raw sockets for what no HTTP library sends (trickled headers and bodies, over-long
lines, hang-ups), ``requests``, the genuine ``azure-mgmt-containerregistry`` SDK, our own client
SDK and the CLI for HTTPS with a CA and certificate made here with ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import (
    REGISTRY,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    ServerProcess,
    base_config,
    free_port,
)

API = "2025-04-01"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTREPOT_")}
    env.update(extra)
    return env


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


def new_lines(
    server: ServerProcess, before: int, until: Callable[[list[str]], bool] = lambda _: True
) -> list[str]:
    """The server's log lines after the first ``before``, once ``until`` holds of them (the
    server writes an access line just after the response, so a test may be faster)."""
    deadline = time.monotonic() + 10
    while True:
        lines = server.log().splitlines()[before:]
        if until(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def raw_exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def head_and_body(response: bytes) -> tuple[str, dict[str, str], Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return status, headers, json.loads(body) if body else None


def trickle_until_closed(
    sock: socket.socket, piece: Callable[[int], bytes], interval: float, limit: float
) -> float | None:
    """Send ``piece(i)`` every ``interval`` seconds until the server closes the connection
    (return the seconds that took) or ``limit`` seconds pass (return ``None``)."""
    start = time.monotonic()
    sock.settimeout(interval)
    i = 0
    while time.monotonic() - start < limit:
        try:
            sock.sendall(piece(i))
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        i += 1
    return None


def rules_path(server: ServerProcess) -> str:
    return f"{server.registry_path}/cacheRules"


def partial_put(server: ServerProcess, name: str, declared: int = 1000) -> bytes:
    """The head of an authenticated PUT of a rule whose body is ``declared`` bytes long,
    followed by the body's first byte only."""
    return (
        f"PUT {rules_path(server)}/{name}?api-version={API} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{"
    ).encode()


# -- 4. no password in any log line ---------------------------------------------------------------
SECRET = "s3cr/t@P4ss"


@pytest.mark.postgres
def test_database_password_with_slash_and_at_never_logged_and_still_works(
    process_factory: Callable[..., ServerProcess], postgres_database: str
) -> None:
    """A password holding a raw ``/`` and ``@`` is hidden in the start-up line and reaches the
    driver whole (PostgreSQL trusts 127.0.0.1 here, so any password connects)."""
    url = postgres_database.replace("postgres@", f"postgres:{SECRET}@", 1)
    assert SECRET in url
    server = process_factory(f'\n[database]\nurl = "{url}"\n')
    response = requests.get(
        f"{server.url}{server.registry_path}",
        params={"api-version": API},
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    server.stop()
    log = server.log()
    assert "starting with" in log
    assert "postgres:***@" in log
    for fragment in (SECRET, "s3cr", "P4ss"):
        assert fragment not in log


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://entrepot:{SECRET}@127.0.0.1:{{port}}/entrepot",
        "postgresql://entrepot:s3cr%2Ft%40P4ss@127.0.0.1:{port}/entrepot",
        "postgresql://entrepot@127.0.0.1:{port}/entrepot?password=s3cr%2Ft%40P4ss&sslmode=disable",
        f"postgresql+asyncpg://entrepot:{SECRET}@127.0.0.1:{{port}}/entrepot",
    ],
)
def test_database_password_not_in_the_output_when_the_database_is_down(
    tmp_path: Path, url: str
) -> None:
    """Whatever the spelling, and when the connection fails: neither the start-up log nor the
    error says the password (nothing listens on the port)."""
    config = tmp_path / "entrepot.toml"
    db_url = url.format(port=free_port())
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{free_port()}"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[database]\nurl = "{db_url}"\n'
    )
    result = run_serve(["--config", str(config)], clean_env())
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "starting with" in output
    for fragment in ("s3cr", "P4ss", "%2Ft", "%40P"):
        assert fragment not in output, output


# -- 6. read timeouts and shutdown -----------------------------------------------------------------
@pytest.mark.slow
def test_slow_headers_are_cut_off(process_factory: Callable[..., ServerProcess]) -> None:
    server = process_factory(env={"ENTREPOT_SERVER_HEADER_TIMEOUT_SECONDS": "1"})
    before = len(server.log().splitlines())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        took = trickle_until_closed(sock, lambda i: f"X-Slow-{i}: 1\r\n".encode(), 0.2, 15)
    assert took is not None, "a trickle of header lines held the connection open"
    assert 0.5 <= took <= 4, took
    with socket.create_connection(("127.0.0.1", server.port)) as silent:  # sends nothing
        start = time.monotonic()
        silent.settimeout(10)
        assert silent.recv(1) == b""
        assert time.monotonic() - start <= 4
    # Requests that take their time within the limit are fine, on a kept-alive connection too.
    with requests.Session() as session:
        for _ in range(2):
            assert session.get(f"{server.url}/healthz", timeout=5).status_code == 200
            time.sleep(1.5)  # idle between requests is the keep-alive timeout's business
    lines = new_lines(server, before)
    assert any("server.header_timeout_seconds" in line for line in lines), lines
    assert not any("Traceback" in line for line in lines)


@pytest.mark.slow
def test_slow_authenticated_upload_is_cut_off(
    process_factory: Callable[..., ServerProcess],
) -> None:
    server = process_factory(env={"ENTREPOT_SERVER_BODY_TIMEOUT_SECONDS": "1.5"})
    before = len(server.log().splitlines())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(partial_put(server, "slow-rule", declared=200))
        took = trickle_until_closed(sock, lambda _i: b" ", 0.2, 15)
    assert took is not None, "a trickled body held the connection open"
    assert 1 <= took <= 5, took
    # The server is fine and nothing was created.
    rule = requests.get(
        f"{server.url}{rules_path(server)}/slow-rule",
        params={"api-version": API},
        headers=server.headers(),
        timeout=30,
    )
    assert rule.status_code == 404
    lines = new_lines(server, before, lambda lines: any(" 408 " in line for line in lines))
    assert sum("server.body_timeout_seconds" in line for line in lines) == 1, lines
    assert any(f"PUT {rules_path(server)}/slow-rule 408 " in line for line in lines), lines
    assert not any("hung up" in line for line in lines), lines  # the server cut it
    assert not any("Traceback" in line or " ERROR " in line for line in lines), lines


@pytest.mark.slow
def test_sigterm_ends_within_the_shutdown_timeout_despite_a_slow_upload(
    process_factory: Callable[..., ServerProcess],
) -> None:
    server = process_factory(env={"ENTREPOT_SERVER_SHUTDOWN_TIMEOUT_SECONDS": "2"})
    assert server.process is not None
    with (
        socket.create_connection(("127.0.0.1", server.port)) as upload,
        socket.create_connection(("127.0.0.1", server.port)) as idle,
    ):
        upload.sendall(partial_put(server, "held-rule"))
        idle.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)  # the PUT's handler now waits for the body
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=30)
        took = time.monotonic() - start
    assert code == 0, server.log()
    assert took < 6, took  # 2 s for the upload, then the cleanup; aiohttp's default was 60 s
    log = server.log()
    assert "stopping" in log
    assert "Traceback" not in log


# -- 7. log hygiene, access log, Server header ---------------------------------------------------
@pytest.mark.slow
def test_bad_requests_and_hang_ups_log_a_line_not_tracebacks(
    process_factory: Callable[..., ServerProcess],
) -> None:
    server = process_factory()
    before = len(server.log().splitlines())
    long_url = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    long_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    arm_path = f"{rules_path(server)}/x?api-version={API}".encode()
    long_header_arm = b"GET " + arm_path + b" HTTP/1.1\r\nCookie: " + b"c" * 9000 + b"\r\n\r\n"
    for i in range(40):
        request = (long_url, long_header, long_header_arm)[i % 3]
        status, headers, body = head_and_body(raw_exchange(server.port, request))
        assert " 400 " in status, status
        assert headers["content-type"] == "application/json"
        assert headers["server"] == "entrepot"
        assert headers["x-ms-request-id"]
        assert body == {
            "error": {
                "code": "BadRequest",
                "message": "The request line or a header line is too long.",
            }
        }
    for i in range(20):  # clients that hang up in the middle of their body
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(partial_put(server, f"gone-rule-{i}"))
    time.sleep(1)
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    lines = new_lines(server, before)
    assert not any("Traceback" in line or " ERROR " in line for line in lines), lines
    access = [line for line in lines if " entrepot.access: " in line]
    others = [line for line in lines if " entrepot.access: " not in line]
    assert sum(" - - 400 " in line for line in access) == 40, access
    assert sum("hung up" in line for line in others) >= 1
    assert len(others) <= 4, others  # one line per kind, the repeats counted
    assert all(" WARNING entrepot.http: " in line for line in others), others
    # the client's bytes are never echoed (a run of 64, not 4: request ids are hex and may
    # hold "aaaa" by chance)
    echoed = [line[:300] for line in lines if "a" * 64 in line or "b" * 64 in line]
    assert not echoed, echoed


def test_json_access_log(process_factory: Callable[..., ServerProcess]) -> None:
    server = process_factory(env={"ENTREPOT_SERVER_ACCESS_LOG": "json"})
    before = len(server.log().splitlines())
    registry = f"{server.url}{server.registry_path}"
    ok = requests.get(registry, params={"api-version": API}, headers=server.headers(), timeout=30)
    refused = requests.get(registry, params={"api-version": API}, timeout=30)
    health = requests.get(f"{server.url}/healthz", timeout=30)
    registry_face = requests.get(f"{server.url}/v2/", timeout=30)
    raw_exchange(server.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    assert (ok.status_code, refused.status_code, health.status_code) == (200, 401, 200)
    for response in (ok, refused, health, registry_face):
        assert response.headers["Server"] == "entrepot"
    ids = [r.headers.get("x-ms-request-id") for r in (ok, refused, health)]
    lines = new_lines(server, before, lambda lines: all(any(i in x for x in lines) for i in ids))
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert not any("entrepot.access" in line for line in lines)  # JSON lines only
    assert len(entries) >= 5, lines
    by_id = {entry["request_id"]: entry for entry in entries}
    keys = {
        "time",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "principal",
        "request_id",
        "remote",
        "cache",
    }
    assert all(set(entry) == keys for entry in entries)
    first = by_id[ok.headers["x-ms-request-id"]]
    assert first["method"] == "GET"
    assert first["path"] == server.registry_path  # no query
    assert first["status"] == 200
    assert first["principal"] == "admin"
    assert first["bytes"] > len(ok.content)
    assert 0 <= first["duration_ms"] < 30_000
    assert first["remote"] == "127.0.0.1"
    stamp = dt.datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
    second = by_id[refused.headers["x-ms-request-id"]]
    assert (second["status"], second["principal"]) == (401, None)
    assert by_id[health.headers["x-ms-request-id"]]["path"] == "/healthz"
    assert by_id[registry_face.headers["X-Request-Id"]]["path"] == "/v2/"
    parser = [entry for entry in entries if entry["method"] == "-"]
    assert len(parser) == 1 and parser[0]["status"] == 400 and parser[0]["path"] == "-"


@pytest.mark.slow
def test_text_access_log_and_off(process_factory: Callable[..., ServerProcess]) -> None:
    text = process_factory()
    response = requests.get(
        f"{text.url}{text.registry_path}",
        params={"api-version": API},
        headers=text.headers(),
        timeout=30,
    )
    request_id = response.headers["x-ms-request-id"]
    lines = new_lines(text, 0, lambda lines: any(request_id in line for line in lines))
    line = next(line for line in lines if request_id in line)
    assert f" INFO entrepot.access: GET {text.registry_path} 200 " in line
    assert "principal=admin" in line and "remote=127.0.0.1" in line

    off = process_factory(env={"ENTREPOT_SERVER_ACCESS_LOG": "off"})
    assert requests.get(f"{off.url}/healthz", timeout=30).status_code == 200
    assert requests.get(f"{off.url}{off.registry_path}", timeout=30).status_code == 401
    time.sleep(0.5)
    assert "entrepot.access" not in off.log()


# -- 9. TLS ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    root = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "entrepot test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Pki(root / "ca.pem", root / "server.pem", root / "server-key.pem")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class HttpsServer(ServerProcess):
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@pytest.fixture
def https_server(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HttpsServer]:
    """A server on https://127.0.0.1:PORT; ``requests`` here trusts the test CA."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    port = free_port()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config_path = tmp_path / "entrepot.toml"
    config_path.write_text(
        base_config(port, data_dir).replace(
            "[server]\n", f'[server]\ntls_cert = "{pki.cert}"\ntls_key = "{pki.key}"\n', 1
        )
    )
    server = HttpsServer(config_path, data_dir, port)
    server.start()
    yield server
    server.stop()


def test_https_with_the_genuine_sdk_without_any_custom_policy(
    https_server: HttpsServer, pki: Pki
) -> None:
    from azure.core.credentials import AccessToken
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import CacheRule

    class StaticToken:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken(https_server.token, int(time.time()) + 3600)

    client = ContainerRegistryManagementClient(
        StaticToken(),
        SUBSCRIPTION,
        base_url=https_server.url,
        connection_verify=str(pki.ca),
        polling_interval=0.05,
        retry_total=0,
    )
    registry = client.registries.get(RESOURCE_GROUP, REGISTRY)
    assert registry.name == REGISTRY
    created = client.cache_rules.begin_create(
        RESOURCE_GROUP,
        REGISTRY,
        "tls-rule",
        CacheRule(source_repository="docker.io/library/alpine", target_repository="tls-alpine"),
    ).result()  # polls the Azure-AsyncOperation URL: https, the listen address
    assert created.provisioning_state == "Succeeded"
    assert [r.name for r in client.cache_rules.list(RESOURCE_GROUP, REGISTRY)] == ["tls-rule"]
    assert client.cache_rules.begin_delete(RESOURCE_GROUP, REGISTRY, "tls-rule").result() is None
    assert list(client.cache_rules.list(RESOURCE_GROUP, REGISTRY)) == []

    put = requests.put(
        f"{https_server.url}{rules_path(https_server)}/raw-rule",
        params={"api-version": API},
        json={"properties": {"sourceRepository": "quay.io/a/b", "targetRepository": "b"}},
        headers=https_server.headers(),
        timeout=30,
    )
    assert put.status_code == 201
    assert put.headers["Azure-AsyncOperation"].startswith(f"{https_server.url}/subscriptions/")
    v2 = requests.get(f"{https_server.url}/v2/", timeout=30)  # every face is on HTTPS
    assert v2.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    with pytest.raises(requests.ConnectionError):  # no plain HTTP on the port
        requests.get(f"http://127.0.0.1:{https_server.port}/healthz", timeout=5)


@pytest.mark.slow
def test_https_with_our_client_and_the_cli(https_server: HttpsServer, pki: Pki) -> None:
    from entrepot.mgmt import ContainerRegistryManagementClient, StaticTokenCredential

    client = ContainerRegistryManagementClient(
        StaticTokenCredential(https_server.token),
        SUBSCRIPTION,
        base_url=https_server.url,
        connection_verify=str(pki.ca),
        polling_interval=0.05,
        retry_total=0,
    )
    assert client.registries.get(RESOURCE_GROUP, REGISTRY).name == REGISTRY

    # The CLI finds https:// from the config (tls_cert set) and trusts the CA it is told of.
    env = clean_env(REQUESTS_CA_BUNDLE=str(pki.ca), COLUMNS="200")
    cli = [sys.executable, "-m", "entrepot.cli"]
    where = ["-g", RESOURCE_GROUP, "--subscription", SUBSCRIPTION]
    where += ["--config", str(https_server.config_path)]
    listed = subprocess.run(
        [*cli, "registry", "list", *where],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert [r["name"] for r in json.loads(listed.stdout)] == [REGISTRY]
    untrusted_env = clean_env()
    untrusted_env.pop("REQUESTS_CA_BUNDLE")
    untrusted = subprocess.run(
        [*cli, "registry", "list", *where],
        env=untrusted_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert untrusted.returncode == 1
    assert f"https://127.0.0.1:{https_server.port}" in untrusted.stderr
    assert "Traceback" not in untrusted.stderr


@pytest.mark.parametrize(
    ("server_toml", "needles"),
    [
        ('tls_cert = "{cert}"\n', ["server.tls_key"]),
        ('tls_key = "{key}"\n', ["server.tls_cert"]),
        ('tls_cert = "{cert}"\ntls_key = "{missing}"\n', ["server.tls_key", "missing.pem"]),
        ('tls_cert = "{missing}"\ntls_key = "{key}"\n', ["server.tls_cert", "missing.pem"]),
        ('tls_cert = "{key}"\ntls_key = "{key}"\n', ["server.tls_cert", "server.tls_key"]),
        ('listen = "192.0.2.1:{port}"\n', ["server.allow_insecure_http", "192.0.2.1"]),
        ('listen = ":{port}"\n', ["server.allow_insecure_http"]),
    ],
)
def test_tls_and_insecure_http_config_errors(
    tmp_path: Path, pki: Pki, server_toml: str, needles: list[str]
) -> None:
    values = {
        "cert": pki.cert,
        "key": pki.key,
        "missing": tmp_path / "missing.pem",
        "port": free_port(),
    }
    listen = "" if "listen" in server_toml else f'listen = "127.0.0.1:{free_port()}"\n'
    config = tmp_path / "entrepot.toml"
    config.write_text(
        f'[server]\n{listen}data_dir = "{tmp_path / "data"}"\n' + server_toml.format(**values)
    )
    result = run_serve(["--config", str(config)], clean_env())
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (tmp_path / "data" / "admin-token").exists()  # nothing was started


@pytest.mark.slow
def test_insecure_http_off_loopback_is_allowed_with_a_warning(tmp_path: Path, pki: Pki) -> None:
    """192.0.2.1 (TEST-NET-1) is no address of this machine: serve warns, then cannot bind."""
    config = tmp_path / "entrepot.toml"
    data = tmp_path / "data"
    config.write_text(
        f'[server]\nlisten = "192.0.2.1:{free_port()}"\ndata_dir = "{data}"\n'
        "allow_insecure_http = true\n"
    )
    result = run_serve(["--config", str(config)], clean_env())
    assert result.returncode == 1, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " WARNING entrepot: " in line]
    assert len(warnings) == 1 and "plain HTTP" in warnings[0], result.stderr
    assert "server.allow_insecure_http" in warnings[0]

    config.write_text(  # with TLS there is nothing to warn about
        f'[server]\nlisten = "192.0.2.1:{free_port()}"\ndata_dir = "{data}"\n'
        f'tls_cert = "{pki.cert}"\ntls_key = "{pki.key}"\n'
    )
    result = run_serve(["--config", str(config)], clean_env())
    assert result.returncode == 1, result.stderr
    assert "plain HTTP" not in result.stderr


def test_rate_limited_log_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from entrepot.web.access_log import RateLimitedLog

    now = [100.0]
    quiet = RateLimitedLog(logging.getLogger("entrepot.test"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="entrepot.test"):
        assert quiet.warning("a", "first %s", "a")
        assert not any(quiet.warning("a", "again %s", "a") for _ in range(5))
        assert quiet.warning("b", "other kind")  # kinds are limited separately
        now[0] += 10
        assert quiet.warning("a", "later %s", "a")
        now[0] += 10
        assert quiet.warning("a", "quiet since")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "first a",
        "other kind",
        "later a (and 5 like it since the last such line)",
        "quiet since",
    ]
    assert all(record.exc_info is None for record in caplog.records)
