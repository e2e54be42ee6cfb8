"""``env:NAME``: secrets from the server's environment variables.

Off unless ``[secrets] env_enabled = true``, and then only for variables whose name matches one
of the ``env_allow`` glob patterns (case-sensitive, e.g. ``REGISTRY_*``), so a credential set
cannot read arbitrary variables of the server (cloud credentials...). Variables named
``ENTREPOT_*`` (in any case) are the server's own (``ENTREPOT_MASTER_KEY``,
``ENTREPOT_DATABASE_URL`` with its password, ``ENTREPOT_TOKEN``...) and never resolve, whatever
the patterns say, ``env_allow = ["*"]`` included.

This resolver does not check principals: the operator who enabled it and wrote the allow list
has decided which variables any credential set may read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from entrepot import errors as e
from entrepot.secrets.base import Secret, scheme_of

__all__ = ["EnvResolver"]

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
RESERVED_PREFIX = "ENTREPOT_"
"""Variables whose name starts with this (compared in upper case) never resolve."""


class EnvResolver:
    """Resolve ``env:NAME`` from ``environ`` (read at each resolve, so changes are seen).

    :param allow: glob patterns a variable name must match (``fnmatch``, case-sensitive).
    :param environ: the environment (default ``os.environ``).
    """

    description = "the environment-variable resolver"

    def __init__(self, allow: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
        self.allow = tuple(allow)
        self._environ = os.environ if environ is None else environ

    def handles(self, identifier: str) -> bool:
        return scheme_of(identifier) == "env"

    def variable(self, identifier: str) -> str:
        """The variable name of ``env:NAME``.

        :raises InvalidSecretIdentifier: when it is not ``env:`` plus a variable name.
        """
        name = identifier.partition(":")[2]
        if not self.handles(identifier) or not ENV_NAME_RE.match(name):
            raise e.InvalidSecretIdentifier(
                f"The secret identifier {identifier!r} is invalid: expected env:NAME with NAME "
                "made of letters, digits and '_', not starting with a digit."
            )
        return name

    def check(self, identifier: str) -> None:
        self.variable(identifier)

    def allowed(self, name: str) -> bool:
        """Whether variable ``name`` may be read: never an ``ENTREPOT_*`` one."""
        if name.upper().startswith(RESERVED_PREFIX):
            return False
        return any(fnmatchcase(name, p) for p in self.allow)

    async def resolve(self, identifier: str, principal_id: str) -> Secret:
        """The value of the variable; ``principal_id`` is not consulted (see the module doc).

        :raises SecretAccessDenied: the variable is an ``ENTREPOT_*`` one, or does not match
            ``secrets.env_allow``.
        :raises SecretNotFound: the variable is not set.
        """
        name = self.variable(identifier)
        if name.upper().startswith(RESERVED_PREFIX):
            raise e.SecretAccessDenied(
                f"Access to the secret {identifier!r} is denied: environment variables named "
                f"{RESERVED_PREFIX}* hold the server's own settings and are never readable."
            )
        if not self.allowed(name):
            raise e.SecretAccessDenied(
                f"Access to the secret {identifier!r} is denied: the environment variable "
                f"{name!r} does not match any pattern of secrets.env_allow."
            )
        value = self._environ.get(name)
        if value is None:
            raise e.SecretNotFound(
                f"The secret {identifier!r} was not found: the environment variable {name!r} "
                "is not set on the server."
            )
        return Secret(value)
