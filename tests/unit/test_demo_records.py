from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta

import pytest

from gateway.demo_fixtures import (
    DEMO_HOLDERS,
    DEMO_LABS,
    DEMO_PARTICIPANTS,
    EXPIRED_QUALIFICATION_SERIAL,
    TECHNICAL_FIELDS,
    demo_assessors,
    demo_certificates,
    demo_lab_cma_certificates,
    demo_pt_results,
    demo_spot_checks,
    demo_test_reports,
)
from gateway.domain.certificates import CertState, Scheme, build_certificate
from gateway.domain.identifiers import check_credit_code
from gateway.domain.recognition import (
    Agreement,
    AssessorFacts,
    LabFacts,
    RecordFacts,
    Verdict,
    decide_assessor,
    decide_record,
)
from gateway.domain.records import (
    Assessor,
    PtClass,
    PtResult,
    SpotCheck,
    SpotCheckOutcome,
    SubmittedEvaluation,
    SubmittedQualification,
    TestReport,
    build_assessor,
    build_pt_result,
    build_spot_check,
    build_test_report,
    classify_z,
    state_on,
)

TODAY = date(2025, 6, 1)
COUNT = 40
CJK = re.compile(r"\A[\u4e00-\u9fff]{2,4}\Z")
PARTICIPANTS = pytest.mark.parametrize("participant", DEMO_PARTICIPANTS)


def resubmit_assessor(a: Assessor) -> tuple[Assessor, list[str]]:
    return build_assessor(
        registration_number=a.registration_number,
        name=a.name,
        home=a.home,
        qualifications=[SubmittedQualification.of(q) for q in a.qualifications],
        state=int(a.state),
        reason=a.reason,
        effective_at=a.effective_at,
        evaluations=[SubmittedEvaluation.of(e) for e in a.evaluations],
        version=a.version,
    )


def resubmit_report(r: TestReport) -> tuple[TestReport, list[str]]:
    return build_test_report(
        report_number=r.report_number,
        issuer=r.issuer,
        lab_name=r.lab_name,
        lab_cma_number=r.lab_cma_number,
        accreditation_number=r.accreditation_number,
        product=r.product,
        standard=r.standard,
        conclusion=int(r.conclusion),
        issue_date=r.issue_date.isoformat(),
        state=int(r.state),
        reason=r.reason,
        effective_at=r.effective_at,
        version=r.version,
    )


def resubmit_pt(p: PtResult) -> tuple[PtResult, list[str]]:
    return build_pt_result(
        issuer=p.issuer,
        scheme_id=p.scheme_id,
        round=p.round,
        lab_name=p.lab_name,
        lab_cma_number=p.lab_cma_number,
        analyte=p.analyte,
        assigned_value=p.assigned_value,
        sigma=p.sigma,
        reported_value=p.reported_value,
        z_score=p.z_score,
        report_date=p.report_date.isoformat(),
        state=int(p.state),
        reason=p.reason,
        effective_at=p.effective_at,
        version=p.version,
    )


def resubmit_spot_check(s: SpotCheck) -> tuple[SpotCheck, list[str]]:
    return build_spot_check(
        check_id=s.check_id,
        issuer=s.issuer,
        target_name=s.target_name,
        target_credit_code=s.target_credit_code,
        check_date=s.check_date.isoformat(),
        items=list(s.items),
        outcome=int(s.outcome),
        follow_up=s.follow_up,
        state=int(s.state),
        reason=s.reason,
        effective_at=s.effective_at,
        version=s.version,
    )


# ---- assessors ----------------------------------------------------------------------


@PARTICIPANTS
def test_demo_assessors_round_trip(participant: str) -> None:
    assessors = demo_assessors(participant, count=COUNT, today=TODAY)
    assert len(assessors) == COUNT
    for a in assessors:
        assert resubmit_assessor(a) == (a, [])
        assert (a.home, a.state, a.version) == (participant, CertState.VALID, 1)
        assert CJK.match(a.name), a.name
        assert re.match(
            rf"\A(CMA|CCAA|TE|INS)-{participant[3:]}-20[0-9]{{2}}-[0-9]{{4}}\Z", a.registration_number
        )
        assert all(f in TECHNICAL_FIELDS for q in a.qualifications for f in q.fields)
        assert any(q.valid_on(TODAY) for q in a.qualifications)
        assert all(e.date <= TODAY for e in a.evaluations)
        assert state_on([(a.effective_at, a.state)], TODAY, a.valid_until).state is CertState.VALID
    assert len({a.key for a in assessors}) == COUNT


@PARTICIPANTS
def test_one_demo_assessor_has_an_expired_qualification(participant: str) -> None:
    assessors = demo_assessors(participant, count=COUNT, today=TODAY)
    lapsed = {
        a.registration_number: q
        for a in assessors
        for q in a.qualifications
        if not q.valid_on(TODAY) and q.valid_until < TODAY
    }
    assert list(lapsed) == [assessors[EXPIRED_QUALIFICATION_SERIAL - 1].registration_number]
    q = next(iter(lapsed.values()))
    assert q.valid_until == TODAY - timedelta(days=30)
    holder = assessors[EXPIRED_QUALIFICATION_SERIAL - 1]
    others = [other for other in holder.qualifications if other is not q]
    assert all(q.fields[0] not in other.fields for other in others)


def test_demo_assessors_deterministic_and_distinct_per_home() -> None:
    assert demo_assessors("CN-JS", count=5, today=TODAY) == demo_assessors("CN-JS", count=5, today=TODAY)
    js = demo_assessors("CN-JS", count=5, today=TODAY)
    sh = demo_assessors("CN-SH", count=5, today=TODAY)
    assert {a.key for a in js}.isdisjoint(a.key for a in sh)


def test_demo_assessor_expired_qualification_decides_as_expected() -> None:
    a = demo_assessors("CN-JS", count=3, today=TODAY)[EXPIRED_QUALIFICATION_SERIAL - 1]
    lapsed = next(q for q in a.qualifications if q.valid_until < TODAY)
    facts = AssessorFacts(
        registration_number=a.registration_number,
        home=a.home,
        state=CertState.VALID,
        state_since=a.effective_at.date(),
        qualifications=a.qualifications,
        issuer_key_revoked=False,
    )
    outcome = decide_assessor(
        asker="CN-JS", facts=facts, field=lapsed.fields[0], kind=None, agreements=[], as_of=TODAY
    )
    assert outcome.codes == ("QUALIFICATION_EXPIRED",)
    assert outcome.reasons[0].metadata["valid_until"] == lapsed.valid_until.isoformat()
    current = a.qualifications[0].fields[0]
    assert decide_assessor(
        asker="CN-JS", facts=facts, field=current, kind=None, agreements=[], as_of=TODAY
    ).verdict is (Verdict.RECOGNISED)


# ---- labs and test reports ----------------------------------------------------------


@PARTICIPANTS
def test_demo_lab_cma_certificates_build(participant: str) -> None:
    certs = demo_lab_cma_certificates(participant, today=TODAY)
    assert len(certs) == len(DEMO_LABS[participant]) == 2
    for cert in certs:
        rebuilt, warnings = build_certificate(
            certificate_number=cert.certificate_number,
            scheme=int(cert.scheme),
            issuing_body=cert.issuing_body,
            issuer=cert.issuer,
            holder_name=cert.holder.name,
            holder_credit_code=cert.holder.credit_code,
            scope=cert.scope,
            state=int(cert.state),
            reason=cert.reason,
            effective_at=cert.effective_at,
            issue_date=cert.issue_date.isoformat(),
            expiry_date=cert.expiry_date.isoformat(),
            version=cert.version,
        )
        assert rebuilt == cert
        # Provincial bureaus issue CMA qualifications and have no CNCA approval number.
        assert len(warnings) == 1
        assert warnings[0].startswith("certificate_status.issuing_body: ")
        assert cert.scheme is Scheme.CMA
        assert re.match(r"\A20[0-9]{2}(0[0-9]|1[0-9]|2[0-9])00[0-9]{4}\Z", cert.certificate_number)
        assert cert.certificate_number[:4] == f"{cert.issue_date.year:04d}"
        assert cert.issuing_body.endswith("市场监督管理局")
        assert cert.issue_date < TODAY - timedelta(days=365) and cert.expiry_date > TODAY
        assert check_credit_code(cert.holder.credit_code).warning is None
        assert cert.holder.name.endswith("（示例）")


def test_demo_lab_cma_numbers_unique_across_participants() -> None:
    keys = [c.key for p in DEMO_PARTICIPANTS for c in demo_lab_cma_certificates(p, today=TODAY)]
    ccc = {c.key for p in DEMO_PARTICIPANTS for c in demo_certificates(p, count=20, today=TODAY)}
    assert len(set(keys)) == len(keys)
    assert ccc.isdisjoint(keys)
    # Public institutions carry 事业单位 credit codes (12...), companies 91....
    codes = [lab.credit_code[:2] for labs in DEMO_LABS.values() for lab in labs]
    assert set(codes) == {"12", "91"}


@PARTICIPANTS
def test_demo_test_reports_round_trip(participant: str) -> None:
    reports = demo_test_reports(participant, count=COUNT, today=TODAY)
    labs = {c.certificate_number: c for c in demo_lab_cma_certificates(participant, today=TODAY)}
    assert len(reports) == COUNT and len({r.key for r in reports}) == COUNT
    for r in reports:
        assert resubmit_report(r) == (r, [])
        assert r.issuer == participant
        assert TODAY - timedelta(days=365) < r.issue_date < TODAY
        lab = labs[r.lab_cma_number]
        assert lab.holder.name == r.lab_name
        history = [(lab.effective_at, lab.state)]
        assert state_on(history, r.issue_date, lab.expiry_date).state is CertState.VALID
    assert {"GB 4943.1-2022", "GB/T 2828.1-2012"} <= {r.standard for r in reports}
    assert len({r.conclusion for r in reports}) == 3


def test_demo_test_report_recognised_within_the_alliance() -> None:
    yrd = Agreement(
        id="YRD-2025",
        name="长三角检验检测结果互认（示例）",
        parties=frozenset({"CN-SH", "CN-JS", "CN-ZJ", "CN-AH"}),
        kinds=frozenset({"test_report"}),
        schemes=frozenset(),
        fields=frozenset(),
        effective_from=date(2025, 1, 1),
        effective_until=None,
    )
    report = demo_test_reports("CN-JS", count=1, today=TODAY)[0]
    lab = next(
        c
        for c in demo_lab_cma_certificates("CN-JS", today=TODAY)
        if c.certificate_number == report.lab_cma_number
    )
    lab_state = state_on([(lab.effective_at, lab.state)], report.issue_date, lab.expiry_date)
    report_state = state_on([(report.effective_at, report.state)], TODAY, report.valid_until)
    facts = RecordFacts(
        kind=report.kind,
        key=report.key,
        issuer=report.issuer,
        scheme=None,
        state=report_state.state,
        state_since=report_state.since,
        issuer_key_revoked=False,
        issuer_key_revoked_at=None,
        lab=LabFacts(
            cma_number=lab.certificate_number,
            found=True,
            state_on_issue_date=lab_state.state,
            since=lab_state.since,
            issue_date=report.issue_date,
        ),
    )
    outcome = decide_record(asker="CN-SH", facts=facts, agreements=[yrd], as_of=TODAY)
    assert (outcome.verdict, outcome.agreement_id, outcome.reasons) == (Verdict.RECOGNISED, "YRD-2025", ())


# ---- PT results and spot checks -----------------------------------------------------


@PARTICIPANTS
def test_demo_pt_results_round_trip(participant: str) -> None:
    results = demo_pt_results(participant, count=200, today=TODAY)
    all_lab_numbers = {
        c.certificate_number for p in DEMO_PARTICIPANTS for c in demo_lab_cma_certificates(p, today=TODAY)
    }
    assert len({r.key for r in results}) == 200
    for r in results:
        assert resubmit_pt(r) == (r, [])
        assert r.classification is classify_z(r.z_score)
        assert r.lab_cma_number in all_lab_numbers
        assert r.scheme_id.startswith(f"CNCA-PT-{TODAY.year}-")
        if r.assigned_value is not None:
            assert r.sigma is not None
            assert abs(r.z_score - (r.reported_value - r.assigned_value) / r.sigma) <= 0.005 + 1e-9
    assert {r.classification for r in results} == set(PtClass)
    assert {abs(r.z_score) for r in results} >= {2.0, 3.0}
    assert any(r.assigned_value is None for r in results)
    assert any("/" in r.analyte for r in results)


def test_demo_pt_scheme_ids_distinct_per_issuer() -> None:
    schemes = {
        p: {r.scheme_id for r in demo_pt_results(p, count=200, today=TODAY)} for p in DEMO_PARTICIPANTS
    }
    seen: set[str] = set()
    for ids in schemes.values():
        assert seen.isdisjoint(ids)
        seen |= ids


@PARTICIPANTS
def test_demo_spot_checks_round_trip(participant: str) -> None:
    checks = demo_spot_checks(participant, count=COUNT, today=TODAY)
    assert len({c.key for c in checks}) == COUNT
    holders = {h.credit_code: h.name for h in DEMO_HOLDERS[participant]}
    for c in checks:
        assert resubmit_spot_check(c) == (c, [])
        assert holders[c.target_credit_code] == c.target_name
        assert c.check_date < TODAY
        assert bool(c.follow_up) is (c.outcome is SpotCheckOutcome.NONCONFORMING)
    assert {c.outcome for c in checks} == set(SpotCheckOutcome)


@pytest.mark.parametrize(
    "make",
    [
        lambda: demo_assessors("CN-XX", count=1, today=TODAY),
        lambda: demo_test_reports("CN-XX", count=1, today=TODAY),
        lambda: demo_pt_results("CN-XX", count=1, today=TODAY),
        lambda: demo_spot_checks("CN-XX", count=1, today=TODAY),
        lambda: demo_lab_cma_certificates("CN-XX", today=TODAY),
        lambda: demo_assessors("CN-JS", count=-1, today=TODAY),
        lambda: demo_test_reports("CN-JS", count=-1, today=TODAY),
    ],
)
def test_demo_refuses_unknown_participant_and_bad_count(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("today", [date(2024, 2, 29), date(2026, 1, 1), date(2031, 12, 31)])
def test_demo_records_valid_on_any_day(today: date) -> None:
    for p in DEMO_PARTICIPANTS:
        for a in demo_assessors(p, count=8, today=today):
            assert resubmit_assessor(a)[1] == []
        for r in demo_test_reports(p, count=4, today=today):
            assert resubmit_report(r)[1] == []
        for pt in demo_pt_results(p, count=30, today=today):
            assert resubmit_pt(pt)[0] == pt
        for c in demo_spot_checks(p, count=4, today=today):
            assert resubmit_spot_check(c)[1] == []
