"""The sequencer: the one writer of the exchange log, with group commit.

Every submission that passed signature verification is handed to the sequencer, which
commits it (accepted or refused) as one entry of the exchange log. Submissions that
arrive while a commit is in flight queue up and share the next transaction, so the cost
of an fsync is spread over every concurrent submission, unary or streamed alike.

The stateful checks run here, inside the transaction, against the database plus the
batch's own earlier items: an identical resubmission, a reused message id, the stored
issuer and version of the record. Doing them anywhere else would race.

On PostgreSQL a transaction-scoped advisory lock makes one sequencer at a time the
appender, so several gateway replicas still produce one dense, linear log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, insert, select, text, update

from gateway.audit.merkle import CompactRange, leaf_hash
from gateway.crypto.dsse import sha256
from gateway.domain.certificates import CertState, check_transition
from gateway.domain.errors import AlreadyExists, FailedPrecondition, MrxError, PermissionDenied, Unavailable
from gateway.domain.records import Record
from gateway.pb import audit_pb2, envelope_pb2
from gateway.store.engine import Engines
from gateway.store.merkle import SqlNodeReader, insert_nodes
from gateway.store.rows import current_row, us
from gateway.store.schema import certificates, exchanges, record_versions, records

log = logging.getLogger(__name__)

ACCEPTED = envelope_pb2.OUTCOME_ACCEPTED
REFUSED = envelope_pb2.OUTCOME_REFUSED
# Arbitrary but fixed: the advisory lock that elects the appender on PostgreSQL.
LOG_LOCK_ID = 7262002


@dataclass(frozen=True, slots=True)
class Accepted:
    """The committed outcome of an accepted submission."""

    receipt_payload: bytes  # serialized mrx.v1.Receipt, to be signed by the gateway
    log_index: int
    duplicate: bool  # True when identical bytes were accepted before


@dataclass(slots=True, kw_only=True)
class Pending:
    """A verified submission on its way into the log."""

    envelope: bytes
    envelope_sha256: bytes
    sender: str
    message_id: str
    kind: int
    record_key: str
    record_version: int
    subject_issuer: str
    record: Record | None
    # Decided before the replay check (freshness): an identical resubmission still
    # gets its original receipt, a reused id with a stale clock is reported as stale.
    early_refusal: MrxError | None = None
    # Decided after the replay check (authorization, field validation).
    late_refusal: MrxError | None = None
    warnings: tuple[str, ...] = ()
    future: Future[Accepted] = field(default_factory=Future)


@dataclass(slots=True)
class _Stored:
    """A record's current issuer, state and version, from the database or this batch."""

    issuer: str
    state: CertState
    version: int
    in_db: bool


class Sequencer:
    def __init__(self, engines: Engines, *, clock: Callable[[], datetime], max_batch: int = 1000):
        self._engines = engines
        self._clock = clock
        self._max_batch = max_batch
        self._cv = threading.Condition()
        self._queue: list[Pending] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mrx-sequencer", daemon=True)
        self.batches = 0
        self.committed = 0
        # The right frontier of the Merkle tree after the last commit. Reloaded (one
        # SELECT) whenever the log grew elsewhere, i.e. another replica appended.
        self._frontier: CompactRange | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Refuse new work, commit what is queued, then return."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, item: Pending) -> Future[Accepted]:
        with self._cv:
            if self._closed:
                raise Unavailable(
                    "the gateway is shutting down; retry on another replica", reason="SHUTTING_DOWN"
                )
            self._queue.append(item)
            self._cv.notify()
        return item.future

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            try:
                outcomes = self._commit(batch)
            except Exception:
                self._frontier = None
                # Nothing of this batch is committed, so a retry is safe.
                log.exception("commit of %d submissions failed", len(batch))
                for item in batch:
                    item.future.set_exception(
                        Unavailable(
                            "the gateway could not store the submission; retry", reason="STORE_UNAVAILABLE"
                        )
                    )
                continue
            self.batches += 1
            self.committed += len(batch)
            for item, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Accepted):
                    item.future.set_result(outcome)
                else:
                    item.future.set_exception(outcome)

    def _commit(self, batch: list[Pending]) -> list[Accepted | MrxError]:
        now = self._clock()
        with self._engines.writer.begin() as conn:
            if self._engines.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOG_LOCK_ID})
            next_index = (
                conn.execute(select(func.coalesce(func.max(exchanges.c.log_index), -1))).scalar_one() + 1
            )
            frontier = self._frontier
            if frontier is None or frontier.size != next_index:
                frontier = CompactRange.from_store(next_index, SqlNodeReader(conn))
            nodes: list[tuple[tuple[int, int], bytes]] = []
            by_digest, used_ids, stored = self._load_state(conn, batch)

            outcomes: list[Accepted | MrxError] = []
            log_rows: list[dict[str, Any]] = []
            version_rows: list[dict[str, Any]] = []
            touched: dict[str, tuple[Record, int]] = {}
            for item in batch:
                seen = by_digest.get(item.envelope_sha256)
                if seen is not None:
                    outcomes.append(Accepted(receipt_payload=seen[1], log_index=seen[0], duplicate=True))
                    continue
                index = next_index
                next_index += 1
                error = self._decide(item, used_ids, stored)
                if error is not None:
                    error.metadata["log_index"] = str(index)
                    row = self._log_row(item, index, now, REFUSED, error.reason, None)
                    nodes += frontier.append(leaf_hash(row["leaf"]))
                    log_rows.append(row)
                    outcomes.append(error)
                    continue
                receipt = envelope_pb2.Receipt(
                    message_id=item.message_id,
                    sender=item.sender,
                    envelope_sha256=item.envelope_sha256,
                    outcome=ACCEPTED,
                    log_index=index,
                    record_key=item.record_key,
                    record_version=item.record_version,
                    warnings=item.warnings,
                )
                receipt.received_at.FromDatetime(now)
                payload = receipt.SerializeToString(deterministic=True)
                row = self._log_row(item, index, now, ACCEPTED, "", payload)
                nodes += frontier.append(leaf_hash(row["leaf"]))
                log_rows.append(row)
                by_digest[item.envelope_sha256] = (index, payload)
                used_ids.add((item.sender, item.message_id))
                record = item.record
                if record is not None:
                    prev = stored.get(record.key)
                    stored[record.key] = _Stored(
                        record.issuer, record.state, record.version, prev.in_db if prev else False
                    )
                    touched[record.key] = (record, index)
                    version_rows.append(
                        {
                            "record_key": record.key,
                            "version": record.version,
                            "state": int(record.state),
                            "effective_at_us": us(record.effective_at),
                            "log_index": index,
                        }
                    )
                outcomes.append(Accepted(receipt_payload=payload, log_index=index, duplicate=False))

            if log_rows:
                conn.execute(insert(exchanges), log_rows)
                insert_nodes(conn, nodes)
            if version_rows:
                conn.execute(insert(record_versions), version_rows)
            self._write_current(conn, touched, stored)
        self._frontier = frontier
        return outcomes

    def _decide(
        self, item: Pending, used_ids: set[tuple[str, str]], stored: dict[str, _Stored]
    ) -> MrxError | None:
        if item.early_refusal is not None:
            return item.early_refusal
        if (item.sender, item.message_id) in used_ids:
            return AlreadyExists(
                f"message id {item.message_id!r} was already used by {item.sender} for a different envelope",
                reason="MESSAGE_ID_REUSED",
                metadata={"message_id": item.message_id},
            )
        if item.late_refusal is not None:
            return item.late_refusal
        record = item.record
        if record is None:
            return None
        prev = stored.get(record.key)
        if prev is None:
            return None
        if prev.issuer != item.sender:
            return PermissionDenied(
                f"{record.key} was published under {prev.issuer}; only {prev.issuer} may publish its status",
                reason="NOT_ISSUER",
                metadata={"issuer": prev.issuer, "sender": item.sender},
            )
        try:
            check_transition(prev, record)
        except FailedPrecondition as err:
            return err
        return None

    def _load_state(
        self, conn: Connection, batch: list[Pending]
    ) -> tuple[dict[bytes, tuple[int, bytes]], set[tuple[str, str]], dict[str, _Stored]]:
        e = exchanges.c
        digests = list({i.envelope_sha256 for i in batch})
        by_digest: dict[bytes, tuple[int, bytes]] = {
            row.envelope_sha256: (row.log_index, row.receipt)
            for row in conn.execute(
                select(e.envelope_sha256, e.log_index, e.receipt).where(
                    e.outcome == ACCEPTED, e.envelope_sha256.in_(digests)
                )
            )
        }
        ids = list({i.message_id for i in batch})
        senders = {i.sender for i in batch}
        # Both columns of the partial unique index, so this is an index probe, not a scan
        # of every accepted message (measured: 145 ms -> 6 ms per commit at 1M entries).
        used_ids = {
            (row.sender, row.message_id)
            for row in conn.execute(
                select(e.sender, e.message_id).where(
                    e.outcome == ACCEPTED, e.sender.in_(sorted(senders)), e.message_id.in_(ids)
                )
            )
        }
        wanted = list({i.record.key for i in batch if i.record is not None})
        stored: dict[str, _Stored] = {}
        if wanted:
            for table in (certificates, records):
                c = table.c
                for row in conn.execute(
                    select(c.record_key, c.issuer, c.state, c.version).where(c.record_key.in_(wanted))
                ):
                    stored[row.record_key] = _Stored(row.issuer, CertState(row.state), row.version, True)
        return by_digest, used_ids, stored

    @staticmethod
    def _write_current(
        conn: Connection, touched: dict[str, tuple[Record, int]], stored: dict[str, _Stored]
    ) -> None:
        new_rows: dict[Table, list[dict[str, Any]]] = {}
        changed_rows: dict[Table, list[dict[str, Any]]] = {}
        for key, (record, index) in touched.items():
            table, row = current_row(record, index)
            target = changed_rows if stored[key].in_db else new_rows
            target.setdefault(table, []).append(row)
        for table, rows in new_rows.items():
            conn.execute(insert(table), rows)
        for table, rows in changed_rows.items():
            # Only the columns that change; the key columns identify the row.
            fixed = {"record_key", "scheme", "certificate_number", "kind", "issuer"}
            values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in rows[0] if name not in fixed}
            stmt = update(table).where(table.c.record_key == bindparam("k_key")).values(values)
            conn.execute(
                stmt,
                [{"k_key": r["record_key"], **{f"v_{n}": r[n] for n in values}} for r in rows],
            )

    @staticmethod
    def _log_row(
        item: Pending, index: int, now: datetime, outcome: int, reason: str, receipt: bytes | None
    ) -> dict[str, Any]:
        leaf = audit_pb2.ExchangeLeaf(
            log_index=index,
            envelope_sha256=item.envelope_sha256,
            sender=item.sender,
            message_id=item.message_id,
            kind=item.kind,  # type: ignore[arg-type]
            record_key=item.record_key,
            record_version=item.record_version,
            subject_issuer=item.subject_issuer,
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            receipt_sha256=sha256(receipt) if receipt is not None else b"",
        )
        leaf.received_at.FromDatetime(now)
        return {
            "log_index": index,
            "received_at_us": us(now),
            "subject_issuer": item.subject_issuer,
            "leaf": leaf.SerializeToString(deterministic=True),
            "sender": item.sender,
            "message_id": item.message_id,
            "kind": item.kind,
            "record_key": item.record_key,
            "record_version": item.record_version,
            "outcome": outcome,
            "reason": reason,
            "envelope_sha256": item.envelope_sha256,
            "envelope": item.envelope,
            "receipt": receipt,
        }


def utc_now() -> datetime:
    return datetime.now(UTC)
