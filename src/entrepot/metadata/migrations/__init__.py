"""Alembic migrations of the metadata store; run by :func:`entrepot.metadata.migrate.upgrade`."""
