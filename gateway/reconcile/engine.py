"""The gateway's side of reconciliation: runs, the bucket comparison, signed reports.

Every call of a run renews its lease; a run not heard from within the lease is
abandoned (by the participant's next start, a gateway start or a listing) and never
resumed, so a run killed half-way is never left "running" and never gets two reports
(the report is written with the run's status change, in one transaction, and only
while the run is still running).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.crypto.dsse import sign_envelope
from gateway.crypto.suites import PrivateKey
from gateway.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from gateway.pb import envelope_pb2, reconcile_pb2, records_pb2
from gateway.reconcile.digests import (
    MAX_BITS,
    REPORT_PAYLOAD_TYPE,
    Entry,
    aggregate,
    content_sha256,
    digest16,
    key_hash,
    leaf,
    submission_record,
)
from gateway.store.reconcile import RUNNING, Digest, DiscrepancyRow, ReconcileStore, Run, StoredRecord

DEFAULT_LEASE = timedelta(minutes=5)
_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_LISTED = 10_000
MISSING_AT_GATEWAY = reconcile_pb2.MISSING_AT_GATEWAY
MISSING_LOCALLY = reconcile_pb2.MISSING_LOCALLY
STATE_DIFFERS = reconcile_pb2.STATE_DIFFERS
VERSION_DIFFERS = reconcile_pb2.VERSION_DIFFERS
CONTENT_DIFFERS = reconcile_pb2.CONTENT_DIFFERS
FOREIGN_KEY_SIGNATURE = reconcile_pb2.FOREIGN_KEY_SIGNATURE
CLASSES = (
    MISSING_AT_GATEWAY,
    MISSING_LOCALLY,
    STATE_DIFFERS,
    VERSION_DIFFERS,
    CONTENT_DIFFERS,
    FOREIGN_KEY_SIGNATURE,
)


def us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def from_us(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def stored_digest(envelope: bytes) -> tuple[bytes, str]:
    """(content digest, signing key id) of a stored submission envelope."""
    env = envelope_pb2.Envelope.FromString(envelope)
    submission = records_pb2.Submission.FromString(env.payload)
    keyid = env.signatures[0].keyid if env.signatures else ""
    return content_sha256(submission_record(submission)), keyid


def digest_of(record_key: str, version: int, state: int, envelope: bytes) -> Digest:
    """The digest row of a stored record version (for ReconcileStore.refresh_digests)."""
    content, keyid = stored_digest(envelope)
    return Digest(key_hash(record_key), content, keyid, leaf(record_key, version, state, content))


def compare(local: Sequence[Entry], gateway: Sequence[StoredRecord]) -> list[DiscrepancyRow]:
    """The discrepancies between two sides' records of the same buckets."""
    theirs = {g.record_key: g for g in gateway}
    out: list[DiscrepancyRow] = []
    seen: set[str] = set()
    for e in local:
        seen.add(e.record_key)
        g = theirs.get(e.record_key)
        local_side = {
            "local_version": e.version,
            "local_state": e.state,
            "local_content_sha256": e.content_sha256,
        }
        if g is None:
            out.append(DiscrepancyRow(e.record_key, MISSING_AT_GATEWAY, **local_side))  # type: ignore[arg-type]
            continue
        if e.version != g.version:
            category = VERSION_DIFFERS
        elif e.state != g.state:
            category = STATE_DIFFERS
        elif e.content_sha256 != g.content_sha256:
            category = CONTENT_DIFFERS
        else:
            continue
        out.append(DiscrepancyRow(e.record_key, category, **local_side, **_gateway_side(g)))  # type: ignore[arg-type]
    for g in gateway:
        if g.record_key not in seen:
            out.append(DiscrepancyRow(g.record_key, MISSING_LOCALLY, **_gateway_side(g)))  # type: ignore[arg-type]
    return out


def _gateway_side(g: StoredRecord) -> dict[str, object]:
    return {
        "gateway_version": g.version,
        "gateway_state": g.state,
        "gateway_content_sha256": g.content_sha256,
        "gateway_keyid": g.keyid,
        "gateway_log_index": g.log_index,
    }


@dataclass(frozen=True)
class Started:
    run_id: str
    started_at: datetime
    abandoned: int


@dataclass(frozen=True)
class RunEnded:
    """What an observer hears when a run leaves "running" (the metrics hook on)."""

    run_id: str
    participant: str
    status: str  # complete | failed | abandoned
    at: datetime
    summary: Mapping[str, int]  # class name -> count (complete runs only)


class Reconciler:
    def __init__(
        self,
        store: ReconcileStore,
        *,
        gateway_key: PrivateKey,
        clock: Callable[[], datetime],
        lease: timedelta = DEFAULT_LEASE,
        observer: Callable[[RunEnded], None] | None = None,
    ):
        self._store = store
        self._key = gateway_key
        self._clock = clock
        self.lease = lease
        # Told after the status change committed, so what it counts is what the table says.
        self._observer = observer

    def _ended(
        self, run_id: str, participant: str, status: str, at: datetime, summary: Mapping[str, int]
    ) -> None:
        if self._observer is not None:
            self._observer(RunEnded(run_id, participant, status, at, summary))

    def now(self) -> datetime:
        return self._clock()

    @property
    def _lease_us(self) -> int:
        return int(self.lease.total_seconds() * 1_000_000)

    def abandon_stale(self, participant: str | None = None) -> int:
        now = self._clock()
        done = self._store.abandon_stale_runs(
            now_us=us(now), lease_us=self._lease_us, participant=participant
        )
        for run_id, who in done:
            self._ended(run_id, who, "abandoned", now, {})
        return len(done)

    def start(self, participant: str, keyids: Sequence[str], *, request_bytes: int = 0) -> Started:
        abandoned = self.abandon_stale(participant)
        # Before the run exists: on a first run this decodes every stored record, and the
        # lease must not lapse meanwhile.
        self._store.refresh_digests(participant, digest_of)
        now = self._clock()
        run_id = str(uuid.uuid4())
        running = self._store.create_run(run_id, participant, keyids, us(now), request_bytes)
        if running is not None:
            # Two runs of one participant at once (the nightly job and a manual run) would
            # report each other's submissions as differences.
            raise FailedPrecondition(
                f"a reconciliation of {participant} is already running (run {running}); wait for it to "
                f"finish, or for its lease ({self.lease.total_seconds():.0f} s without a heartbeat) to lapse",
                reason="RUN_IN_PROGRESS",
                metadata={"run_id": running},
            )
        return Started(run_id, now, abandoned)

    def run(self, run_id: str) -> Run:
        # Run ids are UUIDs: anything else is answered without reaching SQL (PostgreSQL
        # refuses NUL in text, which would otherwise surface as an error of ours).
        run = self._store.get_run(run_id) if _RUN_ID.fullmatch(run_id) else None
        if run is None:
            raise NotFound(f"no reconciliation run {run_id[:40]}", reason="RUN_NOT_FOUND")
        return run

    def touch(self, run: Run, request_bytes: int) -> datetime:
        """Renew the lease of a running run; RUN_NOT_RUNNING otherwise."""
        now = self._clock()
        if run.status != RUNNING or not self._store.touch(
            run.run_id, now_us=us(now), lease_us=self._lease_us, request_bytes=request_bytes
        ):
            self.abandon_stale(run.participant)
            raise self._not_running(run.run_id)
        return now + self.lease

    def _not_running(self, run_id: str) -> FailedPrecondition:
        run = self._store.get_run(run_id)
        status = reconcile_pb2.RunStatus.Name(run.status) if run else "gone"  # type: ignore[arg-type]
        return FailedPrecondition(
            f"run {run_id} is not running ({status}); start a new run",
            reason="RUN_NOT_RUNNING",
            metadata={"status": status},
        )

    def compare_buckets(
        self,
        run: Run,
        *,
        bits: int,
        parent_bits: int,
        parents: Sequence[int],
        buckets: Sequence[tuple[int, int, bytes]],
    ) -> list[tuple[int, int, int]]:
        """(prefix, participant count, gateway count) of every differing bucket."""
        _check_depth(bits, parent_bits, parents)
        mine: dict[int, tuple[int, bytes]] = {}
        parent_set = set(parents)
        for prefix, count, digest in buckets:
            if prefix >= 1 << bits or prefix in mine or count == 0 or len(digest) != 16:
                raise _bad(
                    f"bucket {prefix} at depth {bits}: out of range, repeated, empty or not a 16-byte digest"
                )
            if parent_bits and (prefix >> (bits - parent_bits)) not in parent_set:
                raise _bad(f"bucket {prefix} is not inside the parents listed")
            mine[prefix] = (count, digest)
        theirs = self._aggregate(run.participant, bits=bits, parent_bits=parent_bits, parents=parents)
        out = []
        for prefix in sorted(set(mine) | set(theirs)):
            pc, pd = mine.get(prefix, (0, b""))
            gc, gx = theirs.get(prefix, (0, 0))
            if pc != gc or pd != digest16(gx):
                out.append((prefix, pc, gc))
        return out

    def _aggregate(
        self, issuer: str, *, bits: int, parent_bits: int, parents: Sequence[int]
    ) -> dict[int, tuple[int, int]]:
        if parent_bits == 0:
            items = ((h, int.from_bytes(leaf, "big")) for h, leaf in self._store.leaves(issuer))
            return aggregate(items, bits)
        shift = MAX_BITS - parent_bits
        ranges = [(p << shift, (p + 1) << shift) for p in sorted(set(parents))]
        rows = self._store.records_in(issuer, ranges)
        return aggregate(((r.key_hash, int.from_bytes(r.leaf, "big")) for r in rows), bits)

    def compare_records(
        self, run: Run, *, bits: int, prefixes: Sequence[int], entries: Sequence[Entry]
    ) -> int:
        _check_depth(bits, 0, ())
        wanted = set(prefixes)
        if len(wanted) != len(prefixes) or any(p >= 1 << bits for p in wanted):
            raise _bad(f"the prefixes at depth {bits} must be distinct and below 2^{bits}")
        keys: set[str] = set()
        for e in entries:
            if e.record_key in keys:
                raise _bad(f"record {e.record_key[:80]} is listed twice")
            keys.add(e.record_key)
            if (e.key_hash >> (MAX_BITS - bits) if bits else 0) not in wanted:
                raise _bad(f"record {e.record_key[:80]} is not in the buckets listed")
        shift = MAX_BITS - bits
        ranges = [(p << shift, (p + 1) << shift) for p in sorted(wanted)]
        found = compare(entries, self._store.records_in(run.participant, ranges))
        self._store.add_discrepancies(run.run_id, found)
        return len(found)

    def finish(
        self, run: Run, *, snapshot_size: int, problems: Sequence[reconcile_pb2.RowProblem]
    ) -> envelope_pb2.Envelope:
        self.touch(run, 0)
        foreign = [
            DiscrepancyRow(g.record_key, FOREIGN_KEY_SIGNATURE, **_gateway_side(g))  # type: ignore[arg-type]
            for g in self._store.foreign_signed(run.participant, run.recognised_keyids)
        ]
        self._store.add_discrepancies(run.run_id, foreign)
        found = self._store.discrepancies(run.run_id)
        summary: dict[int, int] = {int(c): 0 for c in CLASSES}
        for d in found:
            summary[d.category] += 1
        now = self._clock()
        refreshed = self._store.get_run(run.run_id) or run
        report = reconcile_pb2.ReconciliationReport(
            run_id=run.run_id,
            participant=run.participant,
            snapshot_size=snapshot_size,
            gateway_records=self._store.count(run.participant),
            summary=[reconcile_pb2.ClassCount(category=c, count=n) for c, n in summary.items()],  # type: ignore[arg-type]
            discrepancies=[_to_proto(d) for d in found[:MAX_LISTED]],
            discrepancies_omitted=max(0, len(found) - MAX_LISTED),
            problems=problems,
            recognised_keyids=run.recognised_keyids,
            request_bytes=refreshed.request_bytes,
        )
        report.started_at.FromDatetime(from_us(run.started_at_us))
        report.finished_at.FromDatetime(now)
        envelope = sign_envelope(
            payload_type=REPORT_PAYLOAD_TYPE,
            payload=report.SerializeToString(deterministic=True),
            signer=self._key,
        )
        if not self._store.complete(
            run.run_id,
            now_us=us(now),
            lease_us=self._lease_us,
            snapshot_size=snapshot_size,
            summary={int(c): n for c, n in summary.items()},
            envelope=envelope.SerializeToString(),
        ):
            raise self._not_running(run.run_id)
        names = {int(c): reconcile_pb2.DiscrepancyClass.Name(c) for c in CLASSES}  # type: ignore[arg-type]
        self._ended(run.run_id, run.participant, "complete", now, {names[c]: n for c, n in summary.items()})
        return envelope

    def fail(self, run: Run, *, snapshot_size: int, failure: str) -> None:
        """The participant could not take its snapshot: the run failed, with no report."""
        now = self._clock()
        if not self._store.fail(
            run.run_id, now_us=us(now), lease_us=self._lease_us, snapshot_size=snapshot_size, failure=failure
        ):
            raise self._not_running(run.run_id)
        self._ended(run.run_id, run.participant, "failed", now, {})

    def report(self, run: Run) -> envelope_pb2.Envelope:
        raw = self._store.report(run.run_id)
        if raw is None:
            status = reconcile_pb2.RunStatus.Name(run.status)  # type: ignore[arg-type]
            raise NotFound(
                f"run {run.run_id} has no report ({status})",
                reason="REPORT_NOT_FOUND",
                metadata={"status": status},
            )
        return envelope_pb2.Envelope.FromString(raw)

    def list_runs(self, participants: Sequence[str] | None, limit: int) -> list[Run]:
        self.abandon_stale()
        return self._store.list_runs(participants, limit)

    def last_complete(self, participants: Sequence[str]) -> dict[str, datetime]:
        return {p: from_us(t) for p, t in self._store.last_complete(participants).items()}


class CompleteRuns:
    """The runs table behind gateway.jobs.scheduler.ReconciliationProvider: the nightly
    check asks it who completed a reconciliation when."""

    def __init__(self, store: ReconcileStore, participants: Sequence[str]):
        self._store = store
        self._participants = list(participants)

    def last_complete_runs(self) -> Mapping[str, datetime | None]:
        found = self._store.last_complete(self._participants)
        return {p: (from_us(found[p]) if p in found else None) for p in self._participants}


def _to_proto(d: DiscrepancyRow) -> reconcile_pb2.Discrepancy:
    out = reconcile_pb2.Discrepancy(category=d.category, record_key=d.record_key)  # type: ignore[arg-type]
    if d.local_version is not None:
        out.local.version = d.local_version
        out.local.state = d.local_state or 0
        out.local.content_sha256 = d.local_content_sha256 or b""
    if d.gateway_version is not None:
        out.gateway.version = d.gateway_version
        out.gateway.state = d.gateway_state or 0
        out.gateway.content_sha256 = d.gateway_content_sha256 or b""
        out.gateway.keyid = d.gateway_keyid or ""
        out.gateway.log_index = d.gateway_log_index or 0
    return out


def _check_depth(bits: int, parent_bits: int, parents: Sequence[int]) -> None:
    if (
        not 0 <= parent_bits <= bits <= MAX_BITS
        or (parent_bits == 0 and parents)
        or (parent_bits and not parents)
    ):
        raise _bad(f"depth {bits} within parents at depth {parent_bits}: need 0 <= parent_bits <= bits <= 32")
    if any(p >= 1 << parent_bits for p in parents):
        raise _bad(f"a parent prefix is not below 2^{parent_bits}")


def _bad(why: str) -> InvalidArgument:
    return InvalidArgument(why, reason="BAD_BUCKETS", violations=[FieldViolation("buckets", why)])
