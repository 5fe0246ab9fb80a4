"""Checkpoint rows: the current tree head to sign, and storing the signed checkpoint."""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from gateway.audit.merkle import CompactRange
from gateway.store.engine import Engines
from gateway.store.merkle import SqlNodeReader
from gateway.store.schema import checkpoints, exchanges


class CheckpointStore:
    def __init__(self, engines: Engines):
        self._engines = engines

    def unsigned_head(self) -> tuple[int, bytes] | None:
        """(size, root) of the log if it grew since the newest checkpoint, else None."""
        with self._engines.reader.connect() as conn, conn.begin():
            size = (
                int(conn.execute(select(func.coalesce(func.max(exchanges.c.log_index), -1))).scalar_one()) + 1
            )
            latest = conn.execute(select(func.max(checkpoints.c.tree_size))).scalar_one_or_none()
            if size == 0 or latest == size:
                return None
            return size, CompactRange.from_store(size, SqlNodeReader(conn)).root()

    def add(self, *, tree_size: int, root_hash: bytes, created_at_us: int, envelope: bytes) -> bool:
        """Store a signed checkpoint; False if another replica stored this size first."""
        try:
            with self._engines.writer.begin() as conn:
                conn.execute(
                    insert(checkpoints).values(
                        tree_size=tree_size,
                        root_hash=root_hash,
                        created_at_us=created_at_us,
                        envelope=envelope,
                    )
                )
        except IntegrityError:
            return False
        return True
