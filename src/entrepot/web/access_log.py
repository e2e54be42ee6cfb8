"""Log hygiene: the access log, and warnings that repeat at most once per interval.

The access log has one line per answered request, 401s and parser errors included, on the
logger ``entrepot.access`` (level INFO), in one of two formats (``[server] access_log``):

* ``text``: ``METHOD PATH STATUS BYTES DURATIONms principal=P request_id=ID remote=ADDR
  cache=C``;
* ``json``: one JSON object per line with the keys ``time`` (ISO 8601, UTC), ``method``,
  ``path``, ``status``, ``bytes``, ``duration_ms``, ``principal``, ``request_id``, ``remote``
  and ``cache``.

``path`` is the raw (percent-encoded) path without the query, cut to :data:`MAX_PATH` characters;
``principal`` is the authenticated caller (``request[PRINCIPAL]``, set by whoever authenticates
the request) or ``null`` / ``-``; ``request_id`` is the response's ``x-ms-request-id`` or
``X-Request-Id``; ``cache`` says where the registry face took the content from, as its
response header ``X-Entrepot-Cache`` does (``hit``, ``miss`` or ``stale``: see
:class:`~entrepot.proxy.engine.Origin`), and is ``null`` / ``-`` on answers without that header
(errors, the management API). A request the HTTP parser refused has ``method`` and ``path``
``-``.

:class:`RateLimitedLog` writes one warning line per kind and interval and counts the rest, so a
flood of bad requests or hang-ups costs a few lines, never a traceback each.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from entrepot.proxy.engine import CACHE_HEADER

__all__ = [
    "ACCESS_LOGGER",
    "FORMATS",
    "MAX_PATH",
    "PARSER_ERROR",
    "PRINCIPAL",
    "AccessLogger",
    "RateLimitedLog",
    "access_fields",
]

ACCESS_LOGGER = "entrepot.access"
FORMATS = ("text", "json")
MAX_PATH = 512
PRINCIPAL = web.RequestKey("principal", str)
"""The authenticated principal of a request (a token's description such as ``admin``)."""
PARSER_ERROR = web.RequestKey("parser_error", bool)
"""Set on the stand-in request of a message the HTTP parser refused."""


def access_fields(
    request: web.BaseRequest, response: web.StreamResponse, duration: float
) -> dict[str, Any]:
    """The access-log fields of one answered request (see the module docstring)."""
    refused = bool(request.get(PARSER_ERROR))
    path = "-" if refused else request.raw_path.split("?", 1)[0]
    if len(path) > MAX_PATH:
        path = path[:MAX_PATH] + "..."
    headers = response.headers
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "method": "-" if refused else request.method,
        "path": path,
        "status": response.status,
        "bytes": response.body_length,
        "duration_ms": round(duration * 1000, 1),
        "principal": request.get(PRINCIPAL),
        "request_id": headers.get("x-ms-request-id") or headers.get("X-Request-Id"),
        "remote": request.remote,
        "cache": headers.get(CACHE_HEADER),
    }


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook: ``log_format`` is ``"text"`` or ``"json"``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        fields = access_fields(request, response, time)
        if self.log_format == "json":
            self.logger.info("%s", orjson.dumps(fields).decode())
            return
        self.logger.info(
            "%s %s %d %d %.1fms principal=%s request_id=%s remote=%s cache=%s",
            fields["method"],
            fields["path"],
            fields["status"],
            fields["bytes"],
            fields["duration_ms"],
            fields["principal"] or "-",
            fields["request_id"] or "-",
            fields["remote"] or "-",
            fields["cache"] or "-",
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


@dataclass
class _Kind:
    quiet_until: float
    suppressed: int = 0


class RateLimitedLog:
    """Warnings of one *kind* at most once per ``interval`` seconds.

    The lines in between are counted, and the next line of that kind says how many were left
    out. Kinds are a few fixed strings (never a client's address), so the state stays small.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` (no traceback) unless ``kind`` was logged within the
        interval; return whether it was logged."""
        now = self._clock()
        state = self._kinds.get(kind)
        if state is not None and now < state.quiet_until:
            state.suppressed += 1
            return False
        suppressed = state.suppressed if state is not None else 0
        self._kinds[kind] = _Kind(quiet_until=now + self.interval)
        if suppressed:
            message += " (and %d like it since the last such line)"
            args = (*args, suppressed)
        self.logger.warning(message, *args)
        return True
