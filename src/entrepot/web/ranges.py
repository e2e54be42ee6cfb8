"""Single byte ranges of a blob (RFC 9110, section 14): the ``Range`` header of a blob ``GET``.

Pure: no I/O. :func:`parse_range` is what the blob handler of :mod:`entrepot.web.oci` asks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"(?P<start>[0-9]*)-(?P<end>[0-9]*)")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a blob, both included; ``0 <= start <= end < size``."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` value of a 206 answer: ``bytes start-end/size``."""
        return f"bytes {self.start}-{self.end}/{size}"


def _number(text: str) -> int:
    """Digits as an int; beyond any blob size (and Python's digit limit) they stay large."""
    return int(text) if len(text) <= 18 else 2**63


class RangeNotSatisfiable(ValueError):
    """The header asks for no satisfiable range of the blob: answer 416 with
    ``Content-Range: bytes */size``."""


def parse_range(header: str, size: int) -> ByteRange | None:
    """The one range ``header`` asks of a blob of ``size`` bytes.

    ``bytes=a-b`` (``b`` past the end is the end), ``bytes=a-`` (to the end) and ``bytes=-n``
    (the last ``n`` bytes, all of them when ``n >= size``) are served; whitespace around the
    parts is allowed. Several ranges (``bytes=0-1,5-6``) give ``None``: the caller serves the
    whole blob with 200, as a server may ignore ``Range`` (and as distribution does not serve
    multipart answers either).

    :raises RangeNotSatisfiable: a malformed header, another unit than ``bytes``, ``b < a``,
        ``a >= size``, ``bytes=-0``, or any range of an empty blob.
    """
    unit, equals, specs = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        raise RangeNotSatisfiable(f"not a byte range: {header[:60]!r}")
    parts = [part.strip() for part in specs.split(",")]
    if len(parts) > 1:
        if not all(_SPEC.fullmatch(part) and part != "-" for part in parts):
            raise RangeNotSatisfiable(f"malformed ranges: {header[:60]!r}")
        return None
    found = _SPEC.fullmatch(parts[0])
    if found is None or parts[0] == "-":
        raise RangeNotSatisfiable(f"malformed range: {header[:60]!r}")
    start_text, end_text = found["start"], found["end"]
    if not start_text:  # a suffix: the last n bytes
        suffix = _number(end_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"empty suffix range of a {size}-byte blob")
        return ByteRange(max(size - suffix, 0), size - 1)
    start = _number(start_text)
    end = _number(end_text) if end_text else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(f"range {start}-{end_text} of a {size}-byte blob")
    return ByteRange(start, min(end, size - 1))
