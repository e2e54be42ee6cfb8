"""The cheaper access log writes what the stock formatting wrote: the text line's fields, the
JSON ``time``, and ``%(asctime)s`` of every log line (:class:`CachedTimeFormatter`)."""

from __future__ import annotations

import datetime as dt
import logging
import time

import orjson
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from entrepot.web.access_log import (
    PRINCIPAL,
    AccessLogger,
    CachedTimeFormatter,
    _utc_stamp,
)


def test_the_cached_asctime_is_the_stock_one() -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    cached, stock = CachedTimeFormatter(fmt), logging.Formatter(fmt)
    start = time.time()
    for created in [start + i * 0.2503 for i in range(40)] + [start, start + 86_400.999]:
        record = logging.makeLogRecord({"msg": "m", "name": "n", "levelname": "INFO"})
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert cached.format(record) == stock.format(record)
    record = logging.makeLogRecord({"msg": "m"})
    assert CachedTimeFormatter("%(asctime)s").formatTime(record, "%Y") == time.strftime("%Y")


def test_the_json_time_is_iso_utc_with_milliseconds() -> None:
    now = time.time()
    for moment in (now, now + 0.999, now + 1.0004, 1_700_000_000.0):
        expected = dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="milliseconds")
        assert _utc_stamp(moment) == expected.replace("+00:00", "Z")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logged(log_format: str, request: web.BaseRequest, response: web.StreamResponse) -> str:
    logger = logging.getLogger("entrepot.access.test-cost")
    logger.propagate = False
    capture = _Capture()
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        AccessLogger(logger, log_format).log(request, response, 0.01234)
    finally:
        logger.removeHandler(capture)
    (record,) = capture.records
    assert (record.levelno, record.name) == (logging.INFO, logger.name)
    return record.getMessage()


def test_text_and_json_lines_have_every_field() -> None:
    request = make_mocked_request("GET", "/v2/up/app/manifests/1.0?ns=docker.io")
    request[PRINCIPAL] = "puller"
    response = web.Response(
        body=b"{}", headers={"X-Request-Id": "rid-1", "X-Entrepot-Cache": "hit"}
    )
    text = _logged("text", request, response)
    assert text == (
        f"GET /v2/up/app/manifests/1.0 200 {response.body_length} 12.3ms principal=puller "
        "request_id=rid-1 remote=- cache=hit"  # a mocked request has no peer
    )
    entry = orjson.loads(_logged("json", request, response))
    stamp = dt.datetime.fromisoformat(entry.pop("time").replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
    assert entry == {
        "method": "GET",
        "path": "/v2/up/app/manifests/1.0",
        "status": 200,
        "bytes": response.body_length,
        "duration_ms": 12.3,
        "principal": "puller",
        "request_id": "rid-1",
        "remote": request.remote,
        "cache": "hit",
    }
    bare = make_mocked_request("GET", "/" + "p" * 600)
    line = _logged("text", bare, web.Response(status=404))
    assert line.startswith(f"GET /{'p' * 511}... 404 0 12.3ms "), line
    assert line.endswith(" principal=- request_id=- remote=- cache=-"), line


def test_request_ids_are_distinct_version_4_uuids() -> None:
    import uuid

    from entrepot.web.oci import _request_id

    ids = {_request_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    for each in list(ids)[:2000]:
        parsed = uuid.UUID(each)
        assert (str(parsed), parsed.version, parsed.variant) == (each, 4, uuid.RFC_4122)
