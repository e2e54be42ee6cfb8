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
    "CachedTimeFormatter",
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
    headers = response.headers
    return {
        "time": _utc_stamp(time.time()),
        "method": "-" if refused else request.method,
        "path": "-" if refused else _path(request),
        "status": response.status,
        "bytes": response.body_length,
        "duration_ms": round(duration * 1000, 1),
        "principal": request.get(PRINCIPAL),
        "request_id": headers.get("x-ms-request-id") or headers.get("X-Request-Id"),
        "remote": request.remote,
        "cache": headers.get(CACHE_HEADER),
    }


def _path(request: web.BaseRequest) -> str:
    path = request.raw_path.partition("?")[0]
    return path if len(path) <= MAX_PATH else path[:MAX_PATH] + "..."


_stamp_second = -1
_stamp_prefix = ""


def _utc_stamp(now: float) -> str:
    """``now`` as ISO 8601 UTC with milliseconds (``2026-01-31T12:00:00.123Z``); the part up to
    the second is formatted once per second."""
    global _stamp_second, _stamp_prefix
    ms = int(now * 1000)
    second, millis = divmod(ms, 1000)
    if second != _stamp_second:
        _stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp_second = second
    return f"{_stamp_prefix}.{millis:03d}Z"


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook: ``log_format`` is ``"text"`` or ``"json"``.

    One line costs one preformatted :class:`logging.LogRecord` handed to the logger's handlers
    (no ``%`` formatting, no caller lookup: the line names no source location).
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if self.log_format == "json":
            line = orjson.dumps(access_fields(request, response, time)).decode()
        else:
            refused = bool(request.get(PARSER_ERROR))
            headers = response.headers
            request_id = headers.get("x-ms-request-id") or headers.get("X-Request-Id")
            line = (
                f"{'-' if refused else request.method} {'-' if refused else _path(request)} "
                f"{response.status} {response.body_length} {time * 1000:.1f}ms "
                f"principal={request.get(PRINCIPAL) or '-'} request_id={request_id or '-'} "
                f"remote={request.remote or '-'} cache={headers.get(CACHE_HEADER) or '-'}"
            )
        logger = self.logger
        logger.handle(logger.makeRecord(logger.name, logging.INFO, "(access)", 0, line, (), None))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class CachedTimeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose default ``%(asctime)s`` (``2026-01-31 12:00:00,123``,
    local time, as the stock one writes it) formats the part up to the second once per second:
    the stock formatter's ``localtime`` and ``strftime`` per line are the largest cost of a
    busy access log. A ``datefmt`` is formatted as the stock one does."""

    _second = -1
    _prefix = ""

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt)
        assert self.default_msec_format == "%s,%03d"  # what formatTime writes

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._prefix = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._prefix},{int(record.msecs):03d}"  # default_msec_format


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
