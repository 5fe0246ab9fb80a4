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

    def freshness(self) -> tuple[int, int, int | None]:
        return log_freshness(self._engines)

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


def log_freshness(engines: Engines) -> tuple[int, int, int | None]:
    """(log size, newest checkpoint's tree size, received_at_us of the oldest entry that
    checkpoint does not cover, or None when it covers the whole log), for the metrics."""
    with engines.reader.connect() as conn, conn.begin():
        size = int(conn.execute(select(func.coalesce(func.max(exchanges.c.log_index), -1))).scalar_one()) + 1
        signed = int(conn.execute(select(func.coalesce(func.max(checkpoints.c.tree_size), 0))).scalar_one())
        waiting = None
        if signed < size:
            waiting = conn.execute(
                select(exchanges.c.received_at_us).where(exchanges.c.log_index == signed)
            ).scalar_one_or_none()
        return size, signed, None if waiting is None else int(waiting)
