"""One module per backend implementing ``gateway.store.writes.WriteStore``.

Both write through the DB-API driver directly with fixed SQL and plain tuples: the
writer is the hot path, and SQLAlchemy's statement compilation and execution cost more
than the database itself there (../shared/WRITE-PATH.md). Reads elsewhere keep
SQLAlchemy Core.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url

from gateway.store.sql.sqlite import SqliteWriteStore
from gateway.store.writes import WriteStore


def open_write_store(url: str) -> WriteStore:
    """The write store for ``url`` (an SQLAlchemy URL, schema already created)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return SqliteWriteStore(url)
    if backend == "postgresql":
        # psycopg is the optional [postgres] extra: imported only for a PostgreSQL URL.
        from gateway.store.sql.postgres import PostgresWriteStore

        return PostgresWriteStore(url)
    raise ValueError(f"unsupported database backend {backend!r}")
