"""Upstream registry client: endpoints, ``WWW-Authenticate`` challenges, login and tokens."""

from entrepot.upstream.challenge import Challenge, parse_www_authenticate
from entrepot.upstream.client import AuthKind, Credentials, LoginResult, UpstreamClient
from entrepot.upstream.endpoints import DOCKER_HUB, normalize_login_server, resolve_endpoint

__all__ = [
    "DOCKER_HUB",
    "AuthKind",
    "Challenge",
    "Credentials",
    "LoginResult",
    "UpstreamClient",
    "normalize_login_server",
    "parse_www_authenticate",
    "resolve_endpoint",
]
