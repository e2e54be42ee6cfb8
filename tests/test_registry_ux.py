"""What a new user meets on the registry face: a client without credentials, a fresh install
with no registry yet, and how much the cache holds (``entrepot status``).

Real parts throughout: the real app (in process), Debian's ``skopeo`` as the client, Debian's
``docker-registry`` as the upstream, the ``entrepot`` CLI as a subprocess.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from entrepot.metadata.content import SqlContentIndex
from entrepot.metadata.records import BlobRef
from entrepot.metadata.resources import SqlResourceStore
from tests.conftest import InProcessServer, Server, _new_server
from tests.metadata_support import NOW, add_registry
from tests.registries import Registry, push_test_image, require_tools
from tests.test_cli_ux import cli, ok
from tests.test_content_index import db, db_url, digest, index, manifest, reg, store
from tests.test_registry_face import assert_oci_error, assert_version_check
from tests.test_registry_routes import NO_ANONYMOUS, basic, make_token, put_rule, skopeo

__all__ = ["db", "db_url", "index", "reg", "store"]  # fixtures of the content index's suite

EMPTY_BASIC = "Basic " + base64.b64encode(b":").decode()  # "Basic Og==", as skopeo sends it
REQUIRED = "Authentication required"
NO_REGISTRY_YET = "This server has no registry yet"


def v2(
    server: Server, path: str = "/v2/", auth: str | None = None, host: str | None = None
) -> requests.Response:
    headers = {"Authorization": auth} if auth is not None else {}
    if host is not None:
        headers["Host"] = host
    return requests.get(f"{server.url}{path}", headers=headers, timeout=30)


def env_of(server: Server) -> dict[str, str]:
    return {"ENTREPOT_URL": server.url, "ENTREPOT_TOKEN": server.token}


# -- 1. empty Basic credentials are no credentials ------------------------------------------------
def test_empty_basic_credentials_count_as_none(
    server_factory: Callable[..., InProcessServer],
) -> None:
    """``Basic Og==`` (user and password empty) is answered as a request without
    ``Authorization``: it passes with anonymous pull and is asked to authenticate without; a
    half-empty pair is still a bad credential."""
    assert EMPTY_BASIC == "Basic Og=="
    anonymous = server_factory()
    assert_version_check(v2(anonymous, auth=EMPTY_BASIC))
    catalog = v2(anonymous, "/v2/_catalog", auth=EMPTY_BASIC)
    assert catalog.status_code == 200 and catalog.json() == {"repositories": []}

    locked = server_factory(env=NO_ANONYMOUS)
    for auth in (None, EMPTY_BASIC, "basic  Og== "):
        for path in ("/v2/", "/v2/hub/alpine/manifests/latest"):
            response = v2(locked, path, auth=auth)
            error = assert_oci_error(response, 401, "UNAUTHORIZED")
            assert error["message"].startswith(REQUIRED), error
            assert "skopeo --creds NAME:TOKEN" in error["message"]
            assert "entrepot token create -n NAME --role pull" in error["message"]
            assert response.headers["WWW-Authenticate"] == 'Basic realm="entrepot"'
    # credentials that are sent but wrong stay wrong, each saying what is wrong with them
    token = make_token(locked, "ux-pull", "pull")
    wrong = {
        basic("", token): "need a user name (the token's name) and a password (the token)",
        basic("ux-pull", ""): "need a user name (the token's name) and a password (the token)",
        basic("ux-pull", "nope"): "the user name is the token's name ('admin' for the admin",
        basic("someone", token): "entrepot token list shows them",
        "Basic !!": "must be base64 of 'name:token'",
    }
    for auth, says in wrong.items():
        error = assert_oci_error(v2(locked, auth=auth), 401, "UNAUTHORIZED")
        assert error["message"].startswith("Authentication failed"), (auth, error)
        assert says in error["message"], (auth, error)
        assert token not in error["message"]
    assert_version_check(v2(locked, auth=basic("ux-pull", token)))


def test_skopeo_without_credentials_is_told_to_log_in(
    server_factory: Callable[..., InProcessServer], tmp_path: Path
) -> None:
    """skopeo with no credentials at all (no auth file, no ``--creds``) answers the challenge
    with empty Basic credentials; it must be told to authenticate, not that its (absent)
    credentials are malformed."""
    require_tools("skopeo")
    locked = server_factory(env=NO_ANONYMOUS)
    put_rule(locked, "hub-all", "docker.io/*", "hub/*")
    image = f"docker://127.0.0.1:{locked.port}/hub/alpine:3.20"
    done = skopeo("inspect", "--tls-verify=false", image, home=tmp_path)
    assert done.returncode != 0
    assert REQUIRED in done.stderr, done.stderr
    assert "skopeo --creds NAME:TOKEN" in done.stderr
    assert "base64" not in done.stderr, done.stderr


# -- 2. a fresh install -----------------------------------------------------------------------
@pytest.fixture
def fresh_factory(tmp_path: Path) -> Iterator[Callable[..., InProcessServer]]:
    """Servers whose configuration seeds no registry: a fresh install."""
    started: list[InProcessServer] = []

    def start(env: dict[str, str] | None = None) -> InProcessServer:
        server = _new_server(InProcessServer, tmp_path, env=dict(env or {}))
        server.config_path.write_text(
            f'[server]\nlisten = "127.0.0.1:{server.port}"\ndata_dir = "{server.data_dir}"\n'
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def test_a_fresh_install_says_to_create_a_registry(
    fresh_factory: Callable[..., InProcessServer], tmp_path: Path
) -> None:
    """No registry yet: the ping answers 200 (so a client goes on and shows the real error),
    every other request is ``NAME_UNKNOWN`` saying what to create, with which command; skopeo
    shows that message. Once the registry exists it answers; with two the message says
    "several" again and the ping fails."""
    require_tools("skopeo")
    server = fresh_factory()
    own = f"127.0.0.1:{server.port}"
    assert_version_check(v2(server))
    assert_version_check(v2(server, "/v2"))
    for path in ("/v2/hub/alpine/manifests/latest", "/v2/_catalog", "/v2/x/tags/list"):
        error = assert_oci_error(v2(server, path), 404, "NAME_UNKNOWN")
        assert error["message"].startswith(NO_REGISTRY_YET), error
        assert "entrepot registry create -n NAME -g GROUP" in error["message"]
        assert "entrepot cache create" in error["message"]
        assert f"pull {own}/alpine" in error["message"]
        assert "several" not in error["message"]
    # the ping is the only route that passes: a push or an unknown method still fails
    assert requests.post(f"{server.url}/v2/", timeout=30).status_code == 404
    done = skopeo("inspect", "--tls-verify=false", f"docker://{own}/hub/alpine:3.20", home=tmp_path)
    assert done.returncode != 0
    assert NO_REGISTRY_YET in done.stderr, done.stderr
    assert "pinging container registry" not in done.stderr

    # the advice works: one registry (and its rule) and the server's host is that registry
    env = env_of(server)
    ok(cli("registry", "create", "-n", "first-registry", "-g", "ux", env=env))
    assert_version_check(v2(server))
    error = assert_oci_error(v2(server, "/v2/hub/alpine/manifests/latest"), 404, "NAME_UNKNOWN")
    assert "No cache rule of registry 'first-registry'" in error["message"], error
    # two: the several-registries message, and the ping fails as before
    ok(cli("registry", "create", "-n", "second-registry", "-g", "ux", env=env))
    for path in ("/v2/", "/v2/hub/alpine/manifests/latest"):
        error = assert_oci_error(v2(server, path), 404, "NAME_UNKNOWN")
        assert "holds several registries" in error["message"], error
        assert "default_registry" in error["message"]


def test_a_fresh_install_needs_authentication_and_a_real_host(
    fresh_factory: Callable[..., InProcessServer],
) -> None:
    """The ping of a fresh install passes only where the request would have: authentication
    first, and a host that names a registry that does not exist fails the ping (so
    ``docker login`` to a wrong address fails)."""
    locked = fresh_factory(env=NO_ANONYMOUS)
    response = v2(locked)
    assert_oci_error(response, 401, "UNAUTHORIZED")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="entrepot"'
    assert_oci_error(v2(locked, auth=EMPTY_BASIC), 401, "UNAUTHORIZED")
    token = make_token(locked, "ux-fresh", "pull")
    assert_version_check(v2(locked, auth=basic("ux-fresh", token)))
    error = assert_oci_error(
        v2(locked, "/v2/a/manifests/b", auth=basic("ux-fresh", token)), 404, "NAME_UNKNOWN"
    )
    assert error["message"].startswith(NO_REGISTRY_YET)

    domain = fresh_factory(env={"ENTREPOT_SERVER_REGISTRY_DOMAIN": "localhost"})
    assert_version_check(v2(domain, host=f"localhost:{domain.port}"))
    error = assert_oci_error(
        v2(domain, host=f"nosuchregistry.localhost:{domain.port}"), 404, "NAME_UNKNOWN"
    )
    assert "'nosuchregistry' does not exist" in error["message"], error


# -- 3. what the cache holds ----------------------------------------------------------------------
async def test_content_counts(index: SqlContentIndex, reg: int, store: SqlResourceStore) -> None:
    """On SQLite and PostgreSQL: repositories that hold a manifest (not ones a failed fill
    left empty), manifests per repository, tags, blobs once each with their total size, over
    every registry of the server."""
    zero = {"repositories": 0, "manifests": 0, "tags": 0, "blobs": 0, "blob_bytes": 0}
    assert await index.counts() == zero
    await index.ensure_repository(reg, "empty")  # a fill that never stored a manifest
    assert await index.counts() == zero
    other = await add_registry(store, "other-registry")
    layers = (BlobRef(digest("layer"), 1000), BlobRef(digest("config"), 24))
    repositories = [
        (await index.ensure_repository(reg, "app")).id,
        (await index.ensure_repository(other, "app")).id,
    ]
    for ref in layers:
        await index.put_blob(ref.digest, ref.size, None)
        await index.put_blob(ref.digest, ref.size, None)  # again: still one blob
    for repository in repositories:
        await index.put_manifest(manifest(repository, 1, layers))
        await index.put_tag(repository, "v1", digest(1), NOW)
    await index.put_tag(repositories[0], "latest", digest(1), NOW)
    assert await index.counts() == {
        "repositories": 2,
        "manifests": 2,
        "tags": 3,
        "blobs": 2,
        "blob_bytes": 1024,
    }


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_status_counts_the_cache(
    kind: str,
    server_factory: Callable[..., InProcessServer],
    open_registry: Registry,
    request: pytest.FixtureRequest,
) -> None:
    """After pulls through two rules of one image, ``GET /entrepot/status`` and ``entrepot
    status`` count its repositories, manifests and tags per repository, and its blobs once
    (with their total size), and say where the content store is."""
    extra = f'\n[upstreams."docker.io"]\nurl = "{open_registry.url}"\n'
    if kind == "postgresql":
        extra += f'[database]\nurl = "{request.getfixturevalue("postgres_database")}"\n'
    server = server_factory(extra=extra)
    push_test_image(open_registry, "library/counted", "v1")
    image = open_registry.images[("library/counted", "v1")]
    put_rule(server, "hub-counted", "docker.io/library/counted", "counted")
    put_rule(server, "hub-also", "docker.io/library/counted", "also/counted")

    def status() -> dict[str, object]:
        response = requests.get(
            f"{server.url}/entrepot/status", headers=server.headers(), timeout=30
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    empty = status()
    assert empty["cache"] == {
        "repositories": 0,
        "manifests": 0,
        "tags": 0,
        "blobs": 0,
        "blobBytes": 0,
    }
    assert empty["storage"] == {"driver": "filesystem", "root": str(server.data_dir / "content")}
    assert empty["database"] == kind and empty["registries"] == 1 and empty["cacheRules"] == 2

    for repository in ("counted", "also/counted"):
        pulled = v2(server, f"/v2/{repository}/manifests/v1")
        assert pulled.status_code == 200 and pulled.content == image.manifest
        for blob_digest in (image.config_digest, image.layer_digest):
            blob = v2(server, f"/v2/{repository}/blobs/{blob_digest}")
            assert blob.status_code == 200 and blob.content == image.blobs[blob_digest]
    size = len(image.blobs[image.config_digest]) + len(image.blobs[image.layer_digest])
    expected = {"repositories": 2, "manifests": 2, "tags": 2, "blobs": 2, "blobBytes": size}
    assert status()["cache"] == expected
    shown = json.loads(ok(cli("status", env=env_of(server))))
    assert shown["cache"] == expected
    assert shown["storage"] == empty["storage"]
    table = ok(cli("status", "-o", "table", env=env_of(server)))
    assert re.search(rf"\nCached blob size +{size} B \({size} bytes\)\n", table), table
