"""A participant's nightly job (its reconciliation), scheduled beside its adapter.

Client side: imports nothing of the server. Unlike the gateway's replicas, one adapter
runner schedules its own job alone, so APScheduler's persistent job store is exactly
right here: a SQLite file in the adapter's own state directory
(``SQLAlchemyJobStore``) keeps the next run time across restarts, and on start
APScheduler compares it with now:

- missed by less than the grace time: the job runs **once** (``coalesce=True`` folds
  every missed time into one run);
- missed by more: it is skipped (logged by APScheduler as missed) and the next
  scheduled time stands.

Use::

    scheduler = participant_scheduler(state_dir)  # a BackgroundScheduler
    schedule_nightly(scheduler, "myadapter.jobs:reconcile", at="02:00", jitter=600)  # starts it

The job is stored by reference (``"module:function"`` or a module-level function) with
picklable arguments, because the job store outlives the process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from gateway.jobs.cron import CHINA, ScheduleError, at_time, parse_schedule

__all__ = ["DEFAULT_AT", "DEFAULT_GRACE", "NIGHTLY_JOB_ID", "participant_scheduler", "schedule_nightly"]

DEFAULT_AT = "02:00"
# A runner back by 08:00 still reconciles last night; later, it waits for tonight.
DEFAULT_GRACE = timedelta(hours=6)
NIGHTLY_JOB_ID = "nightly-reconciliation"
SCHEDULE_FILE = "schedule.db"


def participant_scheduler(state_dir: Path) -> BackgroundScheduler:
    """A scheduler (Asia/Shanghai) whose jobs persist in ``state_dir/schedule.db``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    store = SQLAlchemyJobStore(url=f"sqlite:///{(state_dir / SCHEDULE_FILE).resolve()}")
    return BackgroundScheduler(
        jobstores={"default": store},
        timezone=CHINA,
        job_defaults={"coalesce": True, "max_instances": 1},
    )


def schedule_nightly(
    scheduler: BaseScheduler,
    func: str | Callable[..., Any],
    *,
    at: str = DEFAULT_AT,
    schedule: str | None = None,
    jitter: int = 0,
    grace: timedelta = DEFAULT_GRACE,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    job_id: str = NIGHTLY_JOB_ID,
) -> Job:
    """Add (or update) the nightly job: daily at ``at`` (HH:MM, Asia/Shanghai) or on a cron
    ``schedule`` (5 fields, or 6 with seconds first), up to ``jitter`` seconds late so that
    thirty provinces do not all start at 02:00:00; a run missed while the runner was down
    runs once if it is at most ``grace`` late.

    Call it at every start with the runner's current configuration: an unchanged schedule
    keeps its stored next run time (what remembers a run missed while down); a
    changed one starts afresh from now. A scheduler not yet running is started here, paused
    while the job is looked up and added (the job store is read only once started), then
    resumed: that is when a missed run is run.
    """
    if jitter < 0:
        raise ScheduleError(f"jitter must be 0 or more seconds, got {jitter}")
    if grace <= timedelta(0):
        raise ScheduleError("the grace time must be positive")
    spec = schedule if schedule is not None else at_time(at, what="nightly time")
    trigger = parse_schedule(spec, what="nightly schedule", jitter=jitter)
    started_here = not scheduler.running
    if started_here:
        scheduler.start(paused=True)
    try:
        return _add_or_keep(scheduler, func, trigger, grace, args, kwargs, job_id)
    finally:
        if started_here:
            scheduler.resume()


def _add_or_keep(
    scheduler: BaseScheduler,
    func: str | Callable[..., Any],
    trigger: Any,
    grace: timedelta,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    job_id: str,
) -> Job:
    existing = scheduler.get_job(job_id)
    if existing is not None and repr(existing.trigger) == repr(trigger):
        # Same schedule: keep the stored next run time, which is what remembers a run
        # missed while the runner was down (replacing it would compute a new one from now).
        return existing.modify(
            func=func,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            misfire_grace_time=int(grace.total_seconds()),
            coalesce=True,
            max_instances=1,
        )
    return scheduler.add_job(
        func,
        trigger=trigger,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        id=job_id,
        name=job_id,
        replace_existing=True,
        coalesce=True,
        misfire_grace_time=int(grace.total_seconds()),
        max_instances=1,
    )
