"""Reconciliation against a real gateway on port 0 and a real database (both backends):
every discrepancy class, the descent, malformed rows, leases, who may do what."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

from gateway.client import ReconcileClient, verify_report
from gateway.crypto.suites import PrivateKey
from gateway.domain.certificates import Certificate, CertState
from gateway.pb import reconcile_pb2
from gateway.reconcile.participant import Row, RowProblem, reconcile

C = reconcile_pb2


@pytest.fixture
def reconcile_client(
    gateway: Any, signers: dict[str, PrivateKey], clock: Any
) -> Iterator[Callable[..., ReconcileClient]]:
    made: list[ReconcileClient] = []

    def _make(code: str, *, target: str | None = None) -> ReconcileClient:
        client = ReconcileClient(target or gateway.address, sender=code, signer=signers[code], clock=clock)
        made.append(client)
        return client

    yield _make
    for client in made:
        client.close()


def rows(records: list[Certificate]) -> list[Row]:
    return [Row(f"line {i}", r) for i, r in enumerate(records, start=1)]


def by_class(report: reconcile_pb2.ReconciliationReport) -> dict[int, list[reconcile_pb2.Discrepancy]]:
    out: dict[int, list[reconcile_pb2.Discrepancy]] = {}
    for d in report.discrepancies:
        out.setdefault(d.category, []).append(d)
    return out


def test_every_discrepancy_class_names_the_record_and_both_sides(
    gateway: Any, client_for: Any, certs_of: Any, signers: dict[str, PrivateKey], reconcile_client: Any
) -> None:
    certs = certs_of("CN-JS", 7)
    js = client_for("CN-JS")
    assert all(o.receipt is not None for o in js.publish_batch(certs[:6]))
    # Published with a second key of CN-JS's that the participant will not list as its own.
    other = client_for("CN-JS", signer=signers["CN-JS/edge"])
    other.publish(certs[6])
    same, state, version, content, gone, also_same, foreign = certs
    local = [
        same,
        also_same,
        dataclasses.replace(state, state=CertState.SUSPENDED, reason="surveillance"),
        dataclasses.replace(version, version=2),
        dataclasses.replace(content, scope="a scope the gateway never saw"),
        # `gone` is missing locally; a new certificate is missing at the gateway:
        certs_of("CN-JS", 1, start_serial=50)[0],
        foreign,
    ]
    snapshot = [
        *rows(local),
        Row("line 99", None, (RowProblem("holder.credit_code", "bad check character"),)),
    ]
    client = reconcile_client("CN-JS")
    result = reconcile(client, participant="CN-JS", rows=snapshot, recognised_keyids=[signers["CN-JS"].keyid])
    report = result.report
    found = by_class(report)
    summary = {c.category: c.count for c in report.summary}
    assert summary == {
        C.MISSING_AT_GATEWAY: 1,
        C.MISSING_LOCALLY: 1,
        C.STATE_DIFFERS: 1,
        C.VERSION_DIFFERS: 1,
        C.CONTENT_DIFFERS: 1,
        C.FOREIGN_KEY_SIGNATURE: 1,
    }
    assert [d.record_key for d in found[C.MISSING_LOCALLY]] == [gone.key]
    assert found[C.MISSING_LOCALLY][0].gateway.version == 1 and not found[C.MISSING_LOCALLY][0].HasField(
        "local"
    )
    new = found[C.MISSING_AT_GATEWAY][0]
    assert new.local.version == 1 and not new.HasField("gateway")
    st = found[C.STATE_DIFFERS][0]
    assert (st.record_key, st.local.state, st.gateway.state) == (
        state.key,
        CertState.SUSPENDED,
        CertState.VALID,
    )
    ver = found[C.VERSION_DIFFERS][0]
    assert (ver.record_key, ver.local.version, ver.gateway.version) == (version.key, 2, 1)
    co = found[C.CONTENT_DIFFERS][0]
    assert co.record_key == content.key and co.local.content_sha256 != co.gateway.content_sha256
    assert len(co.local.content_sha256) == 32 and co.gateway.log_index > 0
    fk = found[C.FOREIGN_KEY_SIGNATURE][0]
    assert (fk.record_key, fk.gateway.keyid) == (foreign.key, "CN-JS/edge")
    # The malformed row is reported and the run went on.
    assert [(p.where, p.field) for p in report.problems] == [("line 99", "holder.credit_code")]
    assert (report.snapshot_size, report.gateway_records, report.participant) == (8, 7, "CN-JS")
    assert [r.key for r in result.missing_at_gateway] == [new.record_key]
    # Stored and signed: the same report comes back by RPC, and verifies.
    again = client.get_report(result.run_id)
    assert again == report


def test_a_quiet_night_moves_little_and_the_descent_finds_the_few_differences(
    gateway: Any, client_for: Any, certs_of: Any, signers: dict[str, PrivateKey], reconcile_client: Any
) -> None:
    certs = certs_of("CN-ZJ", 3000)
    zj = client_for("CN-ZJ")
    for i in range(0, len(certs), 1000):
        assert all(o.receipt is not None for o in zj.publish_batch(certs[i : i + 1000]))
    local = list(certs)
    changed = {5: CertState.SUSPENDED, 1234: CertState.REVOKED, 2999: CertState.WITHDRAWN}
    for i, s in changed.items():
        local[i] = dataclasses.replace(local[i], state=s)
    client = reconcile_client("CN-ZJ")
    result = reconcile(
        client, participant="CN-ZJ", rows=rows(local), recognised_keyids=[signers["CN-ZJ"].keyid]
    )
    assert sorted(d.record_key for d in result.report.discrepancies) == sorted(certs[i].key for i in changed)
    assert {d.category for d in result.report.discrepancies} == {C.STATE_DIFFERS}
    # Every record's digest entry alone would be ~3000 * 70 bytes; the descent sends a
    # fraction of that (first level ~64 buckets, then a few buckets' records).
    every_entry = sum(
        C.RecordDigest(record_key=c.key, version=1, state=1, content_sha256=b"x" * 32).ByteSize() + 3
        for c in certs
    )
    assert result.bytes_sent < every_entry / 5
    assert result.report.request_bytes == result.bytes_sent


def test_identical_sides_give_an_empty_report(
    gateway: Any, client_for: Any, certs_of: Any, signers: dict[str, PrivateKey], reconcile_client: Any
) -> None:
    certs = certs_of("CN-SH", 20)
    client_for("CN-SH").publish_batch(certs)
    result = reconcile(
        reconcile_client("CN-SH"),
        participant="CN-SH",
        rows=rows(certs),
        recognised_keyids=[signers["CN-SH"].keyid],
    )
    assert list(result.report.discrepancies) == []
    assert all(c.count == 0 for c in result.report.summary) and len(result.report.summary) == 6


def test_a_participant_may_not_reconcile_another_s_records(
    gateway: Any, reconcile_client: Any, rpc_refusal: Any, signers: dict[str, PrivateKey]
) -> None:
    js = reconcile_client("CN-JS")
    rpc_refusal(
        lambda: js.call("StartRun", C.StartRunRequest(participant="CN-ZJ")),
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_OWN_RECORDS",
    )
    # Nor take part in another's run.
    zj = reconcile_client("CN-ZJ")
    run_id = zj.call("StartRun", C.StartRunRequest(participant="CN-ZJ")).run_id
    for name, request in (
        ("CompareBuckets", C.CompareBucketsRequest(run_id=run_id)),
        ("FinishRun", C.FinishRunRequest(run_id=run_id)),
    ):
        rpc_refusal(
            functools.partial(js.call, name, request), grpc.StatusCode.PERMISSION_DENIED, "NOT_OWN_RECORDS"
        )
    # A secretariat reads runs but does not run one for its members.
    sec = reconcile_client("YRD-SEC")
    rpc_refusal(
        lambda: sec.call("StartRun", C.StartRunRequest(participant="CN-JS")),
        grpc.StatusCode.PERMISSION_DENIED,
        "READ_ONLY_PRINCIPAL",
    )


def test_unsigned_and_malformed_requests_are_refused_precisely(
    gateway: Any, reconcile_client: Any, rpc_refusal: Any
) -> None:
    from gateway.pb import reconcile_pb2_grpc

    channel = grpc.insecure_channel(gateway.address)
    rpc_refusal(
        lambda: reconcile_pb2_grpc.ReconciliationServiceStub(channel).StartRun(
            C.StartRunRequest(participant="CN-JS")
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "MISSING_CREDENTIALS",
    )
    channel.close()
    js = reconcile_client("CN-JS")
    rpc_refusal(
        lambda: js.call("Heartbeat", C.HeartbeatRequest(run_id="no-such-run")),
        grpc.StatusCode.NOT_FOUND,
        "RUN_NOT_FOUND",
    )
    run_id = js.call("StartRun", C.StartRunRequest(participant="CN-JS")).run_id
    rpc_refusal(
        lambda: js.call("CompareBuckets", C.CompareBucketsRequest(run_id=run_id, bits=40)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_BUCKETS",
        ("buckets",),
    )
    rpc_refusal(
        lambda: js.call(
            "CompareRecords",
            C.CompareRecordsRequest(
                run_id=run_id,
                bits=0,
                prefixes=[0],
                entries=[C.RecordDigest(record_key="nonsense", content_sha256=b"1")],
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("entries[0].record_key", "entries[0].content_sha256"),
    )
    rpc_refusal(
        lambda: js.call("GetReport", C.GetReportRequest(run_id=run_id)),
        grpc.StatusCode.NOT_FOUND,
        "REPORT_NOT_FOUND",
    )
    # NUL and other control characters never reach SQL (PostgreSQL refuses NUL in text).
    rpc_refusal(
        lambda: js.call(
            "CompareRecords",
            C.CompareRecordsRequest(
                run_id=run_id,
                bits=0,
                prefixes=[0],
                entries=[C.RecordDigest(record_key="test_report/CN-JS/\x00", content_sha256=bytes(32))],
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("entries[0].record_key",),
    )
    rpc_refusal(
        lambda: js.call("Heartbeat", C.HeartbeatRequest(run_id=run_id[:-1] + "\x00")),
        grpc.StatusCode.NOT_FOUND,
        "RUN_NOT_FOUND",
    )


def test_a_run_not_heard_from_within_its_lease_is_abandoned_never_completed(
    gateway: Any,
    reconcile_client: Any,
    rpc_refusal: Any,
    clock: Any,
    certs_of: Any,
    client_for: Any,
    signers: Any,
) -> None:
    certs = certs_of("CN-AH", 5)
    client_for("CN-AH").publish_batch(certs)
    ah = reconcile_client("CN-AH")
    stale = ah.call(
        "StartRun", C.StartRunRequest(participant="CN-AH", recognised_keyids=[signers["CN-AH"].keyid])
    )
    assert stale.lease_seconds == 300
    clock.advance(timedelta(seconds=301))
    # The dead run can no longer finish: no second report, never "running" again.
    rpc_refusal(
        lambda: ah.call("FinishRun", C.FinishRunRequest(run_id=stale.run_id, snapshot_size=5)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_NOT_RUNNING",
    )
    result = reconcile(ah, participant="CN-AH", rows=rows(certs), recognised_keyids=[signers["CN-AH"].keyid])
    statuses = {i.run.run_id: i.run.status for i in ah.list_runs() if i.WhichOneof("item") == "run"}
    assert statuses == {stale.run_id: C.RUN_STATUS_ABANDONED, result.run_id: C.RUN_STATUS_COMPLETE}


def test_one_run_at_a_time_and_the_next_start_abandons_a_stale_run(
    gateway: Any, reconcile_client: Any, clock: Any, rpc_refusal: Any
) -> None:
    bj = reconcile_client("CN-BJ")
    first = bj.call("StartRun", C.StartRunRequest(participant="CN-BJ")).run_id
    # A second run while the first is alive would count the first's submissions as differences.
    refusal = rpc_refusal(
        lambda: bj.call("StartRun", C.StartRunRequest(participant="CN-BJ")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_IN_PROGRESS",
    )
    assert refusal.metadata["run_id"] == first
    clock.advance(timedelta(minutes=6))
    second = bj.call("StartRun", C.StartRunRequest(participant="CN-BJ"))
    assert second.abandoned_runs == 1
    statuses = {i.run.run_id: i.run.status for i in bj.list_runs() if i.WhichOneof("item") == "run"}
    assert statuses[first] == C.RUN_STATUS_ABANDONED and statuses[second.run_id] == C.RUN_STATUS_RUNNING


def test_a_secretariat_lists_its_members_runs_and_who_did_not_reconcile(
    gateway: Any,
    reconcile_client: Any,
    client_for: Any,
    certs_of: Any,
    signers: Any,
    rpc_refusal: Any,
    clock: Any,
) -> None:
    certs = certs_of("CN-JS", 3)
    client_for("CN-JS").publish_batch(certs)
    js = reconcile_client("CN-JS")
    done = reconcile(js, participant="CN-JS", rows=rows(certs), recognised_keyids=[signers["CN-JS"].keyid])
    reconcile(reconcile_client("CN-BJ"), participant="CN-BJ", rows=[], recognised_keyids=[])  # not YRD
    sec = reconcile_client("YRD-SEC")
    items = list(sec.list_runs())
    runs = [i.run for i in items if i.WhichOneof("item") == "run"]
    assert [(r.run_id, r.participant, r.status) for r in runs] == [
        (done.run_id, "CN-JS", C.RUN_STATUS_COMPLETE)
    ]
    assert {c.category: c.count for c in runs[0].summary}[C.MISSING_LOCALLY] == 0
    behind = sorted(i.not_reconciled.participant for i in items if i.WhichOneof("item") == "not_reconciled")
    assert behind == ["CN-AH", "CN-SH", "CN-ZJ"]
    # The secretariat reads the member's report; another alliance's secretariat does not see it.
    assert sec.get_report(done.run_id).run_id == done.run_id
    rpc_refusal(
        lambda: reconcile_client("BTH-SEC").get_report(done.run_id),
        grpc.StatusCode.NOT_FOUND,
        "RUN_NOT_FOUND",
    )
    rpc_refusal(
        lambda: list(reconcile_client("CN-ZJ").list_runs(participant="CN-JS")),
        grpc.StatusCode.PERMISSION_DENIED,
        "OUTSIDE_SCOPE",
    )
    # A day later CN-JS is behind too.
    clock.advance(timedelta(hours=25))
    behind = sorted(
        i.not_reconciled.participant for i in sec.list_runs() if i.WhichOneof("item") == "not_reconciled"
    )
    assert behind == ["CN-AH", "CN-JS", "CN-SH", "CN-ZJ"]


def test_the_report_is_signed_by_the_gateway(
    gateway: Any, reconcile_client: Any, signers: Any, federation: Any
) -> None:
    from gateway.client import ReportError

    js = reconcile_client("CN-JS")
    result = reconcile(js, participant="CN-JS", rows=[], recognised_keyids=[])
    envelope = result.envelope
    assert envelope.signatures[0].keyid == signers[federation.gateway_code].keyid
    tampered = type(envelope)()
    tampered.CopyFrom(envelope)
    tampered.payload = tampered.payload + b"\x00"
    with pytest.raises(ReportError):
        verify_report(tampered, js.gateway_keys)


def test_a_gateway_start_abandons_the_runs_a_dead_gateway_left_running(
    database_url: str, gateway_factory: Any, signers: dict[str, PrivateKey], clock: Any
) -> None:
    from gateway.store.reconcile import ABANDONED, RUNNING, ReconcileStore

    first = gateway_factory()
    with ReconcileClient(first.address, sender="CN-SH", signer=signers["CN-SH"], clock=clock) as sh:
        run_id = sh.call("StartRun", C.StartRunRequest(participant="CN-SH")).run_id
    first.stop()  # the gateway goes away mid-run; the run's state is only in the database
    store = ReconcileStore(first.engines)
    assert store.get_run(run_id).status == RUNNING  # type: ignore[union-attr]
    clock.advance(timedelta(minutes=6))
    gateway_factory()  # the next start, with no call from the participant
    assert store.get_run(run_id).status == ABANDONED  # type: ignore[union-attr]


def test_an_sm2_participant_reconciles_like_any_other(
    gateway: Any, client_for: Any, certs_of: Any, signers: dict[str, PrivateKey], reconcile_client: Any
) -> None:
    assert signers["CN-TJ"].suite.name == "SM2_SM3"
    certs = certs_of("CN-TJ", 5)
    assert all(o.receipt is not None for o in client_for("CN-TJ").publish_batch(certs))
    local = [*certs[:4], dataclasses.replace(certs[4], state=CertState.SUSPENDED, reason="监督抽查不合格")]
    result = reconcile(
        reconcile_client("CN-TJ"),
        participant="CN-TJ",
        rows=rows(local),
        recognised_keyids=[signers["CN-TJ"].keyid],
    )
    assert [(d.category, d.record_key) for d in result.report.discrepancies] == [
        (C.STATE_DIFFERS, certs[4].key)
    ]


def test_a_snapshot_that_cannot_be_read_fails_the_run_without_a_report(
    gateway: Any, reconcile_client: Any, certs_of: Any, rpc_refusal: Any
) -> None:
    from gateway.reconcile.participant import SnapshotFailed

    def broken() -> Iterator[Row]:
        yield from rows(certs_of("CN-JS", 2))
        raise ConnectionError("the provincial database went away")

    js = reconcile_client("CN-JS")
    with pytest.raises(SnapshotFailed) as failed:
        reconcile(js, participant="CN-JS", rows=broken(), recognised_keyids=[])
    runs = [i.run for i in js.list_runs() if i.WhichOneof("item") == "run"]
    assert [(r.run_id, r.status, r.failure) for r in runs] == [
        (failed.value.run_id, C.RUN_STATUS_FAILED, "ConnectionError: the provincial database went away")
    ]
    rpc_refusal(lambda: js.get_report(failed.value.run_id), grpc.StatusCode.NOT_FOUND, "REPORT_NOT_FOUND")
