"""Read side of the change feed (Subscribe): accepted exchanges by log index, in pages.

Every page is bounded by the log's size read first, in the same transaction: the writer
appends under one lock (SQLite's single writer, PostgreSQL's advisory lock held until
the commit is visible), so once index n is visible every index below it is too, and a
page never contains a hole that a later read would fill.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select

from gateway.store.engine import Engines
from gateway.store.schema import exchanges

ACCEPTED = 1


@dataclass(frozen=True, slots=True)
class FeedRow:
    log_index: int
    received_at_us: int
    kind: int
    record_key: str
    record_version: int
    issuer: str
    envelope: bytes


@dataclass(frozen=True, slots=True)
class FeedPage:
    rows: list[FeedRow]
    # Every accepted change below this index that the query could return is in rows:
    # the next page starts here.
    end: int


class FeedReads:
    def __init__(self, engines: Engines):
        self._engines = engines

    def log_size(self) -> int:
        with self._engines.reader.connect() as conn:
            size = conn.execute(select(func.coalesce(func.max(exchanges.c.log_index), -1))).scalar_one()
            return int(size) + 1

    def page(
        self,
        start: int,
        limit: int,
        *,
        kinds: Collection[int] = (),
        issuers: Collection[str] | None = None,
    ) -> FeedPage:
        """Accepted changes from ``start``, oldest first, at most ``limit``; optionally only
        these kinds and issuers (``issuers`` None: any; empty: none)."""
        e = exchanges.c
        with self._engines.reader.connect() as conn, conn.begin():
            size = int(conn.execute(select(func.coalesce(func.max(e.log_index), -1))).scalar_one()) + 1
            if start >= size or (issuers is not None and not issuers):
                return FeedPage([], max(start, size))
            stmt = select(
                e.log_index,
                e.received_at_us,
                e.kind,
                e.record_key,
                e.record_version,
                e.subject_issuer,
                e.envelope,
            ).where(e.log_index >= start, e.log_index < size, e.outcome == ACCEPTED)
            if kinds:
                stmt = stmt.where(e.kind.in_(sorted(kinds)))
            if issuers is not None:
                stmt = stmt.where(e.subject_issuer.in_(sorted(issuers)))
            rows = [FeedRow(*r) for r in conn.execute(stmt.order_by(e.log_index).limit(limit))]
        end = rows[-1].log_index + 1 if len(rows) == limit else size
        return FeedPage(rows, end)
