"""Synthetic images pushed to a real upstream (a :class:`tests.registries.Registry`) over its
push API, with ``requests``: small, random and real enough to be pulled by any client.

Every layer is a gzipped tar holding one file of random bytes (so containerd can unpack it),
and every config names its ``diff_ids``; nothing is deterministic unless ``seed`` is given.
What a builder returns, :class:`Pushed`, holds the exact manifest bytes, digest and media type
as the upstream stores them, its blobs by digest and, for an index, its children.

* :func:`image`: one image manifest, OCI (default) or Docker schema 2 (``docker=True``), for one
  platform, pushed by tag (or by digest when ``tag`` is ``None``);
* :func:`oci_index` / :func:`docker_list`: an OCI image index / a Docker manifest list of one
  image per platform (default ``linux/amd64`` and ``linux/arm64``);
* :func:`artifact`: an OCI manifest with ``artifactType`` and ``subject`` (a referrer of
  another manifest), pushed by digest, and by default also listed in the OCI 1.1 referrers
  tag-schema index (tag ``sha256-<hex of the subject>``), as clients do with a registry that
  has no referrers API (distribution 2.8);
* :func:`push_blob`, :func:`push_manifest`: the two requests underneath.

Works with ``open``, ``basic`` and ``token`` registries (the token is issued by the registry's
own :class:`~tests.registries.TokenServer` for ``pull,push`` on the repository).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import requests

from tests.registries import Registry

__all__ = [
    "DEFAULT_PLATFORMS",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "Pushed",
    "artifact",
    "digest_of",
    "docker_list",
    "image",
    "json_bytes",
    "oci_index",
    "push_blob",
    "push_manifest",
    "referrers_tag",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

DEFAULT_PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def referrers_tag(subject: str) -> str:
    """The OCI 1.1 referrers tag-schema tag of digest ``subject`` (``<alg>-<first 64 of
    the encoded digest>``)."""
    algorithm, _, encoded = subject.partition(":")
    return f"{algorithm}-{encoded[:64]}"


def json_bytes(value: Any) -> bytes:
    """``value`` as compact JSON."""
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Pushed:
    """A manifest as the upstream holds it (see the module doc)."""

    repo: str
    tag: str | None
    media_type: str
    data: bytes
    digest: str
    platform: tuple[str, str] | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    children: tuple[Pushed, ...] = ()

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """Its descriptor (``mediaType``, ``digest``, ``size`` and ``extra``)."""
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }

    def child(self, os_name: str, architecture: str) -> Pushed:
        """The child manifest of an index for that platform."""
        for found in self.children:
            if found.platform == (os_name, architecture):
                return found
        raise KeyError(f"no {os_name}/{architecture} child in {self.digest}")


# -- the push API --------------------------------------------------------------------------------
def _auth(registry: Registry, repo: str) -> dict[str, str]:
    if registry.kind == "basic":
        pair = f"{registry.username}:{registry.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    if registry.kind == "token":
        assert registry.token_server is not None
        token = registry.token_server.issue(registry.username, [f"repository:{repo}:pull,push"])
        return {"Authorization": f"Bearer {token}"}
    return {}


def push_blob(registry: Registry, repo: str, data: bytes) -> str:
    """Upload ``data`` (monolithic: ``POST`` then ``PUT ?digest=``); its digest."""
    digest = digest_of(data)
    headers = _auth(registry, repo)
    started = requests.post(f"{registry.url}/v2/{repo}/blobs/uploads/", headers=headers, timeout=30)
    assert started.status_code == 202, started.text
    location = urljoin(registry.url, started.headers["Location"])
    sep = "&" if "?" in location else "?"
    done = requests.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert done.status_code == 201, done.text
    return digest


def push_manifest(
    registry: Registry, repo: str, reference: str, data: bytes, media_type: str
) -> str:
    """``PUT`` the manifest as ``reference`` (a tag or its digest); its digest (checked against
    the upstream's ``Docker-Content-Digest``)."""
    headers = {**_auth(registry, repo), "Content-Type": media_type}
    done = requests.put(
        f"{registry.url}/v2/{repo}/manifests/{reference}", data=data, headers=headers, timeout=30
    )
    assert done.status_code == 201, done.text
    digest = digest_of(data)
    assert done.headers.get("Docker-Content-Digest") == digest, done.headers
    return digest


# -- builders ------------------------------------------------------------------------------------
def _layer(rng: random.Random, size: int) -> tuple[bytes, bytes]:
    """A gzipped tar with one random file, and the tar (its diff id is the tar's digest)."""
    content = rng.randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"random-{rng.getrandbits(32):08x}.bin")
        info.size, info.mtime, info.mode = size, 0, 0o644
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0), raw.getvalue()


def image(
    registry: Registry,
    repo: str,
    tag: str | None = "latest",
    *,
    docker: bool = False,
    platform: tuple[str, str] = ("linux", "amd64"),
    layers: int = 1,
    layer_size: int = 1024,
    seed: int | None = None,
) -> Pushed:
    """Push a random image (see the module doc); by digest only when ``tag`` is ``None``."""
    rng = random.Random(seed if seed is not None else os.urandom(16))
    blobs: dict[str, bytes] = {}
    layer_descriptors, diff_ids = [], []
    for _ in range(layers):
        gz, tar = _layer(rng, layer_size)
        blobs[push_blob(registry, repo, gz)] = gz
        layer_descriptors.append(
            {"mediaType": DOCKER_LAYER if docker else OCI_LAYER, "digest": digest_of(gz),
             "size": len(gz)}
        )  # fmt: skip
        diff_ids.append(digest_of(tar))
    os_name, architecture = platform
    config = json_bytes(
        {
            "architecture": architecture,
            "os": os_name,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    )
    blobs[push_blob(registry, repo, config)] = config
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": layer_descriptors,
        }
    )
    digest = push_manifest(registry, repo, tag or digest_of(manifest), manifest, media_type)
    return Pushed(repo, tag, media_type, manifest, digest, platform, blobs)


def _index(
    registry: Registry,
    repo: str,
    tag: str,
    platforms: tuple[tuple[str, str], ...],
    docker: bool,
) -> Pushed:
    children = tuple(image(registry, repo, None, docker=docker, platform=p) for p in platforms)
    media_type = DOCKER_LIST if docker else OCI_INDEX
    entries = [
        c.descriptor(platform={"architecture": c.platform[1], "os": c.platform[0]})
        for c in children
        if c.platform is not None
    ]
    data = json_bytes({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})
    digest = push_manifest(registry, repo, tag, data, media_type)
    return Pushed(repo, tag, media_type, data, digest, None, {}, children)


def oci_index(
    registry: Registry,
    repo: str,
    tag: str = "latest",
    platforms: tuple[tuple[str, str], ...] = DEFAULT_PLATFORMS,
) -> Pushed:
    """Push an OCI image index of one random OCI image per platform."""
    return _index(registry, repo, tag, platforms, docker=False)


def docker_list(
    registry: Registry,
    repo: str,
    tag: str = "latest",
    platforms: tuple[tuple[str, str], ...] = DEFAULT_PLATFORMS,
) -> Pushed:
    """Push a Docker manifest list of one random Docker schema 2 image per platform."""
    return _index(registry, repo, tag, platforms, docker=True)


def artifact(
    registry: Registry,
    repo: str,
    subject: Pushed,
    artifact_type: str = "application/vnd.example.sbom.v1",
    *,
    content: bytes | None = None,
    tag_schema: bool = True,
    annotations: dict[str, str] | None = None,
) -> Pushed:
    """Push an artifact whose ``subject`` is ``subject``: an OCI manifest with ``artifactType``,
    the empty config and one layer of ``content``; with ``tag_schema``, add it to the
    subject's referrers tag-schema index (created, or extended with what is there)."""
    empty = b"{}"
    push_blob(registry, repo, empty)
    body = content if content is not None else os.urandom(256)
    push_blob(registry, repo, body)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": digest_of(empty), "size": len(empty)},
        "layers": [
            {"mediaType": "application/octet-stream", "digest": digest_of(body), "size": len(body)}
        ],
        "subject": subject.descriptor(),
    }
    if annotations:
        manifest["annotations"] = annotations
    data = json_bytes(manifest)
    digest = push_manifest(registry, repo, digest_of(data), data, OCI_MANIFEST)
    pushed = Pushed(repo, None, OCI_MANIFEST, data, digest, None, {digest_of(body): body})
    if tag_schema:
        extra: dict[str, Any] = {"artifactType": artifact_type}
        if annotations:
            extra["annotations"] = annotations
        _add_to_referrers_tag(registry, repo, subject.digest, pushed.descriptor(**extra))
    return pushed


def _add_to_referrers_tag(
    registry: Registry, repo: str, subject: str, entry: dict[str, Any]
) -> None:
    tag = referrers_tag(subject)
    found = requests.get(
        f"{registry.url}/v2/{repo}/manifests/{tag}",
        headers={**_auth(registry, repo), "Accept": OCI_INDEX},
        timeout=30,
    )
    entries = found.json()["manifests"] if found.status_code == 200 else []
    data = json_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*entries, entry]})
    push_manifest(registry, repo, tag, data, OCI_INDEX)
