"""The gateway's scheduled jobs on a real database (SQLite and PostgreSQL), on a test clock.

Runs are driven by calling what the scheduler calls (``run_due``, ``sweep``) at chosen
instants, so every case is exact and nothing waits for a wall clock; the two-process
tests (tests/e2e/test_jobs_replicas.py) run the real schedulers.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import BigInteger, Column, MetaData, String, Table, delete, func, insert, select

from gateway.jobs.scheduler import (
    CHINA,
    PRUNE_JOB_RUNS,
    RECONCILIATION_CHECK,
    SELF_AUDIT,
    GatewayJobs,
    JobSettings,
    unreconciled_participants,
)
from gateway.observability import metrics
from gateway.server import AUDIT_HEALTH_SERVICE
from gateway.store.job_runs import ABANDONED, ERROR, FAILED, OK, RUNNING, JobRunStore
from gateway.store.schema import exchanges, job_runs

T0 = datetime(2026, 11, 24, 3, 0, tzinfo=CHINA)  # a self-audit time
LEASE = timedelta(seconds=60)


def us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engines(database_url, open_store):
    return open_store(database_url)


@pytest.fixture
def make_jobs(engines, federation):
    def _make(clock, runner, settings=None, **kwargs):
        return GatewayJobs(
            engines,
            settings=settings or JobSettings(lease=LEASE),
            gateway_keys={k.keyid: k.public_key for k in federation.keys_of(federation.gateway_code)},
            origin=f"{federation.name}/exchange-log",
            clock=clock,
            runner=runner,
            **kwargs,
        )

    return _make


def all_runs(engines):
    with engines.reader.connect() as conn:
        return conn.execute(select(job_runs).order_by(job_runs.c.job, job_runs.c.scheduled_at_us)).all()


def test_a_scheduled_time_runs_once_whichever_replica_claims_it(engines, make_jobs):
    clock = Clock(T0 + timedelta(seconds=1))
    a, b = make_jobs(clock, "replica-a"), make_jobs(clock, "replica-b")
    ran = a.run_due(SELF_AUDIT)
    assert ran is not None and (ran.outcome, ran.claimed_by, ran.attempt) == (OK, "replica-a", 1)
    assert ran.scheduled_at_us == us(T0)
    assert ran.detail.startswith("self-audit ok: 0 entries")
    assert b.run_due(SELF_AUDIT) is None  # the same time: already run
    clock.now += timedelta(days=1)
    assert b.run_due(SELF_AUDIT).claimed_by == "replica-b"  # the next night's time
    assert [(r.claimed_by, r.outcome) for r in all_runs(engines)] == [("replica-a", OK), ("replica-b", OK)]


def test_replicas_racing_for_one_time_produce_one_claim(engines):
    store = JobRunStore(engines)
    barrier = threading.Barrier(8)
    won: list[str] = []

    def race(n: int) -> None:
        barrier.wait()
        if store.claim(SELF_AUDIT, us(T0), runner=f"r{n}", now_us=us(T0), lease_us=60_000_000):
            won.append(f"r{n}")

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1
    assert [r.claimed_by for r in all_runs(engines)] == won


def test_a_run_missed_while_down_runs_once_when_the_gateway_comes_back(engines, make_jobs):
    """Down from 01:55 to 03:05 with a run every ten minutes and an hour's grace: at start
    only the latest missed time (03:00) runs, once; the six before it never do."""
    settings = JobSettings(lease=LEASE).with_schedule(SELF_AUDIT, "*/10 * * * *")
    clock = Clock(T0 + timedelta(minutes=5))
    jobs = make_jobs(clock, "restarted", settings)
    jobs.sweep()  # what start() runs at once
    jobs.sweep()  # and again later: nothing new is due
    other = make_jobs(clock, "other-replica", settings)
    other.sweep()
    assert [(r.job, r.scheduled_at_us, r.claimed_by, r.outcome) for r in all_runs(engines)] == [
        (SELF_AUDIT, us(T0), "restarted", OK)
    ]


def test_nothing_runs_when_the_missed_time_is_beyond_the_grace_period(engines, make_jobs):
    clock = Clock(T0 + timedelta(hours=1, seconds=1))
    make_jobs(clock, "late").sweep()
    assert all_runs(engines) == []


def test_a_dead_runners_claim_is_taken_over_after_its_lease(engines, make_jobs):
    store = JobRunStore(engines)
    dead = store.claim(SELF_AUDIT, us(T0), runner="killed", now_us=us(T0), lease_us=us_delta(LEASE))
    assert dead is not None
    # Within the lease the claim is respected.
    clock = Clock(T0 + timedelta(seconds=30))
    jobs = make_jobs(clock, "successor")
    jobs.sweep()
    (row,) = all_runs(engines)
    assert (row.claimed_by, row.outcome) == ("killed", RUNNING)
    # After it, the next sweep (the next start, or another replica) takes it over and runs it.
    clock.now = T0 + timedelta(seconds=61)
    jobs.sweep()
    (row,) = all_runs(engines)
    assert (row.claimed_by, row.outcome, row.attempt, row.taken_over_from) == ("successor", OK, 2, "killed")
    # The dead runner, had it only stalled, cannot record an outcome over the successor's.
    assert not store.finish(dead, outcome=FAILED, detail="late", now_us=us(clock.now))
    assert not store.renew(dead, now_us=us(clock.now), lease_us=1)
    assert all_runs(engines)[0].outcome == OK


def test_a_dead_runners_claim_that_is_no_longer_due_is_abandoned(engines, make_jobs):
    store = JobRunStore(engines)
    yesterday = T0 - timedelta(days=1)
    assert store.claim(
        SELF_AUDIT, us(yesterday), runner="killed", now_us=us(yesterday), lease_us=us_delta(LEASE)
    )
    clock = Clock(T0 + timedelta(minutes=2))
    make_jobs(clock, "successor").sweep()
    rows = {r.scheduled_at_us: r for r in all_runs(engines)}
    old = rows[us(yesterday)]
    assert old.outcome == ABANDONED
    assert old.detail.startswith("killed stopped before finishing (lease expired at ")
    assert old.detail.endswith("not run again: a later scheduled run supersedes it")
    assert rows[us(T0)].outcome == OK  # tonight's run is unaffected
    assert not any(r.outcome == RUNNING for r in rows.values())


def test_a_dead_runners_claim_past_the_grace_period_is_abandoned(engines, make_jobs):
    store = JobRunStore(engines)
    assert store.claim(SELF_AUDIT, us(T0), runner="killed", now_us=us(T0), lease_us=us_delta(LEASE))
    make_jobs(Clock(T0 + timedelta(hours=2)), "next-start").sweep()
    (row,) = [r for r in all_runs(engines) if r.job == SELF_AUDIT]
    assert (row.outcome, row.claimed_by) == (ABANDONED, "killed")
    assert row.detail.endswith("not run again: past the grace period")


def test_a_job_that_raises_is_an_error_not_an_alarm(engines, make_jobs, monkeypatch):
    jobs = make_jobs(Clock(T0), "r")

    def broken():
        raise RuntimeError("secret internals")

    monkeypatch.setitem(jobs._bodies, SELF_AUDIT, broken)
    run = jobs.run_due(SELF_AUDIT)
    assert (run.outcome, run.detail) == (ERROR, "RuntimeError: the job raised (see the gateway log)")
    assert jobs.state.last_outcomes == {SELF_AUDIT: ERROR}
    # The self-audit did not get to an answer: nothing to alarm on.
    jobs.refresh()
    assert jobs.state.self_audit_ok is None


def test_a_failed_self_audit_is_seen_by_every_replica(engines, make_jobs, gateway, client_for, certs_of):
    js = client_for("CN-JS")
    for cert in certs_of("CN-JS", 5):
        js.submit(js.sign(cert))
    gateway.gateway.checkpointer.checkpoint_now()
    with engines.writer.begin() as conn:
        conn.execute(delete(exchanges).where(exchanges.c.log_index == 2))
    clock = Clock(T0)
    runner, follower = make_jobs(clock, "a"), make_jobs(clock, "b")
    run = runner.run_due(SELF_AUDIT)
    assert run.outcome == FAILED
    assert run.detail.splitlines()[1].startswith("the log is not dense: log index 2 is missing")
    assert runner.state.self_audit_ok is False
    assert follower.state.self_audit_ok is None
    follower.refresh()
    assert follower.state.self_audit_ok is False
    assert follower.state.self_audit_problems[0].startswith("the log is not dense")


def test_the_health_service_reports_a_failed_self_audit_under_mrx_audit(
    gateway_factory, client_for, certs_of
):
    # Schedules that are not due now, so only the run below decides the state.
    rare = "0 0 29 2 *"
    settings = JobSettings(lease=LEASE).with_schedule(SELF_AUDIT, rare).with_schedule(PRUNE_JOB_RUNS, rare)
    running = gateway_factory(jobs=settings)
    jobs = running.gateway.jobs
    assert jobs is not None
    channel = grpc.insecure_channel(running.address)
    health = health_pb2_grpc.HealthStub(channel)

    def status(service: str) -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

    try:
        assert status(AUDIT_HEALTH_SERVICE) == health_pb2.HealthCheckResponse.SERVING
        js = client_for("CN-JS", target=running.address)
        js.submit(js.sign(certs_of("CN-JS")[0]))
        running.gateway.checkpointer.checkpoint_now()
        with running.engines.writer.begin() as conn:
            conn.execute(delete(exchanges))
        now = datetime.now(UTC)
        assert jobs.run_claimed(SELF_AUDIT, now, now=now).outcome == FAILED
        assert status(AUDIT_HEALTH_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
        # The alert rule's metric follows (one process here: the plain registry).
        assert metrics.SELF_AUDIT_OK._value.get() == 0
        assert metrics.SELF_AUDIT_LAST_RUN._value.get() >= now.timestamp() - 1
        # Load balancers keep routing: the gateway itself still serves.
        assert status("") == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()


def test_reconciliation_check_flags_participants_from_a_runs_table(engines, make_jobs):
    """A provider backed by a real table (the shape branch `reconcile` stores runs in)."""
    meta = MetaData()
    runs = Table(
        "test_reconciliation_runs",
        meta,
        Column("run_id", String(40), primary_key=True),
        Column("participant", String(16), nullable=False),
        Column("status", String(16), nullable=False),
        Column("finished_at_us", BigInteger, nullable=True),
    )
    meta.create_all(engines.writer)
    now = T0 + timedelta(hours=4)
    rows = [
        ("1", "CN-JS", "complete", now - timedelta(hours=5)),
        ("2", "CN-SH", "complete", now - timedelta(hours=30)),  # too old
        ("3", "CN-SH", "failed", now - timedelta(hours=1)),  # not complete
        ("4", "CN-ZJ", "running", None),
    ]
    with engines.writer.begin() as conn:
        conn.execute(
            insert(runs),
            [
                {"run_id": r, "participant": p, "status": s, "finished_at_us": us(t) if t else None}
                for r, p, s, t in rows
            ],
        )

    class TableProvider:
        def last_complete_runs(self):
            with engines.reader.connect() as conn:
                found = conn.execute(
                    select(runs.c.participant, func.max(runs.c.finished_at_us))
                    .where(runs.c.status == "complete")
                    .group_by(runs.c.participant)
                ).all()
            return {p: datetime.fromtimestamp(t / 1e6, UTC) for p, t in found}

    members = ["CN-JS", "CN-SH", "CN-ZJ", "CN-AH"]
    late = unreconciled_participants(TableProvider(), members, now=now, window=timedelta(hours=24))
    assert late == ("CN-AH", "CN-SH", "CN-ZJ")
    jobs = make_jobs(Clock(now.replace(hour=7)), "r", participants=members, reconciliation=TableProvider())
    run = jobs.run_due(RECONCILIATION_CHECK)
    assert (run.outcome, run.detail) == (OK, "not reconciled in 24 h: CN-AH, CN-SH, CN-ZJ")
    assert jobs.state.unreconciled == ("CN-AH", "CN-SH", "CN-ZJ")
    # Without a provider the job is not scheduled at all.
    assert RECONCILIATION_CHECK not in make_jobs(Clock(now), "r").triggers


def test_old_finished_runs_are_pruned(engines, make_jobs):
    store = JobRunStore(engines)
    long_ago = T0 - timedelta(days=100)
    for t, runner in ((long_ago, "old"), (T0 - timedelta(days=1), "recent")):
        claim = store.claim(SELF_AUDIT, us(t), runner=runner, now_us=us(t), lease_us=1_000_000)
        store.finish(claim, outcome=OK, detail="", now_us=us(t))
    clock = Clock(datetime(2026, 11, 24, 4, 30, tzinfo=CHINA))
    run = make_jobs(clock, "r").run_due(PRUNE_JOB_RUNS)
    assert run.detail.startswith("removed 1 job run(s) finished before ")
    assert {r.claimed_by for r in all_runs(engines)} == {"recent", "r"}


def us_delta(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1_000_000)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--self-audit-at", "25:00"), "mrx: --self-audit-at '25:00': expected HH:MM (24-hour"),
        (("--job-schedules", "self-audit"), "mrx: --job-schedules 'self-audit': expected JOB=CRON"),
        (
            ("--job-schedules", "self-audit=0 3 * * *;nightly=0 3 * * *"),
            "mrx: unknown job 'nightly'; the jobs",
        ),
        (("--job-schedules", "self-audit=0 3 * *"), "mrx: schedule of self-audit '0 3 * *': expected 5 cron"),
        (("--job-lease", "0"), "mrx: --job-lease must be positive"),
    ],
)
def test_mrx_serve_refuses_bad_job_settings_naming_the_flag(flags, message, tmp_path, federation_dir):
    import subprocess
    import sys

    # A key file that exists (the configuration checks that) but is never read: the job
    # settings are refused first.
    (tmp_path / "unread.pem").write_text("not a key\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--database", str(tmp_path / "mrx.db"),
         "--federation", str(federation_dir), "--gateway-key", str(tmp_path / "unread.pem"),
         "--gateway-keyid", "MRX-GW/demo", *flags],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert not (tmp_path / "mrx.db").exists()  # refused before the database is touched
