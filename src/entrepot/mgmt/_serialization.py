"""How call arguments become wire form: URL path segments and JSON request bodies.

* A path segment is percent-encoded with ``quote(value, safe="")``, as the genuine SDK does, so
  a ``/`` inside a name arrives as ``%2F`` and cannot change the route.
* A model body is ``model.to_arm(exclude_readonly=True)``: flattened properties nested under
  ``"properties"``, ``None`` attributes and server-owned fields left out.
* A mapping body is sent as is, so ``{"properties": {"credentialSetResourceId": None}}`` sends
  an explicit ``null``; models, enums and datetimes nested in it are converted as above.
* ``bytes`` or a binary file object are sent verbatim (the caller vouches for the JSON).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from enum import Enum
from io import IOBase
from typing import IO, Any, TypeAlias
from urllib.parse import quote

from entrepot.models import Model, format_datetime

__all__ = ["Body", "path_segment", "serialize_body"]

Body: TypeAlias = Model | Mapping[str, Any] | IO[bytes] | bytes
"""What a create or update call accepts as its body."""


def path_segment(name: str, value: object) -> str:
    """Percent-encode one URL path segment (``safe=""``).

    :param name: the parameter name, for the error message.
    :param value: the segment value.
    :return: the encoded segment.
    :raises TypeError: when ``value`` is not a string.
    :raises ValueError: when ``value`` is empty, ``.`` or ``..`` (each would change which
        resource the URL names once the path is normalised).
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}.")
    if value in ("", ".", ".."):
        raise ValueError(f"{name} must be a non-empty name other than '.' and '..'.")
    return quote(value, safe="")


def _json_default(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_arm(exclude_readonly=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, _dt.datetime):
        return format_datetime(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable.")


def serialize_body(body: Body) -> bytes | IO[bytes]:
    """The request content for ``body``.

    :param body: a model, a JSON object as a mapping, ``bytes`` or a binary file object.
    :return: UTF-8 JSON bytes, or ``body`` itself when it is already bytes or a file object.
    :raises TypeError: when ``body`` is none of the accepted types or holds a value JSON cannot
        represent.
    :raises ValueError: when ``body`` holds ``NaN`` or an infinity.
    """
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, IOBase):
        return body  # type: ignore[return-value]  # a binary file object, sent as it reads
    if isinstance(body, Model):
        data: Any = body.to_arm(exclude_readonly=True)
    elif isinstance(body, Mapping):
        data = dict(body)
    else:
        raise TypeError(
            "The body must be a model, a mapping, bytes or a binary file object, "
            f"not {type(body).__name__}."
        )
    return json.dumps(data, default=_json_default, allow_nan=False, separators=(",", ":")).encode(
        "utf-8"
    )
