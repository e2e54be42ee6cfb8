"""Upstream registry client: endpoints, ``WWW-Authenticate`` challenges, login and tokens."""

from entrepot.upstream.aiohttp_transport import AiohttpTransport
from entrepot.upstream.challenge import Challenge, parse_www_authenticate
from entrepot.upstream.client import AuthKind, Credentials, LoginResult, UpstreamClient
from entrepot.upstream.endpoints import DOCKER_HUB, normalize_login_server, resolve_endpoint
from entrepot.upstream.guard import AddressGuard, GuardedConnector, unreachable
from entrepot.upstream.response import UpstreamResponse
from entrepot.upstream.transport import Timeouts, Transport

__all__ = [
    "DOCKER_HUB",
    "AddressGuard",
    "AiohttpTransport",
    "AuthKind",
    "Challenge",
    "Credentials",
    "GuardedConnector",
    "LoginResult",
    "Timeouts",
    "Transport",
    "UpstreamClient",
    "UpstreamResponse",
    "normalize_login_server",
    "parse_www_authenticate",
    "resolve_endpoint",
    "unreachable",
]
