"""Storage for reconciliation: per-record digests, runs, discrepancies, reports.

These tables are not the ledger: the writer process never touches them and they are
written here, by the front end, in short transactions of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from gateway.store.engine import Engines
from gateway.store.schema import (
    certificates,
    exchanges,
    reconcile_digests,
    reconcile_discrepancies,
    reconcile_reports,
    reconcile_runs,
    records,
)

RUNNING, COMPLETE, FAILED, ABANDONED = 1, 2, 3, 4  # mrx.v1.RunStatus
_CHUNK = 500


class Digest(NamedTuple):
    """What reconciliation compares of one stored record version."""

    key_hash: int
    content_sha256: bytes
    keyid: str
    leaf: bytes


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record the ledger holds, as reconciliation sees it."""

    record_key: str
    key_hash: int
    log_index: int
    version: int
    state: int
    content_sha256: bytes
    keyid: str
    leaf: bytes


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    participant: str
    status: int
    started_at_us: int
    heartbeat_at_us: int
    ended_at_us: int | None
    snapshot_size: int | None
    recognised_keyids: tuple[str, ...]
    request_bytes: int
    summary: dict[int, int]
    failure: str = ""


@dataclass(frozen=True, slots=True)
class DiscrepancyRow:
    record_key: str
    category: int
    local_version: int | None = None
    local_state: int | None = None
    local_content_sha256: bytes | None = None
    gateway_version: int | None = None
    gateway_state: int | None = None
    gateway_content_sha256: bytes | None = None
    gateway_keyid: str | None = None
    gateway_log_index: int | None = None


def _run(row: Any) -> Run:
    return Run(
        run_id=row.run_id,
        participant=row.participant,
        status=row.status,
        started_at_us=row.started_at_us,
        heartbeat_at_us=row.heartbeat_at_us,
        ended_at_us=row.ended_at_us,
        snapshot_size=row.snapshot_size,
        recognised_keyids=tuple(json.loads(row.recognised_keyids)),
        request_bytes=row.request_bytes,
        summary={int(k): int(v) for k, v in json.loads(row.summary or "{}").items()},
        failure=row.failure or "",
    )


class ReconcileStore:
    def __init__(self, engines: Engines):
        self._engines = engines

    # -- digests -------------------------------------------------------------------------

    def refresh_digests(self, issuer: str, compute: Callable[..., Digest], *, chunk: int = 1000) -> int:
        """Compute the digest row of every current record of ``issuer`` whose accepted
        version has none yet: ``compute(record_key, version, state, envelope)`` gives it
        (the digests are reconciliation's rules, gateway/reconcile/digests.py, not the
        store's).
        Returns how many were computed.

        Which records are stale is decided in Python from two plain scans (key and
        log index of the current rows, and of the digest rows), then only their
        envelopes are read, by primary key: one anti-join streamed through a server-side
        cursor took seconds per page on PostgreSQL at a million rows."""
        d = reconcile_digests.c
        with self._engines.reader.connect() as conn:
            query = select(d.record_key, d.log_index).where(d.issuer == issuer)
            digested: dict[str, int] = {k: i for k, i in conn.execute(query)}
            current: list[tuple[str, int, int, int]] = []
            for table in (certificates, records):
                c = table.c
                current += [
                    (k, i, v, st)
                    for k, i, v, st in conn.execute(
                        select(c.record_key, c.log_index, c.version, c.state).where(c.issuer == issuer)
                    )
                    if digested.get(k) != i
                ]
        done = 0
        for start in range(0, len(current), chunk):
            part = current[start : start + chunk]
            with self._engines.reader.connect() as conn:
                wanted = select(exchanges.c.log_index, exchanges.c.envelope).where(
                    exchanges.c.log_index.in_([i for _, i, _, _ in part])
                )
                envelopes: dict[int, bytes] = {i: e for i, e in conn.execute(wanted)}
            batch: list[dict[str, Any]] = []
            for record_key, log_index, version, state in part:
                digest = compute(record_key, version, state, envelopes[log_index])
                batch.append(
                    {
                        "record_key": record_key,
                        "issuer": issuer,
                        "key_hash": digest.key_hash,
                        "log_index": log_index,
                        "version": version,
                        "state": state,
                        "content_sha256": digest.content_sha256,
                        "keyid": digest.keyid[:128],
                        "leaf": digest.leaf,
                    }
                )
            self._put_digests(batch)
            done += len(batch)
        return done

    def _put_digests(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._replace_digests(rows)
        except IntegrityError:
            # Another replica digested the same records at the same moment (two starts of
            # one participant's runs): the rows are the same, so once more settles it.
            self._replace_digests(rows)

    def _replace_digests(self, rows: list[dict[str, Any]]) -> None:
        with self._engines.writer.begin() as conn:
            for i in range(0, len(rows), _CHUNK):
                part = rows[i : i + _CHUNK]
                conn.execute(
                    delete(reconcile_digests).where(
                        reconcile_digests.c.record_key.in_([r["record_key"] for r in part])
                    )
                )
                conn.execute(insert(reconcile_digests), part)

    def leaves(self, issuer: str) -> Iterator[tuple[int, bytes]]:
        """(key_hash, record digest) of every digested record of ``issuer``."""
        d = reconcile_digests.c
        with self._engines.reader.connect() as conn:
            result = conn.execution_options(yield_per=20_000).execute(
                select(d.key_hash, d.leaf).where(d.issuer == issuer)
            )
            yield from ((khash, value) for khash, value in result)

    def records_in(self, issuer: str, ranges: Sequence[tuple[int, int]]) -> list[StoredRecord]:
        """The records of ``issuer`` whose key hash lies in one of the [lo, hi) ranges.

        One index range probe per range: SQLite plans an OR of ranges as a scan of the
        participant's rows (measured: a million-row scan per 64 buckets)."""
        d = reconcile_digests.c
        cols = (d.record_key, d.key_hash, d.log_index, d.version, d.state, d.content_sha256, d.keyid, d.leaf)
        query = select(*cols).where(
            d.issuer == issuer, d.key_hash >= bindparam("lo"), d.key_hash < bindparam("hi")
        )
        out: list[StoredRecord] = []
        with self._engines.reader.connect() as conn:
            for lo, hi in ranges:
                out += [StoredRecord(*r) for r in conn.execute(query, {"lo": lo, "hi": hi})]
        return out

    def foreign_signed(self, issuer: str, recognised: Iterable[str]) -> list[StoredRecord]:
        d = reconcile_digests.c
        cols = (d.record_key, d.key_hash, d.log_index, d.version, d.state, d.content_sha256, d.keyid, d.leaf)
        with self._engines.reader.connect() as conn:
            query = select(*cols).where(d.issuer == issuer, d.keyid.not_in(list(recognised)))
            return [StoredRecord(*r) for r in conn.execute(query.order_by(d.record_key))]

    def count(self, issuer: str) -> int:
        with self._engines.reader.connect() as conn:
            n: int = conn.execute(
                select(func.count())
                .select_from(reconcile_digests)
                .where(reconcile_digests.c.issuer == issuer)
            ).scalar_one()
            return n

    # -- runs ----------------------------------------------------------------------------

    def create_run(
        self, run_id: str, participant: str, keyids: Sequence[str], now_us: int, request_bytes: int = 0
    ) -> str | None:
        """Insert the run, unless one of the participant's runs is still running: then that
        run's id, and nothing is written. One at a time per participant, across replicas:
        SQLite's writer transactions are serialised; PostgreSQL takes a transaction lock
        per participant first."""
        r = reconcile_runs.c
        with self._engines.writer.begin() as conn:
            if self._engines.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7262003, hashtext(:p))"), {"p": participant})
            running = conn.execute(
                select(r.run_id).where(r.participant == participant, r.status == RUNNING).limit(1)
            ).scalar()
            if running is not None:
                return str(running)
            conn.execute(
                insert(reconcile_runs).values(
                    run_id=run_id,
                    participant=participant,
                    status=RUNNING,
                    started_at_us=now_us,
                    heartbeat_at_us=now_us,
                    recognised_keyids=json.dumps(list(keyids)),
                    request_bytes=request_bytes,
                )
            )
        return None

    def abandon_stale(self, *, now_us: int, lease_us: int, participant: str | None = None) -> int:
        """Mark running runs not heard from within the lease ABANDONED; how many."""
        return len(self.abandon_stale_runs(now_us=now_us, lease_us=lease_us, participant=participant))

    def abandon_stale_runs(
        self, *, now_us: int, lease_us: int, participant: str | None = None
    ) -> list[tuple[str, str]]:
        """As ``abandon_stale``; the (run id, participant) of each run this call abandoned."""
        r = reconcile_runs.c
        cond = and_(r.status == RUNNING, r.heartbeat_at_us < now_us - lease_us)
        if participant is not None:
            cond = and_(cond, r.participant == participant)
        with self._engines.writer.begin() as conn:
            stale = [(row[0], row[1]) for row in conn.execute(select(r.run_id, r.participant).where(cond))]
            if not stale:
                return []
            # Re-checked per run in the update: a run another replica abandoned (or a late
            # heartbeat renewed) meanwhile is not counted twice.
            done = []
            for run_id, who in stale:
                n = conn.execute(
                    update(reconcile_runs)
                    .where(cond, r.run_id == run_id)
                    .values(status=ABANDONED, ended_at_us=now_us)
                ).rowcount
                if n:
                    done.append((run_id, who))
            return done

    def get_run(self, run_id: str) -> Run | None:
        with self._engines.reader.connect() as conn:
            row = conn.execute(select(reconcile_runs).where(reconcile_runs.c.run_id == run_id)).first()
        return _run(row) if row is not None else None

    def touch(self, run_id: str, *, now_us: int, lease_us: int, request_bytes: int) -> bool:
        """Renew a running run's lease (if it has not lapsed); False if it is not running."""
        r = reconcile_runs.c
        with self._engines.writer.begin() as conn:
            done = conn.execute(
                update(reconcile_runs)
                .where(r.run_id == run_id, r.status == RUNNING, r.heartbeat_at_us >= now_us - lease_us)
                .values(heartbeat_at_us=now_us, request_bytes=r.request_bytes + request_bytes)
            ).rowcount
        return bool(done)

    def add_discrepancies(self, run_id: str, rows: Sequence[DiscrepancyRow]) -> None:
        """Keep what a comparison found; a retried comparison replaces its own rows."""
        if not rows:
            return
        t = reconcile_discrepancies
        with self._engines.writer.begin() as conn:
            for i in range(0, len(rows), _CHUNK):
                part = rows[i : i + _CHUNK]
                conn.execute(
                    delete(t).where(t.c.run_id == run_id, t.c.record_key.in_({d.record_key for d in part}))
                )
                conn.execute(insert(t), [{"run_id": run_id, **_asdict(d)} for d in part])

    def discrepancies(self, run_id: str) -> list[DiscrepancyRow]:
        t = reconcile_discrepancies.c
        with self._engines.reader.connect() as conn:
            rows = conn.execute(
                select(reconcile_discrepancies).where(t.run_id == run_id).order_by(t.record_key, t.category)
            )
            return [
                DiscrepancyRow(**{k: v for k, v in row._mapping.items() if k != "run_id"}) for row in rows
            ]

    def complete(
        self,
        run_id: str,
        *,
        now_us: int,
        lease_us: int,
        snapshot_size: int,
        summary: dict[int, int],
        envelope: bytes,
    ) -> bool:
        """Mark the run complete and store its report, in one transaction; False (and
        nothing written) if the run is no longer running."""
        r = reconcile_runs.c
        with self._engines.writer.begin() as conn:
            done = conn.execute(
                update(reconcile_runs)
                .where(r.run_id == run_id, r.status == RUNNING, r.heartbeat_at_us >= now_us - lease_us)
                .values(
                    status=COMPLETE,
                    ended_at_us=now_us,
                    heartbeat_at_us=now_us,
                    snapshot_size=snapshot_size,
                    summary=json.dumps({str(k): v for k, v in summary.items()}),
                )
            ).rowcount
            if not done:
                conn.rollback()
                return False
            conn.execute(
                insert(reconcile_reports).values(run_id=run_id, created_at_us=now_us, envelope=envelope)
            )
        return True

    def fail(self, run_id: str, *, now_us: int, lease_us: int, snapshot_size: int, failure: str) -> bool:
        """Mark a running run FAILED; False if it is no longer running."""
        r = reconcile_runs.c
        with self._engines.writer.begin() as conn:
            done = conn.execute(
                update(reconcile_runs)
                .where(r.run_id == run_id, r.status == RUNNING, r.heartbeat_at_us >= now_us - lease_us)
                .values(status=FAILED, ended_at_us=now_us, snapshot_size=snapshot_size, failure=failure)
            ).rowcount
        return bool(done)

    def report(self, run_id: str) -> bytes | None:
        with self._engines.reader.connect() as conn:
            value: bytes | None = conn.execute(
                select(reconcile_reports.c.envelope).where(reconcile_reports.c.run_id == run_id)
            ).scalar_one_or_none()
            return value

    def list_runs(self, participants: Iterable[str] | None, limit: int) -> list[Run]:
        r = reconcile_runs.c
        query = select(reconcile_runs).order_by(r.started_at_us.desc(), r.run_id).limit(limit)
        if participants is not None:
            query = query.where(r.participant.in_(list(participants)))
        with self._engines.reader.connect() as conn:
            return [_run(row) for row in conn.execute(query)]

    def last_complete(self, participants: Iterable[str]) -> dict[str, int]:
        """{participant: ended_at_us of its latest complete run}."""
        r = reconcile_runs.c
        with self._engines.reader.connect() as conn:
            rows = conn.execute(
                select(r.participant, func.max(r.ended_at_us))
                .where(r.status == COMPLETE, r.participant.in_(list(participants)))
                .group_by(r.participant)
            )
            return {p: int(t) for p, t in rows if t is not None}


def _asdict(d: DiscrepancyRow) -> dict[str, Any]:
    return {name: getattr(d, name) for name in DiscrepancyRow.__slots__}
