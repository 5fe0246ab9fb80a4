"""Read-only access to the exchange log for the audit service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Select, desc, func, or_, select

from gateway.audit import merkle
from gateway.store.engine import Engines
from gateway.store.merkle import SqlNodeReader
from gateway.store.schema import checkpoints, exchanges

ACCEPTED = 1


@dataclass(frozen=True, slots=True)
class LogEntry:
    log_index: int
    sender: str
    subject_issuer: str
    leaf: bytes
    envelope: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryFilter:
    # Participants whose exchanges may be returned (sender or subject issuer); None: all.
    parties: frozenset[str] | None = None
    kind: int = 0
    outcome: int = 0
    received_from_us: int | None = None
    received_to_us: int | None = None


class AuditReader:
    """Audit reads on one connection: a request's several reads cost one pool checkout."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def log_size(self) -> int:
        return (
            int(self._conn.execute(select(func.coalesce(func.max(exchanges.c.log_index), -1))).scalar_one())
            + 1
        )

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        stmt = (
            select(checkpoints.c.tree_size, checkpoints.c.envelope)
            .order_by(desc(checkpoints.c.tree_size))
            .limit(1)
        )
        row = self._conn.execute(stmt).first()
        return (row.tree_size, row.envelope) if row else None

    def checkpoint_at(self, size: int) -> bytes | None:
        stmt = select(checkpoints.c.envelope).where(checkpoints.c.tree_size == size)
        return self._conn.execute(stmt).scalar_one_or_none()

    @staticmethod
    def _entries(with_envelope: bool) -> Select[int, str, str, bytes, bytes | None]:
        e = exchanges.c
        envelope = e.envelope if with_envelope else None
        return select(e.log_index, e.sender, e.subject_issuer, e.leaf, envelope)  # type: ignore[arg-type]

    def entry(self, index: int, *, with_envelope: bool = True) -> LogEntry | None:
        row = self._conn.execute(self._entries(with_envelope).where(exchanges.c.log_index == index)).first()
        return LogEntry(*row) if row else None

    def entry_by_digest(self, digest: bytes, *, with_envelope: bool = True) -> LogEntry | None:
        """The accepted exchange of this envelope, else its latest refused attempt."""
        e = exchanges.c
        stmt = (
            self._entries(with_envelope)
            .where(e.envelope_sha256 == digest)
            .order_by(desc(e.outcome == ACCEPTED), desc(e.log_index))
            .limit(1)
        )
        row = self._conn.execute(stmt).first()
        return LogEntry(*row) if row else None

    def list_entries(
        self, flt: EntryFilter, *, after: int | None, limit: int, with_envelopes: bool
    ) -> list[LogEntry]:
        """Keyset-paged by log index."""
        e = exchanges.c
        stmt = self._entries(with_envelopes)
        if flt.parties is not None:
            parties = sorted(flt.parties)
            stmt = stmt.where(or_(e.sender.in_(parties), e.subject_issuer.in_(parties)))
        if flt.kind:
            stmt = stmt.where(e.kind == flt.kind)
        if flt.outcome:
            stmt = stmt.where(e.outcome == flt.outcome)
        if flt.received_from_us is not None:
            stmt = stmt.where(e.received_at_us >= flt.received_from_us)
        if flt.received_to_us is not None:
            stmt = stmt.where(e.received_at_us < flt.received_to_us)
        if after is not None:
            stmt = stmt.where(e.log_index > after)
        stmt = stmt.order_by(e.log_index).limit(limit)
        return [LogEntry(*row) for row in self._conn.execute(stmt)]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, SqlNodeReader(self._conn))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return merkle.consistency_proof(old_size, new_size, SqlNodeReader(self._conn))


class AuditStore:
    def __init__(self, engines: Engines):
        self._engines = engines

    @contextmanager
    def snapshot(self) -> Iterator[AuditReader]:
        """Reads that see one state of the log (one transaction on one connection)."""
        with self._engines.reader.connect() as conn, conn.begin():
            yield AuditReader(conn)

    def log_size(self) -> int:
        with self.snapshot() as r:
            return r.log_size()

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        with self.snapshot() as r:
            return r.latest_checkpoint()
