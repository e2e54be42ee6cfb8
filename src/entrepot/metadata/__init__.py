"""The metadata store: registries, rules, credential sets and operations (SQLite | PostgreSQL)."""

from entrepot.metadata.store import MetadataStore

__all__ = ["MetadataStore"]
