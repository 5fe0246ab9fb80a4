"""The participant's side of a run: digest the snapshot, descend into the buckets that
differ, send records only where needed, and return the gateway's signed report.

Client-side: imports the SDK, never the server. The snapshot is any iterable of
Mapped-like rows (``where``, ``record``, ``problems``), as adapters' ``snapshot()``
gives them; a row that could not be mapped is reported in the run, and the run goes on.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.domain.records import Record
from gateway.pb import reconcile_pb2
from gateway.reconcile.digests import MAX_BITS, Entry, aggregate, bucket_of, digest16, record_entry

# Below this many records on both sides a differing bucket is compared record by record;
# above it the descent goes 4 bits deeper (16 children).
LEAF_SIZE = 16
STEP_BITS = 4
MAX_FIRST_BITS = 16
BUCKETS_PER_CALL = 16_384
ENTRIES_PER_CALL = 5_000
HEARTBEAT_EVERY = 30.0  # seconds, while the snapshot is read

# Discrepancy classes by number, as reports and the CLI name them.
CLASS_NAMES = {
    v: n
    for n, v in reconcile_pb2.DiscrepancyClass.items()
    if v != reconcile_pb2.DISCREPANCY_CLASS_UNSPECIFIED
}


class ProblemLike(Protocol):
    @property
    def field(self) -> str: ...
    @property
    def why(self) -> str: ...


class MappedLike(Protocol):
    @property
    def where(self) -> str: ...
    @property
    def record(self) -> Record | None: ...
    @property
    def problems(self) -> Sequence[ProblemLike]: ...


@dataclass
class Snapshot:
    entries: dict[str, Entry] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)
    problems: list[reconcile_pb2.RowProblem] = field(default_factory=list)
    size: int = 0


@dataclass(frozen=True)
class RunResult:
    run_id: str
    envelope: Any  # the signed report envelope
    report: reconcile_pb2.ReconciliationReport
    # Records the gateway lacks, as the snapshot holds them (to submit, once confirmed).
    missing_at_gateway: list[Record]
    bytes_sent: int
    bytes_received: int


class SnapshotFailed(Exception):
    """The snapshot could not be read; the run was marked failed at the gateway."""

    def __init__(self, run_id: str, why: str):
        super().__init__(f"the snapshot could not be read ({why}); run {run_id} marked failed")
        self.run_id = run_id


def first_bits(n: int) -> int:
    """Depth of the first comparison: about 64 records per bucket."""
    return max(0, min(MAX_FIRST_BITS, math.ceil(math.log2(max(n, 1) / 64)) if n > 64 else 0))


def read_snapshot(
    rows: Iterable[MappedLike],
    *,
    on_row: Callable[[], None] | None = None,
) -> Snapshot:
    snap = Snapshot()
    first_seen: dict[str, str] = {}
    for row in rows:
        snap.size += 1
        if on_row is not None:
            on_row()
        if row.record is None:
            for p in row.problems or ():
                snap.problems.append(reconcile_pb2.RowProblem(where=row.where, field=p.field, why=p.why))
            if not row.problems:
                snap.problems.append(reconcile_pb2.RowProblem(where=row.where, field="", why="not mapped"))
            continue
        key = row.record.key
        if key in first_seen:
            snap.problems.append(
                reconcile_pb2.RowProblem(
                    where=row.where,
                    field="record_key",
                    why=f"{key} already at {first_seen[key]}; this row ignored",
                )
            )
            continue
        first_seen[key] = row.where
        snap.entries[key] = record_entry(row.record)
        snap.records[key] = row.record
    return snap


def reconcile(
    client: Any,
    *,
    participant: str,
    rows: Iterable[MappedLike],
    recognised_keyids: Sequence[str],
    progress: Callable[[str, int], None] | None = None,
    start_timeout: float = 600.0,
) -> RunResult:
    """One run against the gateway ``client`` (a gateway.client.ReconcileClient)."""
    from gateway.client import verify_report

    say = progress or (lambda stage, n: None)
    started = client.call(
        "StartRun",
        reconcile_pb2.StartRunRequest(participant=participant, recognised_keyids=list(recognised_keyids)),
        timeout=start_timeout,  # a first run makes the gateway digest every stored record
    )
    run_id = started.run_id
    say(f"run {run_id} started", 0)
    last_beat = time.monotonic()

    def on_row() -> None:
        nonlocal last_beat
        if time.monotonic() - last_beat > HEARTBEAT_EVERY:
            client.call("Heartbeat", reconcile_pb2.HeartbeatRequest(run_id=run_id))
            last_beat = time.monotonic()
        say("read", 1)

    try:
        snap = read_snapshot(rows, on_row=on_row)
    except Exception as err:
        # The source failed (an adapter's database went away, a file vanished): the run
        # is recorded as failed rather than left to lapse, and the error goes on up.
        why = f"{type(err).__name__}: {err}"[:500]
        client.call("FinishRun", reconcile_pb2.FinishRunRequest(run_id=run_id, failure=why))
        raise SnapshotFailed(run_id, why) from err
    entries = list(snap.entries.values())
    bits = first_bits(len(entries))
    mine = aggregate(((e.key_hash, e.leaf) for e in entries), bits)
    differing = _compare(client, run_id, bits, 0, [], mine)
    say("compared", len(mine))
    while differing:
        leaves = [p for p, pc, gc in differing if max(pc, gc) <= LEAF_SIZE or bits >= MAX_BITS]
        deeper = [p for p, pc, gc in differing if not (max(pc, gc) <= LEAF_SIZE or bits >= MAX_BITS)]
        if leaves:
            _send_records(client, run_id, bits, leaves, entries)
            say("compared", len(leaves))
        if not deeper:
            break
        child_bits = min(bits + STEP_BITS, MAX_BITS)
        wanted = set(deeper)
        inside = [e for e in entries if bucket_of(e.key_hash, bits) in wanted]
        children = aggregate(((e.key_hash, e.leaf) for e in inside), child_bits)
        differing = _compare(client, run_id, child_bits, bits, deeper, children)
        bits, entries = child_bits, inside
    finished = client.call(
        "FinishRun",
        reconcile_pb2.FinishRunRequest(run_id=run_id, snapshot_size=snap.size, problems=snap.problems),
    )
    report = verify_report(finished.report, client.gateway_keys)
    missing = [
        snap.records[d.record_key]
        for d in report.discrepancies
        if d.category == reconcile_pb2.MISSING_AT_GATEWAY and d.record_key in snap.records
    ]
    return RunResult(run_id, finished.report, report, missing, client.bytes_sent, client.bytes_received)


def _compare(
    client: Any,
    run_id: str,
    bits: int,
    parent_bits: int,
    parents: list[int],
    mine: dict[int, tuple[int, int]],
) -> list[tuple[int, int, int]]:
    """Differing buckets at ``bits`` within ``parents``, asked in calls of bounded size."""
    out: list[tuple[int, int, int]] = []
    groups: list[list[int]] = [parents] if parent_bits == 0 else []
    if parent_bits:
        # Parents per call so that their children stay under the per-call limit.
        per_call = max(1, BUCKETS_PER_CALL >> (bits - parent_bits))
        groups = [sorted(parents)[i : i + per_call] for i in range(0, len(parents), per_call)]
    for group in groups:
        gset = set(group)
        items = sorted(
            (p, c, x) for p, (c, x) in mine.items() if not parent_bits or (p >> (bits - parent_bits)) in gset
        )
        for i in range(0, max(len(items), 1), BUCKETS_PER_CALL) if parent_bits else [0]:
            chunk = items[i : i + BUCKETS_PER_CALL] if parent_bits else items
            request = reconcile_pb2.CompareBucketsRequest(
                run_id=run_id,
                bits=bits,
                parent_bits=parent_bits,
                parents=group,
                buckets=[
                    reconcile_pb2.BucketDigest(prefix=p, count=c, digest=digest16(x)) for p, c, x in chunk
                ],
            )
            response = client.call("CompareBuckets", request)
            out += [(d.prefix, d.participant_count, d.gateway_count) for d in response.differing]
    return out


def _send_records(client: Any, run_id: str, bits: int, prefixes: list[int], entries: list[Entry]) -> None:
    wanted = set(prefixes)
    by_bucket: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        b = bucket_of(e.key_hash, bits)
        if b in wanted:
            by_bucket[b].append(e)
    batch_prefixes: list[int] = []
    batch: list[Entry] = []

    def flush() -> None:
        if not batch_prefixes:
            return
        client.call(
            "CompareRecords",
            reconcile_pb2.CompareRecordsRequest(
                run_id=run_id,
                bits=bits,
                prefixes=batch_prefixes,
                entries=[
                    reconcile_pb2.RecordDigest(
                        record_key=e.record_key,
                        version=e.version,
                        state=e.state,
                        content_sha256=e.content_sha256,
                    )
                    for e in batch
                ],
            ),
        )
        batch_prefixes.clear()
        batch.clear()

    for prefix in sorted(wanted):
        items = by_bucket.get(prefix, [])
        if batch and len(batch) + len(items) > ENTRIES_PER_CALL:
            flush()
        batch_prefixes.append(prefix)
        batch.extend(items)
        if len(batch_prefixes) >= BUCKETS_PER_CALL:
            flush()
    flush()


# --- the simplest honest snapshot: a file of canonical records --------------------------


@dataclass(frozen=True)
class RowProblem:
    field: str
    why: str


@dataclass(frozen=True)
class Row:
    """A snapshot row, shaped like adapters' Mapped."""

    where: str
    record: Record | None
    problems: tuple[RowProblem, ...] = ()
    cursor: str | None = None


def record_line(record: Record) -> str:
    """One line of a records file: the Submission's record field in protobuf JSON, e.g.
    {"certificate_status": {...}}."""
    from google.protobuf import json_format

    from gateway.convert import record_to_proto

    name, msg = record_to_proto(record)
    return json.dumps(
        {name: json_format.MessageToDict(msg, preserving_proto_field_name=True)}, ensure_ascii=False
    )


def read_records_file(path: Path) -> Iterator[Row]:
    """Rows of a JSON-lines file of records (``record_line``); a bad line is a row with
    its problems, never the end of the run."""
    from google.protobuf import json_format

    from gateway.convert import record_from_proto
    from gateway.domain.errors import InvalidArgument
    from gateway.pb import records_pb2
    from gateway.reconcile.digests import submission_record

    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            where = f"line {number}"
            if not line.strip():
                continue
            try:
                submission = json_format.ParseDict(json.loads(line), records_pb2.Submission())
                record, _warnings = record_from_proto(submission_record(submission))  # type: ignore[arg-type]
            except InvalidArgument as err:
                problems = tuple(RowProblem(v.field, v.description) for v in err.violations) or (
                    RowProblem("", err.message),
                )
                yield Row(where, None, problems)
                continue
            except (ValueError, json_format.ParseError) as err:
                yield Row(where, None, (RowProblem("", f"not a record: {str(err)[:200]}"),))
                continue
            yield Row(where, record)
