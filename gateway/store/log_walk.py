"""Reading the whole audit log in bounded pages, for the self-audit (gateway/jobs/selfaudit.py).

Pages are windows of log indexes (``WHERE log_index >= :lo AND log_index < :hi``), each
in its own short transaction: a walk over a million entries holds no snapshot open for minutes
(PostgreSQL would keep every row version of that time alive) and never more than one
page in memory. The walk is bounded by the log size read at its start, so appends made
meanwhile by the writer are simply not part of this audit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select

from gateway.audit.merkle import NodeId
from gateway.store.engine import Engines
from gateway.store.schema import checkpoints, exchanges, merkle_nodes


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    created_at_us: int
    envelope: bytes


class LogWalk:
    def __init__(self, engines: Engines):
        self._engines = engines

    def heads(self) -> tuple[int, int]:
        """(largest checkpointed size, log size = last log index + 1).

        The checkpoint is read first: a checkpoint only ever covers committed entries, so
        read in this order a healthy log never shows a checkpoint beyond its end, even with
        the writer and the checkpoint job running (PostgreSQL reads each statement at its
        own snapshot under READ COMMITTED).
        """
        with self._engines.reader.connect() as conn, conn.begin():
            checkpointed = int(
                conn.execute(select(func.coalesce(func.max(checkpoints.c.tree_size), 0))).scalar_one()
            )
            size = (
                int(conn.execute(select(func.coalesce(func.max(exchanges.c.log_index), -1))).scalar_one()) + 1
            )
        return checkpointed, size

    def leaves(self, *, below: int, page: int) -> Iterator[list[tuple[int, bytes]]]:
        """(log index, leaf bytes) of every entry with index < ``below``, in windows of
        ``page`` consecutive indexes (a window with gaps yields fewer; an empty one nothing).

        A fixed window, not ``log_index > :last ... LIMIT n``: an open range lets the
        PostgreSQL planner, with stale statistics, choose a bitmap scan of the whole rest
        of the table plus a sort for every page (measured: quadratic, 62 ms a page at 100k
        entries left); a window of ``page`` keys is an index range scan whatever the
        statistics say.
        """
        e = exchanges.c
        for lo in range(0, below, page):
            hi = min(lo + page, below)
            with self._engines.reader.connect() as conn:
                rows = conn.execute(
                    select(e.log_index, e.leaf)
                    .where(e.log_index >= lo, e.log_index < hi)
                    .order_by(e.log_index)
                ).all()
            if rows:
                yield [(int(index), bytes(leaf)) for index, leaf in rows]

    def nodes_completed_by(self, first: int, end: int) -> dict[NodeId, bytes]:
        """Stored nodes whose last leaf is in [first, end): the nodes those leaves complete.

        At level l these are the indexes [first >> l, end >> l): a range scan of the primary
        key per level, at most log2(end) + 1 of them in one statement.
        """
        c = merkle_nodes.c
        terms = []
        level = 0
        while end >> level:
            lo, hi = first >> level, end >> level
            if hi > lo:
                terms.append(and_(c.level == level, c.idx >= lo, c.idx < hi))
            level += 1
        if not terms:
            return {}
        with self._engines.reader.connect() as conn:
            rows = conn.execute(select(c.level, c.idx, c.hash).where(or_(*terms))).all()
        return {(int(level), int(idx)): bytes(h) for level, idx, h in rows}

    def checkpoints(self, *, up_to: int, page: int = 1000) -> Iterator[StoredCheckpoint]:
        """Stored checkpoints of tree size <= ``up_to``, smallest first, ``page`` at a time."""
        c = checkpoints.c
        after = -1
        while True:
            with self._engines.reader.connect() as conn:
                rows = conn.execute(
                    select(c.tree_size, c.root_hash, c.created_at_us, c.envelope)
                    .where(c.tree_size > after, c.tree_size <= up_to)
                    .order_by(c.tree_size)
                    .limit(page)
                ).all()
            if not rows:
                return
            for size, root, at, envelope in rows:
                yield StoredCheckpoint(int(size), bytes(root), int(at), bytes(envelope))
            after = int(rows[-1][0])
