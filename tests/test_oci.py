"""Tests of entrepot.oci (names, tags, references, digests, login servers, Docker Hub,
manifests) and of its users agreeing on one login-server grammar (rules, config, endpoints)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from entrepot import oci
from entrepot.config import load_config
from entrepot.errors import (
    ConfigError,
    DigestInvalid,
    InvalidLoginServer,
    InvalidPropertyValue,
    InvalidSourceRepository,
    ManifestInvalid,
    NameInvalid,
    TagInvalid,
    Unsupported,
)
from entrepot.oci import Descriptor, Digest, LoginServer, Platform, parse_manifest
from entrepot.rules import parse_rule
from entrepot.upstream import resolve_endpoint

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_SHA512 = (
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# -- repository names ----------------------------------------------------------------------------
VALID_NAMES = [
    "ubuntu",
    "library/ubuntu",
    "a/b/c/d",
    "a.b",
    "a_b",
    "a__b",
    "a-b",
    "a---b",
    "0",
    "a.b-c_d__e/f",
    "x" * 255,
    "/".join(["abc"] * 64),  # 255 characters
]
INVALID_NAMES = [
    ("", "empty"),
    ("Ubuntu", "'Ubuntu' is not a valid path component"),
    ("a..b", "'a..b'"),
    ("a___b", "'a___b'"),
    ("a._b", "'a._b'"),
    ("-a", "'-a'"),
    ("a-", "'a-'"),
    (".a", "'.a'"),
    ("a.", "'a.'"),
    ("_a", "'_a'"),
    ("/a", "empty path component"),
    ("a/", "empty path component"),
    ("a//b", "empty path component"),
    ("a b", "'a b'"),
    ("a:tag", "'a:tag'"),
    ("a@sha256", "'a@sha256'"),
    ("ünï", "'ünï'"),
    ("x" * 256, "256 characters long; at most 255"),
    ("/".join(["abc"] * 64) + "a", "256 characters long"),
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_repository_names(name: str) -> None:
    assert oci.parse_repository(name) == name
    assert oci.is_repository(name)


@pytest.mark.parametrize(("name", "reason"), INVALID_NAMES)
def test_invalid_repository_names(name: str, reason: str) -> None:
    assert not oci.is_repository(name)
    with pytest.raises(NameInvalid) as info:
        oci.parse_repository(name)
    assert reason in info.value.message
    assert info.value.kind.oci_code == "NAME_INVALID"
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("segment", "expected"),
    [("abc", True), ("a.b_c__d-e--f", True), ("a/b", False), ("", False), ("A", False)],
)
def test_is_path_component(segment: str, expected: bool) -> None:
    assert oci.is_path_component(segment) is expected


# -- tags and references -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tag", ["latest", "v1.2.3", "_private", "A", "0", "1.0-RC_1", "x" * 128, "a--b..c__"]
)
def test_valid_tags(tag: str) -> None:
    assert oci.parse_tag(tag) == tag
    assert oci.is_tag(tag)


@pytest.mark.parametrize(
    "tag", ["", ".hidden", "-dash", "x" * 129, "a:b", "a/b", "a b", "a@b", "tâg", "a+b"]
)
def test_invalid_tags(tag: str) -> None:
    assert not oci.is_tag(tag)
    with pytest.raises(TagInvalid) as info:
        oci.parse_tag(tag)
    assert repr(tag[:300]) in info.value.message
    assert info.value.kind.oci_code == "TAG_INVALID"


def test_references_are_tags_or_digests() -> None:
    assert oci.parse_reference("latest") == "latest"
    digest = oci.parse_reference(f"sha256:{EMPTY_SHA256}")
    assert digest == Digest("sha256", EMPTY_SHA256)
    with pytest.raises(DigestInvalid):
        oci.parse_reference("sha256:abc")
    with pytest.raises(DigestInvalid):
        oci.parse_reference("latest:1")
    with pytest.raises(TagInvalid):
        oci.parse_reference(".latest")


# -- digests -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "algorithm", "hex_"),
    [
        (f"sha256:{EMPTY_SHA256}", "sha256", EMPTY_SHA256),
        (f"sha512:{EMPTY_SHA512}", "sha512", EMPTY_SHA512),
        (f"sha256:{ABC_SHA256}", "sha256", ABC_SHA256),
    ],
)
def test_valid_digests(text: str, algorithm: str, hex_: str) -> None:
    digest = Digest.parse(text)
    assert (digest.algorithm, digest.hex) == (algorithm, hex_)
    assert str(digest) == text
    assert f"{digest}" == text
    assert digest == Digest(algorithm, hex_)
    assert hash(digest) == hash(Digest.parse(text))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"sha256:{EMPTY_SHA256[:-1]}", "64 lowercase hexadecimal"),
        (f"sha256:{EMPTY_SHA256}0", "64 lowercase hexadecimal"),
        (f"sha256:{EMPTY_SHA256.upper()}", "64 lowercase hexadecimal"),
        (f"sha512:{EMPTY_SHA256}", "128 lowercase hexadecimal"),
        (f"sha256:{'g' * 64}", "64 lowercase hexadecimal"),
        (f"md5:{'0' * 32}", "unsupported algorithm 'md5'"),
        (f"sha384:{'0' * 96}", "unsupported algorithm 'sha384'"),
        (f"SHA256:{EMPTY_SHA256}", "expected 'algorithm:encoded'"),
        (EMPTY_SHA256, "expected 'algorithm:encoded'"),
        ("sha256:", "expected 'algorithm:encoded'"),
        (":" + EMPTY_SHA256, "expected 'algorithm:encoded'"),
        (f"sha256:{EMPTY_SHA256} ", "expected 'algorithm:encoded'"),
        (f"sha256::{EMPTY_SHA256}", "expected 'algorithm:encoded'"),
        ("", "expected 'algorithm:encoded'"),
    ],
)
def test_invalid_digests(text: str, reason: str) -> None:
    with pytest.raises(DigestInvalid) as info:
        Digest.parse(text)
    assert reason in info.value.message
    assert info.value.kind.oci_code == "DIGEST_INVALID"
    assert info.value.status == 400


def test_digest_constructor_validates() -> None:
    with pytest.raises(DigestInvalid):
        Digest("sha256", "abc")
    with pytest.raises(DigestInvalid):
        Digest("md5", "0" * 32)


def test_digest_of_known_vectors() -> None:
    assert str(Digest.of(b"")) == f"sha256:{EMPTY_SHA256}"
    assert str(Digest.of(b"", "sha512")) == f"sha512:{EMPTY_SHA512}"
    assert str(Digest.of(b"abc")) == f"sha256:{ABC_SHA256}"
    assert Digest.of(b"abc").hex == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(DigestInvalid):
        Digest.of(b"", "md5")


def test_digest_of_streamed_content() -> None:
    hasher = oci.new_hasher()
    for chunk in (b"a", b"b", b"c"):
        hasher.update(chunk)
    assert Digest.from_hasher(hasher) == Digest("sha256", ABC_SHA256)
    assert Digest.from_hasher(hashlib.sha512(b"")) == Digest("sha512", EMPTY_SHA512)
    with pytest.raises(DigestInvalid):
        Digest.from_hasher(hashlib.md5(b""))
    with pytest.raises(DigestInvalid):
        oci.new_hasher("md5")


# -- login servers -------------------------------------------------------------------------------
LOGIN_SERVERS = [
    # (written, host, port, normal form, is an address)
    ("docker.io", "docker.io", None, "docker.io", False),
    ("Docker.IO", "docker.io", None, "docker.io", False),
    ("localhost", "localhost", None, "localhost", False),
    ("localhost:5000", "localhost", 5000, "localhost:5000", False),
    ("quay.io:1", "quay.io", 1, "quay.io:1", False),
    ("quay.io:65535", "quay.io", 65535, "quay.io:65535", False),
    ("127.0.0.1:5001", "127.0.0.1", 5001, "127.0.0.1:5001", True),
    ("[::1]", "::1", None, "[::1]", True),
    ("[::1]:5000", "::1", 5000, "[::1]:5000", True),
    ("[0:0:0:0:0:0:0:1]:443", "::1", 443, "[::1]:443", True),
    ("[FE80::1]", "fe80::1", None, "[fe80::1]", True),
    ("a" * 63 + ".io", "a" * 63 + ".io", None, "a" * 63 + ".io", False),
    ("xn--bcher-kva.example", "xn--bcher-kva.example", None, "xn--bcher-kva.example", False),
    ("1password.com", "1password.com", None, "1password.com", False),
    (
        ".".join(["a" * 63] * 3) + "." + "b" * 61,  # 253 characters
        ".".join(["a" * 63] * 3) + "." + "b" * 61,
        None,
        ".".join(["a" * 63] * 3) + "." + "b" * 61,
        False,
    ),
]
BAD_LOGIN_SERVERS = [
    ("quay.io:0", "port '0'"),
    ("quay.io:65536", "port '65536'"),
    ("quay.io:99999", "port '99999'"),
    ("quay.io:080", "port '080'"),
    ("quay.io:", "port ''"),
    ("quay.io:http", "port 'http'"),
    ("quay.io:5000:1", "port '5000:1'"),
    ("a" * 64 + ".io", "not a host name label"),
    (".".join(["a" * 63] * 4), "255 characters long"),
    ("", "the host is empty"),
    (":5000", "the host is empty"),
    ("-quay.io", "not a host name label"),
    ("quay-.io", "not a host name label"),
    ("quay..io", "not a host name label"),
    ("quay.io.", "not a host name label"),
    ("quay_io.com", "not a host name label"),
    ("https://quay.io", "port '//quay.io'"),
    ("quay.io/org", "not a host name label"),
    (" quay.io", "not a host name label"),
    ("1.2.3", "not a valid IPv4 address"),
    ("256.1.1.1", "not a valid IPv4 address"),
    ("5000", "not a valid IPv4 address"),
    ("[::1", "without a closing ']'"),
    ("::1", "the host is empty"),
    ("[::1]5000", "only ':port' may follow ']'"),
    ("[::1]:", "port ''"),
    ("[::1]:70000", "port '70000'"),
    ("[]", "not a valid IPv6 address"),
    ("[::g]", "not a valid IPv6 address"),
    ("[fe80::1%eth0]", "zone ids"),
    ("[127.0.0.1]", "not a valid IPv6 address"),
]


@pytest.mark.parametrize(("written", "host", "port", "text", "is_address"), LOGIN_SERVERS)
def test_valid_login_servers(
    written: str, host: str, port: int | None, text: str, is_address: bool
) -> None:
    parsed = oci.parse_login_server(written)
    assert parsed == LoginServer(host=host, port=port, text=text, is_address=is_address)
    assert str(parsed) == text
    assert oci.is_login_server(written)
    assert oci.parse_login_server(text) == parsed  # the normal form is a fixed point


@pytest.mark.parametrize(("written", "reason"), BAD_LOGIN_SERVERS)
def test_invalid_login_servers(written: str, reason: str) -> None:
    assert not oci.is_login_server(written)
    with pytest.raises(InvalidLoginServer) as info:
        oci.parse_login_server(written, target="properties.loginServer")
    assert isinstance(info.value, InvalidPropertyValue)
    assert info.value.code == "InvalidPropertyValue"
    assert info.value.target == "properties.loginServer"
    assert repr(written) in info.value.message
    assert reason in info.value.message


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("docker.io", True),
        ("localhost", True),
        ("localhost:5000", True),
        ("myhost:5000", True),
        ("[::1]", True),
        ("library", False),
        ("localhostx", False),
        ("Localhost", False),
    ],
)
def test_looks_like_login_server(segment: str, expected: bool) -> None:
    assert oci.looks_like_login_server(segment) is expected


# -- Docker Hub ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("login_server", "expected"),
    [
        ("docker.io", True),
        ("index.docker.io", True),
        ("registry-1.docker.io", True),
        ("Docker.IO", True),
        ("docker.io:443", False),
        ("mirror.docker.io", False),
        ("docker.io.example.com", False),
        ("quay.io", False),
    ],
)
def test_is_docker_hub(login_server: str, expected: bool) -> None:
    assert oci.is_docker_hub(login_server) is expected


def test_docker_hub_constants() -> None:
    assert oci.DOCKER_HUB_ALIASES == ("docker.io", "index.docker.io", "registry-1.docker.io")
    assert oci.DOCKER_HUB_HOST == "registry-1.docker.io"
    assert oci.DOCKER_HUB_HOST in oci.DOCKER_HUB_ALIASES


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("ubuntu", "library/ubuntu"),
        ("library/ubuntu", "library/ubuntu"),
        ("bitnami/redis", "bitnami/redis"),
        ("a/b/c", "a/b/c"),
    ],
)
def test_docker_hub_library_rule(repository: str, expected: str) -> None:
    assert oci.docker_hub_repository(repository) == expected


# -- manifests -----------------------------------------------------------------------------------
CONFIG = Digest.of(b'{"architecture":"amd64","os":"linux"}')
LAYER_1 = Digest.of(b"layer one")
LAYER_2 = Digest.of(b"layer two")
AMD64 = Digest.of(b"amd64 manifest")
ARM64 = Digest.of(b"arm64 manifest")
SUBJECT = Digest.of(b"the image being signed")


def _body(value: dict[str, Any]) -> bytes:
    return json.dumps(value, indent=3).encode()


OCI_IMAGE = {
    "schemaVersion": 2,
    "mediaType": oci.OCI_MANIFEST,
    "config": {"mediaType": oci.OCI_CONFIG, "digest": str(CONFIG), "size": 1469},
    "layers": [
        {"mediaType": oci.OCI_LAYER_GZIP, "digest": str(LAYER_1), "size": 29_124_131},
        {
            "mediaType": oci.OCI_LAYER_ZSTD,
            "digest": str(LAYER_2),
            "size": 0,
            "annotations": {"org.opencontainers.image.title": "two"},
        },
    ],
    "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
}


def test_oci_image_manifest() -> None:
    manifest = parse_manifest(_body(OCI_IMAGE), oci.OCI_MANIFEST)
    assert manifest.media_type == oci.OCI_MANIFEST
    assert manifest.schema_version == 2
    assert not manifest.is_index
    assert manifest.config == Descriptor(oci.OCI_CONFIG, CONFIG, 1469)
    assert [(d.media_type, d.digest, d.size) for d in manifest.layers] == [
        (oci.OCI_LAYER_GZIP, LAYER_1, 29_124_131),
        (oci.OCI_LAYER_ZSTD, LAYER_2, 0),
    ]
    assert dict(manifest.layers[1].annotations) == {"org.opencontainers.image.title": "two"}
    assert dict(manifest.annotations) == {
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z"
    }
    assert manifest.manifests == ()
    assert manifest.subject is None
    assert manifest.artifact_type is None
    assert [d.digest for d in manifest.references()] == [CONFIG, LAYER_1, LAYER_2]


def test_media_type_from_content_type_or_shape() -> None:
    without = {k: v for k, v in OCI_IMAGE.items() if k != "mediaType"}
    by_header = parse_manifest(_body(without), f"{oci.OCI_MANIFEST}; charset=utf-8")
    assert by_header.media_type == oci.OCI_MANIFEST
    by_shape = parse_manifest(_body(without), "application/json")
    assert by_shape == by_header
    assert parse_manifest(_body(without)).media_type == oci.OCI_MANIFEST
    # the body wins over the header
    assert parse_manifest(_body(OCI_IMAGE), oci.DOCKER_MANIFEST).media_type == oci.OCI_MANIFEST


OCI_INDEX = {
    "schemaVersion": 2,
    "mediaType": oci.OCI_INDEX,
    "manifests": [
        {
            "mediaType": oci.OCI_MANIFEST,
            "digest": str(AMD64),
            "size": 1015,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": oci.OCI_MANIFEST,
            "digest": str(ARM64),
            "size": 1016,
            "platform": {
                "architecture": "arm64",
                "os": "linux",
                "variant": "v8",
                "os.version": "6.1",
                "os.features": ["sse4"],
            },
        },
    ],
}


def test_oci_index_with_two_platforms() -> None:
    index = parse_manifest(_body(OCI_INDEX), None)
    assert index.media_type == oci.OCI_INDEX
    assert index.is_index
    assert index.config is None
    assert index.layers == ()
    assert [(d.digest, d.size) for d in index.manifests] == [(AMD64, 1015), (ARM64, 1016)]
    assert index.manifests[0].platform == Platform("amd64", "linux")
    assert index.manifests[1].platform == Platform("arm64", "linux", "v8", "6.1", ("sse4",))
    assert index.references() == index.manifests
    # an index without mediaType is recognised by its shape
    without = {k: v for k, v in OCI_INDEX.items() if k != "mediaType"}
    assert parse_manifest(_body(without)).media_type == oci.OCI_INDEX


DOCKER_IMAGE = {
    "schemaVersion": 2,
    "mediaType": oci.DOCKER_MANIFEST,
    "config": {"mediaType": oci.DOCKER_CONFIG, "size": 7023, "digest": str(CONFIG)},
    "layers": [
        {"mediaType": oci.DOCKER_LAYER, "size": 32_654, "digest": str(LAYER_1)},
        {
            "mediaType": oci.DOCKER_FOREIGN_LAYER,
            "size": 1_048_576,
            "digest": str(LAYER_2),
            "urls": ["https://example.com/layer.tar.gz"],
        },
    ],
}


def test_docker_schema2_manifest() -> None:
    manifest = parse_manifest(_body(DOCKER_IMAGE), oci.DOCKER_MANIFEST)
    assert manifest.media_type == oci.DOCKER_MANIFEST
    assert manifest.config == Descriptor(oci.DOCKER_CONFIG, CONFIG, 7023)
    assert [(d.media_type, d.digest, d.size) for d in manifest.layers] == [
        (oci.DOCKER_LAYER, LAYER_1, 32_654),
        (oci.DOCKER_FOREIGN_LAYER, LAYER_2, 1_048_576),
    ]
    assert manifest.layers[1].urls == ("https://example.com/layer.tar.gz",)
    assert len(manifest.references()) == 3


DOCKER_LIST = {
    "schemaVersion": 2,
    "mediaType": oci.DOCKER_MANIFEST_LIST,
    "manifests": [
        {
            "mediaType": oci.DOCKER_MANIFEST,
            "size": 7143,
            "digest": str(AMD64),
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": oci.DOCKER_MANIFEST,
            "size": 7682,
            "digest": str(ARM64),
            "platform": {"architecture": "ppc64le", "os": "linux"},
        },
    ],
}


def test_docker_manifest_list() -> None:
    index = parse_manifest(_body(DOCKER_LIST), oci.DOCKER_MANIFEST_LIST)
    assert index.media_type == oci.DOCKER_MANIFEST_LIST
    assert index.is_index
    assert [(d.media_type, d.digest, d.size) for d in index.references()] == [
        (oci.DOCKER_MANIFEST, AMD64, 7143),
        (oci.DOCKER_MANIFEST, ARM64, 7682),
    ]
    assert [d.platform.architecture for d in index.manifests if d.platform] == ["amd64", "ppc64le"]


ARTIFACT = {
    "schemaVersion": 2,
    "mediaType": oci.OCI_MANIFEST,
    "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
    "config": {"mediaType": oci.OCI_EMPTY, "digest": f"sha256:{'4' * 64}", "size": 2},
    "layers": [
        {
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": str(LAYER_1),
            "size": 242,
        }
    ],
    "subject": {"mediaType": oci.OCI_MANIFEST, "digest": str(SUBJECT), "size": 527},
}


def test_artifact_with_subject() -> None:
    manifest = parse_manifest(_body(ARTIFACT), oci.OCI_MANIFEST)
    assert manifest.artifact_type == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert manifest.config == Descriptor(oci.OCI_EMPTY, Digest("sha256", "4" * 64), 2)
    assert manifest.subject == Descriptor(oci.OCI_MANIFEST, SUBJECT, 527)
    assert [d.digest for d in manifest.references()] == [
        Digest("sha256", "4" * 64),
        LAYER_1,
        SUBJECT,
    ]


def test_index_referrers_entry_carries_artifact_type() -> None:
    body = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [
            {
                "mediaType": oci.OCI_MANIFEST,
                "digest": str(AMD64),
                "size": 10,
                "artifactType": "application/spdx+json",
            }
        ],
    }
    assert parse_manifest(_body(body)).manifests[0].artifact_type == "application/spdx+json"


SCHEMA1 = {
    "schemaVersion": 1,
    "name": "library/hello-world",
    "tag": "latest",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": f"sha256:{'a' * 64}"}],
    "history": [{"v1Compatibility": "{}"}],
    "signatures": [{"header": {"alg": "ES256"}, "signature": "x", "protected": "y"}],
}


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", oci.DOCKER_SCHEMA1_MANIFEST, oci.DOCKER_SCHEMA1_SIGNED_MANIFEST],
)
def test_schema1_is_unsupported(content_type: str | None) -> None:
    with pytest.raises(Unsupported) as info:
        parse_manifest(_body(SCHEMA1), content_type)
    assert "schema 1" in info.value.message
    assert info.value.kind.oci_code == "UNSUPPORTED"
    assert info.value.status == 415


def test_schema1_media_type_in_body_is_unsupported() -> None:
    body = {**OCI_IMAGE, "mediaType": oci.DOCKER_SCHEMA1_SIGNED_MANIFEST}
    with pytest.raises(Unsupported):
        parse_manifest(_body(body))


def test_unknown_manifest_media_type_is_unsupported() -> None:
    with pytest.raises(Unsupported) as info:
        parse_manifest(_body({**OCI_IMAGE, "mediaType": "application/vnd.example+json"}))
    assert "'application/vnd.example+json'" in info.value.message


def _without(value: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != key}


def _layer(**changes: Any) -> dict[str, Any]:
    return {**OCI_IMAGE, "layers": [{**OCI_IMAGE["layers"][0], **changes}]}


GARBAGE: list[tuple[str, bytes, str]] = [
    ("empty", b"", "not JSON"),
    ("not-json", b"<html>502 Bad Gateway</html>", "not JSON"),
    ("not-utf8", b"\xff\xfe{}", "not JSON"),
    ("array", b"[]", "not a JSON object"),
    ("string", b'"manifest"', "not a JSON object"),
    ("object-without-shape", b'{"schemaVersion": 2}', "neither 'manifests' nor"),
    ("media-type-number", _body({**OCI_IMAGE, "mediaType": 5}), "'mediaType' must be a string"),
    ("media-type-empty", _body({**OCI_IMAGE, "mediaType": ""}), "'mediaType' is empty"),
    ("no-schema-version", _body(_without(OCI_IMAGE, "schemaVersion")), "'schemaVersion' must"),
    ("schema-version-3", _body({**OCI_IMAGE, "schemaVersion": 3}), "'schemaVersion' must be 2"),
    ("schema-version-str", _body({**OCI_IMAGE, "schemaVersion": "2"}), "'schemaVersion' must"),
    ("schema-version-float", _body({**OCI_IMAGE, "schemaVersion": 2.0}), "'schemaVersion' must"),
    ("no-config", _body(_without(OCI_IMAGE, "config")), "'config' is required"),
    ("no-layers", _body(_without(OCI_IMAGE, "layers")), "'layers' is required"),
    ("layers-object", _body({**OCI_IMAGE, "layers": {}}), "'layers' is required and must be"),
    ("config-list", _body({**OCI_IMAGE, "config": []}), "'config' must be a descriptor"),
    ("no-manifests", _body(_without(OCI_INDEX, "manifests")), "'manifests' is required"),
    ("layer-no-digest", _body(_layer(digest=None)), "'layers[0].digest' is required"),
    ("layer-bad-digest", _body(_layer(digest="sha256:abc")), "'layers[0].digest': Invalid digest"),
    ("layer-md5", _body(_layer(digest="md5:" + "0" * 32)), "unsupported algorithm 'md5'"),
    ("layer-negative-size", _body(_layer(size=-1)), "'layers[0].size' must be a non-negative"),
    ("layer-string-size", _body(_layer(size="12")), "'layers[0].size' must be"),
    ("layer-bool-size", _body(_layer(size=True)), "'layers[0].size' must be"),
    ("layer-no-media-type", _body(_layer(mediaType=None)), "'layers[0].mediaType' is required"),
    ("layer-urls", _body(_layer(urls="https://x")), "'layers[0].urls' must be a list"),
    ("layer-annotations", _body(_layer(annotations={"a": 1})), "'layers[0].annotations' must"),
    (
        "platform-without-os",
        _body(
            {
                **OCI_INDEX,
                "manifests": [{**OCI_INDEX["manifests"][0], "platform": {"architecture": "amd64"}}],
            }
        ),
        "'manifests[0].platform.os' is required",
    ),
    ("subject-bad", _body({**ARTIFACT, "subject": {"size": 1}}), "'subject.digest' is required"),
    ("artifact-type-number", _body({**ARTIFACT, "artifactType": 1}), "'artifactType' must be"),
]


@pytest.mark.parametrize(("data", "reason"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_invalid_manifests(data: bytes, reason: str) -> None:
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(data, "application/json")
    assert reason in info.value.message
    assert info.value.kind.oci_code == "MANIFEST_INVALID"
    assert info.value.status == 400


def test_media_type_sets() -> None:
    assert set(oci.MANIFEST_MEDIA_TYPES) == {
        oci.OCI_MANIFEST,
        oci.OCI_INDEX,
        oci.DOCKER_MANIFEST,
        oci.DOCKER_MANIFEST_LIST,
    }
    assert frozenset({oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST}) == oci.INDEX_MEDIA_TYPES
    assert not oci.UNSUPPORTED_MANIFEST_MEDIA_TYPES & set(oci.MANIFEST_MEDIA_TYPES)


# -- the users agree: one login-server grammar everywhere -----------------------------------------
@pytest.mark.parametrize("login_server", ["quay.io:99999", "quay.io:0", "quay.io:080", "[::1"])
def test_every_user_refuses_the_same_login_servers(tmp_path: Path, login_server: str) -> None:
    with pytest.raises(InvalidSourceRepository):
        parse_rule(f"{login_server}/x", "x")
    with pytest.raises(InvalidPropertyValue) as info:
        resolve_endpoint(login_server, {})
    assert info.value.target == "loginServer"
    config = tmp_path / "entrepot.toml"
    config.write_text(f'[upstreams."{login_server}"]\nurl = "http://127.0.0.1:5001"\n')
    with pytest.raises(ConfigError, match="is not a login server"):
        load_config(config, env={})
    with pytest.raises(ConfigError, match="is not a login server or"):
        load_config(env={"ENTREPOT_POLICY_ALLOWED_LOGIN_SERVERS": json.dumps([login_server])})


def test_config_upstream_keys_are_normal_forms(tmp_path: Path) -> None:
    config = tmp_path / "entrepot.toml"
    config.write_text(
        '[upstreams."Docker.IO"]\nurl = "http://127.0.0.1:5001"\n'
        '[upstreams."[0:0::1]:5000"]\nurl = "http://[::1]:5000"\n'
    )
    upstreams = load_config(config, env={}).upstreams
    assert set(upstreams) == {"docker.io", "[::1]:5000"}
    assert resolve_endpoint("[::1]:5000", upstreams) == URL("http://[::1]:5000")
    config.write_text(
        '[upstreams."docker.io"]\nurl = "http://a"\n[upstreams."DOCKER.io"]\nurl = "http://b"\n'
    )
    with pytest.raises(ConfigError, match="configured twice"):
        load_config(config, env={})


@pytest.mark.parametrize(
    ("pattern", "accepted"),
    [
        ("docker.io", True),
        ("quay.io:443", True),
        ("*.example.com", True),
        ("*.example.com:8443", True),
        ("localhost", True),
        ("127.0.0.1:5000", True),
        ("[::1]:5000", True),
        ("Docker.IO", False),  # patterns are written in normal form, as before
        ("*.127.0.0.1", False),  # a wildcard names DNS names, not addresses
        ("*.", False),
        ("*", False),
        ("a.*.com", False),
        ("docker.io/x", False),
        ("quay.io:65536", False),
    ],
)
def test_allowed_login_server_patterns(pattern: str, accepted: bool) -> None:
    env = {"ENTREPOT_POLICY_ALLOWED_LOGIN_SERVERS": json.dumps([pattern])}
    if accepted:
        assert load_config(env=env).policy.allowed_login_servers == (pattern,)
    else:
        with pytest.raises(ConfigError, match="is not a login server or"):
            load_config(env=env)
