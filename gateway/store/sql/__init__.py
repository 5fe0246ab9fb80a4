"""One module per backend implementing ``gateway.store.writes.WriteStore``.

Both write through the DB-API driver directly with fixed SQL and plain tuples: the
writer is the hot path, and SQLAlchemy's statement compilation and execution cost more
than the database itself there (../shared/WRITE-PATH.md). Reads elsewhere keep
SQLAlchemy Core.
"""
