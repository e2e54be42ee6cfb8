"""Domain exceptions and the one error table.

Core code raises these exceptions; it never chooses an HTTP status. Each class names an
:class:`ErrorKind` in :data:`ERROR_TABLE`, which gives its ARM code, its OCI code and its HTTP
status. One renderer per face (``web/arm.py``, ``web/oci.py``) turns an exception into JSON.

Exception tree::

    EntrepotError
    ├── BadRequest (400)            malformed or invalid input
    │   ├── InvalidApiVersion, MissingApiVersion
    │   ├── InvalidResourceName, InvalidRequestContent, InvalidPropertyValue, MissingProperty
    │   ├── InvalidSourceRepository, InvalidTargetRepository, WildcardMismatch
    │   ├── InvalidCredentialSetReference, CredentialSetNotFound
    │   ├── UpstreamNotAllowed, DockerHubCredentialsRequired
    │   └── InvalidSecretIdentifier
    ├── Unauthenticated (401)       AuthenticationFailed, InvalidAuthenticationToken
    ├── AuthorizationFailed (403)   a valid token whose role does not allow the request
    ├── NotFound (404)              ResourceNotFound, ParentResourceNotFound, RouteNotFound,
    │                               SecretNotFound, RepositoryUnknown, ManifestUnknown,
    │                               BlobUnknown
    ├── RepositoryReadOnly (403)    a push to a repository a cache rule covers
    ├── SecretAccessDenied (403), SecretStoreUnavailable (503)
    ├── UpstreamError (502)         UpstreamAuthenticationFailed, UpstreamUnreachable
    │                               (UpstreamAddressRefused, UpstreamNotAsked),
    │                               UpstreamTlsError, UpstreamTooManyRequests,
    │                               UpstreamManifestInvalid
    ├── MethodNotAllowed (405)      PushUnsupported
    ├── Conflict (409)              TargetConflict, QuotaExceeded, CredentialSetInUse,
    │                               PropertyChangeNotAllowed, OperationInProgress, ResourceExists
    ├── PayloadTooLarge (413), RequestTimeout (408)
    ├── InternalError (500)
    ├── OCI vocabulary (400, raised by ``oci.py``): NameInvalid, TagInvalid, DigestInvalid,
    │                               ManifestInvalid; InvalidLoginServer (an InvalidPropertyValue);
    │                               SizeInvalid (content of another size than announced)
    ├── StorageError (500)          ``entrepot.storage``: PathNotFound, InvalidPath,
    │                               InvalidOffset, UnsupportedOperation (carry the driver name)
    └── Unsupported (415)           a manifest media type we do not serve (Docker schema 1)
        └── UnsupportedContentType  a request body that is not JSON (the ARM face)

Messages are for people and never contain a secret value; ``code`` strings are stable and
part of the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class ErrorKind:
    """How one domain error appears on each face."""

    arm_code: str
    oci_code: str
    status: int


class EntrepotError(Exception):
    """Base of every domain error.

    :param message: text for people, safe to show to any caller.
    :param target: the request field or resource the error is about, if any.
    """

    kind: ClassVar[ErrorKind] = ErrorKind("InternalServerError", "UNKNOWN", 500)

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target

    @property
    def code(self) -> str:
        """The stable ARM error code of this error."""
        return self.kind.arm_code

    @property
    def status(self) -> int:
        """The HTTP status this error is answered with."""
        return self.kind.status


def _kind(arm: str, status: int, oci: str = "UNKNOWN") -> ErrorKind:
    return ErrorKind(arm_code=arm, oci_code=oci, status=status)


# -- 400 ----------------------------------------------------------------------------------------
class BadRequest(EntrepotError):
    kind = _kind("BadRequest", 400)


class InvalidApiVersion(BadRequest):
    kind = _kind("InvalidApiVersionParameter", 400)


class MissingApiVersion(BadRequest):
    kind = _kind("MissingApiVersionParameter", 400)


class InvalidResourceName(BadRequest):
    kind = _kind("InvalidResourceName", 400, "NAME_INVALID")


class InvalidRequestContent(BadRequest):
    """The body is not JSON, or not a JSON object."""

    kind = _kind("InvalidRequestContent", 400)


class InvalidPropertyValue(BadRequest):
    """A field has the wrong type or a value outside its domain; ``target`` names it."""

    kind = _kind("InvalidPropertyValue", 400)


class MissingProperty(BadRequest):
    kind = _kind("MissingRequiredProperty", 400)


class InvalidSourceRepository(BadRequest):
    kind = _kind("InvalidSourceRepository", 400, "NAME_INVALID")


class InvalidTargetRepository(BadRequest):
    kind = _kind("InvalidTargetRepository", 400, "NAME_INVALID")


class WildcardMismatch(BadRequest):
    """One of source and target ends in ``/*`` (or is ``*``) and the other does not."""

    kind = _kind("WildcardMismatch", 400)


class InvalidCredentialSetReference(BadRequest):
    """``credentialSetResourceId`` is not a credential-set id of the rule's own registry."""

    kind = _kind("InvalidCredentialSetResourceId", 400)


class CredentialSetNotFound(BadRequest):
    """The referenced credential set does not exist."""

    kind = _kind("CredentialSetNotFound", 400)


class UpstreamNotAllowed(BadRequest):
    kind = _kind("UpstreamNotSupported", 400)


class DockerHubCredentialsRequired(BadRequest):
    kind = _kind("EnforceDockerAuthentication", 400)


class InvalidSecretIdentifier(BadRequest):
    kind = _kind("InvalidSecretIdentifier", 400)


# -- 401 ----------------------------------------------------------------------------------------
class Unauthenticated(EntrepotError):
    kind = _kind("AuthenticationFailed", 401, "UNAUTHORIZED")


class InvalidAuthenticationToken(Unauthenticated):
    kind = _kind("InvalidAuthenticationToken", 401, "UNAUTHORIZED")


class AuthorizationFailed(EntrepotError):
    """The token is valid but its role does not allow the request (a ``pull`` token on a
    management API)."""

    kind = _kind("AuthorizationFailed", 403, "DENIED")


# -- 404 ----------------------------------------------------------------------------------------
class NotFound(EntrepotError):
    kind = _kind("ResourceNotFound", 404, "NAME_UNKNOWN")


class ResourceNotFound(NotFound):
    kind = _kind("ResourceNotFound", 404, "NAME_UNKNOWN")


class ParentResourceNotFound(NotFound):
    """The registry named in the path does not exist."""

    kind = _kind("ParentResourceNotFound", 404, "NAME_UNKNOWN")


class RouteNotFound(NotFound):
    kind = _kind("NotFound", 404, "UNSUPPORTED")


# -- the registry face (/v2/) --------------------------------------------------------------------
class RepositoryUnknown(NotFound):
    """No cache rule of the registry covers the repository (so nothing can be pulled there)."""

    kind = _kind("RepositoryNotFound", 404, "NAME_UNKNOWN")


class ManifestUnknown(NotFound):
    """The manifest (tag or digest) is not in the cache and cannot be fetched."""

    kind = _kind("ManifestUnknown", 404, "MANIFEST_UNKNOWN")


class BlobUnknown(NotFound):
    """The blob is not in the cache and cannot be fetched."""

    kind = _kind("BlobUnknown", 404, "BLOB_UNKNOWN")


class PaginationNumberInvalid(BadRequest):
    """The ``n`` of a paginated list is not a non-negative integer."""

    kind = _kind("InvalidPageSize", 400, "PAGINATION_NUMBER_INVALID")


class RepositoryReadOnly(EntrepotError):
    """A push to a repository a cache rule covers: its content comes from upstream only."""

    kind = _kind("RepositoryReadOnly", 403, "DENIED")


# -- secrets and upstreams (credential health codes) ---------------------------------------------
class SecretNotFound(NotFound):
    """The secret (or its vault, or the version asked for) does not exist."""

    kind = _kind("SecretNotFound", 404)


class SecretAccessDenied(EntrepotError):
    """The reading principal has no ``get`` grant on the secret's vault."""

    kind = _kind("SecretAccessDenied", 403, "DENIED")


class SecretStoreUnavailable(EntrepotError):
    """The secret store could not be read (e.g. wrong master key, unreadable file)."""

    kind = _kind("SecretStoreUnavailable", 503, "UNAVAILABLE")


class UpstreamError(EntrepotError):
    """The upstream registry failed in a way no more specific error describes."""

    kind = _kind("UpstreamError", 502, "UNKNOWN")


class UpstreamAuthenticationFailed(UpstreamError):
    """The upstream (or its token server) refused the credentials."""

    kind = _kind("UpstreamAuthenticationFailed", 401, "UNAUTHORIZED")


class UpstreamUnreachable(UpstreamError):
    """No connection to the upstream (DNS, refused, timeout)."""

    kind = _kind("UpstreamUnreachable", 502, "UNAVAILABLE")


class UpstreamAddressRefused(UpstreamUnreachable):
    """The address guard refuses every address of the upstream. Clients see the very message of
    any other unreachable upstream (closed and filtered ports look alike); the class exists so
    that the client does not try again (asking again cannot change the answer)."""


class UpstreamNotAsked(UpstreamUnreachable):
    """The upstream failed moments ago and is not asked again yet (a cached copy is served
    stale in its place)."""


class UpstreamManifestInvalid(UpstreamError):
    """The upstream sent a manifest that is not one (not JSON, a field missing or mistyped):
    the upstream's fault, not the client's."""

    kind = _kind("UpstreamManifestInvalid", 502, "UNKNOWN")


class UpstreamTlsError(UpstreamError):
    """The TLS handshake with the upstream failed (certificate not trusted, wrong host...)."""

    kind = _kind("UpstreamTlsError", 502, "UNAVAILABLE")


class UpstreamDenied(UpstreamError):
    """The upstream refused access to the content (403) with the credentials it was given."""

    kind = _kind("UpstreamDenied", 403, "DENIED")


class UpstreamTooManyRequests(UpstreamError):
    kind = _kind("UpstreamTooManyRequests", 429, "TOOMANYREQUESTS")


# -- 405 / 409 / 413 / 500 ----------------------------------------------------------------------
class MethodNotAllowed(EntrepotError):
    kind = _kind("MethodNotAllowed", 405, "UNSUPPORTED")


class PushUnsupported(MethodNotAllowed):
    """A push to a repository no cache rule covers: this registry holds no pushed content."""

    kind = _kind("PushNotSupported", 405, "UNSUPPORTED")


class Conflict(EntrepotError):
    kind = _kind("Conflict", 409)


class TargetConflict(Conflict):
    """The rule's target repository overlaps the target of an existing rule."""

    kind = _kind("CacheRuleTargetConflict", 409)


class QuotaExceeded(Conflict):
    kind = _kind("CacheRuleQuotaExceeded", 409)


class CredentialSetQuotaExceeded(QuotaExceeded):
    kind = _kind("CredentialSetQuotaExceeded", 409)


class CredentialSetInUse(Conflict):
    kind = _kind("CredentialSetInUse", 409)


class PropertyChangeNotAllowed(Conflict):
    """A PUT over an existing resource changes a property that is fixed at creation."""

    kind = _kind("PropertyChangeNotAllowed", 409)


class OperationInProgress(Conflict):
    kind = _kind("AnotherOperationInProgress", 409)


class ResourceExists(Conflict):
    kind = _kind("ResourceExists", 409)


class PayloadTooLarge(EntrepotError):
    kind = _kind("RequestTooLarge", 413, "SIZE_INVALID")


class InternalError(EntrepotError):
    kind = _kind("InternalServerError", 500)


# -- OCI vocabulary (entrepot.oci) -----------------------------------------------------------------
class NameInvalid(BadRequest):
    """A repository name is not valid under the OCI distribution grammar."""

    kind = _kind("InvalidRepositoryName", 400, "NAME_INVALID")


class TagInvalid(BadRequest):
    """A tag is not ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``."""

    kind = _kind("InvalidTag", 400, "TAG_INVALID")


class DigestInvalid(BadRequest):
    """A digest is malformed, or uses an algorithm we do not support."""

    kind = _kind("InvalidDigest", 400, "DIGEST_INVALID")


class SizeInvalid(BadRequest):
    """Content is not of the size announced for it (a descriptor, ``Content-Length``)."""

    kind = _kind("InvalidSize", 400, "SIZE_INVALID")


class ManifestInvalid(BadRequest):
    """A manifest is not JSON, or lacks or mistypes a field its media type requires."""

    kind = _kind("InvalidManifest", 400, "MANIFEST_INVALID")


class InvalidLoginServer(InvalidPropertyValue):
    """A login server is not ``host[:port]``; on the ARM face an ``InvalidPropertyValue``."""

    kind = _kind("InvalidPropertyValue", 400, "NAME_INVALID")


class Unsupported(EntrepotError):
    """Content of a kind we do not serve, such as a Docker schema 1 manifest.

    415 (Unsupported Media Type), not 405: the method is fine, the media type is not.
    """

    kind = _kind("UnsupportedMediaType", 415, "UNSUPPORTED")


class RequestTimeout(EntrepotError):
    """The client did not send its whole request within the server's read timeout."""

    kind = _kind("RequestTimeout", 408)


class UnsupportedContentType(Unsupported):
    """A request body's ``Content-Type`` is not one the API reads (ARM: JSON only); ``target``
    is ``Content-Type``. ARM code ``UnsupportedMediaType``, 415."""

    kind = _kind("UnsupportedMediaType", 415, "UNSUPPORTED")


class ConfigError(Exception):
    """The configuration is invalid; the message says which key and why. Raised before serving."""


def error_table() -> dict[str, ErrorKind]:
    """Every domain error class name with its kind; the documentation of the error codes."""
    table: dict[str, ErrorKind] = {}
    stack: list[type[EntrepotError]] = [EntrepotError]
    while stack:
        cls = stack.pop()
        table[cls.__name__] = cls.kind
        stack.extend(cls.__subclasses__())
    return dict(sorted(table.items()))
