"""Where a login server's registry API really is.

A login server is what users write (``docker.io``, ``ghcr.io``, ``registry.example.com:5000``);
its endpoint is the base URL whose ``/v2/`` the client talks to. In order:

1. a ``[upstreams."<login server>"] url = "<scheme>://<host>[:port]"`` config entry (the only
   way to get plain ``http``; an entry for ``docker.io`` also covers its aliases);
2. Docker Hub's aliases ``docker.io``, ``index.docker.io`` and ``registry-1.docker.io`` →
   ``https://registry-1.docker.io``;
3. anything else → ``https://<login server>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from yarl import URL

from entrepot.config import UpstreamEndpoint
from entrepot.errors import InvalidPropertyValue

__all__ = ["DOCKER_HUB", "DOCKER_HUB_ALIASES", "normalize_login_server", "resolve_endpoint"]

DOCKER_HUB = URL("https://registry-1.docker.io")
DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")

_LOGIN_SERVER_RE = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])(?::\d{1,5})?"
)


def normalize_login_server(login_server: str) -> str:
    """``login_server`` lower-cased and checked to be ``host[:port]``.

    :raises InvalidPropertyValue: (target ``loginServer``) for anything else, such as a URL.
    """
    value = login_server.strip().lower()
    if not _LOGIN_SERVER_RE.fullmatch(value):
        raise InvalidPropertyValue(
            f"{login_server!r} is not a login server (expected HOST or HOST:PORT)",
            target="loginServer",
        )
    return value


def resolve_endpoint(login_server: str, upstreams: Mapping[str, UpstreamEndpoint]) -> URL:
    """The base URL (scheme, host, port, no trailing slash) of ``login_server``'s registry API.

    :param upstreams: ``Config.upstreams``: login server (lower case) → endpoint.
    :raises InvalidPropertyValue: when ``login_server`` is not ``host[:port]``.
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
