"""Where a login server's registry API really is.

A login server is what users write (``docker.io``, ``ghcr.io``, ``registry.example.com:5000``);
its endpoint is the base URL whose ``/v2/`` the client talks to. In order:

1. a ``[upstreams."<login server>"] url = "<scheme>://<host>[:port]"`` config entry (the only
   way to get plain ``http``; an entry for ``docker.io`` also covers its aliases);
2. Docker Hub's aliases (:data:`entrepot.oci.DOCKER_HUB_ALIASES`) →
   ``https://registry-1.docker.io``;
3. anything else → ``https://<login server>``.

What a login server is, and its normal form, is :func:`entrepot.oci.parse_login_server`'s.
"""

from __future__ import annotations

from collections.abc import Mapping

from yarl import URL

from entrepot.config import UpstreamEndpoint
from entrepot.oci import DOCKER_HUB_ALIASES, DOCKER_HUB_HOST, parse_login_server

__all__ = ["DOCKER_HUB", "normalize_login_server", "resolve_endpoint"]

DOCKER_HUB = URL(f"https://{DOCKER_HUB_HOST}")
"""The endpoint of every Docker Hub alias when no ``[upstreams]`` entry overrides it."""


def normalize_login_server(login_server: str) -> str:
    """``login_server`` stripped of surrounding whitespace, in its normal form (lower case).

    :raises InvalidLoginServer: (an ``InvalidPropertyValue``, target ``loginServer``) for
        anything that is not ``host[:port]``, such as a URL or a port above 65535.
    """
    return parse_login_server(login_server.strip(), target="loginServer").text


def resolve_endpoint(login_server: str, upstreams: Mapping[str, UpstreamEndpoint]) -> URL:
    """The base URL (scheme, host, port, no trailing slash) of ``login_server``'s registry API.

    :param upstreams: ``Config.upstreams``: login server (normal form) → endpoint.
    :raises InvalidLoginServer: when ``login_server`` is not ``host[:port]``.
    """
    name = normalize_login_server(login_server)
    candidates = [name]
    if name in DOCKER_HUB_ALIASES:
        candidates += [alias for alias in DOCKER_HUB_ALIASES if alias != name]
    for candidate in candidates:
        entry = upstreams.get(candidate)
        if entry is not None:
            return URL(entry.url.rstrip("/"))
    if name in DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    return URL(f"https://{name}")
