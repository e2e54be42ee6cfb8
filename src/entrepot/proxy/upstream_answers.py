"""What an upstream answer means for a pull through a cache rule.

* :func:`check` raises the domain error of a non-2xx answer (401 ``UNAUTHORIZED``, 403
  ``DENIED``, 404 ``MANIFEST_UNKNOWN``/``BLOB_UNKNOWN``, other statuses 502), each message naming
  the cache rule and the upstream (a 401 to a credential set names the set and says to look at
  its credential health; nothing the upstream wrote is repeated);
* :func:`is_failure` says whether an error means the upstream could not be asked (a cached copy
  may then be served stale);
* :func:`named` re-raises an upstream error naming the rule; :func:`where` is that wording.
"""

from __future__ import annotations

from entrepot import errors as e
from entrepot.proxy.resolution import Resolution
from entrepot.upstream.response import UpstreamResponse

__all__ = ["check", "is_failure", "media_type", "named", "where"]

_STALE_ERRORS = (
    e.UpstreamUnreachable,
    e.UpstreamTlsError,
    e.UpstreamTooManyRequests,
    e.UpstreamManifestInvalid,
)


def is_failure(exc: e.UpstreamError) -> bool:
    """Whether ``exc`` means the upstream could not be asked, or answered nonsense (serve a
    stale copy then)."""
    if isinstance(exc, _STALE_ERRORS):
        return True
    return type(exc) is e.UpstreamError  # 5xx after the retries, or not a registry


def where(resolution: Resolution) -> str:
    up = resolution.upstream
    return f"cache rule '{resolution.rule.name}' (upstream {up.login_server}/{up.repository})"


def named(resolution: Resolution, exc: e.UpstreamError) -> e.UpstreamError:
    """``exc`` again, its message naming the rule (the same class, so the same OCI code)."""
    return type(exc)(f"{exc.message} (pulling through {where(resolution)})")


async def check(resolution: Resolution, resp: UpstreamResponse, what: str) -> None:
    """Raise the domain error of a non-2xx upstream answer about ``what`` (closing it)."""
    if 200 <= resp.status < 300:
        return
    await resp.close()
    up = resolution.upstream
    rule = where(resolution)
    if resp.status == 401 and resolution.rule.credential_set_id is not None:
        raise e.UpstreamAuthenticationFailed(
            f"The credential set '{resolution.rule.credential_set_name}' of cache rule "
            f"'{resolution.rule.name}' could not log in to {up.login_server} (401 for {what} "
            f"of {up.repository}); its credential health says why."
        )
    if resp.status == 401:
        raise e.UpstreamAuthenticationFailed(
            f"The upstream {up.login_server} refused access to {what} of {up.repository} "
            f"(401); check the credential set of {rule}."
        )
    if resp.status == 403:
        raise e.UpstreamDenied(
            f"The upstream {up.login_server} denied access to {what} of {up.repository} (403), "
            f"{rule}."
        )
    if resp.status == 404:
        text = (
            f"The {what} of repository '{resolution.repository}' is not cached, and the "
            f"upstream does not have it (404), {rule}."
        )
        if what.startswith("blob"):
            raise e.BlobUnknown(text)
        raise e.ManifestUnknown(text)
    raise e.UpstreamError(
        f"The upstream {up.login_server} answered {resp.status} for {what} of {up.repository}, "
        f"{rule}."
    )


def media_type(resp: UpstreamResponse) -> str | None:
    value = resp.headers.get("Content-Type")
    return value.split(";", 1)[0].strip() if value else None
