"""The ``Range`` header of a blob GET, parsed (:func:`entrepot.web.ranges.parse_range`)."""

from __future__ import annotations

import pytest

from entrepot.web.ranges import ByteRange, RangeNotSatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, ByteRange(0, 0)),
        ("bytes=0-3", 10, ByteRange(0, 3)),
        ("bytes=2-5", 10, ByteRange(2, 5)),
        ("bytes=9-9", 10, ByteRange(9, 9)),
        ("bytes=5-100", 10, ByteRange(5, 9)),  # an end past the end is the end
        ("bytes=3-", 10, ByteRange(3, 9)),
        ("bytes=0-", 10, ByteRange(0, 9)),
        ("bytes=-4", 10, ByteRange(6, 9)),
        ("bytes=-10", 10, ByteRange(0, 9)),
        ("bytes=-50", 10, ByteRange(0, 9)),  # a suffix longer than the blob: all of it
        ("Bytes = 1-2", 10, ByteRange(1, 2)),
        ("bytes= 1-2 ", 10, ByteRange(1, 2)),
        ("bytes=3-" + "9" * 5000, 10, ByteRange(3, 9)),  # a huge end is the end
        ("bytes=-" + "9" * 5000, 10, ByteRange(0, 9)),
        ("bytes=0-1,4-5", 10, None),  # several ranges: the whole blob
        ("bytes=0-1, -2", 10, None),
    ],
)
def test_satisfiable(header: str, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),  # start at the size
        ("bytes=10-20", 10),
        ("bytes=5-4", 10),  # end before start
        ("bytes=-0", 10),  # an empty suffix
        ("bytes=0-", 0),  # nothing of an empty blob
        ("bytes=-1", 0),
        ("bytes=-", 10),
        ("bytes=" + "9" * 5000 + "-", 10),  # a huge start
        ("bytes=1 - 2", 10),
        ("bytes=", 10),
        ("bytes=a-b", 10),
        ("bytes=1-2-3", 10),
        ("bytes=+1-2", 10),
        ("items=0-1", 10),
        ("0-1", 10),
        ("", 10),
        ("bytes=0-1,x", 10),  # several, one malformed
        ("bytes=0-1,-", 10),
    ],
)
def test_not_satisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_byte_range_headers() -> None:
    wanted = ByteRange(2, 5)
    assert wanted.length == 4
    assert wanted.content_range(10) == "bytes 2-5/10"
