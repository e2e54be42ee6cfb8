"""entrepot's management SDK: a client for the ARM API of an entrepot server.

A drop-in for the parts of ``azure-mgmt-containerregistry`` that entrepot serves::

    from entrepot.mgmt import ContainerRegistryManagementClient, StaticTokenCredential
    from entrepot.mgmt.models import CacheRule

    client = ContainerRegistryManagementClient(
        StaticTokenCredential("my-token"), "00000000-0000-0000-0000-000000000000",
        base_url="http://127.0.0.1:5000", polling_interval=1,
    )
    rule = client.cache_rules.begin_create(
        "rg", "myregistry", "hub", CacheRule(source_repository="docker.io/library/*",
                                             target_repository="hub/*"),
    ).result()

The genuine ``azure-mgmt-containerregistry`` client works against the same server; over plain
``http://`` on loopback give it ``authentication_policy=loopback_policy(credential)``.

Long-running operations return azure-core's :class:`~azure.core.polling.LROPoller`, lists its
:class:`~azure.core.paging.ItemPaged`, and failures raise azure-core's
:class:`~azure.core.exceptions.HttpResponseError` family. This package imports nothing of the
server; the models are those of :mod:`entrepot.models`, re-exported by :mod:`entrepot.mgmt.models`.
"""

from __future__ import annotations

from entrepot.mgmt import _version, models
from entrepot.mgmt._client import ContainerRegistryManagementClient
from entrepot.mgmt._credentials import (
    LoopbackARMChallengeAuthenticationPolicy,
    StaticTokenCredential,
    loopback_policy,
)

__version__: str = _version.VERSION
"""The version of the ``entrepot`` distribution this SDK belongs to."""

__all__ = [
    "ContainerRegistryManagementClient",
    "LoopbackARMChallengeAuthenticationPolicy",
    "StaticTokenCredential",
    "loopback_policy",
    "models",
]
