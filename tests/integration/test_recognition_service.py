"""RecognitionService through a real gateway: every reason code, verdicts, signed decisions.

Records are published with explicit dates in 2025-2026 and every question names its
``as_of``, so the agreements of keys/federation.toml (YRD and GBA from 2026-01-01, BTH
from 2026-03-01, YRD-BTH cross-recognition from 2026-07-01, the JS-GD pilot that ended
2025-12-31, the SN-BJ-HE assessor agreement 2026-05-01..2028-12-31) decide as they
would in production. Runs on SQLite and PostgreSQL (see tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest

from gateway.client import DecisionError, verify_decision
from gateway.crypto.dsse import DECISION_PAYLOAD_TYPE
from gateway.crypto.reads import sign_read
from gateway.crypto.suites import PublicKey, Suite, pae
from gateway.demo_fixtures import (
    demo_assessors,
    demo_certificates,
    demo_lab_cma_certificates,
    demo_pt_results,
    demo_spot_checks,
    demo_test_reports,
)
from gateway.domain.certificates import CertState, Scheme
from gateway.domain.records import Qualification, QualificationKind
from gateway.pb import envelope_pb2, recognition_pb2, registry_pb2
from gateway.registry.federation import Federation
from gateway.server import start_gateway

Code = grpc.StatusCode
CHINA = ZoneInfo("Asia/Shanghai")
METHOD = "/mrx.v1.RecognitionService/CheckRecognition"
# Demo records are generated for this fixed day; their dates are then set explicitly.
REF = date(2026, 11, 1)
RECOGNISED = recognition_pb2.VERDICT_RECOGNISED
NOT_RECOGNISED = recognition_pb2.VERDICT_NOT_RECOGNISED
UNKNOWN = recognition_pb2.VERDICT_UNKNOWN
REASONS = {
    CertState.SUSPENDED: "投诉调查中，暂停",
    CertState.REVOKED: "数据造假，撤销",
    CertState.WITHDRAWN: "发布错误，撤回",
    CertState.VALID: "复核完成，恢复",
}


def at(day: str, hour: int = 10) -> datetime:
    """``hour`` o'clock Beijing time on ``day``."""
    return datetime.combine(date.fromisoformat(day), time(hour), tzinfo=CHINA)


def lab_of(issuer: str):
    """The CMA qualification (a CMA certificate) of ``issuer``'s oldest demo lab; VALID 2024-2030."""
    return min(demo_lab_cma_certificates(issuer, today=REF), key=lambda c: c.issue_date)


def report(issuer: str, serial: int, issued: str, *, lab=None, effective_at: datetime | None = None):
    """A VALID v1 test report issued (and in effect from) ``issued`` by ``lab``."""
    lab = lab or lab_of(issuer)
    d = date.fromisoformat(issued)
    return dataclasses.replace(
        demo_test_reports(issuer, count=1, today=REF)[0],
        report_number=f"{issuer[3:]}-{d.year}-{serial:06d}",
        lab_name=lab.holder.name,
        lab_cma_number=lab.certificate_number,
        issue_date=d,
        effective_at=effective_at or at(issued, 9),
    )


def changed(record, state: CertState, effective: datetime):
    """The next version of ``record`` in ``state`` from ``effective``."""
    return dataclasses.replace(
        record,
        version=record.version + 1,
        state=state,
        reason=REASONS[state],
        effective_at=effective.astimezone(UTC),
    )


def qual(
    *fields: str, start: str = "2026-01-01", end: str = "2030-12-31", kind=QualificationKind.CMA_ASSESSOR
):
    return Qualification(
        kind=kind,
        grade="评审员",
        fields=fields,
        valid_from=date.fromisoformat(start),
        valid_until=date.fromisoformat(end),
    )


def assessor(home: str, *quals: Qualification, number: str = "CMA-SN-2021-0317"):
    return dataclasses.replace(
        demo_assessors(home, count=1, today=REF)[0],
        registration_number=number,
        qualifications=quals,
        effective_at=at("2026-01-05"),
    )


def question(a, field: str, kind: int = 0) -> recognition_pb2.AssessorQuestion:
    return recognition_pb2.AssessorQuestion(
        registration_number=a.registration_number, home=a.home, field=field, kind=int(kind)
    )


def reasons(decision) -> list[tuple[str, dict[str, str]]]:
    return [(r.code, dict(r.metadata)) for r in decision.reasons]


def codes(decision) -> list[str]:
    return [r.code for r in decision.reasons]


def request_for(*, record_key=None, assessor=None, as_of="") -> recognition_pb2.CheckRecognitionRequest:
    request = recognition_pb2.CheckRecognitionRequest(as_of=as_of)
    if record_key is not None:
        request.record_key = record_key
    if assessor is not None:
        request.assessor.CopyFrom(assessor)
    return request


@pytest.fixture
def call(clock):
    """``call(client, request)``: the raw signed CheckRecognition response (signed at the test clock)."""

    def _call(client, request, *, principal=None, signer=None):
        metadata = sign_read(
            signer=signer or client.signer,
            principal=principal or client.sender,
            method=METHOD,
            request=request,
            now=clock.now,
        )
        return client.recognition.CheckRecognition(request, metadata=metadata, timeout=30)

    return _call


@pytest.fixture
def ask(call):
    """``ask(client, record_key=... | assessor=..., as_of=...)``: the Decision, signature checked."""

    def _ask(client, **question):
        response = call(client, request_for(**question))
        return verify_decision(response.decision, client.gateway_keys)

    return _ask


@pytest.fixture
def restart(gateway, database_url, signers, clock, open_store):
    """``restart(federation)``: stop the test's gateway and start one on the same database."""
    started = []

    def _restart(federation: Federation):
        gateway.stop()
        gw = start_gateway(
            federation=federation,
            engines=open_store(database_url),
            gateway_key=signers[federation.gateway_code],
            address="127.0.0.1:0",
            clock=clock,
        )
        started.append(gw)
        return gw

    yield _restart
    for gw in started:
        gw.stop()


def with_revoked_key(federation: Federation, keyid: str, revoked_at: datetime) -> Federation:
    """``federation`` as it reads once ``keyid`` has been revoked (built like conftest builds it)."""
    keys = dict(federation.keys)
    keys[keyid] = dataclasses.replace(keys[keyid], revoked=True, revoked_at=revoked_at)
    return Federation(
        name=federation.name,
        freshness_window=federation.freshness_window,
        gateway_code=federation.gateway_code,
        participants=federation.participants,
        alliances=federation.alliances,
        keys=keys,
        agreements=federation.agreements,
        source=federation.source,
    )


@pytest.fixture
def js_report(client_for):
    """CN-JS publishes its lab's CMA qualification and a VALID report issued 2026-03-10."""
    js = client_for("CN-JS")
    js.publish(lab_of("CN-JS"))
    rep = report("CN-JS", 1, "2026-03-10")
    js.publish(rep)
    return rep


# --- RECOGNISED ------------------------------------------------------------------------------


def test_recognised_within_yrd(js_report, client_for, ask):
    d = ask(client_for("CN-SH"), record_key=js_report.key, as_of="2026-04-01")
    assert (d.verdict, d.agreement_id, list(d.reasons)) == (RECOGNISED, "YRD-2026-RESULTS", [])
    assert (d.asked_by, d.as_of, d.record_key, d.record_version) == ("CN-SH", "2026-04-01", js_report.key, 1)


def test_recognised_across_yrd_and_bth_from_july_2026(client_for, ask):
    bj = client_for("CN-BJ")
    bj.publish(lab_of("CN-BJ"))
    rep = report("CN-BJ", 7, "2026-05-20")
    bj.publish(rep)
    sh = client_for("CN-SH")
    d = ask(sh, record_key=rep.key, as_of="2026-07-01")
    assert (d.verdict, d.agreement_id, list(d.reasons)) == (RECOGNISED, "YRD-BTH-2026-CROSS", [])
    d = ask(sh, record_key=rep.key, as_of="2026-06-30")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [
        (
            "AGREEMENT_NOT_IN_FORCE",
            {"agreement": "YRD-BTH-2026-CROSS", "effective_from": "2026-07-01"},
        )
    ]


def test_recognised_assessor_under_sn_bj_he(client_for, ask):
    a = assessor("CN-SN", qual("电子电器", "环境监测"))
    client_for("CN-SN").publish(a)
    q = question(a, "电子电器")
    d = ask(client_for("CN-HE"), assessor=q, as_of="2026-08-01")
    assert (d.verdict, d.agreement_id, list(d.reasons)) == (RECOGNISED, "SN-BJ-HE-2026-ASSESSORS", [])
    assert d.assessor == q
    assert (d.record_key, d.record_version) == (f"assessor/CN-SN/{a.registration_number}", 1)
    # The kind asked must match when given.
    q_kind = question(a, "电子电器", kind=QualificationKind.CMA_ASSESSOR)
    assert ask(client_for("CN-BJ"), assessor=q_kind, as_of="2026-08-01").verdict == RECOGNISED


def test_own_record_needs_no_agreement(js_report, client_for, ask):
    d = ask(client_for("CN-JS"), record_key=js_report.key, as_of="2026-04-01")
    assert (d.verdict, d.agreement_id, list(d.reasons)) == (RECOGNISED, "", [])
    # CN-FJ is in no agreement at all, and still relies on its own records.
    fj = client_for("CN-FJ")
    check = demo_spot_checks("CN-FJ", count=1, today=REF)[0]
    fj.publish(check)
    d = ask(fj, record_key=check.key, as_of=REF.isoformat())
    assert (d.verdict, d.agreement_id, list(d.reasons)) == (RECOGNISED, "", [])


def test_own_record_is_judged_on_its_state(js_report, client_for, ask):
    js = client_for("CN-JS")
    js.publish(changed(js_report, CertState.REVOKED, at("2026-04-10")))
    d = ask(js, record_key=js_report.key, as_of="2026-05-01")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [("RECORD_REVOKED", {"since": "2026-04-10"})]


# --- agreement reasons -------------------------------------------------------------------------


def test_no_agreement(js_report, client_for, ask):
    d = ask(client_for("CN-FJ"), record_key=js_report.key, as_of="2026-04-01")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [("NO_AGREEMENT", {"asker": "CN-FJ", "issuer": "CN-JS"})]


def test_kind_outside_scope(client_for, ask):
    check = demo_spot_checks("CN-HK", count=1, today=REF)[0]
    client_for("CN-HK").publish(check)
    d = ask(client_for("CN-GD"), record_key=check.key, as_of=REF.isoformat())
    assert d.verdict == NOT_RECOGNISED
    assert reasons(d) == [("KIND_OUTSIDE_SCOPE", {"agreement": "GBA-2026-CEPA", "kind": "spot_check"})]


def test_scheme_outside_scope(client_for, ask):
    gd = client_for("CN-GD")
    certs = demo_certificates("CN-GD", count=4, today=REF)
    by_scheme = {c.scheme: c for c in certs}
    for cert in certs:
        gd.publish(cert)
    hk = client_for("CN-HK")
    ems = by_scheme[Scheme.EMS]
    d = ask(hk, record_key=f"certificate_status/EMS/{ems.certificate_number}", as_of=REF.isoformat())
    assert d.verdict == NOT_RECOGNISED
    assert reasons(d) == [("SCHEME_OUTSIDE_SCOPE", {"agreement": "GBA-2026-CEPA", "scheme": "EMS"})]
    for scheme in (Scheme.CCC, Scheme.QMS):  # the schemes GBA does cover
        cert = by_scheme[scheme]
        key = f"certificate_status/{scheme.name}/{cert.certificate_number}"
        d = ask(hk, record_key=key, as_of=REF.isoformat())
        assert (d.verdict, d.agreement_id) == (RECOGNISED, "GBA-2026-CEPA")


def test_field_outside_scope(client_for, ask):
    a = assessor("CN-SN", qual("电子电器", "环境监测"))
    client_for("CN-SN").publish(a)
    d = ask(client_for("CN-BJ"), assessor=question(a, "环境监测"), as_of="2026-08-01")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [
        ("FIELD_OUTSIDE_SCOPE", {"agreement": "SN-BJ-HE-2026-ASSESSORS", "field": "环境监测"})
    ]


def test_agreement_not_in_force_before_it_starts(client_for, ask):
    tj = client_for("CN-TJ")
    tj.publish(lab_of("CN-TJ"))
    rep = report("CN-TJ", 3, "2026-01-10")
    tj.publish(rep)
    bj = client_for("CN-BJ")
    d = ask(bj, record_key=rep.key, as_of="2026-02-28")
    assert d.verdict == NOT_RECOGNISED
    # Every binding agreement that covers the report is named, by id.
    assert reasons(d) == [
        ("AGREEMENT_NOT_IN_FORCE", {"agreement": "BTH-2026-RESULTS", "effective_from": "2026-03-01"}),
        ("AGREEMENT_NOT_IN_FORCE", {"agreement": "YRD-BTH-2026-CROSS", "effective_from": "2026-07-01"}),
    ]
    d = ask(bj, record_key=rep.key, as_of="2026-03-01")
    assert (d.verdict, d.agreement_id, list(d.reasons)) == (RECOGNISED, "BTH-2026-RESULTS", [])


def test_agreement_not_in_force_after_it_ended(client_for, ask):
    js = client_for("CN-JS")
    js.publish(lab_of("CN-JS"))
    rep = report("CN-JS", 11, "2025-06-01")
    js.publish(rep)
    gd = client_for("CN-GD")
    d = ask(gd, record_key=rep.key, as_of="2025-12-31")
    assert (d.verdict, d.agreement_id) == (RECOGNISED, "JS-GD-2024-PILOT")
    d = ask(gd, record_key=rep.key, as_of="2026-01-01")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [
        (
            "AGREEMENT_NOT_IN_FORCE",
            {
                "agreement": "JS-GD-2024-PILOT",
                "effective_from": "2024-01-01",
                "effective_until": "2025-12-31",
            },
        )
    ]


def test_every_binding_agreement_is_listed_when_none_applies(client_for, ask):
    # CN-BJ and CN-HE share BTH (every field, from 03-01), SN-BJ-HE (three fields, from
    # 05-01) and the YRD-BTH cross agreement (no assessors).
    a = assessor("CN-HE", qual("食品"), number="CMA-HE-2021-0042")
    client_for("CN-HE").publish(a)
    bj = client_for("CN-BJ")
    d = ask(bj, assessor=question(a, "食品"), as_of="2026-02-15")
    assert reasons(d) == [
        ("AGREEMENT_NOT_IN_FORCE", {"agreement": "BTH-2026-RESULTS", "effective_from": "2026-03-01"}),
        (
            "AGREEMENT_NOT_IN_FORCE",
            {
                "agreement": "SN-BJ-HE-2026-ASSESSORS",
                "effective_from": "2026-05-01",
                "effective_until": "2028-12-31",
            },
        ),
        ("KIND_OUTSIDE_SCOPE", {"agreement": "YRD-BTH-2026-CROSS", "kind": "assessor"}),
    ]
    # The first agreement by id that covers and is in force is relied on.
    assert ask(bj, assessor=question(a, "食品"), as_of="2026-06-01").agreement_id == "BTH-2026-RESULTS"


def test_assessor_agreement_ends(client_for, ask):
    a = assessor("CN-SN", qual("食品", end="2031-12-31"))
    client_for("CN-SN").publish(a)
    bj = client_for("CN-BJ")
    assert ask(bj, assessor=question(a, "食品"), as_of="2028-12-31").verdict == RECOGNISED
    d = ask(bj, assessor=question(a, "食品"), as_of="2029-01-01")
    assert codes(d) == ["AGREEMENT_NOT_IN_FORCE"]
    assert reasons(d)[0][1]["effective_until"] == "2028-12-31"


# --- record state on the date ---------------------------------------------------------------------


def test_record_suspended_since_and_the_state_history(js_report, client_for, ask):
    js, sh = client_for("CN-JS"), client_for("CN-SH")
    # 20:00 UTC on 09-09 is 04:00 on 09-10 in China: the suspension counts from 09-10.
    v2 = changed(js_report, CertState.SUSPENDED, datetime(2026, 9, 9, 20, 0, tzinfo=UTC))
    js.publish(v2)
    d = ask(sh, record_key=js_report.key, as_of="2026-09-20")
    assert (d.verdict, d.agreement_id, d.record_version) == (NOT_RECOGNISED, "", 2)
    assert reasons(d) == [("RECORD_SUSPENDED", {"since": "2026-09-10"})]
    assert codes(ask(sh, record_key=js_report.key, as_of="2026-09-10")) == ["RECORD_SUSPENDED"]
    # Before the suspension the report was valid, and is recognised as of then.
    d = ask(sh, record_key=js_report.key, as_of="2026-09-09")
    assert (d.verdict, d.agreement_id, d.record_version) == (RECOGNISED, "YRD-2026-RESULTS", 2)

    # Correcting the suspension's text does not move "since"; returning to VALID ends it.
    v3 = dataclasses.replace(
        v2, version=3, reason="投诉调查中（更正）", effective_at=at("2026-09-15").astimezone(UTC)
    )
    js.publish(v3)
    assert reasons(ask(sh, record_key=js_report.key, as_of="2026-09-20")) == [
        ("RECORD_SUSPENDED", {"since": "2026-09-10"})
    ]
    js.publish(changed(v3, CertState.VALID, at("2026-10-01")))
    assert ask(sh, record_key=js_report.key, as_of="2026-10-01").verdict == RECOGNISED
    assert codes(ask(sh, record_key=js_report.key, as_of="2026-09-30")) == ["RECORD_SUSPENDED"]


def test_record_revoked(client_for, ask):
    result = demo_pt_results("CN-JS", count=1, today=REF)[0]
    js = client_for("CN-JS")
    js.publish(result)
    js.publish(changed(result, CertState.REVOKED, at("2026-10-25")))
    d = ask(client_for("CN-ZJ"), record_key=result.key, as_of="2026-10-30")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [("RECORD_REVOKED", {"since": "2026-10-25"})]
    assert ask(client_for("CN-ZJ"), record_key=result.key, as_of="2026-10-24").verdict == RECOGNISED


def test_record_withdrawn(client_for, ask):
    check = demo_spot_checks("CN-JS", count=1, today=REF)[0]
    js = client_for("CN-JS")
    js.publish(check)
    js.publish(changed(check, CertState.WITHDRAWN, at("2026-10-20")))
    d = ask(client_for("CN-AH"), record_key=check.key, as_of="2026-10-31")
    assert d.verdict == NOT_RECOGNISED
    assert reasons(d) == [("RECORD_WITHDRAWN", {"since": "2026-10-20"})]


def test_record_expired(client_for, ask):
    cert = dataclasses.replace(
        demo_certificates("CN-JS", count=1, today=REF)[0],
        issue_date=date(2021, 11, 1),
        expiry_date=date(2026, 10, 31),
        effective_at=at("2021-11-01"),
    )
    assert cert.scheme is Scheme.CCC
    client_for("CN-JS").publish(cert)
    key = f"certificate_status/CCC/{cert.certificate_number}"
    sh = client_for("CN-SH")
    d = ask(sh, record_key=key, as_of="2026-10-31")  # the expiry date itself is in force
    assert (d.verdict, d.agreement_id) == (RECOGNISED, "YRD-2026-RESULTS")
    d = ask(sh, record_key=key, as_of="2026-11-05")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [("RECORD_EXPIRED", {"since": "2026-11-01", "expired_on": "2026-10-31"})]


def test_record_not_yet_valid(client_for, ask):
    js = client_for("CN-JS")
    js.publish(lab_of("CN-JS"))
    # In effect from 02:00 on 08-01 Beijing time (18:00 UTC on 07-31).
    rep = report("CN-JS", 21, "2026-08-01", effective_at=datetime(2026, 7, 31, 18, 0, tzinfo=UTC))
    js.publish(rep)
    sh = client_for("CN-SH")
    d = ask(sh, record_key=rep.key, as_of="2026-07-31")
    assert (d.verdict, d.agreement_id, d.record_version) == (NOT_RECOGNISED, "", 1)
    assert reasons(d) == [("RECORD_NOT_YET_VALID", {"as_of": "2026-07-31"})]
    assert ask(sh, record_key=rep.key, as_of="2026-08-01").verdict == RECOGNISED


# --- assessors' qualifications ------------------------------------------------------------------


def test_qualification_expired(client_for, ask):
    a = assessor("CN-SN", qual("电子电器"), qual("食品", start="2021-07-01", end="2026-06-30"))
    client_for("CN-SN").publish(a)
    bj = client_for("CN-BJ")
    assert ask(bj, assessor=question(a, "食品"), as_of="2026-06-30").verdict == RECOGNISED
    d = ask(bj, assessor=question(a, "食品"), as_of="2026-08-01")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [
        (
            "QUALIFICATION_EXPIRED",
            {
                "field": "食品",
                "kind": "CMA_ASSESSOR",
                "valid_from": "2021-07-01",
                "valid_until": "2026-06-30",
            },
        )
    ]


def test_qualification_not_yet_valid_reads_as_qualification_expired(client_for, ask):
    a = assessor("CN-SN", qual("电子电器"), qual("建筑材料", start="2026-09-01", end="2031-08-31"))
    client_for("CN-SN").publish(a)
    d = ask(client_for("CN-HE"), assessor=question(a, "建筑材料"), as_of="2026-08-01")
    assert reasons(d) == [
        (
            "QUALIFICATION_EXPIRED",
            {
                "field": "建筑材料",
                "kind": "CMA_ASSESSOR",
                "valid_from": "2026-09-01",
                "valid_until": "2031-08-31",
            },
        )
    ]


def test_field_not_qualified(client_for, ask):
    a = assessor("CN-SN", qual("电子电器", "环境监测"))
    client_for("CN-SN").publish(a)
    bj = client_for("CN-BJ")
    d = ask(bj, assessor=question(a, "建筑材料"), as_of="2026-08-01")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [("FIELD_NOT_QUALIFIED", {"field": "建筑材料", "kind": "ANY"})]
    # Listed for the field, but not as the kind asked.
    d = ask(bj, assessor=question(a, "电子电器", kind=QualificationKind.TECHNICAL_EXPERT), as_of="2026-08-01")
    assert reasons(d) == [("FIELD_NOT_QUALIFIED", {"field": "电子电器", "kind": "TECHNICAL_EXPERT"})]


# --- the lab behind a report ------------------------------------------------------------------------


def test_lab_not_accredited_when_suspended_before_the_issue_date(client_for, ask):
    js = client_for("CN-JS")
    lab = lab_of("CN-JS")
    js.publish(lab)
    js.publish(changed(lab, CertState.SUSPENDED, at("2026-05-01")))
    late = report("CN-JS", 31, "2026-06-01", lab=lab)
    early = report("CN-JS", 32, "2026-04-20", lab=lab)
    js.publish(late)
    js.publish(early)
    sh = client_for("CN-SH")
    d = ask(sh, record_key=late.key, as_of="2026-06-10")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert reasons(d) == [
        (
            "LAB_NOT_ACCREDITED",
            {
                "lab_cma_number": lab.certificate_number,
                "lab_state": "SUSPENDED",
                "since": "2026-05-01",
                "issue_date": "2026-06-01",
            },
        )
    ]
    # Judged on the issue date, not on as_of: a report issued before the suspension stands.
    d = ask(sh, record_key=early.key, as_of="2026-06-10")
    assert (d.verdict, d.agreement_id) == (RECOGNISED, "YRD-2026-RESULTS")


@pytest.mark.parametrize(
    ("issued", "expiry", "lab_state", "since"),
    [
        ("2026-03-01", "2032-02-29", "NOT_YET_VALID", ""),  # the lab was qualified after the report
        ("2020-02-01", "2026-01-31", "EXPIRED", "2026-02-01"),  # the qualification had lapsed
    ],
)
def test_lab_not_accredited_when_not_valid_on_the_issue_date(
    issued, expiry, lab_state, since, client_for, ask
):
    js = client_for("CN-JS")
    lab = dataclasses.replace(
        lab_of("CN-JS"),
        issue_date=date.fromisoformat(issued),
        expiry_date=date.fromisoformat(expiry),
        effective_at=at(issued, 0),
    )
    js.publish(lab)
    rep = report("CN-JS", 41, "2026-02-10", lab=lab)
    js.publish(rep)
    d = ask(client_for("CN-SH"), record_key=rep.key, as_of="2026-03-10")
    assert d.verdict == NOT_RECOGNISED
    assert reasons(d) == [
        (
            "LAB_NOT_ACCREDITED",
            {
                "lab_cma_number": lab.certificate_number,
                "lab_state": lab_state,
                "since": since,
                "issue_date": "2026-02-10",
            },
        )
    ]


def test_lab_qualification_unknown(client_for, ask):
    rep = report("CN-JS", 51, "2026-03-10")  # its lab's CMA qualification is never published
    client_for("CN-JS").publish(rep)
    d = ask(client_for("CN-SH"), record_key=rep.key, as_of="2026-04-01")
    assert (d.verdict, d.agreement_id, d.record_version) == (UNKNOWN, "", 1)
    assert reasons(d) == [("LAB_QUALIFICATION_UNKNOWN", {"lab_cma_number": rep.lab_cma_number})]


# --- the issuer's key ---------------------------------------------------------------------------------


def test_issuer_key_revoked(js_report, client_for, federation, restart, ask):
    revoked_at = datetime(2026, 10, 20, 4, 0, tzinfo=UTC)  # 12:00 in China, same day
    gw = restart(with_revoked_key(federation, "CN-JS/demo", revoked_at))
    sh = client_for("CN-SH", target=gw.address)
    # Even as of a date long before the revocation: the signature proves nothing now.
    d = ask(sh, record_key=js_report.key, as_of="2026-04-01")
    assert (d.verdict, d.agreement_id, d.record_version) == (NOT_RECOGNISED, "", 1)
    assert reasons(d) == [("ISSUER_KEY_REVOKED", {"issuer": "CN-JS", "revoked_at": "2026-10-20"})]


def test_multiple_reasons_are_all_listed(js_report, client_for, federation, restart, ask):
    client_for("CN-JS").publish(changed(js_report, CertState.SUSPENDED, at("2026-05-01")))
    gw = restart(with_revoked_key(federation, "CN-JS/demo", datetime(2026, 10, 20, 4, 0, tzinfo=UTC)))
    d = ask(client_for("CN-SH", target=gw.address), record_key=js_report.key, as_of="2026-06-01")
    assert d.verdict == NOT_RECOGNISED
    assert reasons(d) == [
        ("RECORD_SUSPENDED", {"since": "2026-05-01"}),
        ("ISSUER_KEY_REVOKED", {"issuer": "CN-JS", "revoked_at": "2026-10-20"}),
    ]
    # Agreement reasons come first.
    d = ask(client_for("CN-FJ", target=gw.address), record_key=js_report.key, as_of="2026-06-01")
    assert codes(d) == ["NO_AGREEMENT", "RECORD_SUSPENDED", "ISSUER_KEY_REVOKED"]


def test_issuer_key_revoked_at_is_a_china_date(js_report, client_for, federation, restart, ask):
    revoked_at = datetime(2026, 10, 20, 20, 0, tzinfo=UTC)  # 04:00 on 10-21 in China
    gw = restart(with_revoked_key(federation, "CN-JS/demo", revoked_at))
    d = ask(client_for("CN-SH", target=gw.address), record_key=js_report.key, as_of="2026-11-01")
    assert reasons(d) == [("ISSUER_KEY_REVOKED", {"issuer": "CN-JS", "revoked_at": "2026-10-21"})]


# --- nothing to judge ---------------------------------------------------------------------------------


def test_record_not_found(client_for, ask):
    d = ask(client_for("CN-SH"), record_key="test_report/CN-JS/JS-2026-999999", as_of="2026-04-01")
    assert (d.verdict, d.agreement_id) == (UNKNOWN, "")
    assert reasons(d) == [("RECORD_NOT_FOUND", {})]
    assert d.record_key == "test_report/CN-JS/JS-2026-999999"
    assert (d.record_version, d.record_log_index, d.record_envelope_sha256) == (0, 0, b"")


def test_assessor_not_found(client_for, ask):
    q = recognition_pb2.AssessorQuestion(registration_number="CMA-SN-2020-0001", home="CN-SN", field="食品")
    d = ask(client_for("CN-BJ"), assessor=q, as_of="2026-08-01")
    assert (d.verdict, codes(d)) == (UNKNOWN, ["RECORD_NOT_FOUND"])
    assert d.record_key == "assessor/CN-SN/CMA-SN-2020-0001"


def test_not_recognised_outweighs_unknown(client_for, ask):
    js = client_for("CN-JS")
    rep = report("CN-JS", 61, "2026-03-10")  # lab unknown
    js.publish(rep)
    js.publish(changed(rep, CertState.REVOKED, at("2026-03-20")))
    d = ask(client_for("CN-SH"), record_key=rep.key, as_of="2026-04-01")
    assert (d.verdict, d.agreement_id) == (NOT_RECOGNISED, "")
    assert codes(d) == ["RECORD_REVOKED", "LAB_QUALIFICATION_UNKNOWN"]


# --- the signed decision --------------------------------------------------------------------------------


def test_decision_is_signed_by_the_gateway_key(js_report, client_for, call, clock):
    js, sh = client_for("CN-JS"), client_for("CN-SH")
    v2 = changed(js_report, CertState.SUSPENDED, at("2026-05-01"))
    env2 = js.sign(v2)
    receipt = js.submit(env2)

    listed = sh.registry.ListKeys(registry_pb2.ListKeysRequest(owner="MRX-GW"), timeout=30).keys
    assert len(listed) == 1 and not listed[0].revoked
    gw_key = PublicKey.from_pem(listed[0].public_key_pem, Suite.from_proto(listed[0].suite))

    envelope = call(sh, request_for(record_key=js_report.key, as_of="2026-06-01")).decision
    assert envelope.payload_type == DECISION_PAYLOAD_TYPE == "application/vnd.mrx.decision.v1+protobuf"
    assert len(envelope.signatures) == 1
    sig = envelope.signatures[0]
    assert (sig.keyid, sig.suite) == (listed[0].keyid, listed[0].suite)
    assert gw_key.verify(pae(envelope.payload_type, envelope.payload), sig.sig)
    # Not with a participant's key, not over another type, not over altered bytes.
    js_key = PublicKey.from_pem(
        sh.registry.ListKeys(registry_pb2.ListKeysRequest(owner="CN-JS"), timeout=30).keys[0].public_key_pem,
        Suite.ED25519,
    )
    assert not js_key.verify(pae(envelope.payload_type, envelope.payload), sig.sig)
    assert not gw_key.verify(pae("application/vnd.mrx.receipt.v1+protobuf", envelope.payload), sig.sig)
    for position in (0, len(envelope.payload) // 2, len(envelope.payload) - 1):
        tampered = bytearray(envelope.payload)
        tampered[position] ^= 0x01
        assert not gw_key.verify(pae(envelope.payload_type, bytes(tampered)), sig.sig)
        forged = envelope_pb2.Envelope()
        forged.CopyFrom(envelope)
        forged.payload = bytes(tampered)
        with pytest.raises(DecisionError):
            verify_decision(forged, {listed[0].keyid: gw_key})

    d = recognition_pb2.Decision.FromString(envelope.payload)
    assert uuid.UUID(d.decision_id)
    assert (d.asked_by, d.as_of, d.record_key) == ("CN-SH", "2026-06-01", js_report.key)
    assert (d.verdict, codes(d)) == (NOT_RECOGNISED, ["RECORD_SUSPENDED"])
    assert not d.HasField("assessor")
    # The judged version, where it sits in the log and the digest of its stored envelope.
    stored = sh.get_record(js_report.key)
    assert (d.record_version, d.record_log_index) == (2, receipt.log_index)
    assert d.record_log_index == stored.log_index
    assert d.record_envelope_sha256 == hashlib.sha256(env2.SerializeToString(deterministic=True)).digest()
    assert (
        d.record_envelope_sha256
        == hashlib.sha256(stored.envelope.SerializeToString(deterministic=True)).digest()
    )
    assert d.record_envelope_sha256 == receipt.envelope_sha256
    assert d.decided_at.ToDatetime(tzinfo=UTC) == clock.now


def test_each_decision_is_new(js_report, client_for, call, clock):
    sh = client_for("CN-SH")
    request = request_for(record_key=js_report.key, as_of="2026-04-01")
    first = recognition_pb2.Decision.FromString(call(sh, request).decision.payload)
    clock.advance(timedelta(seconds=7))
    second = recognition_pb2.Decision.FromString(call(sh, request).decision.payload)
    assert first.decision_id != second.decision_id
    assert second.decided_at.ToDatetime(tzinfo=UTC) - first.decided_at.ToDatetime(tzinfo=UTC) == timedelta(
        seconds=7
    )
    assert (first.verdict, first.agreement_id) == (second.verdict, second.agreement_id)


def test_as_of_defaults_to_today_in_china(js_report, client_for, ask, clock):
    d = ask(client_for("CN-SH"), record_key=js_report.key)
    assert d.as_of == clock.today().isoformat()
    assert (d.verdict, d.agreement_id) == (RECOGNISED, "YRD-2026-RESULTS")


# --- errors -----------------------------------------------------------------------------------------------


def test_unsigned_call_is_refused(js_report, client_for, rpc_refusal):
    request = request_for(record_key=js_report.key, as_of="2026-04-01")
    stub = client_for("CN-SH").recognition
    rpc_refusal(
        lambda: stub.CheckRecognition(request, timeout=30), Code.UNAUTHENTICATED, "MISSING_CREDENTIALS"
    )


def test_signature_over_another_question_is_refused(js_report, client_for, rpc_refusal, clock):
    sh = client_for("CN-SH")
    signed = request_for(record_key=js_report.key, as_of="2026-04-01")
    sent = request_for(record_key=js_report.key, as_of="2026-05-01")
    metadata = sign_read(signer=sh.signer, principal="CN-SH", method=METHOD, request=signed, now=clock.now)
    rpc_refusal(
        lambda: sh.recognition.CheckRecognition(sent, metadata=metadata, timeout=30),
        Code.UNAUTHENTICATED,
        "BAD_SIGNATURE",
    )


@pytest.mark.parametrize("principal", ["YRD-SEC", "GBA-SEC", "MRX-GW"])
def test_read_only_principals_may_not_ask(principal, js_report, client_for, call, rpc_refusal):
    client = client_for(principal)
    rpc_refusal(
        lambda: call(client, request_for(record_key=js_report.key, as_of="2026-04-01")),
        Code.PERMISSION_DENIED,
        "READ_ONLY_PRINCIPAL",
    )


@pytest.mark.parametrize(
    ("question", "fields"),
    [
        ({"record_key": ""}, ("record_key",)),
        ({"record_key": "bogus"}, ("record_key",)),
        ({"record_key": "test_report/CN-JS"}, ("record_key",)),
        ({"record_key": "license/CN-JS/42"}, ("record_key",)),
        ({"record_key": "test_report/CN-JS/" + "9" * 200}, ("record_key",)),
        ({"record_key": "test_report/CN-JS/\x07"}, ("record_key",)),
        ({"record_key": "test_report/CN-JS/JS-2026-000001", "as_of": "2026-02-30"}, ("as_of",)),
        ({"record_key": "test_report/CN-JS/JS-2026-000001", "as_of": "next week"}, ("as_of",)),
        ({"as_of": "2026-04-01"}, ("question",)),
        (
            {"assessor": recognition_pb2.AssessorQuestion(registration_number="CMA-1", home="CN-SN")},
            ("assessor.field",),
        ),
        (
            {
                "assessor": recognition_pb2.AssessorQuestion(
                    registration_number="CMA-1", home="CN-SN", field="  "
                )
            },
            ("assessor.field",),
        ),
    ],
)
def test_malformed_questions(question, fields, client_for, call, rpc_refusal):
    sh = client_for("CN-SH")
    rpc_refusal(lambda: call(sh, request_for(**question)), Code.INVALID_ARGUMENT, "INVALID_FIELDS", fields)


@pytest.mark.parametrize("as_of", ["20260401", "2026-W14-3"])
def test_as_of_must_be_yyyy_mm_dd(as_of, client_for, call, rpc_refusal):
    sh = client_for("CN-SH")
    request = request_for(record_key="test_report/CN-JS/JS-2026-000001", as_of=as_of)
    rpc_refusal(lambda: call(sh, request), Code.INVALID_ARGUMENT, "INVALID_FIELDS", ("as_of",))


def test_records_of_every_kind_can_be_asked_about(client_for, ask):
    # One question per kind that an agreement covers, so no kind is left to chance.
    js = client_for("CN-JS")
    js.publish(lab_of("CN-JS"))
    records = [
        report("CN-JS", 71, "2026-03-10"),
        demo_pt_results("CN-JS", count=1, today=REF)[0],
        demo_spot_checks("CN-JS", count=1, today=REF)[0],
        demo_certificates("CN-JS", count=1, today=REF)[0],
    ]
    keys = [js.publish(r).record_key for r in records]
    sh = client_for("CN-SH")
    for key in keys:
        d = ask(sh, record_key=key, as_of=REF.isoformat())
        assert (d.verdict, d.agreement_id) == (RECOGNISED, "YRD-2026-RESULTS"), key
