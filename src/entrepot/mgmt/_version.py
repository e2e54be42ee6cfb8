"""The version of the ``entrepot`` distribution, as sent in the client's ``User-Agent``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["SDK_MONIKER", "VERSION"]

try:
    VERSION: str = version("entrepot")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    VERSION = "0.0.0"

SDK_MONIKER = f"entrepot-mgmt/{VERSION}"
"""First token of every ``User-Agent`` header the client sends."""
