"""The resolver protocol, the :class:`Secret` wrapper and the ordered :class:`Resolvers` chain.

A *secret identifier* is a string naming where a secret lives; its scheme picks the resolver:

====================================================  =========================================
``https://<vault>.vault.azure.net/secrets/<name>[/<version>]``  the built-in vault (:mod:`.vault`)
``env:NAME``                                          an environment variable (:mod:`.env`)
``file:///ABSOLUTE/PATH``                             a mounted file (:mod:`.files`)
====================================================  =========================================

Contract of every resolver (checked by one shared test suite):

* :meth:`SecretResolver.handles` is synchronous and does no I/O: it only says whether the
  identifier is of the resolver's kind.
* :meth:`SecretResolver.check` validates the shape of an identifier it handles, synchronously,
  raising :class:`~entrepot.errors.InvalidSecretIdentifier`.
* :meth:`SecretResolver.resolve` returns the value as a :class:`Secret`, or raises
  :class:`~entrepot.errors.InvalidSecretIdentifier`, :class:`~entrepot.errors.SecretNotFound`,
  :class:`~entrepot.errors.SecretAccessDenied` or
  :class:`~entrepot.errors.SecretStoreUnavailable`.
* Error messages name the identifier, never a value; resolvers log nothing about values.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from entrepot import errors as e

__all__ = ["Resolvers", "Secret", "SecretResolver", "scheme_of"]

MAX_IDENTIFIER_LENGTH = 2048


class Secret:
    """A secret value that does not show itself: ``repr``, ``str`` and formatting give ``***``.

    Call :meth:`reveal` at the last moment, where the value is really needed (an upstream
    login). Two secrets compare equal when their values are equal (in constant time); a secret
    is not hashable and never equal to a plain string.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        """The value itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, format_spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


@runtime_checkable
class SecretResolver(Protocol):
    """Something that turns secret identifiers of one kind into values."""

    @property
    def description(self) -> str:
        """A short name for messages, e.g. ``"the built-in vault"``."""
        ...

    def handles(self, identifier: str) -> bool:
        """Whether ``identifier`` is of this resolver's kind (no I/O, no validation beyond)."""
        ...

    def check(self, identifier: str) -> None:
        """Validate the shape of an identifier this resolver handles.

        :raises InvalidSecretIdentifier: naming the identifier and what is wrong with it.
        """
        ...

    async def resolve(self, identifier: str, principal_id: str) -> Secret:
        """The value of the secret ``identifier`` as read by ``principal_id``.

        :raises InvalidSecretIdentifier: the identifier is malformed.
        :raises SecretNotFound: the secret (or its vault, or that version) does not exist.
        :raises SecretAccessDenied: ``principal_id`` may not read it, or the resolver's
            configuration does not allow it.
        :raises SecretStoreUnavailable: the store cannot be read or decrypted.
        """
        ...


def scheme_of(identifier: str) -> str:
    """The scheme of ``identifier`` (text before the first ``:``, lower case), or ``""``."""
    head, sep, _ = identifier.partition(":")
    if not sep or not head or not head[0].isalpha():
        return ""
    if not all(c.isalnum() or c in "+.-" for c in head):
        return ""
    return head.lower()


class Resolvers:
    """An ordered chain of resolvers: the first that handles an identifier resolves it."""

    def __init__(self, resolvers: Iterable[SecretResolver], *, hint: str = "") -> None:
        self._resolvers = tuple(resolvers)
        self._hint = hint

    def __iter__(self) -> Iterator[SecretResolver]:
        return iter(self._resolvers)

    def __len__(self) -> int:
        return len(self._resolvers)

    def resolver_for(self, identifier: str) -> SecretResolver:
        """The resolver that handles ``identifier``.

        :raises InvalidSecretIdentifier: when it is not a string of sane length, or no resolver
            handles it.
        """
        if not isinstance(identifier, str) or not identifier.strip():
            raise e.InvalidSecretIdentifier("The secret identifier is empty.")
        if len(identifier) > MAX_IDENTIFIER_LENGTH or any(
            c.isspace() or not c.isprintable() for c in identifier
        ):
            raise e.InvalidSecretIdentifier(
                f"The secret identifier {_clip(identifier)!r} is invalid: it is longer than "
                f"{MAX_IDENTIFIER_LENGTH} characters or contains white space or control "
                "characters."
            )
        for resolver in self._resolvers:
            if resolver.handles(identifier):
                return resolver
        scheme = scheme_of(identifier)
        what = f"scheme {scheme!r}" if scheme else "an identifier without a scheme"
        message = f"There is no resolver for {what} (secret identifier {identifier!r})."
        if self._hint:
            message += " " + self._hint
        raise e.InvalidSecretIdentifier(message)

    def check_identifier(self, identifier: str) -> None:
        """Validate ``identifier`` synchronously, without reading anything (for create time).

        :raises InvalidSecretIdentifier: no resolver handles it, or it is malformed.
        """
        self.resolver_for(identifier).check(identifier)

    async def resolve(self, identifier: str, principal_id: str) -> Secret:
        """Resolve ``identifier`` as ``principal_id`` with the first resolver that handles it.

        :raises InvalidSecretIdentifier: no resolver for it, or malformed.
        :raises SecretNotFound, SecretAccessDenied, SecretStoreUnavailable: from the resolver.
        """
        return await self.resolver_for(identifier).resolve(identifier, principal_id)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
