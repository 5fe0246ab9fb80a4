"""The participant's side of reconciliation beside the adapter runner.

Sending what the gateway is missing goes through the runner's own path: the same
message id (gateway.reconcile.digests.message_id), the same outbox in the adapter's
state directory, the same receipts file. So a change is never sent twice:

- a record the runner already sent (its id is in receipts.jsonl) is not sent again by
  reconciliation: its original receipt is reported instead;
- a record reconciliation sent is written to reconciled.jsonl with its receipt, and the
  runner, when it later reads the same change from its source, skips it (it would
  otherwise send new bytes under a used id, which the gateway refuses, in its log).

Different bytes under one id are never sent: the gateway answers only byte-identical
envelopes with their original receipt, and signing again changes created_at.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters.base import AdapterError
from adapters.config import AdapterConfig
from adapters.state import RECONCILED, Pending, State
from gateway.domain.records import Record
from gateway.reconcile.digests import message_id

if TYPE_CHECKING:
    from adapters.runner import Runner

log = logging.getLogger("mrx.adapter")

RECEIPTS = "receipts.jsonl"
# Message ids reconciliation sent, with their receipts: small (a night's missing
# records), so the runner can read it at every batch.


@dataclass
class Sent:
    """What sending the missing records did, per record key."""

    sent: dict[str, int] = field(default_factory=dict)  # key -> log index of the new receipt
    already: dict[str, int] = field(default_factory=dict)  # key -> log index of the original receipt
    refused: dict[str, str] = field(default_factory=dict)  # key -> the gateway's reason


def receipted(
    state: State, wanted: Iterable[str], *, files: Sequence[str] = (RECEIPTS, RECONCILED)
) -> dict[str, int]:
    """{message id: log index} of the ``wanted`` ids the state's receipt files hold.

    Streams the files: receipts.jsonl grows with every change ever sent."""
    want = set(wanted)
    found: dict[str, int] = {}
    for name in files:
        path = state.dir / name
        if not want or not path.exists():
            continue
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                entry = json.loads(line)
                mid = entry.get("message_id")
                if mid in want and "log_index" in entry:
                    found[mid] = int(entry["log_index"])
    return found


def send_missing(runner: Runner, records: Sequence[Record]) -> Sent:
    """Send the records the gateway is missing through ``runner``'s path (see above)."""
    from adapters.runner import Summary

    result = Sent()
    # An outbox left by a crash goes first, exactly as the runner's own pass would send it.
    left = runner.state.pending()
    if left is not None:
        runner._record(*runner._exchange(left), Summary())
    by_id = {message_id(r): r for r in records}
    original = receipted(runner.state, by_id)
    for mid, index in original.items():
        result.already[by_id[mid].key] = index
        log.info("%s was sent before (receipt #%d): not sent again", by_id[mid].key, index)
    rest = [r for mid, r in by_id.items() if mid not in original]
    if not rest:
        return result
    pending = Pending(
        [runner._sign(r) for r in rest], [f"reconciliation {r.key}" for r in rest], runner.state.cursor()
    )
    runner.state.save_pending(pending)  # the outbox: a crash from here resends these very bytes
    pending, outcomes = runner._exchange(pending)
    reconciled = []
    for record, outcome in zip(rest, outcomes, strict=True):
        if outcome.receipt is not None:
            result.sent[record.key] = outcome.receipt.log_index
            reconciled.append(
                {
                    "record_key": record.key,
                    "message_id": message_id(record),
                    "log_index": outcome.receipt.log_index,
                }
            )
        else:
            assert outcome.refusal is not None
            result.refused[record.key] = outcome.refusal.reason or outcome.refusal.code.name
    # Before the outbox is cleared (in _record): a crash in between resends the outbox,
    # whose identical bytes get their original receipts.
    runner.state.append(RECONCILED, reconciled)
    runner._record(pending, outcomes, Summary())
    return result


# --- the nightly run ---------------------------------------------------------------------

RUNS = "reconcile-runs.jsonl"  # one line per nightly run: its id, counts, or why it failed
_RECONCILE_KEYS = {"enabled", "at", "schedule", "jitter", "grace"}


@dataclass(frozen=True)
class NightlyConfig:
    """The adapter config's ``[reconcile]`` section (docs/adapters.md)."""

    enabled: bool = True
    at: str = "02:00"  # HH:MM, Asia/Shanghai
    schedule: str | None = None  # a cron schedule instead of ``at`` (5 fields, or 6 with seconds)
    jitter: int = 600  # seconds: thirty provinces do not all start at 02:00:00
    grace: float = 6 * 3600.0  # seconds late a missed run may still run (once)


def nightly_config(config: AdapterConfig) -> NightlyConfig:
    """``[reconcile]`` of ``config``, checked (AdapterError naming the key)."""
    from gateway.jobs.cron import ScheduleError, at_time, parse_schedule

    where = f"adapter config {config.path}: [reconcile]"
    raw = config.extra.get("reconcile", {})
    if not isinstance(raw, dict):
        raise AdapterError(f"{where} must be a table")
    unknown = set(raw) - _RECONCILE_KEYS
    if unknown:
        raise AdapterError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_RECONCILE_KEYS)}")
    out = NightlyConfig()
    enabled = raw.get("enabled", out.enabled)
    if not isinstance(enabled, bool):
        raise AdapterError(f"{where} enabled must be true or false, got {enabled!r}")
    jitter = raw.get("jitter", out.jitter)
    if not isinstance(jitter, int) or isinstance(jitter, bool) or not 0 <= jitter <= 3 * 3600:
        raise AdapterError(f"{where} jitter must be whole seconds 0..10800, got {jitter!r}")
    grace = raw.get("grace", out.grace)
    if not isinstance(grace, int | float) or isinstance(grace, bool) or not 0 < grace <= 7 * 86400:
        raise AdapterError(f"{where} grace must be seconds, more than 0 and at most 7 days, got {grace!r}")
    at, schedule = raw.get("at", out.at), raw.get("schedule")
    try:
        if schedule is not None:
            parse_schedule(str(schedule), what=f"{where} schedule")
        else:
            at_time(str(at), what=f"{where} at")
    except ScheduleError as err:
        raise AdapterError(str(err)) from None
    return NightlyConfig(enabled, str(at), None if schedule is None else str(schedule), jitter, float(grace))


def start_nightly(config: AdapterConfig) -> Any:
    """Schedule this adapter's nightly reconciliation (gateway.jobs.participant: the job
    store is ``schedule.db`` in the state directory, so a run missed while the runner was
    down runs once on its return, within the grace time). The running scheduler, or None
    when ``[reconcile] enabled = false``; the caller shuts it down."""
    from datetime import timedelta

    from gateway.jobs.participant import participant_scheduler, schedule_nightly

    nightly = nightly_config(config)
    if not nightly.enabled:
        return None
    scheduler = participant_scheduler(config.state_dir)
    schedule_nightly(
        scheduler,
        "adapters.nightly:reconcile_now",  # by reference: the job store outlives the process
        at=nightly.at,
        schedule=nightly.schedule,
        jitter=nightly.jitter,
        grace=timedelta(seconds=nightly.grace),
        args=(str(config.path.resolve()),),
    )
    job = scheduler.get_job("nightly-reconciliation")
    log.info("nightly reconciliation scheduled; next run %s", getattr(job, "next_run_time", None))
    return scheduler


def reconcile_now(config_path: str) -> None:
    """One reconciliation of the adapter's whole snapshot (the scheduled job).

    Reports only: what the gateway is missing is named in the signed report and the log,
    and sent by a person with ``mrx reconcile run --adapter CONFIG`` (which asks first);
    the job never signs on its own."""
    from pathlib import Path

    from adapters import load_adapter
    from gateway.reconcile.participant import CLASS_NAMES, SnapshotFailed, reconcile

    adapter = load_adapter(Path(config_path))
    config = adapter.config
    assert config is not None
    state = State(config.state_dir)
    try:
        with _reconcile_client(config) as client:
            result = reconcile(
                client,
                participant=adapter.participant,
                rows=adapter.snapshot(),
                recognised_keyids=_own_keyids(config),
            )
    except SnapshotFailed as err:
        log.error("nightly reconciliation failed: %s", err)
        state.append(RUNS, [{"status": "failed", "why": str(err)}])
        return
    except Exception as err:  # the scheduler would only log it; say what failed, then the next night
        log.error("nightly reconciliation could not run: %s", type(err).__name__)
        state.append(RUNS, [{"status": "error", "why": type(err).__name__}])
        return
    counts = {CLASS_NAMES.get(c.category, str(c.category)): c.count for c in result.report.summary}
    found = {k: n for k, n in counts.items() if n}
    log.log(
        logging.WARNING if found or result.report.problems else logging.INFO,
        "nightly reconciliation %s: %s; %d row(s) could not be mapped",
        result.run_id,
        ", ".join(f"{k} {n}" for k, n in found.items()) or "no discrepancies",
        len(result.report.problems),
    )
    state.append(
        RUNS,
        [
            {
                "status": "complete",
                "run_id": result.run_id,
                "snapshot_size": result.report.snapshot_size,
                "summary": counts,
                "problems": len(result.report.problems),
                "missing_at_gateway": [r.key for r in result.missing_at_gateway],
            }
        ],
    )


def _own_keyids(config: AdapterConfig) -> list[str]:
    """The participant's key ids: all of them from its federation file if it has one."""
    gw = config.gateway
    if gw.federation is not None:
        from gateway.registry.federation import load_federation

        federation = load_federation(gw.federation)
        return sorted(k.keyid for k in federation.keys.values() if k.owner == config.participant)
    return [gw.keyid] if gw.keyid else []


def _reconcile_client(config: AdapterConfig) -> Any:
    from gateway.client import ReconcileClient

    gw = config.gateway
    if gw.key is None or not gw.keyid:
        raise AdapterError(f"{config.path}: [gateway] key and keyid are needed to reconcile")
    return ReconcileClient(
        gw.address, sender=config.participant, signer=gw.load_signer(config.path), **gw.client_options()
    )
