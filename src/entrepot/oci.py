"""The OCI and registry vocabulary: names, tags, digests, login servers, media types, manifests.

This module is the one place that knows these grammars; everything else asks it. It is pure (no
I/O) and raises only domain errors from :mod:`entrepot.errors`, each naming the bad value.

* **Repository names** (:func:`parse_repository`, :func:`is_repository`): path components
  ``[a-z0-9]+((.|_|__|-+)[a-z0-9]+)*`` joined by ``/``, at most :data:`MAX_REPOSITORY_LENGTH`
  characters in all (the distribution grammar, login server excluded).
* **Tags** (:func:`parse_tag`, :func:`is_tag`): ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``.
* **References** (:func:`parse_reference`): a tag, or a digest when it contains ``:``.
* **Digests** (:class:`Digest`): ``algorithm:encoded`` as the OCI image spec writes it; only
  the algorithms in :data:`ALGORITHMS` (``sha256``, ``sha512``, lowercase hex) are accepted.
* **Login servers** (:func:`parse_login_server`, :func:`is_login_server`): a DNS host name
  (labels of 1-63 characters, at most 253 in all), a dotted-quad IPv4 address or a bracketed
  IPv6 address, with an optional ``:port`` (1-65535, no leading zero). Case is ignored; the
  normal form is lower case (IPv6 compressed).
* **Docker Hub**: :data:`DOCKER_HUB_ALIASES`, :func:`is_docker_hub`, its API host
  :data:`DOCKER_HUB_HOST` and the ``library/`` rule (:func:`docker_hub_repository`).
* **Media types** of manifests, indexes, configs and layers, and :func:`parse_manifest`, which
  reads an image manifest, image index, Docker schema 2 manifest or manifest list into a
  :class:`Manifest` and the :class:`Descriptor` values it references. Parsing never
  re-serializes: the caller keeps the bytes it was given, which are what the digest covers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from entrepot.errors import (
    DigestInvalid,
    InvalidLoginServer,
    ManifestInvalid,
    NameInvalid,
    TagInvalid,
    Unsupported,
)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_HUB_ALIASES",
    "DOCKER_HUB_HOST",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_SCHEMA1_MANIFEST",
    "DOCKER_SCHEMA1_SIGNED_MANIFEST",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MAX_REPOSITORY_LENGTH",
    "MAX_TAG_LENGTH",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "UNSUPPORTED_MANIFEST_MEDIA_TYPES",
    "Descriptor",
    "Digest",
    "Hasher",
    "LoginServer",
    "Manifest",
    "Platform",
    "docker_hub_repository",
    "is_docker_hub",
    "is_login_server",
    "is_path_component",
    "is_repository",
    "is_tag",
    "looks_like_login_server",
    "new_hasher",
    "parse_login_server",
    "parse_manifest",
    "parse_reference",
    "parse_repository",
    "parse_tag",
]

_MAX_SHOWN = 300


def _show(value: str) -> str:
    """``value`` quoted for a message, cut short if it is very long."""
    if len(value) > _MAX_SHOWN:
        value = value[:_MAX_SHOWN] + "..."
    return repr(value)


# -- repository names, tags, references ----------------------------------------------------------
MAX_REPOSITORY_LENGTH = 255
"""Longest repository name (login server excluded), as in the distribution reference grammar."""

MAX_TAG_LENGTH = 128
"""Longest tag."""

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", re.ASCII)


def is_path_component(segment: str) -> bool:
    """Whether ``segment`` is one valid component of a repository name (no ``/``)."""
    return _COMPONENT.fullmatch(segment) is not None


def _repository_reason(name: str) -> str | None:
    if not name:
        return "the name is empty"
    if len(name) > MAX_REPOSITORY_LENGTH:
        return f"it is {len(name)} characters long; at most {MAX_REPOSITORY_LENGTH} are allowed"
    for segment in name.split("/"):
        if not segment:
            return "empty path component (a leading or trailing '/', or '//')"
        if not is_path_component(segment):
            return f"{_show(segment)} is not a valid path component"
    return None


def parse_repository(name: str) -> str:
    """``name`` itself if it is a valid repository name.

    :raises NameInvalid: otherwise; the message names the value and the reason.
    """
    reason = _repository_reason(name)
    if reason is not None:
        raise NameInvalid(f"Invalid repository name {_show(name)}: {reason}.")
    return name


def is_repository(name: str) -> bool:
    """Whether ``name`` is a valid repository name (see :func:`parse_repository`)."""
    return _repository_reason(name) is None


def is_tag(tag: str) -> bool:
    """Whether ``tag`` is a valid tag."""
    return _TAG.fullmatch(tag) is not None


def parse_tag(tag: str) -> str:
    """``tag`` itself if it is a valid tag.

    :raises TagInvalid: otherwise.
    """
    if not is_tag(tag):
        raise TagInvalid(
            f"Invalid tag {_show(tag)}: a tag is 1 to {MAX_TAG_LENGTH} letters, digits, '_', "
            "'.' or '-', not starting with '.' or '-'."
        )
    return tag


def parse_reference(reference: str) -> str | Digest:
    """The tag or :class:`Digest` that ``reference`` (the ``<reference>`` of a URL) names.

    A reference containing ``:`` is a digest (a tag cannot contain one), anything else a tag.

    :raises DigestInvalid: for a malformed or unsupported digest.
    :raises TagInvalid: for an invalid tag.
    """
    if ":" in reference:
        return Digest.parse(reference)
    return parse_tag(reference)


# -- digests -------------------------------------------------------------------------------------
ALGORITHMS: Mapping[str, int] = MappingProxyType({"sha256": 64, "sha512": 128})
"""The digest algorithms we accept, with the length of their lowercase hex encoding."""

DEFAULT_ALGORITHM = "sha256"
"""The algorithm used for content we digest ourselves."""

_DIGEST = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)", re.ASCII)
_LOWER_HEX = re.compile(r"[0-9a-f]+", re.ASCII)


class Hasher(Protocol):
    """What :meth:`Digest.from_hasher` needs of a ``hashlib`` object."""

    @property
    def name(self) -> str: ...

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def new_hasher(algorithm: str = DEFAULT_ALGORITHM) -> Hasher:
    """A fresh ``hashlib`` object for ``algorithm``, to digest content that streams by.

    :raises DigestInvalid: when ``algorithm`` is not in :data:`ALGORITHMS`.
    """
    if algorithm not in ALGORITHMS:
        raise DigestInvalid(f"Unsupported digest algorithm {_show(algorithm)}.")
    return hashlib.new(algorithm)


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest such as ``sha256:e3b0c442...``; ``str(digest)`` is that text.

    Every instance is valid: the constructor checks ``algorithm`` is in :data:`ALGORITHMS` and
    ``hex`` is its lowercase hex encoding of the right length. Two digests are equal when their
    text is.
    """

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        length = ALGORITHMS.get(self.algorithm)
        text = f"{self.algorithm}:{self.hex}"
        if length is None:
            raise DigestInvalid(
                f"Invalid digest {_show(text)}: unsupported algorithm {_show(self.algorithm)} "
                f"(supported: {', '.join(ALGORITHMS)})."
            )
        if len(self.hex) != length or _LOWER_HEX.fullmatch(self.hex) is None:
            raise DigestInvalid(
                f"Invalid digest {_show(text)}: a {self.algorithm} digest is {length} "
                "lowercase hexadecimal characters."
            )

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """The digest written as ``text`` (``algorithm:encoded``).

        :raises DigestInvalid: when ``text`` is not of the OCI digest grammar, names an
            algorithm not in :data:`ALGORITHMS`, or has a wrong encoding for it.
        """
        match = _DIGEST.fullmatch(text)
        if match is None:
            raise DigestInvalid(
                f"Invalid digest {_show(text)}: expected 'algorithm:encoded', "
                "e.g. 'sha256:' and 64 hexadecimal characters."
            )
        return cls(match.group(1), match.group(2))

    @classmethod
    def of(cls, data: bytes, algorithm: str = DEFAULT_ALGORITHM) -> Digest:
        """The digest of ``data`` with ``algorithm``.

        :raises DigestInvalid: when ``algorithm`` is not in :data:`ALGORITHMS`.
        """
        hasher = new_hasher(algorithm)
        hasher.update(data)
        return cls.from_hasher(hasher)

    @classmethod
    def from_hasher(cls, hasher: Hasher) -> Digest:
        """The digest of what has been fed to ``hasher`` (a ``hashlib`` object).

        :raises DigestInvalid: when the hasher's algorithm is not in :data:`ALGORITHMS`.
        """
        return cls(hasher.name, hasher.hexdigest())


# -- login servers -------------------------------------------------------------------------------
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_PORT = re.compile(r"[1-9][0-9]{0,4}", re.ASCII)
_MAX_HOST_LENGTH = 253


@dataclass(frozen=True, slots=True)
class LoginServer:
    """A parsed login server; build it with :func:`parse_login_server`.

    :param host: lower-case DNS name, dotted-quad IPv4 address, or compressed IPv6 address
        *without* brackets (``::1``).
    :param port: the explicit port, or ``None``.
    :param text: the normal form, ``host[:port]`` with IPv6 in brackets (``[::1]:5000``).
    :param is_address: whether ``host`` is an IP address rather than a DNS name.
    """

    host: str
    port: int | None
    text: str
    is_address: bool

    def __str__(self) -> str:
        return self.text


def _port_of(port: str) -> int | None:
    if _PORT.fullmatch(port) is None:
        return None
    number = int(port)
    return number if number <= 65535 else None


def _host_reason(host: str) -> str | None:
    """Why ``host`` (lower case, no port) is not a DNS name or IPv4 address, or ``None``."""
    if not host:
        return "the host is empty"
    if len(host) > _MAX_HOST_LENGTH:
        return f"the host is {len(host)} characters long; at most {_MAX_HOST_LENGTH} are allowed"
    labels = host.split(".")
    if _DIGITS.fullmatch(labels[-1]):
        # A numeric last label is only valid as a dotted-quad IPv4 address.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{_show(host)} is not a valid IPv4 address"
        return None
    for label in labels:
        if _HOST_LABEL.fullmatch(label) is None:
            return (
                f"{_show(label)} is not a host name label (1 to 63 letters, digits or '-', "
                "not starting or ending with '-')"
            )
    return None


def _login_server(value: str) -> LoginServer | str:
    """The parsed login server, or the reason ``value`` is not one."""
    text = value.lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return "'[' without a closing ']'"
        literal, rest = text[1:end], text[end + 1 :]
        if "%" in literal:
            return "IPv6 zone ids are not allowed"
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            return f"{_show(literal)} is not a valid IPv6 address"
        host, is_address = address.compressed, True
        if rest and not rest.startswith(":"):
            return "only ':port' may follow ']'"
        port_text = rest[1:] if rest else None
        shown = f"[{host}]"
    else:
        host, colon, after = text.partition(":")
        port_text = after if colon else None
        reason = _host_reason(host)
        if reason is not None:
            return reason
        is_address = _DIGITS.fullmatch(host.rsplit(".", 1)[-1]) is not None
        shown = host
    if port_text is None:
        return LoginServer(host=host, port=None, text=shown, is_address=is_address)
    port = _port_of(port_text)
    if port is None:
        return f"port {_show(port_text)} is not a number from 1 to 65535 without leading zeros"
    return LoginServer(host=host, port=port, text=f"{shown}:{port}", is_address=is_address)


def parse_login_server(value: str, *, target: str | None = None) -> LoginServer:
    """``value`` (``host[:port]``, see the module doc) parsed; case is ignored.

    Nothing is stripped: whitespace, a scheme (``https://``) or a path make it invalid.

    :param target: the request field to name in the error, if any.
    :raises InvalidLoginServer: (an ``InvalidPropertyValue``) when ``value`` is not a login
        server; the message names the value and the reason.
    """
    parsed = _login_server(value)
    if isinstance(parsed, str):
        raise InvalidLoginServer(
            f"{_show(value)} is not a login server (expected HOST or HOST:PORT): {parsed}.",
            target=target,
        )
    return parsed


def is_login_server(value: str) -> bool:
    """Whether :func:`parse_login_server` accepts ``value``."""
    return isinstance(_login_server(value), LoginServer)


def looks_like_login_server(segment: str) -> bool:
    """Whether the first segment of a reference names a registry rather than a path component.

    The Docker convention: it contains ``.`` or ``:``, or is ``localhost``. It says nothing of
    validity; :func:`is_login_server` does.
    """
    return "." in segment or ":" in segment or segment == "localhost"


# -- Docker Hub ----------------------------------------------------------------------------------
DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
"""The login servers that name Docker Hub, the one users write first."""

DOCKER_HUB_HOST = "registry-1.docker.io"
"""The host of Docker Hub's registry API, whichever alias was written."""


def is_docker_hub(login_server: str) -> bool:
    """Whether ``login_server`` names Docker Hub (case ignored; an explicit port never does)."""
    return login_server.lower() in DOCKER_HUB_ALIASES


def docker_hub_repository(repository: str) -> str:
    """The repository Docker Hub serves for ``repository``: one component gets ``library/``.

    ``docker_hub_repository("ubuntu") == "library/ubuntu"``; names with a ``/`` are unchanged.
    Only apply it to repositories of a login server for which :func:`is_docker_hub` is true.
    """
    return repository if "/" in repository else f"library/{repository}"


# -- media types ---------------------------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
"""The manifest media types we accept, in the order an ``Accept`` header should list them."""

INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
"""The media types of manifests that list other manifests (``manifests``, not ``layers``)."""

UNSUPPORTED_MANIFEST_MEDIA_TYPES = frozenset(
    {DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST}
)
"""Docker schema 1: recognised only to be refused with :class:`~entrepot.errors.Unsupported`."""


# -- manifests -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Platform:
    """The ``platform`` of an index entry."""

    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A reference to content: its media type, digest and size, and optional details.

    ``annotations`` is read-only and not part of the hash.
    """

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    artifact_type: str | None = None
    urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed manifest or index; build it with :func:`parse_manifest`.

    Image manifests (:data:`OCI_MANIFEST`, :data:`DOCKER_MANIFEST`) have a ``config`` and
    ``layers`` (possibly empty) and no ``manifests``; indexes (:data:`INDEX_MEDIA_TYPES`) have
    ``manifests`` (possibly empty), no ``config`` and no ``layers``.
    """

    media_type: str
    schema_version: int
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def is_index(self) -> bool:
        """Whether this lists other manifests rather than a config and layers."""
        return self.media_type in INDEX_MEDIA_TYPES

    def references(self) -> tuple[Descriptor, ...]:
        """Every descriptor this points to: config, layers, manifests, then subject."""
        found = [self.config] if self.config is not None else []
        found += [*self.layers, *self.manifests]
        if self.subject is not None:
            found.append(self.subject)
        return tuple(found)


def _invalid(reason: str) -> ManifestInvalid:
    return ManifestInvalid(f"Invalid manifest: {reason}.")


def _optional_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"'{where}{key}' must be a string")
    return value


def _required_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _optional_str(obj, key, where)
    if not value:
        raise _invalid(f"'{where}{key}' is required")
    return value


def _str_list(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(f"'{where}{key}' must be a list of strings")
    return tuple(value)


def _annotations(obj: Mapping[str, Any], where: str) -> Mapping[str, str]:
    value = obj.get("annotations")
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid(f"'{where}annotations' must be an object of strings")
    return MappingProxyType(dict(value))


def _platform(value: Any, where: str) -> Platform | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"'{where}' must be an object")
    where += "."
    return Platform(
        architecture=_required_str(value, "architecture", where),
        os=_required_str(value, "os", where),
        variant=_optional_str(value, "variant", where),
        os_version=_optional_str(value, "os.version", where),
        os_features=_str_list(value, "os.features", where),
    )


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"'{where}' must be a descriptor object")
    prefix = where + "."
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"'{prefix}size' must be a non-negative integer")
    digest_text = _required_str(value, "digest", prefix)
    try:
        digest = Digest.parse(digest_text)
    except DigestInvalid as exc:
        raise _invalid(f"'{prefix}digest': {exc.message.rstrip('.')}") from None
    return Descriptor(
        media_type=_required_str(value, "mediaType", prefix),
        digest=digest,
        size=size,
        platform=_platform(value.get("platform"), prefix + "platform"),
        annotations=_annotations(value, prefix),
        artifact_type=_optional_str(value, "artifactType", prefix),
        urls=_str_list(value, "urls", prefix),
    )


def _descriptors(body: Mapping[str, Any], key: str) -> tuple[Descriptor, ...]:
    value = body.get(key)
    if not isinstance(value, list):
        raise _invalid(f"'{key}' is required and must be a list")
    return tuple(_descriptor(item, f"{key}[{i}]") for i, item in enumerate(value))


def _unsupported_schema1() -> Unsupported:
    return Unsupported(
        "Docker schema 1 manifests are not supported; the image must be pushed again with a "
        "current client (Docker schema 2 or OCI)."
    )


def _is_schema1(body: Mapping[str, Any]) -> bool:
    version = body.get("schemaVersion")
    return type(version) is int and version == 1


def _media_type(body: Mapping[str, Any], content_type: str | None) -> str:
    """The media type of a manifest: its ``mediaType``, else ``content_type``, else its shape."""
    written = _optional_str(body, "mediaType", "")
    if written is not None:
        if not written:
            raise _invalid("'mediaType' is empty")
        return written
    if content_type:
        bare = content_type.split(";", 1)[0].strip().lower()
        if bare in MANIFEST_MEDIA_TYPES or bare in UNSUPPORTED_MANIFEST_MEDIA_TYPES:
            return bare
    if _is_schema1(body):
        raise _unsupported_schema1()
    if "manifests" in body:
        return OCI_INDEX
    if "layers" in body and "config" in body:
        return OCI_MANIFEST
    raise _invalid("no 'mediaType', and neither 'manifests' nor 'config' and 'layers'")


def parse_manifest(data: bytes, content_type: str | None = None) -> Manifest:
    """The manifest or index ``data`` holds.

    The media type is the body's ``mediaType`` if present, else ``content_type`` (parameters
    ignored) if that is a manifest media type, else the shape: ``manifests`` makes an OCI
    index, ``config`` and ``layers`` an OCI image manifest. ``data`` is only read; the bytes
    the caller holds stay the manifest (and its digest).

    :raises Unsupported: for Docker schema 1 (by media type or ``schemaVersion`` 1) and any
        media type not in :data:`MANIFEST_MEDIA_TYPES`.
    :raises ManifestInvalid: when ``data`` is not a UTF-8 JSON object, ``schemaVersion`` is not
        2, or a field its media type requires is missing or of the wrong type (including any
        descriptor with a bad digest, size or media type).
    """
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise _invalid("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _invalid("the body is not a JSON object")
    media_type = _media_type(body, content_type)
    if media_type in UNSUPPORTED_MANIFEST_MEDIA_TYPES or _is_schema1(body):
        raise _unsupported_schema1()
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise Unsupported(f"Unsupported manifest media type {_show(media_type)}.")
    version = body.get("schemaVersion")
    if type(version) is not int or version != 2:
        raise _invalid("'schemaVersion' must be 2")
    subject = body.get("subject")
    common: dict[str, Any] = {
        "media_type": media_type,
        "schema_version": 2,
        "subject": None if subject is None else _descriptor(subject, "subject"),
        "artifact_type": _optional_str(body, "artifactType", ""),
        "annotations": _annotations(body, ""),
    }
    if media_type in INDEX_MEDIA_TYPES:
        return Manifest(manifests=_descriptors(body, "manifests"), **common)
    if "config" not in body:
        raise _invalid("'config' is required")
    return Manifest(
        config=_descriptor(body["config"], "config"), layers=_descriptors(body, "layers"), **common
    )
