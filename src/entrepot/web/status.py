"""``GET /entrepot/status``: what the CLI's ``entrepot status`` shows about a running server.

An entrepot extension beside the ARM face, with the admin bearer token like the vault routes,
and errors in the same management shape (:func:`~entrepot.web.responses.management_errors`).
:func:`build_status_app` makes the face; ``app.py`` mounts it at :data:`MOUNT`. The answer::

    {"version": "0.1.0", "database": "sqlite",
     "registries": 1, "cacheRules": 4, "credentialSets": 2,
     "cache": {"repositories": 3, "manifests": 7, "tags": 4, "blobs": 12,
               "blobBytes": 31457280},
     "storage": {"driver": "filesystem", "root": "/var/lib/entrepot/content"}}

``version`` is the server's ``entrepot`` distribution, ``database`` the metadata store's kind
(``"sqlite"`` or ``"postgresql"``); the counts are of the whole server. ``cache`` is what the
pull-through cache holds (:meth:`~entrepot.metadata.SqlContentIndex.counts`: repositories that
hold a manifest, manifests per repository, tags, blobs once per digest and their total size in
bytes), ``storage`` where its content lives: the driver's name and its location (for the
filesystem driver, the absolute path of its root). Every number is read anew on each request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from entrepot.web.auth import TokenAuthenticator
from entrepot.web.responses import json_response, management_errors

__all__ = ["MOUNT", "Counts", "build_status_app", "server_version"]

log = logging.getLogger("entrepot.web.status")
MOUNT = "/entrepot/status"  # where app.py mounts the face

Counts = Callable[[], Awaitable[Mapping[str, int]]]
"""``() -> {"registries": n, "cache_rules": n, "credential_sets": n}`` (the metadata store's
:meth:`~entrepot.metadata.SqlResourceStore.counts`), or for the cache ``() -> {"repositories":
n, "manifests": n, "tags": n, "blobs": n, "blob_bytes": n}``
(:meth:`~entrepot.metadata.SqlContentIndex.counts`)."""


def server_version() -> str:
    """The installed ``entrepot`` distribution's version (``0.0.0`` when not installed)."""
    try:
        return version("entrepot")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "0.0.0"


def build_status_app(
    authenticator: TokenAuthenticator,
    counts: Counts,
    database_kind: str,
    cache_counts: Counts,
    storage: Mapping[str, str],
) -> web.Application:
    """The status face, to be mounted at :data:`MOUNT`.

    :param authenticator: checks the bearer token of every request.
    :param counts: the resource counts, read on every request.
    :param database_kind: ``"sqlite"`` or ``"postgresql"``.
    :param cache_counts: the content index's counts, read on every request.
    :param storage: the content store, as shown: ``{"driver": ..., "root": ...}``.
    """
    current_version = server_version()
    shown_storage = dict(storage)

    async def status(request: web.Request) -> web.Response:
        await authenticator.authenticate(request)
        numbers = await counts()
        cached = await cache_counts()
        return json_response(
            200,
            {
                "version": current_version,
                "database": database_kind,
                "registries": numbers["registries"],
                "cacheRules": numbers["cache_rules"],
                "credentialSets": numbers["credential_sets"],
                "cache": {
                    "repositories": cached["repositories"],
                    "manifests": cached["manifests"],
                    "tags": cached["tags"],
                    "blobs": cached["blobs"],
                    "blobBytes": cached["blob_bytes"],
                },
                "storage": shown_storage,
            },
        )

    app = web.Application(middlewares=[management_errors(log)])
    app.router.add_get("", status, allow_head=False)
    app.router.add_get("/", status, allow_head=False)
    return app
