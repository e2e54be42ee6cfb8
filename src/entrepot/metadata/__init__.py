"""The only SQL in entrepot: typed stores over SQLite (embedded default) or PostgreSQL.

Services see :mod:`entrepot.metadata.protocols` and :mod:`entrepot.metadata.records`; the SQL
implementations are wired by :func:`entrepot.app.build_app`.
"""

from entrepot.metadata.content import SqlContentIndex
from entrepot.metadata.database import Database
from entrepot.metadata.leases import SqlLeases
from entrepot.metadata.operations import SqlOperationStore
from entrepot.metadata.resources import SqlResourceStore

__all__ = ["Database", "SqlContentIndex", "SqlLeases", "SqlOperationStore", "SqlResourceStore"]
