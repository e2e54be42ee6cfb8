"""Real clients pulling through entrepot: containerd's ``ctr`` with entrepot as a mirror in
``hosts.toml``, the ``oras`` Python client, ``skopeo`` with tokens and with a large layer, and
rules whose credential sets log in to private upstreams (htpasswd and token auth).

Upstreams are Debian's ``docker-registry`` on 127.0.0.1 (``tests/registries.py``); no test
reaches the internet: ``docker.io`` is an ``[upstreams."docker.io"]`` entry pointing at a
loopback registry. Upstream requests are counted, and their clients told apart by
``User-Agent``, from the upstream's access log.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import InProcessServer, ServerProcess, _new_server
from tests.containerd import Containerd, start_containerd, write_hosts
from tests.registries import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Registry,
    free_port,
    push_test_image,
    require_tools,
    self_signed,
    start_registry,
)
from tests.test_credential_health import (
    ALLOW_LOOPBACK_REALMS,
    Api,
    assert_healthy,
    create,
    kv,
    upstreams,
    validate,
)
from tests.test_pull_cache import upstream_requests, wait_for_log
from tests.test_registry_routes import NO_ANONYMOUS, basic, make_token, put_rule, skopeo

CACHE = "X-Entrepot-Cache"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


# -- shared fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """One containerd daemon for the session (namespaces keep the tests' images apart)."""
    daemon = start_containerd(tmp_path_factory.mktemp("containerd"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An open upstream registry for the whole module (each test pushes images of its own)."""
    registry = start_registry(tmp_path_factory.mktemp("upstream"), "open")
    yield registry
    registry.stop()


def upstream_config(upstream: Registry) -> str:
    """Config TOML: ``upstream``'s login server and ``docker.io`` both served by ``upstream``."""
    return (
        f'\n[upstreams."{upstream.login_server}"]\nurl = "{upstream.url}"\n'
        f'\n[upstreams."docker.io"]\nurl = "{upstream.url}"\n'
    )


def start_entrepot(
    parent: Path, upstream: Registry, env: dict[str, str] | None = None
) -> InProcessServer:
    """A server with rule ``upstream-lib`` (``<upstream>/lib/*`` -> ``up/*``) and
    ``hub-library`` (``docker.io/library/*`` -> ``hub/*``, Docker Hub being ``upstream``)."""
    server = _new_server(
        InProcessServer, parent, name="entrepot", extra=upstream_config(upstream), env=env or {}
    )
    server.start()
    put_rule(server, "upstream-lib", f"{upstream.login_server}/lib/*", "up/*")
    put_rule(server, "hub-library", "docker.io/library/*", "hub/*")
    return server


@pytest.fixture(scope="module")
def entrepot(
    tmp_path_factory: pytest.TempPathFactory, upstream: Registry
) -> Iterator[InProcessServer]:
    """entrepot with anonymous pull (it listens on loopback) in front of ``upstream``."""
    server = start_entrepot(tmp_path_factory.mktemp("open"), upstream)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def locked(
    tmp_path_factory: pytest.TempPathFactory, upstream: Registry
) -> Iterator[InProcessServer]:
    """entrepot with ``[registry] anonymous_pull = false`` in front of ``upstream``."""
    server = start_entrepot(tmp_path_factory.mktemp("locked"), upstream, env=NO_ANONYMOUS)
    yield server
    server.stop()


class HttpsProcess(ServerProcess):
    """An ``entrepot serve`` process serving TLS on 127.0.0.1 (its ``url`` is ``https://``)."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


# -- helpers ------------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def unique(stem: str) -> str:
    """A repository name no other test (or earlier run against the same upstream) uses."""
    return f"{stem}-{secrets.token_hex(3)}"


def upstream_agents(upstream: Registry, method: str, path: str) -> list[str]:
    """The ``User-Agent`` of every ``method path`` request in the upstream's access log."""
    pattern = re.compile(
        rf'"{method} {re.escape(path)}(?:\?[^ ]*)? HTTP/1\.1" \d+ \d+ "[^"]*" "([^"]*)"'
    )
    return pattern.findall(upstream.log())


def assert_fetched_once_by_entrepot(upstream: Registry, repository: str, blobs: list[str]) -> None:
    """Each blob was fetched from ``upstream`` exactly once, and only ever by entrepot."""
    time.sleep(0.2)  # the access log is written after the answer
    for blob in blobs:
        path = f"/v2/{repository}/blobs/{blob}"
        assert wait_for_log(upstream, "GET", path, 1) == 1, upstream.log()[-2000:]
        agents = upstream_agents(upstream, "GET", path)
        assert agents and all(agent.startswith("entrepot") for agent in agents), agents


# -- containerd ---------------------------------------------------------------------------------


def test_ctr_pulls_through_entrepot_as_the_mirror_of_a_registry(
    containerd: Containerd, entrepot: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    """containerd asks the mirror of ``hosts.toml`` with ``?ns=<registry>``; entrepot resolves
    ``<registry>/<name>`` by the rules' sources, so the node pulls the upstream's own name (no
    rule has the target ``lib/...``: only mirror mode can answer for it)."""
    repo = unique("lib/ctr")
    digest = push_test_image(upstream, repo, "v1")
    image = upstream.images[(repo, "v1")]
    hosts = tmp_path / "certs.d"
    write_hosts(hosts, upstream.login_server, server=upstream.url, mirror=entrepot.url)
    reference = f"{upstream.login_server}/{repo}:v1"

    done = containerd.pull(reference, hosts_dir=hosts, namespace="mirror")
    assert done.returncode == 0, done.stderr + containerd.log()[-3000:]
    listed = containerd.ctr("images", "ls", namespace="mirror")
    assert reference in listed.stdout and digest in listed.stdout, listed.stdout
    assert containerd.content(digest, namespace="mirror") == image.manifest
    for blob in (image.config_digest, image.layer_digest):
        assert containerd.content(blob, namespace="mirror") == image.blobs[blob]
    assert_fetched_once_by_entrepot(upstream, repo, [image.config_digest, image.layer_digest])
    tag = f"/v2/{repo}/manifests/v1"
    assert all(agent.startswith("entrepot") for agent in upstream_agents(upstream, "GET", tag))
    manifest_gets = upstream_requests(upstream, "GET", tag)
    assert manifest_gets >= 1
    # what containerd pulled is in entrepot's cache, under the rule's target
    target = repo.replace("lib/", "up/", 1)
    blob = requests.get(f"{entrepot.url}/v2/{target}/blobs/{image.layer_digest}", timeout=30)
    assert blob.status_code == 200 and blob.headers[CACHE] == "hit"

    again = containerd.pull(reference, hosts_dir=hosts, namespace="mirror-again")
    assert again.returncode == 0, again.stderr
    time.sleep(0.2)
    assert upstream_requests(upstream, "GET", tag) == manifest_gets  # the tag is fresh
    assert_fetched_once_by_entrepot(upstream, repo, [image.config_digest, image.layer_digest])


def test_ctr_uses_entrepot_as_its_docker_hub_mirror_with_plain_names(
    containerd: Containerd, entrepot: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    """The headline set-up: ``certs.d/docker.io/hosts.toml`` names entrepot as the mirror, and
    ``ctr images pull docker.io/library/NAME:TAG`` goes through the rule ``docker.io/library/*``
    (Docker Hub here is a loopback registry, also the ``server`` containerd falls back to)."""
    name = unique("ctrhub")
    digest = push_test_image(upstream, f"library/{name}", "3.20")
    image = upstream.images[(f"library/{name}", "3.20")]
    hosts = tmp_path / "certs.d"
    write_hosts(hosts, "docker.io", server=upstream.url, mirror=entrepot.url)

    done = containerd.pull(f"docker.io/library/{name}:3.20", hosts_dir=hosts, namespace="hub")
    assert done.returncode == 0, done.stderr + containerd.log()[-3000:]
    listed = containerd.ctr("images", "ls", namespace="hub")
    assert f"docker.io/library/{name}:3.20" in listed.stdout and digest in listed.stdout
    assert (
        containerd.content(image.layer_digest, namespace="hub") == image.blobs[image.layer_digest]
    )
    assert_fetched_once_by_entrepot(
        upstream, f"library/{name}", [image.config_digest, image.layer_digest]
    )
    cached = requests.get(f"{entrepot.url}/v2/hub/{name}/manifests/{digest}", timeout=30)
    assert cached.status_code == 200 and cached.headers[CACHE] == "hit"
    assert cached.content == image.manifest


def test_ctr_falls_back_to_the_registry_for_what_no_rule_covers(
    containerd: Containerd, entrepot: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    """A repository no rule covers is ``NAME_UNKNOWN`` at the mirror: containerd then asks the
    registry itself (``server``), so a mirror that covers part of a registry breaks nothing."""
    repo = unique("other/app")
    digest = push_test_image(upstream, repo, "v1")
    image = upstream.images[(repo, "v1")]
    hosts = tmp_path / "certs.d"
    write_hosts(hosts, upstream.login_server, server=upstream.url, mirror=entrepot.url)
    mirror = requests.get(
        f"{entrepot.url}/v2/{repo}/manifests/v1", params={"ns": upstream.login_server}, timeout=30
    )
    assert mirror.status_code == 404 and mirror.json()["errors"][0]["code"] == "NAME_UNKNOWN"

    done = containerd.pull(f"{upstream.login_server}/{repo}:v1", hosts_dir=hosts, namespace="other")
    assert done.returncode == 0, done.stderr
    assert containerd.content(digest, namespace="other") == image.manifest
    time.sleep(0.2)
    agents = upstream_agents(upstream, "GET", f"/v2/{repo}/blobs/{image.layer_digest}")
    assert agents and all(agent.startswith("containerd") for agent in agents), agents


def test_ctr_pulls_a_docker_schema_2_image_through_the_mirror(
    containerd: Containerd, entrepot: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    """A Docker schema 2 manifest (pushed with ``skopeo copy --format v2s2``) reaches containerd
    byte for byte, with its own media type."""
    repo = unique("lib/docker")
    push_test_image(upstream, repo, "oci")
    converted = skopeo(
        "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
        "--dest-tls-verify=false", "--src-no-creds", "--dest-no-creds", "--format", "v2s2",
        f"docker://{upstream.login_server}/{repo}:oci",
        f"docker://{upstream.login_server}/{repo}:v1", home=tmp_path,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    direct = requests.get(
        f"{upstream.url}/v2/{repo}/manifests/v1",
        headers={"Accept": DOCKER_MANIFEST},
        timeout=30,
    )
    assert direct.headers["Content-Type"] == DOCKER_MANIFEST
    digest = direct.headers["Docker-Content-Digest"]
    layers = [layer["digest"] for layer in direct.json()["layers"]]
    hosts = tmp_path / "certs.d"
    write_hosts(hosts, upstream.login_server, server=upstream.url, mirror=entrepot.url)

    done = containerd.pull(f"{upstream.login_server}/{repo}:v1", hosts_dir=hosts, namespace="v2s2")
    assert done.returncode == 0, done.stderr + containerd.log()[-3000:]
    assert containerd.content(digest, namespace="v2s2") == direct.content
    target = repo.replace("lib/", "up/", 1)
    cached = requests.get(f"{entrepot.url}/v2/{target}/manifests/{digest}", timeout=30)
    assert cached.headers[CACHE] == "hit" and cached.headers["Content-Type"] == DOCKER_MANIFEST
    agents = upstream_agents(upstream, "GET", f"/v2/{repo}/manifests/v1")
    assert "entrepot" in agents and not any(a.startswith("containerd") for a in agents), agents
    assert_fetched_once_by_entrepot(upstream, repo, layers)


@pytest.mark.slow  # the upstream's refused connections are retried with backoff
def test_ctr_pulls_a_cached_image_while_the_upstream_is_down(
    containerd: Containerd,
    registry_factory: Callable[..., Registry],
    server_factory: Callable[..., InProcessServer],
    tmp_path: Path,
) -> None:
    """A node pulls an image that entrepot has cached after the upstream went away (and after
    the tag's TTL): entrepot answers ``stale``, containerd takes it; an image it has not cached
    fails."""
    gone = registry_factory("open")
    digest = push_test_image(gone, "lib/kept", "v1")
    push_test_image(gone, "lib/never", "v1")
    image = gone.images[("lib/kept", "v1")]
    server = server_factory(upstream_config(gone) + "\n[cache]\ntag_ttl_seconds = 0\n")
    put_rule(server, "upstream-lib", f"{gone.login_server}/lib/*", "up/*")
    hosts = tmp_path / "certs.d"
    write_hosts(hosts, gone.login_server, server=gone.url, mirror=server.url)
    first = containerd.pull(f"{gone.login_server}/lib/kept:v1", hosts_dir=hosts)
    assert first.returncode == 0, first.stderr

    gone.stop()
    stale = requests.head(f"{server.url}/v2/up/kept/manifests/v1", timeout=60)
    assert stale.status_code == 200 and stale.headers[CACHE] == "stale"
    again = containerd.pull(f"{gone.login_server}/lib/kept:v1", hosts_dir=hosts, namespace="down")
    assert again.returncode == 0, again.stderr + server.log()[-3000:]
    assert containerd.content(digest, namespace="down") == image.manifest
    never = containerd.pull(f"{gone.login_server}/lib/never:v1", hosts_dir=hosts)
    assert never.returncode != 0


@pytest.mark.slow
def test_ctr_pulls_from_entrepot_over_https_trusting_its_ca(
    containerd: Containerd, upstream: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """entrepot serving TLS (``tls_cert``/``tls_key``, a real ``entrepot serve`` process): the
    mirror host is ``https://``, and hosts.toml names the CA to trust (``ca = ...``)."""
    keys = self_signed("entrepot mirror", hosts=("127.0.0.1",))
    cert, key = keys.write(tmp_path, "mirror")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    server = _new_server(
        HttpsProcess, tmp_path, name="tls", extra=upstream_config(upstream),
        env={"ENTREPOT_SERVER_TLS_CERT": str(cert), "ENTREPOT_SERVER_TLS_KEY": str(key)},
    )  # fmt: skip
    server.start()
    try:
        put_rule(server, "upstream-lib", f"{upstream.login_server}/lib/*", "up/*")
        repo = unique("lib/tls")
        digest = push_test_image(upstream, repo, "v1")
        image = upstream.images[(repo, "v1")]
        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: only the mirror can answer

        untrusted = tmp_path / "untrusted"
        write_hosts(untrusted, upstream.login_server, server=closed, mirror=server.url)
        refused = containerd.pull(f"{upstream.login_server}/{repo}:v1", hosts_dir=untrusted)
        assert refused.returncode != 0
        assert "certificate" in refused.stderr, refused.stderr

        hosts = tmp_path / "certs.d"
        write_hosts(hosts, upstream.login_server, server=closed, mirror=server.url, ca=cert)
        done = containerd.pull(
            f"{upstream.login_server}/{repo}:v1", hosts_dir=hosts, namespace="tls"
        )
        assert done.returncode == 0, done.stderr + server.log()[-3000:]
        assert containerd.content(digest, namespace="tls") == image.manifest
        assert_fetched_once_by_entrepot(upstream, repo, [image.config_digest, image.layer_digest])
    finally:
        server.stop()


def test_ctr_with_a_token_when_anonymous_pull_is_off(
    containerd: Containerd, locked: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    """hosts.toml carries ``Authorization: Basic NAME:TOKEN`` for the mirror (or ``ctr --user``
    answers entrepot's Basic challenge); without it the mirror refuses and nothing is pulled
    through it."""
    token = make_token(locked, "ctr-node", "pull")
    repo = unique("lib/ctrauth")
    digest = push_test_image(upstream, repo, "v1")
    image = upstream.images[(repo, "v1")]
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: only the mirror can answer

    without = tmp_path / "without"
    write_hosts(without, upstream.login_server, server=closed, mirror=locked.url)
    refused = containerd.pull(f"{upstream.login_server}/{repo}:v1", hosts_dir=without)
    assert refused.returncode != 0
    assert "401" in refused.stderr or "unauthorized" in refused.stderr.lower(), refused.stderr

    wrong = tmp_path / "wrong"
    write_hosts(
        wrong, upstream.login_server, server=closed, mirror=locked.url,
        header={"Authorization": basic("ctr-node", "not-the-token")},
    )  # fmt: skip
    assert containerd.pull(f"{upstream.login_server}/{repo}:v1", hosts_dir=wrong).returncode != 0
    assert upstream_requests(upstream, "GET", f"/v2/{repo}/manifests/v1") == 0

    with_header = tmp_path / "header"
    write_hosts(
        with_header, upstream.login_server, server=closed, mirror=locked.url,
        header={"Authorization": basic("ctr-node", token)},
    )  # fmt: skip
    done = containerd.pull(
        f"{upstream.login_server}/{repo}:v1", hosts_dir=with_header, namespace="token"
    )
    assert done.returncode == 0, done.stderr + containerd.log()[-3000:]
    assert containerd.content(digest, namespace="token") == image.manifest
    assert (
        containerd.content(image.layer_digest, namespace="token") == image.blobs[image.layer_digest]
    )
    assert_fetched_once_by_entrepot(upstream, repo, [image.config_digest, image.layer_digest])

    # ctr --user: containerd answers entrepot's `WWW-Authenticate: Basic` challenge
    repo2 = unique("lib/ctruser")
    digest2 = push_test_image(upstream, repo2, "v1")
    user = containerd.pull(
        f"{upstream.login_server}/{repo2}:v1", hosts_dir=without, namespace="user",
        options=["--user", f"ctr-node:{token}"],
    )  # fmt: skip
    assert user.returncode == 0, user.stderr
    assert containerd.content(digest2, namespace="user") == upstream.images[(repo2, "v1")].manifest


OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _canonical(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class PlatformImage:
    """One child of a :class:`MultiPlatformImage`: its manifest, config and layer digests."""

    manifest: str
    config: str
    layer: str


@dataclass
class MultiPlatformImage:
    """An OCI index pushed by :func:`push_multiplatform`; ``blobs`` holds every manifest and
    blob by digest."""

    index: str
    platforms: dict[str, PlatformImage]
    blobs: dict[str, bytes]


def push_multiplatform(upstream: Registry, repo: str, tag: str, into: Path) -> MultiPlatformImage:
    """Push an OCI index of a linux/amd64 and a linux/arm64 image (one small gzip layer each,
    holding ``platform.txt``) to ``upstream`` as ``repo:tag`` with ``skopeo copy --all``."""
    blobs: dict[str, bytes] = {}
    platforms: dict[str, PlatformImage] = {}
    entries = []
    for arch in ("amd64", "arm64"):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            content = f"{repo} for linux/{arch}\n".encode()
            info = tarfile.TarInfo("platform.txt")
            info.size, info.mtime, info.mode = len(content), 0, 0o644
            tar.addfile(info, io.BytesIO(content))
        layer = gzip.compress(raw.getvalue(), mtime=0)
        config = _canonical(
            {"architecture": arch, "os": "linux", "config": {},
             "rootfs": {"type": "layers", "diff_ids": [sha256(raw.getvalue())]}}
        )  # fmt: skip
        manifest = _canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                     "digest": sha256(layer), "size": len(layer)}
                ],
            }
        )  # fmt: skip
        for data in (layer, config, manifest):
            blobs[sha256(data)] = data
        platforms[arch] = PlatformImage(sha256(manifest), sha256(config), sha256(layer))
        entries.append(
            {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
             "platform": {"architecture": arch, "os": "linux"}}
        )  # fmt: skip
    index = _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    blobs[sha256(index)] = index
    blob_dir = into / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    for digest, data in blobs.items():
        (blob_dir / digest.removeprefix("sha256:")).write_bytes(data)
    (into / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (into / "index.json").write_text(
        json.dumps(
            {"schemaVersion": 2, "manifests": [
                {"mediaType": OCI_INDEX, "digest": sha256(index), "size": len(index),
                 "annotations": {"org.opencontainers.image.ref.name": tag}}
            ]}
        )
    )  # fmt: skip
    pushed = skopeo(
        "--insecure-policy", "copy", "--all", "--quiet", "--preserve-digests",
        "--dest-tls-verify=false", "--dest-no-creds", f"oci:{into}:{tag}",
        f"docker://{upstream.login_server}/{repo}:{tag}", home=into,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    return MultiPlatformImage(sha256(index), platforms, blobs)


def test_ctr_pulls_its_platform_of_a_multi_platform_image(
    containerd: Containerd, entrepot: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    """ctr resolves the index through the mirror and fetches only its own platform's manifest
    and blobs; ``--platform linux/arm64`` then fetches the other child; a pull by the index
    digest makes no upstream request."""
    repo = unique("lib/multi")
    image = push_multiplatform(upstream, repo, "v1", tmp_path / "layout")
    amd64, arm64, blobs = image.platforms["amd64"], image.platforms["arm64"], image.blobs
    hosts = tmp_path / "certs.d"
    write_hosts(hosts, upstream.login_server, server=upstream.url, mirror=entrepot.url)
    reference = f"{upstream.login_server}/{repo}:v1"

    done = containerd.pull(reference, hosts_dir=hosts, namespace="multi",
                           options=["--platform", "linux/amd64"])  # fmt: skip
    assert done.returncode == 0, done.stderr + containerd.log()[-3000:]
    listed = containerd.ctr("images", "ls", namespace="multi")
    assert image.index in listed.stdout, listed.stdout
    for digest in (image.index, amd64.manifest, amd64.config, amd64.layer):
        assert containerd.content(digest, namespace="multi") == blobs[digest]
    assert_fetched_once_by_entrepot(upstream, repo, [amd64.config, amd64.layer])
    for digest in (arm64.config, arm64.layer):
        assert upstream_requests(upstream, "GET", f"/v2/{repo}/blobs/{digest}") == 0
    arm_path = f"/v2/{repo}/manifests/{arm64.manifest}"
    assert upstream_requests(upstream, "GET", arm_path) == 0

    other = containerd.pull(reference, hosts_dir=hosts, namespace="multi-arm",
                            options=["--platform", "linux/arm64"])  # fmt: skip
    assert other.returncode == 0, other.stderr
    for digest in (arm64.manifest, arm64.layer):
        assert containerd.content(digest, namespace="multi-arm") == blobs[digest]
    assert_fetched_once_by_entrepot(upstream, repo, [arm64.config, arm64.layer])
    assert all(a.startswith("entrepot") for a in upstream_agents(upstream, "GET", arm_path))

    requests_before = upstream.log().count('"GET ') + upstream.log().count('"HEAD ')
    by_digest = containerd.pull(f"{upstream.login_server}/{repo}@{image.index}",
                                hosts_dir=hosts, namespace="multi-digest")  # fmt: skip
    assert by_digest.returncode == 0, by_digest.stderr
    time.sleep(0.2)
    after = upstream.log().count('"GET ') + upstream.log().count('"HEAD ')
    assert after == requests_before  # all of it from entrepot's cache


# -- oras ---------------------------------------------------------------------------------------


def oras_push_artifact(
    upstream: Registry, repo: str, tag: str, files: dict[str, bytes], into: Path
) -> str:
    """Push ``files`` (name -> content) as an ORAS artifact to ``upstream`` with the oras client
    itself; returns the manifest digest the upstream reports."""
    import oras.client

    into.mkdir(parents=True)
    paths = []
    for name, content in files.items():
        (into / name).write_bytes(content)
        paths.append(name)
    client = oras.client.OrasClient(hostname=upstream.login_server, insecure=True)
    # oras names each layer after the path it is given: keep the paths relative
    with contextlib.chdir(into):
        response = client.push(target=f"{upstream.login_server}/{repo}:{tag}", files=paths)
    assert response.status_code == 201, response.text
    head = requests.head(
        f"{upstream.url}/v2/{repo}/manifests/{tag}",
        headers={"Accept": OCI_MANIFEST},
        timeout=30,
    )
    return head.headers["Docker-Content-Digest"]


def test_oras_pulls_an_artifact_and_an_image_through_entrepot(
    entrepot: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    import oras.client

    repo = unique("lib/oras")
    files = {"readme.txt": b"pulled through entrepot\n", "data.bin": os.urandom(300_000)}
    digest = oras_push_artifact(upstream, repo, "v1", files, tmp_path / "pushed")
    target = repo.replace("lib/", "up/", 1)
    host = f"127.0.0.1:{entrepot.port}"
    client = oras.client.OrasClient(hostname=host, insecure=True)

    manifest = client.get_manifest(f"{host}/{target}:v1")
    layers = {
        layer["annotations"]["org.opencontainers.image.title"]: layer
        for layer in manifest["layers"]
    }
    assert set(layers) == set(files)
    for name, content in files.items():
        assert layers[name]["digest"] == sha256(content) and layers[name]["size"] == len(content)
    pulled = client.pull(target=f"{host}/{target}:v1", outdir=str(tmp_path / "pulled"))
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for path in pulled:
        assert Path(path).read_bytes() == files[Path(path).name]
    assert_fetched_once_by_entrepot(upstream, repo, [sha256(c) for c in files.values()])
    by_digest = requests.get(f"{entrepot.url}/v2/{target}/manifests/{digest}", timeout=30)
    assert by_digest.status_code == 200 and by_digest.headers[CACHE] == "hit"
    assert by_digest.headers["Docker-Content-Digest"] == digest

    # a container image: oras fetches its layers by digest
    image_repo = unique("lib/orasimg")
    push_test_image(upstream, image_repo, "v1")
    image = upstream.images[(image_repo, "v1")]
    image_target = image_repo.replace("lib/", "up/", 1)
    got = client.get_manifest(f"{host}/{image_target}:v1")
    assert got == json.loads(image.manifest)
    assert got["config"]["mediaType"] == OCI_CONFIG
    out = tmp_path / "layer"
    client.download_blob(f"{host}/{image_target}:v1", image.layer_digest, str(out))
    assert sha256(out.read_bytes()) == image.layer_digest


def test_oras_with_a_token_when_anonymous_pull_is_off(
    locked: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    import oras.client

    token = make_token(locked, "oras-ci", "pull")
    repo = unique("lib/orasauth")
    files = {"a.txt": b"only with a token\n"}
    oras_push_artifact(upstream, repo, "v1", files, tmp_path / "pushed")
    host = f"127.0.0.1:{locked.port}"
    target = f"{host}/{repo.replace('lib/', 'up/', 1)}:v1"

    wrong = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    wrong.auth.set_basic_auth("oras-ci", "not-the-token")
    with pytest.raises(ValueError, match="Unauthorized"):
        wrong.pull(target=target, outdir=str(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    client.auth.set_basic_auth("oras-ci", token)
    pulled = client.pull(target=target, outdir=str(tmp_path / "pulled"))
    assert [Path(p).read_bytes() for p in pulled] == [files["a.txt"]]


# -- skopeo -------------------------------------------------------------------------------------


def test_skopeo_copy_with_a_pull_token(
    locked: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    """``anonymous_pull = false``: ``skopeo copy --src-creds NAME:TOKEN`` pulls the image; a
    wrong token or none is a clear 401 and nothing is fetched upstream."""
    require_tools("skopeo")
    token = make_token(locked, "skopeo-ci", "pull")
    repo = unique("lib/skopeo")
    digest = push_test_image(upstream, repo, "v1")
    image = upstream.images[(repo, "v1")]
    source = f"docker://127.0.0.1:{locked.port}/{repo.replace('lib/', 'up/', 1)}:v1"

    def copy(*creds: str, into: str) -> tuple[int, str]:
        done = skopeo(
            "--insecure-policy", "copy", "--src-tls-verify=false", *creds, source,
            f"dir:{tmp_path / into}", home=tmp_path,
        )  # fmt: skip
        return done.returncode, done.stderr

    for creds in (["--src-creds", "skopeo-ci:wrong-token"], ["--src-no-creds"]):
        code, stderr = copy(*creds, into="refused")
        assert code != 0
        assert "401" in stderr or "unauthorized" in stderr.lower(), stderr
        assert token not in stderr
    assert upstream_requests(upstream, "GET", f"/v2/{repo}/manifests/v1") == 0

    code, stderr = copy("--src-creds", f"skopeo-ci:{token}", into="pulled")
    assert code == 0, stderr
    pulled = tmp_path / "pulled"
    assert (pulled / "manifest.json").read_bytes() == image.manifest
    assert sha256((pulled / "manifest.json").read_bytes()) == digest
    for blob in (image.config_digest, image.layer_digest):
        assert sha256((pulled / blob.removeprefix("sha256:")).read_bytes()) == blob
    assert_fetched_once_by_entrepot(upstream, repo, [image.config_digest, image.layer_digest])

    # `skopeo login` (what `docker login` does), then a pull of a Docker Hub image by
    # entrepot's name, as `docker pull 127.0.0.1:PORT/hub/NAME:TAG` asks for it
    name = unique("loggedin")
    hub_digest = push_test_image(upstream, f"library/{name}", "3.20")
    authfile = tmp_path / "auth.json"
    address = f"127.0.0.1:{locked.port}"
    login = skopeo(
        "login", "--tls-verify=false", "--authfile", str(authfile), "-u", "skopeo-ci",
        "-p", token, address, home=tmp_path,
    )  # fmt: skip
    assert login.returncode == 0 and "Login Succeeded" in login.stdout, login.stderr
    hub = tmp_path / "hub"
    done = skopeo(
        "--insecure-policy", "copy", "--src-tls-verify=false", "--authfile", str(authfile),
        f"docker://{address}/hub/{name}:3.20", f"dir:{hub}", home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sha256((hub / "manifest.json").read_bytes()) == hub_digest


def test_docker_registry_mirrors_names_are_rule_targets(
    server_factory: Callable[..., InProcessServer], upstream: Registry, tmp_path: Path
) -> None:
    """dockerd's ``registry-mirrors`` asks the mirror for ``library/NAME`` without ``ns``: a
    rule whose target is ``library/*`` serves it (pulled here with skopeo by that same path),
    and ``HEAD`` says where the answer came from (the README's ``curl -sI``)."""
    server = server_factory(upstream_config(upstream))
    put_rule(server, "hub-library", "docker.io/library/*", "hub/*")  # the quick start's
    put_rule(server, "hub-mirror", "docker.io/library/*", "library/*")  # the README's addition
    name = unique("mirrored")
    digest = push_test_image(upstream, f"library/{name}", "3.20")
    image = upstream.images[(f"library/{name}", "3.20")]
    url = f"{server.url}/v2/library/{name}/manifests/3.20"
    cold = requests.head(url, timeout=30)
    assert cold.status_code == 200 and cold.headers[CACHE] == "miss"
    assert cold.headers["Docker-Content-Digest"] == digest
    into = tmp_path / "pulled"
    done = skopeo(
        "--insecure-policy", "copy", "--src-tls-verify=false", "--src-no-creds",
        f"docker://127.0.0.1:{server.port}/library/{name}:3.20", f"dir:{into}", home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (into / "manifest.json").read_bytes() == image.manifest
    warm = requests.head(url, timeout=30)
    assert warm.status_code == 200 and warm.headers[CACHE] == "hit"
    assert warm.headers["Docker-Content-Digest"] == digest
    assert_fetched_once_by_entrepot(
        upstream, f"library/{name}", [image.config_digest, image.layer_digest]
    )
    hub = requests.get(f"{server.url}/v2/hub/{name}/manifests/3.20", timeout=30)
    assert hub.status_code == 200 and hub.content == image.manifest  # the other rule still works
    ns = requests.get(url, params={"ns": "docker.io"}, timeout=30)  # and mirror mode too
    assert ns.status_code == 200 and ns.content == image.manifest


# -- a large layer ------------------------------------------------------------------------------

LARGE = 100 * 1024 * 1024 + 12345  # a little over 100 MiB


def write_random_tar(path: Path, size: int) -> tuple[str, int]:
    """Write an uncompressed tar holding one file, ``big.bin``, of ``size`` random bytes (one
    random MiB, each copy salted with its index, so no two MiB are equal), hashing as it
    writes; (digest, size) of the tar."""
    block = os.urandom(1 << 20)
    hasher = hashlib.sha256()
    info = tarfile.TarInfo("big.bin")
    info.size = size
    info.mode = 0o644
    with path.open("wb") as out:

        def put(data: bytes) -> None:
            hasher.update(data)
            out.write(data)

        put(info.tobuf(format=tarfile.PAX_FORMAT))
        left, index = size, 0
        while left:
            chunk = (index.to_bytes(8, "big") + block[8:])[:left]
            put(chunk)
            left -= len(chunk)
            index += 1
        put(bytes(-size % tarfile.BLOCKSIZE) + bytes(2 * tarfile.BLOCKSIZE))
        put(bytes(-out.tell() % tarfile.RECORDSIZE))
        total = out.tell()
    return "sha256:" + hasher.hexdigest(), total


def build_large_layout(directory: Path, tag: str, size: int) -> tuple[str, str, int]:
    """An OCI layout of one image whose only layer is an uncompressed tar holding one file of
    ``size`` random bytes, written to disk as it is made; (manifest digest, layer digest,
    layer size)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_path = directory / "layer.tar"
    layer_digest, layer_size = write_random_tar(layer_path, size)
    layer_path.rename(blobs / layer_digest.removeprefix("sha256:"))
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {},
         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    for data in (config, manifest):
        (blobs / sha256(data).removeprefix("sha256:")).write_bytes(data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
             "annotations": {"org.opencontainers.image.ref.name": tag}}
        ],
    }  # fmt: skip
    (directory / "index.json").write_text(json.dumps(index))
    return sha256(manifest), layer_digest, layer_size


@pytest.mark.slow
def test_a_large_layer_is_pulled_cold_with_one_upstream_get(
    entrepot: InProcessServer, upstream: Registry, tmp_path: Path
) -> None:
    require_tools("skopeo")
    repo = unique("lib/large")
    layout = tmp_path / "layout"
    digest, layer, size = build_large_layout(layout, "v1", LARGE)
    assert size > 100 * 1024 * 1024
    pushed = skopeo(
        "--insecure-policy", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
        "--dest-no-creds", f"oci:{layout}:v1", f"docker://{upstream.login_server}/{repo}:v1",
        home=tmp_path,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    (layout / "blobs" / "sha256" / layer.removeprefix("sha256:")).unlink()  # disk: one copy less

    into = tmp_path / "pulled"
    started = time.monotonic()
    done = skopeo(
        "--insecure-policy", "copy", "--src-tls-verify=false", "--src-no-creds",
        f"docker://127.0.0.1:{entrepot.port}/{repo.replace('lib/', 'up/', 1)}:v1", f"dir:{into}",
        home=tmp_path,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr + entrepot.log()[-3000:]
    assert sha256((into / "manifest.json").read_bytes()) == digest
    pulled = into / layer.removeprefix("sha256:")
    assert pulled.stat().st_size == size
    hasher = hashlib.sha256()
    with pulled.open("rb") as f:
        while chunk := f.read(1 << 22):
            hasher.update(chunk)
    assert "sha256:" + hasher.hexdigest() == layer
    assert_fetched_once_by_entrepot(upstream, repo, [layer])
    print(f"cold pull of a {size / 2**20:.0f} MiB layer through entrepot: {elapsed:.2f} s")


# -- private upstreams through a credential set -------------------------------------------------


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_skopeo_pulls_a_private_upstream_through_a_rule_with_a_credential_set(
    kind: str,
    registry_factory: Callable[..., Registry],
    server_factory: Callable[..., InProcessServer],
    tmp_path: Path,
) -> None:
    """An htpasswd upstream whose credentials are in the built-in vault, and a token-auth
    upstream whose credentials are ``file:///`` secrets: anonymous clients pull through the
    rule, entrepot logs in upstream with the set's credentials."""
    require_tools("skopeo")
    private = registry_factory(kind)
    repo = "lib/private"
    digest = push_test_image(private, repo, "v1")
    image = private.images[(repo, "v1")]
    direct = skopeo(
        "inspect", "--tls-verify=false", "--no-creds", f"docker://{private.login_server}/{repo}:v1",
        home=tmp_path,
    )  # fmt: skip
    assert direct.returncode != 0  # the upstream is private indeed

    secrets_dir = tmp_path / "secrets"
    extra = upstreams(private.login_server)
    if kind == "token":
        extra += ALLOW_LOOPBACK_REALMS  # the token realm is on loopback too
        extra += f'\n[secrets]\nfile_enabled = true\nfile_roots = ["{secrets_dir}"]\n'
    server = server_factory(extra)
    if kind == "basic":
        api = Api(server)
        api.vault("pullvault")
        api.secret("pullvault", "user", private.username)
        api.secret("pullvault", "pass", private.password)
        username_id, password_id = kv("pullvault", "user"), kv("pullvault", "pass")
    else:
        secrets_dir.mkdir(mode=0o700)
        for name, value in (("user", private.username), ("pass", private.password)):
            (secrets_dir / name).write_text(value + "\n")
            (secrets_dir / name).chmod(0o600)
        username_id, password_id = (f"file://{secrets_dir / n}" for n in ("user", "pass"))
    with server.client() as client:
        created = create(client, "private-creds", private.login_server, username_id, password_id)
        if kind == "basic":
            api.grant("pullvault", created.identity.principal_id)
        assert_healthy(validate(client, "private-creds"))
    response = requests.put(
        f"{server.url}{server.registry_path}/cacheRules/private-rule",
        params={"api-version": "2025-04-01"},
        json={
            "properties": {
                "sourceRepository": f"{private.login_server}/lib/*",
                "targetRepository": "priv/*",
                "credentialSetResourceId": f"{server.registry_path}/credentialSets/private-creds",
            }
        },
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text

    into = tmp_path / "pulled"
    done = skopeo(
        "--insecure-policy", "copy", "--src-tls-verify=false", "--src-no-creds",
        f"docker://127.0.0.1:{server.port}/priv/private:v1", f"dir:{into}", home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + server.log()[-3000:]
    assert (into / "manifest.json").read_bytes() == image.manifest
    assert sha256(image.manifest) == digest
    for blob in (image.config_digest, image.layer_digest):
        assert sha256((into / blob.removeprefix("sha256:")).read_bytes()) == blob
    assert_fetched_once_by_entrepot(private, repo, [image.config_digest, image.layer_digest])
    if kind == "token":
        assert private.token_server is not None
        granted = [
            hit
            for hit in private.token_server.hits
            if hit.username == private.username and hit.status == 200
            and f"repository:{repo}:pull" in hit.scopes
        ]  # fmt: skip
        assert granted, private.token_server.hits
    assert private.password not in server.log()
