"""Reconciliation wired into the gateway: the nightly check reads the real runs table,
and every run that ends (complete, failed, abandoned) shows in the metrics. A real
gateway on port 0 and a real database (both backends)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from gateway.client import ReconcileClient
from gateway.crypto.suites import PrivateKey
from gateway.jobs.scheduler import PRUNE_JOB_RUNS, RECONCILIATION_CHECK, SELF_AUDIT, JobSettings
from gateway.observability import metrics
from gateway.pb import reconcile_pb2
from gateway.reconcile.participant import Row, reconcile
from gateway.store.job_runs import OK

RARE = "0 0 29 2 *"  # never due during a test: only the explicit runs below decide


@pytest.fixture
def reconcile_client(
    signers: dict[str, PrivateKey], clock: Any
) -> Iterator[Callable[[str, str], ReconcileClient]]:
    made: list[ReconcileClient] = []

    def _make(code: str, target: str) -> ReconcileClient:
        client = ReconcileClient(target, sender=code, signer=signers[code], clock=clock)
        made.append(client)
        return client

    yield _make
    for client in made:
        client.close()


def sample(counter: Any, *labels: str) -> float:
    value: float = counter.labels(*labels)._value.get()
    return value


def test_the_nightly_check_flags_members_without_a_complete_run_and_not_those_with_one(
    gateway_factory: Any,
    reconcile_client: Any,
    client_for: Any,
    certs_of: Any,
    signers: dict[str, PrivateKey],
    clock: Any,
    federation: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = (
        JobSettings()
        .with_schedule(SELF_AUDIT, RARE)
        .with_schedule(PRUNE_JOB_RUNS, RARE)
        .with_schedule(RECONCILIATION_CHECK, RARE)
    )
    # No provider passed: start_gateway must build one on the runs table itself.
    running = gateway_factory(jobs=settings)
    jobs = running.gateway.jobs
    assert jobs is not None
    certs = certs_of("CN-JS", 3)
    client_for("CN-JS", target=running.address).publish_batch(certs)
    js = reconcile_client("CN-JS", running.address)
    rows = [Row(f"line {i}", c) for i, c in enumerate(certs, 1)]
    reconcile(js, participant="CN-JS", rows=rows, recognised_keyids=[signers["CN-JS"].keyid])
    # CN-SH starts a run but never finishes it: not a complete run.
    sh = reconcile_client("CN-SH", running.address)
    sh.call("StartRun", reconcile_pb2.StartRunRequest(participant="CN-SH"))

    now = clock()
    with caplog.at_level(logging.WARNING, logger="mrx"):
        run = jobs.run_claimed(RECONCILIATION_CHECK, now, now=now)
    assert run is not None and run.outcome == OK
    flagged = jobs.state.unreconciled
    assert flagged is not None
    members = {p.code for p in federation.participants.values() if p.role.name == "MEMBER"}
    assert "CN-JS" not in flagged
    assert "CN-SH" in flagged
    assert set(flagged) == members - {"CN-JS"}
    assert metrics.PARTICIPANTS_UNRECONCILED._value.get() == len(flagged)
    warned = [r.getMessage() for r in caplog.records if "no complete reconciliation" in r.getMessage()]
    assert warned and "CN-SH" in warned[0] and "CN-JS" not in warned[0]

    # A day later CN-JS's run is too old: it is flagged too.
    clock.advance(timedelta(hours=25))
    later = clock()
    jobs.run_claimed(RECONCILIATION_CHECK, later, now=later)
    assert "CN-JS" in (jobs.state.unreconciled or ())


def test_finished_failed_and_abandoned_runs_are_counted(
    gateway: Any,
    reconcile_client: Any,
    client_for: Any,
    certs_of: Any,
    signers: dict[str, PrivateKey],
    clock: Any,
) -> None:
    complete = sample(metrics.RECONCILIATION_RUNS, "CN-AH", "complete")
    abandoned = sample(metrics.RECONCILIATION_RUNS, "CN-AH", "abandoned")
    failed = sample(metrics.RECONCILIATION_RUNS, "CN-AH", "failed")
    missing = sample(metrics.RECONCILIATION_DISCREPANCIES, "CN-AH", "MISSING_AT_GATEWAY")
    locally = sample(metrics.RECONCILIATION_DISCREPANCIES, "CN-AH", "MISSING_LOCALLY")

    certs = certs_of("CN-AH", 4)
    client_for("CN-AH").publish_batch(certs[:3])
    ah = reconcile_client("CN-AH", gateway.address)
    keyids = [signers["CN-AH"].keyid]
    # Local: certs 1, 2 and 4; the gateway: 1, 2, 3 -> one missing each side.
    rows = [Row(f"line {i}", c) for i, c in enumerate([certs[0], certs[1], certs[3]], 1)]
    reconcile(ah, participant="CN-AH", rows=rows, recognised_keyids=keyids)
    assert sample(metrics.RECONCILIATION_RUNS, "CN-AH", "complete") == complete + 1
    assert sample(metrics.RECONCILIATION_DISCREPANCIES, "CN-AH", "MISSING_AT_GATEWAY") == missing + 1
    assert sample(metrics.RECONCILIATION_DISCREPANCIES, "CN-AH", "MISSING_LOCALLY") == locally + 1
    last = metrics.PARTICIPANT_LAST_RECONCILED.labels("CN-AH")._value.get()
    assert abs(last - clock().timestamp()) < 1

    # A run whose snapshot could not be read fails; one never heard from again is abandoned.
    run = ah.call("StartRun", reconcile_pb2.StartRunRequest(participant="CN-AH", recognised_keyids=keyids))
    ah.call("FinishRun", reconcile_pb2.FinishRunRequest(run_id=run.run_id, failure="the source was down"))
    assert sample(metrics.RECONCILIATION_RUNS, "CN-AH", "failed") == failed + 1
    ah.call("StartRun", reconcile_pb2.StartRunRequest(participant="CN-AH", recognised_keyids=keyids))
    clock.advance(timedelta(minutes=6))
    reconcile(ah, participant="CN-AH", rows=rows, recognised_keyids=keyids)
    assert sample(metrics.RECONCILIATION_RUNS, "CN-AH", "abandoned") == abandoned + 1
    assert sample(metrics.RECONCILIATION_RUNS, "CN-AH", "complete") == complete + 2
