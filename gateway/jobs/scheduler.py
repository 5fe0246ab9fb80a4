"""The gateway's scheduled jobs: APScheduler 3 in the ``mrx serve`` process, claims in the database.

Every replica runs a ``BackgroundScheduler`` with its own in-memory job store and the
same cron schedules (Asia/Shanghai). APScheduler documents that a job store must never be
shared between schedulers, so "each scheduled run happens once across replicas" is ours:
when a job fires, the replica computes the scheduled time it fired for (the latest cron
time not after now: identical at every replica, whatever their clocks' milliseconds) and
claims (job, scheduled time) in ``job_runs`` (gateway/store/job_runs.py). One INSERT lands;
the others see the primary key taken and do nothing. Cron triggers only: an interval
trigger would fire at times that depend on when each replica started.

- **Leases.** The claimant renews its lease every third of it while the job runs. A claim
  still "running" past its lease belongs to a runner that died (kill -9, power): the
  next replica to look (at its start, and every ``sweep`` interval) takes it over if it is
  still the job's latest scheduled time within the grace period (``attempt`` + 1,
  ``taken_over_from`` names the dead runner), and otherwise closes it as "abandoned". A
  run is never left "running" forever, and two runners never hold one claim at once
  (a runner that lost its claim while stalled learns it when renewing, and its outcome is
  not recorded).
- **Misfires.** ``coalesce=True`` and ``misfire_grace_time`` on every APScheduler job cover
  a process that was up but could not fire on time. A gateway that was *down* has nothing
  in memory to remember the missed run by, so at start each job's latest scheduled time
  within the grace period is claimed and run if nobody ran it: once, however many times
  it was missed (the claims table is the memory).
- **Results** go to the log, to ``JobState`` (an in-process object the metrics hook onto),
  and, for the self-audit, to the gRPC health service name ``mrx.audit`` (the server
  wires ``JobState.subscribe``). Every replica follows the latest finished self-audit in
  ``job_runs``, whichever replica ran it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from gateway.crypto.suites import PublicKey
from gateway.jobs.cron import CHINA, ScheduleError, at_time, latest_fire_time, parse_schedule
from gateway.jobs.selfaudit import SelfAuditResult, run_self_audit
from gateway.store.engine import Engines
from gateway.store.errors import is_unavailable
from gateway.store.job_runs import ERROR, FAILED, OK, Claim, JobRun, JobRunStore

log = logging.getLogger(__name__)

__all__ = [
    "CHINA",
    "DEFAULT_SCHEDULES",
    "JOB_NAMES",
    "GatewayJobs",
    "JobSettings",
    "JobState",
    "ReconciliationProvider",
    "ScheduleError",
    "at_time",
    "latest_fire_time",
    "parse_schedule",
    "unreconciled_participants",
]

SELF_AUDIT = "self-audit"
RECONCILIATION_CHECK = "reconciliation-check"
PRUNE_JOB_RUNS = "prune-job-runs"
JOB_NAMES = (SELF_AUDIT, RECONCILIATION_CHECK, PRUNE_JOB_RUNS)
DEFAULT_SCHEDULES: Mapping[str, str] = {
    SELF_AUDIT: "0 3 * * *",
    # After the participants' nightly reconciliation (02:00 by default) has had time to run.
    RECONCILIATION_CHECK: "0 7 * * *",
    PRUNE_JOB_RUNS: "30 4 * * *",
}
# Test-only: seconds a claimed job waits before it runs, so a test can kill its process
# mid-job (tests/e2e/test_jobs_replicas.py). docs/jobs.md says never to set it.
TEST_PAUSE_ENV = "MRX_JOBS_TEST_PAUSE"


class ReconciliationProvider(Protocol):
    """Where the reconciliation runs are (gateway/store/reconcile.py's runs table)."""

    def last_complete_runs(self) -> Mapping[str, datetime | None]:
        """Participant -> end of its latest complete reconciliation (None: never)."""
        ...


def unreconciled_participants(
    provider: ReconciliationProvider, participants: Iterable[str], *, now: datetime, window: timedelta
) -> tuple[str, ...]:
    """Participants with no complete reconciliation in ``window`` before ``now``, sorted.
    A participant the provider does not know has never reconciled."""
    last = provider.last_complete_runs()
    cutoff = now - window
    return tuple(sorted(p for p in set(participants) if (at := last.get(p)) is None or at < cutoff))


@dataclass
class JobState:
    """What the jobs found, in this process; the metrics and the health service hook on.

    Listeners are called (from the job's thread) after every change, with the state.
    """

    self_audit_ok: bool | None = None  # None: no self-audit recorded yet
    self_audit_finished_at: datetime | None = None
    self_audit_problems: tuple[str, ...] = ()
    self_audit_tree_size: int | None = None
    unreconciled: tuple[str, ...] | None = None  # None: not checked yet (or no provider)
    unreconciled_checked_at: datetime | None = None
    last_outcomes: dict[str, str] = field(default_factory=dict)  # job -> ok | failed | error
    _listeners: list[Callable[[JobState], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, listener: Callable[[JobState], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def update(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(self)
            except Exception:
                log.warning("a job-state listener failed", exc_info=True)


@dataclass(frozen=True)
class JobSettings:
    """How ``mrx serve`` schedules its jobs (flags: docs/jobs.md)."""

    schedules: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SCHEDULES))
    grace: timedelta = timedelta(hours=1)
    lease: timedelta = timedelta(seconds=60)
    # How often each replica sweeps expired claims and follows the latest self-audit.
    sweep: timedelta = timedelta(seconds=30)
    reconciliation_window: timedelta = timedelta(hours=24)
    keep_runs: timedelta = timedelta(days=90)

    def with_schedule(self, job: str, spec: str) -> JobSettings:
        if job not in JOB_NAMES:
            raise ScheduleError(f"unknown job {job!r}; the jobs are {', '.join(JOB_NAMES)}")
        parse_schedule(spec, what=f"schedule of {job}")
        return replace(self, schedules={**self.schedules, job: spec})

    def validate(self) -> None:
        for job, spec in self.schedules.items():
            if job not in JOB_NAMES:
                raise ScheduleError(f"unknown job {job!r}; the jobs are {', '.join(JOB_NAMES)}")
            parse_schedule(spec, what=f"schedule of {job}")
        for name in ("grace", "lease", "sweep"):
            if getattr(self, name) <= timedelta(0):
                raise ScheduleError(f"job {name} must be positive")


def runner_id() -> str:
    """Who claims: host, pid and a random part (a pid is reused after a restart)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def _from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, UTC)


class GatewayJobs:
    """The scheduler of one gateway process. ``start`` / ``stop`` with the gateway."""

    def __init__(
        self,
        engines: Engines,
        *,
        settings: JobSettings,
        gateway_keys: Mapping[str, PublicKey],
        origin: str,
        participants: Sequence[str] = (),
        reconciliation: ReconciliationProvider | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        state: JobState | None = None,
        runner: str | None = None,
    ):
        settings.validate()
        self.settings = settings
        self.state = state or JobState()
        self.runner = runner or runner_id()
        self.store = JobRunStore(engines)
        self._engines = engines
        self._keys = dict(gateway_keys)
        self._origin = origin
        self._participants = tuple(participants)
        self._reconciliation = reconciliation
        self._clock = clock
        self._bodies: dict[str, Callable[[], tuple[bool, str]]] = {
            SELF_AUDIT: self._self_audit,
            PRUNE_JOB_RUNS: self._prune,
        }
        if reconciliation is not None:
            self._bodies[RECONCILIATION_CHECK] = self._reconciliation_check
        self.triggers = {
            job: parse_schedule(spec, what=f"schedule of {job}")
            for job, spec in settings.schedules.items()
            if job in self._bodies
        }
        self._scheduler: BackgroundScheduler | None = None
        self._stopping = threading.Event()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Schedule every job; in the background: clean up after dead runners, run what was
        missed while down, follow the latest self-audit."""
        # APScheduler logs every execution at INFO; the sweep alone would be a line every 30 s.
        # Our own lines say what ran and how it ended; its warnings (missed runs) still show.
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
        scheduler = BackgroundScheduler(timezone=CHINA)
        grace = int(self.settings.grace.total_seconds())
        for job, trigger in self.triggers.items():
            scheduler.add_job(
                self._fire,
                trigger=trigger,
                args=(job,),
                id=job,
                name=job,
                coalesce=True,
                misfire_grace_time=grace,
                max_instances=1,
            )
        scheduler.add_job(
            self.sweep,
            trigger=IntervalTrigger(seconds=max(self.settings.sweep.total_seconds(), 1.0)),
            id="sweep",
            name="sweep",
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC),  # at once: the start-up clean-up and catch-up
        )
        scheduler.start()
        self._scheduler = scheduler
        log.info(
            "scheduled jobs (Asia/Shanghai): %s; runner %s",
            ", ".join(f"{job} '{self.settings.schedules[job]}'" for job in self.triggers),
            self.runner,
        )

    def stop(self) -> None:
        self._stopping.set()
        if self._scheduler is not None and self._scheduler.running:
            # Not waiting: a job cut short leaves its claim to expire and be taken over.
            self._scheduler.shutdown(wait=False)

    # --- one run ----------------------------------------------------------------------

    def _fire(self, job: str) -> None:
        try:
            self.run_due(job)
        except Exception as exc:  # the database is away: one line, the sweep catches up
            log.warning(
                "job %s: could not be claimed or recorded (%s); the sweep retries", job, type(exc).__name__
            )

    def run_due(self, job: str, *, now: datetime | None = None) -> JobRun | None:
        """Run ``job`` for its latest scheduled time (within the grace period) if this
        runner can claim it; returns the finished run, or None if nothing was run here."""
        now = now or self._clock()
        scheduled = latest_fire_time(self.triggers[job], now, self.settings.grace)
        if scheduled is None:
            return None
        return self.run_claimed(job, scheduled, now=now)

    def run_claimed(self, job: str, scheduled: datetime, *, now: datetime) -> JobRun | None:
        lease_us = _us_delta(self.settings.lease)
        claim = self.store.claim(job, _us(scheduled), runner=self.runner, now_us=_us(now), lease_us=lease_us)
        if claim is None:
            log.debug("job %s at %s: claimed by another runner", job, scheduled.isoformat())
            return None
        if claim.taken_over_from is not None:
            log.warning(
                "job %s at %s: taken over from %s, whose lease expired (it stopped mid-run)",
                job,
                scheduled.isoformat(),
                claim.taken_over_from,
            )
        stop_renewing = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(claim, stop_renewing), name=f"mrx-job-lease-{job}", daemon=True
        )
        renewer.start()
        try:
            pause = float(os.environ.get(TEST_PAUSE_ENV) or 0)
            if pause > 0:
                time.sleep(pause)
            try:
                ok, detail = self._bodies[job]()
                outcome = OK if ok else FAILED
            except Exception as exc:
                # Not "failed": the job did not get to an answer, so the self-audit's alarm
                # (health mrx.audit) must not follow it. A database outage is one line (the
                # outage is reported where it is noticed); anything else is a bug: traceback.
                if is_unavailable(exc):
                    log.error("job %s at %s: the database became unavailable", job, scheduled.isoformat())
                else:
                    log.exception("job %s at %s could not finish", job, scheduled.isoformat())
                outcome, detail = ERROR, f"{type(exc).__name__}: the job raised (see the gateway log)"
        finally:
            stop_renewing.set()
            renewer.join(5)
        if not self.store.finish(claim, outcome=outcome, detail=detail, now_us=_us(self._clock())):
            log.error(
                "job %s at %s: finished %s but its claim was taken over meanwhile (this runner stalled "
                "past its lease); the outcome is not recorded",
                job,
                scheduled.isoformat(),
                outcome,
            )
            return None
        self.state.update(last_outcomes={**self.state.last_outcomes, job: outcome})
        (log.info if outcome == OK else log.error)(
            "job %s at %s: %s: %s", job, scheduled.isoformat(), outcome, detail
        )
        return self.store.get(job, _us(scheduled))

    def _renew(self, claim: Claim, stop: threading.Event) -> None:
        every = self.settings.lease.total_seconds() / 3
        while not stop.wait(every):
            try:
                if not self.store.renew(
                    claim, now_us=_us(self._clock()), lease_us=_us_delta(self.settings.lease)
                ):
                    log.error("job %s: lost its claim (taken over after its lease expired)", claim.job)
                    return
            except Exception as exc:  # the database is away: the lease may lapse; say so once
                log.warning("job %s: could not renew its lease (%s)", claim.job, type(exc).__name__)

    # --- upkeep -----------------------------------------------------------------------

    def sweep(self, *, now: datetime | None = None) -> None:
        """Claims of dead runners: take over the ones still due, abandon the rest; run what
        was missed while down; follow the latest self-audit (every replica's health)."""
        now = now or self._clock()
        try:
            self._recover(now)
            for job in self.triggers:
                if self._stopping.is_set():
                    return
                self.run_due(job, now=now)
            self.refresh()
        except Exception as exc:
            log.warning("job sweep failed (%s); retrying in %s", type(exc).__name__, self.settings.sweep)

    def _recover(self, now: datetime) -> None:
        for run in self.store.expired(now_us=_us(now)):
            trigger = self.triggers.get(run.job)
            due = latest_fire_time(trigger, now, self.settings.grace) if trigger is not None else None
            if due is not None and _us(due) == run.scheduled_at_us:
                continue  # still due: run_due takes it over
            why = (
                f"{run.claimed_by} stopped before finishing (lease expired at "
                f"{_from_us(run.lease_until_us).isoformat()}); not run again: "
                + ("a later scheduled run supersedes it" if due is not None else "past the grace period")
            )
            if self.store.abandon(run, now_us=_us(now), why=why):
                log.warning(
                    "job %s at %s: abandoned: %s", run.job, _from_us(run.scheduled_at_us).isoformat(), why
                )

    def refresh(self) -> None:
        """Follow the latest finished self-audit, whichever replica ran it."""
        run = self.store.latest_finished(SELF_AUDIT)
        if run is None or run.finished_at_us is None:
            return
        finished = _from_us(run.finished_at_us)
        if self.state.self_audit_finished_at is not None and self.state.self_audit_finished_at >= finished:
            return
        ok = run.outcome == OK
        self.state.update(
            self_audit_ok=ok,
            self_audit_finished_at=finished,
            self_audit_problems=() if ok else tuple(line for line in run.detail.splitlines()[1:] if line),
        )

    # --- the jobs ---------------------------------------------------------------------

    def _self_audit(self) -> tuple[bool, str]:
        result: SelfAuditResult = run_self_audit(
            self._engines, gateway_keys=self._keys, origin=self._origin, clock=self._clock
        )
        self.state.update(
            self_audit_ok=result.ok,
            self_audit_finished_at=result.finished_at,
            self_audit_problems=result.problems,
            self_audit_tree_size=result.tree_size,
        )
        if not result.ok:
            log.error(
                "SELF-AUDIT FAILED: the stored audit log does not hold what the gateway signed "
                "(docs/jobs.md, 'When the self-audit fails'):\n  %s",
                "\n  ".join(result.problems),
            )
        # First line the summary, then one problem a line (refresh() reads them back).
        return result.ok, "\n".join((result.summary(), *result.problems))

    def _reconciliation_check(self) -> tuple[bool, str]:
        assert self._reconciliation is not None
        now = self._clock()
        late = unreconciled_participants(
            self._reconciliation, self._participants, now=now, window=self.settings.reconciliation_window
        )
        self.state.update(unreconciled=late, unreconciled_checked_at=now)
        hours = self.settings.reconciliation_window.total_seconds() / 3600
        if late:
            log.warning(
                "no complete reconciliation in the last %.0f h: %s (docs/jobs.md)", hours, ", ".join(late)
            )
            return True, f"not reconciled in {hours:.0f} h: {', '.join(late)}"
        return True, f"every participant reconciled in the last {hours:.0f} h"

    def _prune(self) -> tuple[bool, str]:
        cutoff = self._clock() - self.settings.keep_runs
        removed = self.store.prune(finished_before_us=_us(cutoff))
        return True, f"removed {removed} job run(s) finished before {cutoff.isoformat()}"


def _us_delta(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1_000_000)
