"""The registry face (``/v2/``) and registry addressing.

The pure addressing rules (:mod:`entrepot.addressing`) are tested as functions; everything else
runs the real ``entrepot serve`` and talks HTTP to it on 127.0.0.1, setting ``Host`` by hand to
address registries as ``<name>.localhost:PORT`` would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests

from entrepot.addressing import DEFAULT, RegistryAddressing, split_host
from entrepot.config import ServerConfig
from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, ServerProcess

API = "2025-04-01"
OTHER_GROUP = "other-group"
OTHER = "OtherRegistry"


# -- addressing, as pure functions ------------------------------------------------------------
@pytest.mark.parametrize(
    ("server", "name", "expected"),
    [
        # without registry_domain: the server's own address, exactly as before
        (ServerConfig(listen="127.0.0.1:5000"), "MyRegistry", "127.0.0.1:5000"),
        (ServerConfig(listen="0.0.0.0:5000"), "myregistry", "127.0.0.1:5000"),
        (ServerConfig(listen="[::]:5000"), "myregistry", "[::1]:5000"),
        (ServerConfig(listen="127.0.0.1:80"), "myregistry", "127.0.0.1:80"),
        (ServerConfig(public_url="https://cache.example.com/x"), "myregistry", "cache.example.com"),
        (
            ServerConfig(public_url="https://cache.example.com:443"),
            "r1234",
            "cache.example.com:443",
        ),
        # with registry_domain: <name>.<domain>, lower case, port only when not the default
        (
            ServerConfig(listen="127.0.0.1:5000", registry_domain="cache.example.com"),
            "MyRegistry",
            "myregistry.cache.example.com:5000",
        ),
        (
            ServerConfig(listen="0.0.0.0:80", registry_domain="Cache.Example.com"),
            "myregistry",
            "myregistry.cache.example.com",
        ),
        (
            ServerConfig(
                listen="127.0.0.1:5000",
                public_url="https://entrepot.example.com/prefix",
                registry_domain="cache.example.com",
            ),
            "my-registry",
            "my-registry.cache.example.com",
        ),
        (
            ServerConfig(public_url="https://e.example.com:443", registry_domain="cache.example"),
            "myregistry",
            "myregistry.cache.example",
        ),
        (
            ServerConfig(public_url="http://e.example.com:8080", registry_domain="cache.example"),
            "myregistry",
            "myregistry.cache.example:8080",
        ),
        (
            ServerConfig(public_url="http://e.example.com:443", registry_domain="cache.example"),
            "myregistry",
            "myregistry.cache.example:443",
        ),
    ],
)
def test_login_server(server: ServerConfig, name: str, expected: str) -> None:
    assert RegistryAddressing(server).login_server(name) == expected


LOCAL = ServerConfig(listen="127.0.0.1:5000", registry_domain="cache.example.com")
PUBLIC = ServerConfig(
    listen="10.1.2.3:5000",
    public_url="https://entrepot.example.com",
    registry_domain="cache.example.com",
)
WILDCARD = ServerConfig(listen="0.0.0.0:5000", registry_domain="cache.example.com")
NO_DOMAIN = ServerConfig(listen="10.1.2.3:5000")


@pytest.mark.parametrize(
    ("server", "host", "expected"),
    [
        (LOCAL, "myregistry.cache.example.com:5000", "myregistry"),
        (LOCAL, "myregistry.cache.example.com", "myregistry"),  # the port does not route
        (LOCAL, "MyRegistry.Cache.Example.COM.:443", "myregistry"),
        (LOCAL, "my-registry.cache.example.com:5000", "my-registry"),
        (LOCAL, "abc.cache.example.com", None),  # not a registry name (5-50 characters)
        (LOCAL, "my_registry.cache.example.com", None),
        (LOCAL, "a.myregistry.cache.example.com", None),  # one label only
        (LOCAL, "myregistry.cache.example.com.evil.test", None),
        (LOCAL, "myregistrycache.example.com", None),
        (LOCAL, "cache.example.com", None),  # the domain itself is not the server's host
        (LOCAL, "elsewhere.example.org:5000", None),
        (LOCAL, "10.9.8.7:5000", None),  # listening on loopback: another address is not ours
        (LOCAL, "localhost:5000", DEFAULT),
        (LOCAL, "LOCALHOST", DEFAULT),
        (LOCAL, "127.0.0.1:5000", DEFAULT),
        (LOCAL, "[::1]:5000", DEFAULT),
        (LOCAL, "[0:0:0:0:0:0:0:1]", DEFAULT),
        (LOCAL, "", DEFAULT),  # no Host header (HTTP/1.0): the server itself
        (LOCAL, "bad host", None),
        (LOCAL, "[::1", None),
        (LOCAL, "myregistry.cache.example.com:99999", None),
        (PUBLIC, "entrepot.example.com", DEFAULT),
        (PUBLIC, "10.1.2.3:5000", DEFAULT),
        (PUBLIC, "localhost:5000", None),  # not listening on loopback
        (PUBLIC, "127.0.0.1:5000", None),
        (PUBLIC, "myregistry.cache.example.com", "myregistry"),
        (WILDCARD, "localhost:5000", DEFAULT),
        (WILDCARD, "192.168.1.20:5000", DEFAULT),  # any address of this machine
        (WILDCARD, "[fe80::1]:5000", DEFAULT),
        (WILDCARD, "myhost.lan:5000", None),
        (WILDCARD, "myregistry.cache.example.com", "myregistry"),
        (NO_DOMAIN, "myregistry.cache.example.com", DEFAULT),  # Host is not looked at
        (NO_DOMAIN, "anything at all", DEFAULT),
    ],
)
def test_registry_name_for_host(server: ServerConfig, host: str, expected: object) -> None:
    assert RegistryAddressing(server).registry_name_for_host(host) == expected


def test_an_own_host_under_the_domain_is_the_servers() -> None:
    server = ServerConfig(
        public_url="https://entrepot.cache.example.com", registry_domain="cache.example.com"
    )
    addressing = RegistryAddressing(server)
    assert addressing.registry_name_for_host("entrepot.cache.example.com") is DEFAULT
    assert addressing.registry_name_for_host("otherone.cache.example.com") == "otherone"


def test_default_registry_and_domain_are_normalised() -> None:
    addressing = RegistryAddressing(
        ServerConfig(registry_domain="Cache.Example.COM", default_registry="My-Registry")
    )
    assert (addressing.domain, addressing.default_registry) == ("cache.example.com", "my-registry")
    assert RegistryAddressing(ServerConfig()).default_registry is None
    assert RegistryAddressing(ServerConfig()).domain is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Example.COM", ("example.com", None)),
        ("example.com.:5000", ("example.com", 5000)),
        ("[::1]:5000", ("::1", 5000)),
        ("[0:0::1]", ("::1", None)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("example.com:0", None),
        ("example.com:65536", None),
        ("user@example.com", None),
        ("example.com/x", None),
        ("::1", None),
        ("[nope]", None),
        (".", None),
        ("example.com..", None),  # one root dot is a spelling of the name; two are not
        ("example.com..:5000", None),
        ("", None),
    ],
)
def test_split_host(host: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host(host) == expected


# -- the faces of a real server ---------------------------------------------------------------
def v2(
    server: ServerProcess, path: str = "/v2/", host: str | None = None, method: str = "GET"
) -> requests.Response:
    headers = {"Host": host} if host is not None else {}
    return requests.request(method, f"{server.url}{path}", headers=headers, timeout=30)


def assert_oci_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    """``response`` is an OCI error of ``status``/``code`` on the registry face; the error."""
    assert response.status_code == status, response.text
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers.get("X-Request-Id")
    assert "x-ms-request-id" not in response.headers
    body = response.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    error = body["errors"][0]
    assert set(error) == {"code", "message", "detail"}, error
    assert error["code"] == code, error
    assert error["message"]
    return dict(error)


def assert_version_check(response: requests.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers.get("X-Request-Id")
    assert "x-ms-request-id" not in response.headers
    assert response.json() == {}


def registry_doc(server: ServerProcess, group: str, name: str) -> dict[str, Any]:
    response = requests.get(
        f"{server.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}"
        f"/providers/Microsoft.ContainerRegistry/registries/{name}",
        params={"api-version": API},
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def seed(group: str, name: str) -> str:
    return (
        f'\n[[registries]]\nsubscription = "{SUBSCRIPTION}"\n'
        f'resource_group = "{group}"\nname = "{name}"\n'
    )


def test_version_check_answers_the_oci_way(server: ServerProcess) -> None:
    assert_version_check(v2(server))
    assert_version_check(v2(server, "/v2"))
    head = v2(server, method="HEAD")
    assert head.status_code == 200
    assert head.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert "x-ms-request-id" not in head.headers
    assert head.content == b""
    # one registry and no registry_domain: every host is the server's own, the sole registry
    assert_version_check(v2(server, host="anything.example.com"))


def test_unknown_registry_routes_are_oci_errors(server: ServerProcess) -> None:
    # (a route of the pull API on a repository no cache rule covers is NAME_UNKNOWN: see
    # tests/test_registry_routes.py)
    for path in ("/v2/library/ubuntu/manifest/latest", "/v2/_catalogue", "/v2//x", "/v2/%2F"):
        error = assert_oci_error(v2(server, path), 404, "UNSUPPORTED")
        assert "has no API at GET /v2/" in error["message"], error
        assert error["detail"] is None
    error = assert_oci_error(v2(server, method="POST"), 405, "UNSUPPORTED")
    assert "POST" in error["message"]
    # the same path with HEAD: status and headers, no body
    head = v2(server, "/v2/library/ubuntu/manifest/latest", method="HEAD")
    assert head.status_code == 404 and head.content == b""
    assert head.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert "x-ms-request-id" not in head.headers


def raw_get(server: ServerProcess, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` bytes as they are (requests would refuse them); status, headers, body."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("host", [b"\xff\xfe", b"my\xe9registry.example.com", b"a\xc3"])
def test_an_undecodable_host_is_an_oci_error_not_a_crash(
    server_factory: Callable[..., ServerProcess], host: bytes
) -> None:
    server = server_factory(env={"ENTREPOT_SERVER_REGISTRY_DOMAIN": "example.com"})
    status, headers, body = raw_get(
        server, b"GET /v2/ HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    )
    assert status == 404, body
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    error = json.loads(body)["errors"][0]
    assert error["code"] == "NAME_UNKNOWN"
    assert "Traceback" not in server.log()


def test_the_management_faces_keep_their_errors(server: ServerProcess) -> None:
    def assert_arm_error(response: requests.Response, status: int, code: str) -> None:
        assert response.status_code == status, response.text
        assert response.headers.get("x-ms-request-id")
        assert "Docker-Distribution-API-Version" not in response.headers
        assert response.json()["error"]["code"] == code

    url = server.url
    arm = f"{url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    assert_arm_error(requests.get(f"{arm}/nope", timeout=30), 404, "NotFound")
    assert_arm_error(requests.get(url + "/subscriptions", timeout=30), 404, "NotFound")
    response = requests.get(
        f"{arm}/providers/Microsoft.ContainerRegistry/registries",
        headers={**server.headers(), "x-ms-client-request-id": "client-42"},
        timeout=30,
    )
    assert_arm_error(response, 400, "MissingApiVersionParameter")
    assert response.headers["x-ms-client-request-id"] == "client-42"
    response = requests.get(
        f"{arm}/providers/Microsoft.ContainerRegistry/registries?api-version={API}", timeout=30
    )
    assert_arm_error(response, 401, "AuthenticationFailed")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="entrepot"'
    # paths no face claims: ARM 404 as before, never OCI
    for path in ("/nope", "/v3/", "/V2/", "/entrepot", "/Subscriptions"):
        assert_arm_error(requests.get(url + path, timeout=30), 404, "NotFound")
    assert_arm_error(requests.post(url + "/healthz", timeout=30), 405, "MethodNotAllowed")
    healthz = requests.get(url + "/healthz", timeout=30)
    assert healthz.status_code == 200 and healthz.json() == {"status": "ok"}
    assert healthz.headers.get("x-ms-request-id")
    # the vault extension: the management shape, authenticated by the same token
    assert_arm_error(
        requests.get(url + "/entrepot/vaults", timeout=30), 401, "AuthenticationFailed"
    )
    vaults = requests.get(url + "/entrepot/vaults", headers=server.headers(), timeout=30)
    assert vaults.status_code == 200 and vaults.headers.get("x-ms-request-id")
    assert_arm_error(
        requests.get(url + "/entrepot/vaults/a/b/c/d/e", headers=server.headers(), timeout=30),
        404,
        "NotFound",
    )


def test_registry_domain_gives_each_registry_its_host(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(
        seed(OTHER_GROUP, OTHER), env={"ENTREPOT_SERVER_REGISTRY_DOMAIN": "localhost"}
    )
    port = server.port
    # loginServer reports the true address, through the genuine SDK and on the wire
    with server.sdk_client() as client:
        assert client.registries.get(RESOURCE_GROUP, REGISTRY).login_server == (
            f"{REGISTRY}.localhost:{port}"
        )
        listed = {
            r.name: r.login_server for r in client.registries.list_by_resource_group(OTHER_GROUP)
        }
    assert listed == {OTHER: f"otherregistry.localhost:{port}"}
    assert registry_doc(server, OTHER_GROUP, OTHER)["properties"]["loginServer"] == (
        f"otherregistry.localhost:{port}"
    )

    assert_version_check(v2(server, host=f"{REGISTRY}.localhost:{port}"))
    assert_version_check(v2(server, host=f"OtherRegistry.LOCALHOST:{port}"))
    assert_version_check(v2(server, host="otherregistry.localhost"))

    error = assert_oci_error(v2(server, host=f"unknown.localhost:{port}"), 404, "NAME_UNKNOWN")
    assert "'unknown' does not exist" in error["message"], error
    assert error["detail"] == {"target": "Host"}
    error = assert_oci_error(v2(server, host=f"a.b.localhost:{port}"), 404, "NAME_UNKNOWN")
    assert "host 'a.b.localhost" in error["message"], error
    assert "<registry name>.localhost" in error["message"], error
    assert_oci_error(v2(server, host="evil.example.com"), 404, "NAME_UNKNOWN")
    # unknown hosts are refused before any route: an unknown path does not tell more
    assert_oci_error(v2(server, "/v2/x/tags/list", host="evil.example.com"), 404, "NAME_UNKNOWN")
    assert_oci_error(v2(server, "/v2/x/tag/list", host=f"{REGISTRY}.localhost"), 404, "UNSUPPORTED")

    # the server's own host with two registries and no default_registry: nobody answers
    for own in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        error = assert_oci_error(v2(server, host=own), 404, "NAME_UNKNOWN")
        assert "default_registry" in error["message"] and "several" in error["message"]


def test_the_same_name_in_two_groups_is_refused_at_start(
    process_factory: Callable[..., ServerProcess],
) -> None:
    """Registry names are unique on the server, so the configuration cannot seed one twice."""
    with pytest.raises(RuntimeError) as excinfo:
        process_factory(
            seed(OTHER_GROUP, OTHER) + seed("third-group", OTHER.lower()),
            env={"ENTREPOT_SERVER_REGISTRY_DOMAIN": "localhost"},
        )
    assert "registries[2].name" in str(excinfo.value)
    assert "unique" in str(excinfo.value)


def test_default_registry_answers_on_the_servers_own_host(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(
        seed(OTHER_GROUP, OTHER),
        env={
            "ENTREPOT_SERVER_REGISTRY_DOMAIN": "localhost",
            "ENTREPOT_SERVER_DEFAULT_REGISTRY": "otherregistry",
        },
    )
    for own in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", None):
        assert_version_check(v2(server, host=own))
    assert_version_check(v2(server, host=f"{REGISTRY}.localhost:{server.port}"))
    # the default registry's loginServer is still its own name under the domain
    assert registry_doc(server, OTHER_GROUP, OTHER)["properties"]["loginServer"] == (
        f"otherregistry.localhost:{server.port}"
    )


def test_a_missing_default_registry_is_not_replaced_by_the_sole_one(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(env={"ENTREPOT_SERVER_DEFAULT_REGISTRY": "nosuchregistry"})
    error = assert_oci_error(v2(server), 404, "NAME_UNKNOWN")
    assert "'nosuchregistry'" in error["message"] and "default_registry" in error["message"]


def test_without_registry_domain_several_registries_need_a_default(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(seed(OTHER_GROUP, OTHER))
    for group, name in ((RESOURCE_GROUP, REGISTRY), (OTHER_GROUP, OTHER)):
        login = registry_doc(server, group, name)["properties"]["loginServer"]
        assert login == f"127.0.0.1:{server.port}"  # as before: the server's own address
    error = assert_oci_error(v2(server, host=f"{REGISTRY}.localhost"), 404, "NAME_UNKNOWN")
    assert "registry_domain" in error["message"] and "default_registry" in error["message"]


def test_the_sole_registry_answers_on_the_servers_own_host(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(env={"ENTREPOT_SERVER_REGISTRY_DOMAIN": "localhost"})
    assert_version_check(v2(server, host=f"localhost:{server.port}"))
    assert_version_check(v2(server, host=f"{REGISTRY}.localhost:{server.port}"))
    assert_oci_error(v2(server, host=f"otherregistry.localhost:{server.port}"), 404, "NAME_UNKNOWN")


def test_a_seeded_name_held_by_another_group_is_a_config_error(
    process_factory: Callable[..., ServerProcess],
) -> None:
    """The database already holds REGISTRY in its group; a seed of the same name elsewhere is
    refused at start like any configuration error (exit 2, the key named), not a traceback."""
    server = process_factory()
    server.stop()
    with server.config_path.open("a") as config:
        config.write(seed(OTHER_GROUP, REGISTRY.upper()))
    with pytest.raises(RuntimeError) as excinfo:
        server.start()
    assert server.process is not None and server.process.wait(10) == 2
    assert "registries[1].name" in str(excinfo.value)
    assert "Traceback" not in str(excinfo.value)
