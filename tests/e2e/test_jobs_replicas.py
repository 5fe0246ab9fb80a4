"""Scheduled jobs with two real `mrx serve` processes on one PostgreSQL.

Each replica runs its own APScheduler with the same schedules; the claims in `job_runs`
must make every scheduled time run exactly once across both, and a replica killed
(SIGKILL) in the middle of a job must leave a claim that the next start takes over, not
one that stays "running" or runs twice at once. A self-audit every 2 s (test schedule)
runs while both replicas take submissions and checkpoint: it must never raise a false
alarm on a log that is being appended to.
"""

from __future__ import annotations

import collections
import itertools
import re
import signal
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import select

from gateway.client import make_submission
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates
from gateway.jobs.cron import CHINA
from gateway.pb import exchange_pb2, exchange_pb2_grpc
from gateway.store.job_runs import OK, RUNNING
from gateway.store.schema import job_runs

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

NEVER = "0 0 29 2 *"  # keeps the other jobs out of the way
RAN = re.compile(r"job self-audit at (\S+): (ok|failed): ")


def _replica(serve_process, federation_dir, database, gw_key, schedule, *extra, env=None):
    """A real `mrx serve` running the self-audit on ``schedule`` (with -v: the job lines are INFO)."""
    return serve_process(
        federation_dir, database, gw_key, "--checkpoint-interval", "0.5",
        "--job-schedules", f"prune-job-runs={NEVER}; self-audit={schedule}", *extra,
        verbose=True, env=env,
    )  # fmt: skip


def runs(engines):
    with engines.reader.connect() as conn:
        return conn.execute(
            select(job_runs).where(job_runs.c.job == "self-audit").order_by(job_runs.c.scheduled_at_us)
        ).all()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_each_scheduled_time_runs_exactly_once_across_two_replicas(
    federation_dir, federation_paths, database_url, open_store, serve_process
):
    args = ("*/2 * * * * *", "--job-lease", "3")
    replicas = [
        _replica(serve_process, federation_dir, database_url, federation_paths["MRX-GW"], *args)
        for _ in range(2)
    ]
    try:
        addresses = [r.ready() for r in replicas]
        js = PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
        certs = demo_certificates("CN-JS", count=120, today=datetime.now(UTC).date())
        channels = [grpc.insecure_channel(a) for a in addresses]
        stubs = [exchange_pb2_grpc.ExchangeServiceStub(c) for c in channels]
        # ~10 s of submissions to both: the self-audits run against a log being appended to.
        for n, cert in enumerate(certs):
            env = make_submission(cert, sender="CN-JS", signer=js)
            stubs[n % 2].Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=30)
            time.sleep(0.08)
        engines = open_store(database_url)
        wait_for(lambda: len(runs(engines)) >= 5, 30, "five self-audit runs")
        for c in channels:
            c.close()
    finally:
        codes = [r.stop() for r in replicas]
    outputs = [r.output() for r in replicas]
    assert codes == [0, 0], outputs

    rows = [r for r in runs(engines) if r.outcome != RUNNING]  # a run cut short by the stop
    assert rows, outputs
    assert all((r.outcome, r.attempt, r.taken_over_from) == (OK, 1, None) for r in rows), [
        (r.outcome, r.detail) for r in rows
    ]
    # Every 2 s, with no scheduled time skipped while both were up.
    times = [r.scheduled_at_us for r in rows]
    assert all(b - a == 2_000_000 for a, b in itertools.pairwise(times)), times
    # Each time ran exactly once: one "job self-audit at T: ok" line across both outputs.
    ran = collections.Counter(m.group(1) for out in outputs for m in RAN.finditer(out))
    expected = {datetime.fromtimestamp(t / 1e6, UTC).isoformat(): 1 for t in times}
    assert {t: ran[t] for t in expected} == expected, ran
    assert sum(ran.values()) == len(rows)
    for trouble in ("SELF-AUDIT FAILED", "job sweep failed", "lost its claim", "Traceback"):
        assert trouble not in "".join(outputs), outputs
    print(f"{len(rows)} self-audits by {collections.Counter(r.claimed_by for r in rows)}")  # with -s


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_replica_killed_mid_job_is_taken_over_by_the_next_start(
    federation_dir, federation_paths, database_url, open_store, serve_process
):
    # Once a day, a few seconds from now: the killed run is still the latest one due when
    # the next replica starts, so it is taken over (not abandoned).
    at = datetime.now(CHINA).replace(microsecond=0) + timedelta(seconds=3)
    args = (f"{at.second} {at.minute} {at.hour} * * *", "--job-lease", "2")
    engines = open_store(database_url)
    doomed = _replica(
        serve_process,
        federation_dir,
        database_url,
        federation_paths["MRX-GW"],
        *args,
        env={"MRX_JOBS_TEST_PAUSE": "60"},
    )
    try:
        doomed.ready()
        claimed = wait_for(lambda: runs(engines), 30, "the first replica's claim")
        (row,) = claimed
        assert (row.outcome, row.attempt) == (RUNNING, 1)
        assert f":{doomed.proc.pid}:" in row.claimed_by
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(30)
    finally:
        doomed.stop()
    assert runs(engines)[0].outcome == RUNNING  # left behind by the dead process

    successor = _replica(serve_process, federation_dir, database_url, federation_paths["MRX-GW"], *args)
    try:
        successor.ready()
        done = wait_for(lambda: [r for r in runs(engines) if r.outcome != RUNNING], 30, "the takeover")
    finally:
        assert successor.stop() == 0, successor.output()
    (row,) = done
    assert (row.outcome, row.attempt, row.taken_over_from) == (OK, 2, claimed[0].claimed_by)
    assert f":{successor.proc.pid}:" in row.claimed_by
    assert row.scheduled_at_us == claimed[0].scheduled_at_us
    assert "taken over from" in successor.output()
    assert [r.outcome for r in runs(engines)] == [OK]  # one run, nothing left "running"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_runs_missed_while_every_replica_was_down_run_once_on_return(
    federation_dir, federation_paths, database_url, open_store, serve_process
):
    """Three scheduled times pass with no gateway up; the one that starts afterwards runs
    the latest of them once, never all three; starting again runs nothing more."""
    now = datetime.now(CHINA).replace(microsecond=0)
    times = [now + timedelta(seconds=n) for n in (2, 3, 4)]
    spec = f"{','.join(str(t.second) for t in times)} * * * * *"
    args = (spec, "--job-grace", "30")
    engines = open_store(database_url)
    engines.dispose()  # the schema exists; nothing else runs
    while datetime.now(CHINA) < times[-1] + timedelta(seconds=1):
        time.sleep(0.1)
    for start in range(2):
        replica = _replica(serve_process, federation_dir, database_url, federation_paths["MRX-GW"], *args)
        try:
            replica.ready()
            wait_for(lambda: [r for r in runs(engines) if r.outcome == OK], 30, "the missed run")
            time.sleep(2)  # room for a wrong second run (the sweep runs at once at start)
        finally:
            assert replica.stop() == 0, replica.output()
        rows = runs(engines)
        assert [(r.scheduled_at_us, r.outcome) for r in rows] == [
            (int(times[-1].timestamp()) * 1_000_000, OK)
        ], (start, rows)
