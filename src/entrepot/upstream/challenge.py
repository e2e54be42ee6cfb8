"""``WWW-Authenticate`` parsing (RFC 7235 §4.1, RFC 9110 §11.6.1).

The grammar::

    WWW-Authenticate = 1#challenge
    challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param       = token BWS "=" BWS ( token / quoted-string )
    quoted-string    = DQUOTE *( qdtext / quoted-pair ) DQUOTE      ; quoted-pair = "\\" char

Commas separate both challenges and the parameters of one challenge; a new challenge starts
where a token is followed by whitespace and something that is not ``=``. One header value may
hold several challenges, and a response may carry several ``WWW-Authenticate`` headers:
:func:`parse_www_authenticate` takes them all.

The parser never raises. It is lenient where real registries are sloppy: unquoted parameter
values may contain any character but comma and whitespace (``realm=https://auth/token``), an
unterminated quoted string runs to the end of the header, and what cannot be parsed is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Challenge", "parse_www_authenticate"]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
_WS_RE = re.compile(r"[ \t]*")
_PARAM_START_RE = re.compile(rf"({_TOKEN})[ \t]*=(?!=)")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(,|$))")
_BARE_VALUE_RE = re.compile(r"[^,\s]*")


@dataclass(frozen=True)
class Challenge:
    """One authentication challenge.

    :ivar scheme: the auth scheme, lower-cased (``"basic"``, ``"bearer"``...).
    :ivar params: the parameters, names lower-cased, values unquoted and unescaped.
    :ivar token68: the token68 form (``Negotiate abc==``), when the challenge used it.
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    def get(self, name: str, default: str | None = None) -> str | None:
        """The parameter ``name`` (case-insensitive), or ``default``."""
        return self.params.get(name.lower(), default)


def parse_www_authenticate(headers: str | Iterable[str]) -> list[Challenge]:
    """Every challenge in one ``WWW-Authenticate`` value or in several, in order."""
    values = [headers] if isinstance(headers, str) else list(headers)
    out: list[Challenge] = []
    for value in values:
        out.extend(_Parser(value).challenges())
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip_ws(self) -> None:
        m = _WS_RE.match(self.text, self.pos)
        assert m is not None
        self.pos = m.end()

    def _skip_separators(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t,":
            self.pos += 1

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

    def challenges(self) -> list[Challenge]:
        out: list[Challenge] = []
        while True:
            self._skip_separators()
            if self._at_end():
                return out
            m = _TOKEN_RE.match(self.text, self.pos)
            if m is None:
                self._skip_garbage()
                continue
            scheme = m.group(0).lower()
            self.pos = m.end()
            if not self._at_end() and self.text[self.pos] not in " \t,":
                # Not a scheme (e.g. "abc=def" with no scheme before it): skip the item.
                self._skip_garbage()
                continue
            self._skip_ws()
            token68 = None
            params: dict[str, str] = {}
            t = _TOKEN68_RE.match(self.text, self.pos)
            if t is not None:
                token68 = t.group(0)
                self.pos = t.end()
            else:
                params = self._params()
            out.append(Challenge(scheme, params, token68))

    def _params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        while True:
            m = _PARAM_START_RE.match(self.text, self.pos)
            if m is None:
                return params
            name = m.group(1).lower()
            self.pos = m.end()
            self._skip_ws()
            value = self._value()
            params.setdefault(name, value)  # RFC 7235: each name at most once; keep the first
            # After a parameter: a comma, then another parameter or the next challenge.
            self._skip_ws()
            if self._at_end():
                return params
            if self.text[self.pos] != ",":
                # Junk after a value (e.g. a stray token): skip to the next comma.
                self._skip_garbage()
                if self._at_end():
                    return params
            self._skip_separators()
            if _PARAM_START_RE.match(self.text, self.pos) is None:
                return params  # not "name=": the next challenge begins here (or nothing does)

    def _value(self) -> str:
        if self.pos < len(self.text) and self.text[self.pos] == '"':
            return self._quoted()
        m = _BARE_VALUE_RE.match(self.text, self.pos)
        assert m is not None
        self.pos = m.end()
        return m.group(0)

    def _quoted(self) -> str:
        self.pos += 1  # opening quote
        chars: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and self.pos + 1 < len(self.text):
                chars.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if c == '"':
                return "".join(chars)
            chars.append(c)
        return "".join(chars)  # unterminated: to the end of the header

    def _skip_garbage(self) -> None:
        """Skip to the next comma outside quotes (or the end)."""
        while self.pos < len(self.text) and self.text[self.pos] != ",":
            if self.text[self.pos] == '"':
                self._quoted()
            else:
                self.pos += 1
