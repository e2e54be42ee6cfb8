"""Referrers of a manifest through the pull-through cache (not served yet)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from entrepot import errors as e
from entrepot.oci import Digest
from entrepot.proxy.engine import ManifestContent
from entrepot.proxy.resolution import Resolution
from entrepot.proxy.upstream_answers import where

if TYPE_CHECKING:
    from entrepot.proxy.cache import CachingEngine

__all__ = ["CachedReferrers"]


@dataclass(frozen=True, slots=True)
class CachedReferrers:
    engine: CachingEngine
    resolution: Resolution

    async def index(self, subject: Digest, artifact_type: str | None) -> ManifestContent:
        raise e.ManifestUnknown(
            f"The referrers of '{subject}' are not served yet, {where(self.resolution)}."
        )
