"""Claims of scheduled job runs (table ``job_runs``): the SQL side of gateway/jobs.

Each replica schedules every job in its own in-memory APScheduler; which replica runs a
given (job, scheduled time) is decided here, by the database:

- ``claim``: INSERT the row; the primary key (job, scheduled_at_us) lets exactly one
  replica's insert land. A unique violation means someone else has (or had) it, unless
  that claim is still "running" with its lease expired (its runner died): then one
  conditional UPDATE takes it over, and again only one replica's update matches.
- ``renew``: the runner extends its lease while it works; the UPDATE names the runner,
  so a runner that lost its claim to a takeover learns it (False) instead of writing.
- ``finish``: outcome and time, again only by the current claimant.
- ``abandon_expired``: claims still "running" whose lease ran out long ago (too late to
  run again) are closed as "abandoned", so nothing stays "running" forever.

Times are integer microseconds since the epoch, like every other table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, desc, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.store.engine import Engines
from gateway.store.schema import job_runs

RUNNING = "running"
OK = "ok"
FAILED = "failed"  # the job ran to the end and found something wrong (a damaged log)
ERROR = "error"  # the job could not finish (an exception: the database went away, a bug)
ABANDONED = "abandoned"
OUTCOMES = (RUNNING, OK, FAILED, ERROR, ABANDONED)
# Bounded so a long problem list never bloats the table; the logs have the rest.
MAX_DETAIL = 4000


@dataclass(frozen=True, slots=True)
class JobRun:
    job: str
    scheduled_at_us: int
    claimed_by: str
    attempt: int
    taken_over_from: str | None
    started_at_us: int
    lease_until_us: int
    finished_at_us: int | None
    outcome: str
    detail: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim this runner holds: ``attempt`` > 1 when it took over a dead runner's claim."""

    job: str
    scheduled_at_us: int
    claimed_by: str
    attempt: int
    taken_over_from: str | None


class JobRunStore:
    def __init__(self, engines: Engines):
        self._engines = engines

    def claim(
        self, job: str, scheduled_at_us: int, *, runner: str, now_us: int, lease_us: int
    ) -> Claim | None:
        """Claim (job, scheduled time) for ``runner``; None if another runner has or had it."""
        try:
            with self._engines.writer.begin() as conn:
                conn.execute(
                    insert(job_runs).values(
                        job=job,
                        scheduled_at_us=scheduled_at_us,
                        claimed_by=runner,
                        attempt=1,
                        taken_over_from=None,
                        started_at_us=now_us,
                        lease_until_us=now_us + lease_us,
                        finished_at_us=None,
                        outcome=RUNNING,
                        detail="",
                    )
                )
            return Claim(job, scheduled_at_us, runner, 1, None)
        except IntegrityError:
            pass
        return self._take_over(job, scheduled_at_us, runner=runner, now_us=now_us, lease_us=lease_us)

    def _take_over(
        self, job: str, scheduled_at_us: int, *, runner: str, now_us: int, lease_us: int
    ) -> Claim | None:
        c = job_runs.c
        key = and_(c.job == job, c.scheduled_at_us == scheduled_at_us)
        with self._engines.writer.begin() as conn:
            row = conn.execute(
                select(c.claimed_by, c.attempt, c.outcome, c.lease_until_us).where(key)
            ).first()
            if row is None or row.outcome != RUNNING or row.lease_until_us >= now_us:
                return None
            # Conditional on the row being exactly as read: of two replicas taking over at
            # once, one UPDATE matches and the other finds the claimant changed.
            done = conn.execute(
                update(job_runs)
                .where(
                    key,
                    c.outcome == RUNNING,
                    c.claimed_by == row.claimed_by,
                    c.attempt == row.attempt,
                    c.lease_until_us < now_us,
                )
                .values(
                    claimed_by=runner,
                    attempt=row.attempt + 1,
                    taken_over_from=row.claimed_by,
                    started_at_us=now_us,
                    lease_until_us=now_us + lease_us,
                    detail=f"taken over from {row.claimed_by} (lease expired)",
                )
            )
            if done.rowcount != 1:
                return None
        return Claim(job, scheduled_at_us, runner, row.attempt + 1, row.claimed_by)

    def renew(self, claim: Claim, *, now_us: int, lease_us: int) -> bool:
        """Extend the lease; False if the claim is no longer this runner's."""
        c = job_runs.c
        with self._engines.writer.begin() as conn:
            done = conn.execute(
                update(job_runs)
                .where(
                    c.job == claim.job,
                    c.scheduled_at_us == claim.scheduled_at_us,
                    c.claimed_by == claim.claimed_by,
                    c.outcome == RUNNING,
                )
                .values(lease_until_us=now_us + lease_us)
            )
            return done.rowcount == 1

    def finish(self, claim: Claim, *, outcome: str, detail: str, now_us: int) -> bool:
        """Record the outcome; False if the claim was taken over meanwhile (nothing written)."""
        if outcome not in (OK, FAILED, ERROR):
            raise ValueError(f"a run finishes ok, failed or error, not {outcome!r}")
        c = job_runs.c
        with self._engines.writer.begin() as conn:
            done = conn.execute(
                update(job_runs)
                .where(
                    c.job == claim.job,
                    c.scheduled_at_us == claim.scheduled_at_us,
                    c.claimed_by == claim.claimed_by,
                    c.outcome == RUNNING,
                )
                .values(outcome=outcome, finished_at_us=now_us, detail=detail[:MAX_DETAIL])
            )
            return done.rowcount == 1

    def expired(self, *, now_us: int) -> list[JobRun]:
        """Claims still "running" whose lease has run out: their runner stopped."""
        c = job_runs.c
        with self._engines.reader.connect() as conn:
            rows = conn.execute(
                select(job_runs)
                .where(c.outcome == RUNNING, c.lease_until_us < now_us)
                .order_by(c.scheduled_at_us)
            ).all()
        return [JobRun(*row) for row in rows]

    def abandon(self, run: JobRun, *, now_us: int, why: str) -> bool:
        """Close an expired claim as abandoned (if it is still exactly that claim)."""
        c = job_runs.c
        with self._engines.writer.begin() as conn:
            done = conn.execute(
                update(job_runs)
                .where(
                    c.job == run.job,
                    c.scheduled_at_us == run.scheduled_at_us,
                    c.claimed_by == run.claimed_by,
                    c.outcome == RUNNING,
                    c.lease_until_us < now_us,
                )
                .values(outcome=ABANDONED, finished_at_us=now_us, detail=why[:MAX_DETAIL])
            )
            return done.rowcount == 1

    def get(self, job: str, scheduled_at_us: int) -> JobRun | None:
        c = job_runs.c
        with self._engines.reader.connect() as conn:
            row = conn.execute(
                select(job_runs).where(c.job == job, c.scheduled_at_us == scheduled_at_us)
            ).first()
        return JobRun(*row) if row else None

    def latest_finished(self, job: str) -> JobRun | None:
        """The newest run of ``job`` that ran to the end, ok or failed (by scheduled time)."""
        c = job_runs.c
        with self._engines.reader.connect() as conn:
            row = conn.execute(
                select(job_runs)
                .where(c.job == job, c.outcome.in_((OK, FAILED)))
                .order_by(desc(c.scheduled_at_us))
                .limit(1)
            ).first()
        return JobRun(*row) if row else None

    def runs(self, jobs: Sequence[str] = (), *, limit: int = 1000) -> list[JobRun]:
        """The newest runs (of ``jobs``, or all), newest first."""
        c = job_runs.c
        stmt = select(job_runs)
        if jobs:
            stmt = stmt.where(c.job.in_(list(jobs)))
        with self._engines.reader.connect() as conn:
            rows = conn.execute(stmt.order_by(desc(c.scheduled_at_us), c.job).limit(limit)).all()
        return [JobRun(*row) for row in rows]

    def prune(self, *, finished_before_us: int) -> int:
        """Delete finished runs older than the cut-off; returns how many."""
        c = job_runs.c
        with self._engines.writer.begin() as conn:
            done = conn.execute(
                delete(job_runs).where(c.outcome != RUNNING, c.finished_at_us < finished_before_us)
            )
            return int(done.rowcount)
