"""Secrets: the resolver protocol, the built-in vault and the env/file resolvers.

Credential sets name their username and password by *secret identifier*; entrepot reads them
as the credential set's own identity (its ``principalId``) through a :class:`Resolvers` chain:

1. :class:`BuiltinVault`: ``https://<vault>.vault.azure.net/secrets/<name>[/<version>]``,
   encrypted at rest, readable by principals holding a ``get`` grant on the vault;
2. :class:`EnvResolver`: ``env:NAME``, when ``[secrets] env_enabled``;
3. :class:`FileResolver`: ``file:///PATH``, when ``[secrets] file_enabled``.

No secret value is ever logged, put in an error message or returned by an API; values travel
as :class:`Secret`, whose ``repr`` is ``Secret('***')``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from entrepot.config import SecretsConfig
from entrepot.errors import ConfigError
from entrepot.secrets.base import Resolvers, Secret, SecretResolver, scheme_of
from entrepot.secrets.env import EnvResolver
from entrepot.secrets.files import FileResolver
from entrepot.secrets.keys import MASTER_KEY_ENV, load_master_key
from entrepot.secrets.vault import (
    BuiltinVault,
    GrantInfo,
    SecretInfo,
    SecretRef,
    VaultInfo,
    parse_secret_identifier,
    secret_identifier,
)

__all__ = [
    "MASTER_KEY_ENV",
    "BuiltinVault",
    "EnvResolver",
    "FileResolver",
    "GrantInfo",
    "Resolvers",
    "Secret",
    "SecretInfo",
    "SecretRef",
    "SecretResolver",
    "VaultInfo",
    "build_resolvers",
    "load_master_key",
    "parse_secret_identifier",
    "scheme_of",
    "secret_identifier",
]


def build_resolvers(
    config: SecretsConfig,
    vault: BuiltinVault,
    environ: Mapping[str, str] | None = None,
    *,
    private_dirs: Iterable[str | Path] = (),
) -> Resolvers:
    """The resolver chain for ``config``: the built-in vault, then env and file if enabled.

    :param config: the ``[secrets]`` section.
    :param vault: the built-in vault (unlocked later, at start-up, by ``vault.unlock``).
    :param environ: the environment the env resolver reads (default ``os.environ``).
    :param private_dirs: directories the file resolver never reads (the data dir).
    :raises ConfigError: when a resolver is enabled without what it needs (``env_allow``
        patterns, absolute ``file_roots``).
    """
    chain: list[SecretResolver] = [vault]
    disabled: list[str] = []
    if config.env_enabled:
        if not config.env_allow:
            raise ConfigError(
                "secrets.env_allow: list the variable name patterns env: identifiers may read "
                '(e.g. ["REGISTRY_*"]) when secrets.env_enabled is true'
            )
        chain.append(EnvResolver(config.env_allow, environ))
    else:
        disabled.append("env: (secrets.env_enabled)")
    if config.file_enabled:
        if not config.file_roots:
            raise ConfigError(
                "secrets.file_roots: list the directories file: identifiers may read from "
                "when secrets.file_enabled is true"
            )
        chain.append(FileResolver(config.file_roots, private_dirs))
    else:
        disabled.append("file: (secrets.file_enabled)")
    hint = (
        "Supported: https://<vault>.vault.azure.net/secrets/<name>[/<version>] (built-in vault)"
        + (", env:NAME" if config.env_enabled else "")
        + (", file:///PATH" if config.file_enabled else "")
        + "."
    )
    if disabled:
        hint += " Disabled by configuration: " + ", ".join(disabled) + "."
    return Resolvers(chain, hint=hint)
