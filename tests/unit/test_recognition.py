from __future__ import annotations

import dataclasses
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.certificates import CertState
from gateway.domain.recognition import (
    UNKNOWN_REASONS,
    Agreement,
    AssessorFacts,
    LabFacts,
    Outcome,
    Reason,
    ReasonCode,
    RecordFacts,
    Verdict,
    decide_assessor,
    decide_record,
)
from gateway.domain.records import Qualification, QualificationKind
from gateway.pb import recognition_pb2

YRD = Agreement(
    id="YRD-2026",
    name="长三角认证结果互认协议（示例）",
    parties=frozenset({"CN-SH", "CN-JS", "CN-ZJ", "CN-AH"}),
    kinds=frozenset({"certificate_status", "test_report", "assessor"}),
    schemes=frozenset({"CCC", "QMS"}),
    fields=frozenset({"电子电器", "食品"}),
    effective_from=date(2026, 1, 1),
    effective_until=date(2028, 12, 31),
    alliance="YRD",
)
JS_ZJ = Agreement(
    id="JS-ZJ-2024",
    name="苏浙结果互认备忘录（示例）",
    parties=frozenset({"CN-JS", "CN-ZJ"}),
    kinds=frozenset({"certificate_status", "test_report", "pt_result", "spot_check", "assessor"}),
    schemes=frozenset(),
    fields=frozenset(),
    effective_from=date(2024, 1, 1),
    effective_until=date(2025, 12, 31),
)
OPEN_ENDED = Agreement(
    id="BTH-2027",
    name="京津冀互认协议（示例）",
    parties=frozenset({"CN-BJ", "CN-TJ", "CN-HE"}),
    kinds=frozenset({"certificate_status"}),
    schemes=frozenset(),
    fields=frozenset(),
    effective_from=date(2027, 1, 1),
    effective_until=None,
    alliance="BTH",
)
AGREEMENTS = [YRD, JS_ZJ, OPEN_ENDED]
AS_OF = date(2026, 6, 1)
CERT_KEY = "certificate_status/CCC/2025010901000001"


def cert_facts(**overrides: Any) -> RecordFacts:
    values: dict[str, Any] = {
        "kind": "certificate_status",
        "key": CERT_KEY,
        "issuer": "CN-JS",
        "scheme": "CCC",
        "state": CertState.VALID,
        "state_since": date(2025, 3, 1),
        "issuer_key_revoked": False,
        "issuer_key_revoked_at": None,
        "lab": None,
    }
    values.update(overrides)
    return RecordFacts(**values)


LAB_OK = LabFacts(
    cma_number="202310000102",
    found=True,
    state_on_issue_date=CertState.VALID,
    since=date(2023, 9, 14),
    issue_date=date(2026, 2, 10),
)


def report_facts(**overrides: Any) -> RecordFacts:
    values: dict[str, Any] = {
        "kind": "test_report",
        "key": "test_report/CN-JS/JS-2026-000001",
        "scheme": None,
        "lab": LAB_OK,
    }
    values.update(overrides)
    return cert_facts(**values)


def record(asker: str = "CN-SH", facts: RecordFacts | None = None, as_of: date = AS_OF) -> Outcome:
    return decide_record(asker=asker, facts=facts or cert_facts(), agreements=AGREEMENTS, as_of=as_of)


def only(outcome: Outcome) -> Reason:
    assert len(outcome.reasons) == 1, outcome.reasons
    return outcome.reasons[0]


def test_verdict_values_match_the_contract() -> None:
    contract = {
        name.removeprefix("VERDICT_"): value for name, value in recognition_pb2.Verdict.items() if value != 0
    }
    assert {v.name: v.value for v in Verdict} == contract


def test_reason_codes_match_the_contract() -> None:
    # The comment on DecisionReason is the list clients are promised.
    proto = (Path(__file__).parents[2] / "proto/mrx/v1/recognition.proto").read_text(encoding="utf-8")
    comment = proto.split("// One machine-readable reason.", 1)[1].split("message DecisionReason", 1)[0]
    documented = set(re.findall(r"\b[A-Z][A-Z_]{3,}\b", comment.split("Codes:", 1)[1]))
    assert {c.value for c in ReasonCode} == documented
    assert {"RECORD_NOT_FOUND", "LAB_QUALIFICATION_UNKNOWN"} == UNKNOWN_REASONS


# ---- records ------------------------------------------------------------------------


def test_recognised_under_the_agreement() -> None:
    outcome = record()
    assert outcome == Outcome(verdict=Verdict.RECOGNISED, agreement_id="YRD-2026", reasons=())


def test_record_not_found_is_unknown() -> None:
    outcome = decide_record(asker="CN-SH", facts=None, agreements=AGREEMENTS, as_of=AS_OF)
    assert outcome.verdict is Verdict.UNKNOWN
    assert outcome.agreement_id is None
    assert only(outcome).code == "RECORD_NOT_FOUND"
    assert only(outcome).metadata == {}


def test_own_record_needs_no_agreement() -> None:
    outcome = record(asker="CN-JS", facts=cert_facts(scheme="ORGANIC"))
    assert outcome == Outcome(verdict=Verdict.RECOGNISED, agreement_id=None, reasons=())


def test_own_revoked_record_is_not_recognised_either() -> None:
    outcome = record(asker="CN-JS", facts=cert_facts(state=CertState.REVOKED, state_since=date(2026, 3, 1)))
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    assert outcome.agreement_id is None
    assert only(outcome).code == "RECORD_REVOKED"
    assert only(outcome).metadata == {"since": "2026-03-01"}


def test_no_agreement() -> None:
    outcome = record(asker="CN-BJ")
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    assert outcome.agreement_id is None
    reason = only(outcome)
    assert reason.code == "NO_AGREEMENT"
    assert reason.metadata == {"asker": "CN-BJ", "issuer": "CN-JS"}
    assert "CN-BJ" in reason.message and "CN-JS" in reason.message


def test_kind_outside_scope() -> None:
    facts = cert_facts(kind="pt_result", key="pt_result/CN-SH/X/1/2/铅", issuer="CN-SH", scheme=None)
    reason = only(record(asker="CN-AH", facts=facts))
    assert reason.code == "KIND_OUTSIDE_SCOPE"
    assert reason.metadata == {"agreement": "YRD-2026", "kind": "pt_result"}
    assert "YRD-2026" in reason.message


def test_scheme_outside_scope() -> None:
    reason = only(record(facts=cert_facts(scheme="ORGANIC")))
    assert reason.code == "SCHEME_OUTSIDE_SCOPE"
    assert reason.metadata == {"agreement": "YRD-2026", "scheme": "ORGANIC"}
    assert reason.message == "agreement YRD-2026 covers certificate schemes CCC, QMS, not ORGANIC"


def test_scheme_scope_applies_to_certificates_only() -> None:
    assert record(facts=report_facts(scheme="ORGANIC")).verdict is Verdict.RECOGNISED


def test_agreement_without_schemes_covers_every_scheme() -> None:
    outcome = record(asker="CN-ZJ", facts=cert_facts(scheme="ORGANIC"), as_of=date(2025, 6, 1))
    assert outcome == Outcome(verdict=Verdict.RECOGNISED, agreement_id="JS-ZJ-2024", reasons=())


@pytest.mark.parametrize(
    ("as_of", "metadata"),
    [
        (
            date(2025, 12, 31),
            {"agreement": "YRD-2026", "effective_from": "2026-01-01", "effective_until": "2028-12-31"},
        ),
        (
            date(2029, 1, 1),
            {"agreement": "YRD-2026", "effective_from": "2026-01-01", "effective_until": "2028-12-31"},
        ),
    ],
)
def test_agreement_not_in_force(as_of: date, metadata: dict[str, str]) -> None:
    reason = only(record(as_of=as_of))
    assert reason.code == "AGREEMENT_NOT_IN_FORCE"
    assert reason.metadata == metadata
    assert reason.message == (
        f"agreement YRD-2026 is in force from 2026-01-01 until 2028-12-31, not on {as_of.isoformat()}"
    )


@pytest.mark.parametrize("as_of", [date(2026, 1, 1), date(2028, 12, 31)])
def test_agreement_in_force_on_its_first_and_last_day(as_of: date) -> None:
    assert record(as_of=as_of).agreement_id == "YRD-2026"


def test_open_ended_agreement_not_yet_in_force() -> None:
    reason = only(record(asker="CN-TJ", facts=cert_facts(issuer="CN-BJ"), as_of=AS_OF))
    assert reason.code == "AGREEMENT_NOT_IN_FORCE"
    assert reason.metadata == {"agreement": "BTH-2027", "effective_from": "2027-01-01"}
    assert reason.message == "agreement BTH-2027 is in force from 2027-01-01, not on 2026-06-01"
    assert record(asker="CN-TJ", facts=cert_facts(issuer="CN-BJ"), as_of=date(2040, 1, 1)).verdict is (
        Verdict.RECOGNISED
    )


def test_not_in_force_reported_only_for_covering_agreements() -> None:
    # In 2025 YRD-2026 is neither in force nor covering PT; only its scope is reported.
    facts = cert_facts(kind="pt_result", key="pt_result/CN-SH/X/1/2/铅", issuer="CN-SH", scheme=None)
    assert [
        (r.code, dict(r.metadata)) for r in record(asker="CN-AH", facts=facts, as_of=date(2025, 6, 1)).reasons
    ] == [("KIND_OUTSIDE_SCOPE", {"agreement": "YRD-2026", "kind": "pt_result"})]


def test_one_qualifying_agreement_silences_the_others() -> None:
    # YRD-2026 does not cover PT; JS-ZJ-2024 does and is in force.
    facts = cert_facts(kind="pt_result", key="pt_result/CN-JS/X/1/2/铅", scheme=None)
    outcome = record(asker="CN-ZJ", facts=facts, as_of=date(2025, 6, 1))
    assert outcome == Outcome(verdict=Verdict.RECOGNISED, agreement_id="JS-ZJ-2024", reasons=())


def test_first_qualifying_agreement_by_id() -> None:
    later = dataclasses.replace(YRD, id="AAA-2026")
    outcome = decide_record(asker="CN-SH", facts=cert_facts(), agreements=[YRD, later], as_of=AS_OF)
    assert outcome.agreement_id == "AAA-2026"


def test_every_binding_agreement_reports_when_none_qualifies() -> None:
    outcome = record(asker="CN-ZJ", facts=cert_facts(scheme="ORGANIC"))
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    assert [(r.code, dict(r.metadata)) for r in outcome.reasons] == [
        (
            "AGREEMENT_NOT_IN_FORCE",
            {"agreement": "JS-ZJ-2024", "effective_from": "2024-01-01", "effective_until": "2025-12-31"},
        ),
        ("SCHEME_OUTSIDE_SCOPE", {"agreement": "YRD-2026", "scheme": "ORGANIC"}),
    ]


@pytest.mark.parametrize(
    ("state", "code", "word"),
    [
        (CertState.SUSPENDED, "RECORD_SUSPENDED", "suspended (暂停)"),
        (CertState.REVOKED, "RECORD_REVOKED", "revoked (撤销)"),
        (CertState.WITHDRAWN, "RECORD_WITHDRAWN", "withdrawn (注销)"),
    ],
)
def test_record_not_valid_on_the_date(state: CertState, code: str, word: str) -> None:
    outcome = record(facts=cert_facts(state=state, state_since=date(2026, 3, 1)))
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    assert outcome.agreement_id is None
    reason = only(outcome)
    assert reason.code == code
    assert reason.metadata == {"since": "2026-03-01"}
    assert reason.message == f"on 2026-06-01, {CERT_KEY} was {word} (since 2026-03-01)"


def test_record_expired() -> None:
    reason = only(record(facts=cert_facts(state=CertState.EXPIRED, state_since=date(2026, 3, 2))))
    assert reason.code == "RECORD_EXPIRED"
    assert reason.metadata == {"since": "2026-03-02", "expired_on": "2026-03-01"}
    assert reason.message == (
        f"{CERT_KEY} had expired on 2026-06-01: valid until 2026-03-01, expired (过期) since 2026-03-02"
    )


def test_record_not_yet_valid() -> None:
    reason = only(record(facts=cert_facts(state=None, state_since=None)))
    assert reason.code == "RECORD_NOT_YET_VALID"
    assert reason.metadata == {"as_of": "2026-06-01"}
    assert reason.message == f"{CERT_KEY} had no version in effect on 2026-06-01"


@pytest.mark.parametrize(("revoked_at", "text"), [(date(2026, 5, 20), "2026-05-20"), (None, "")])
def test_issuer_key_revoked(revoked_at: date | None, text: str) -> None:
    reason = only(record(facts=cert_facts(issuer_key_revoked=True, issuer_key_revoked_at=revoked_at)))
    assert reason.code == "ISSUER_KEY_REVOKED"
    assert reason.metadata == {"issuer": "CN-JS", "revoked_at": text}
    assert ("on 2026-05-20" in reason.message) is (revoked_at is not None)


def test_report_with_accredited_lab_recognised() -> None:
    assert record(facts=report_facts()) == Outcome(
        verdict=Verdict.RECOGNISED, agreement_id="YRD-2026", reasons=()
    )


@pytest.mark.parametrize(
    ("lab", "number"),
    [
        (None, ""),
        (dataclasses.replace(LAB_OK, found=False, state_on_issue_date=None, since=None), "202310000102"),
    ],
)
def test_lab_qualification_unknown(lab: LabFacts | None, number: str) -> None:
    outcome = record(facts=report_facts(lab=lab))
    assert outcome.verdict is Verdict.UNKNOWN
    assert outcome.agreement_id is None
    reason = only(outcome)
    assert reason.code == "LAB_QUALIFICATION_UNKNOWN"
    assert reason.metadata == {"lab_cma_number": number}


@pytest.mark.parametrize(
    ("lab_state", "since", "shown"),
    [
        (CertState.SUSPENDED, date(2026, 1, 5), "SUSPENDED"),
        (CertState.REVOKED, date(2025, 11, 30), "REVOKED"),
        (CertState.WITHDRAWN, date(2025, 11, 30), "WITHDRAWN"),
        (CertState.EXPIRED, date(2026, 1, 1), "EXPIRED"),
        (None, None, "NOT_YET_VALID"),
    ],
)
def test_lab_not_accredited_on_the_issue_date(
    lab_state: CertState | None, since: date | None, shown: str
) -> None:
    lab = dataclasses.replace(LAB_OK, state_on_issue_date=lab_state, since=since)
    outcome = record(facts=report_facts(lab=lab))
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    reason = only(outcome)
    assert reason.code == "LAB_NOT_ACCREDITED"
    assert reason.metadata == {
        "lab_cma_number": "202310000102",
        "lab_state": shown,
        "since": since.isoformat() if since else "",
        "issue_date": "2026-02-10",
    }
    assert f"was {shown} on the report's issue date 2026-02-10" in reason.message


def test_lab_facts_ignored_for_other_kinds() -> None:
    assert record(facts=cert_facts(lab=None)).verdict is Verdict.RECOGNISED


def test_not_recognised_wins_over_unknown() -> None:
    facts = report_facts(lab=None, state=CertState.REVOKED, state_since=date(2026, 4, 1))
    outcome = record(facts=facts)
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    # The unknown lab is still reported: fixing the revocation would not be enough.
    assert outcome.codes == ("RECORD_REVOKED", "LAB_QUALIFICATION_UNKNOWN")


def test_no_agreement_also_wins_over_unknown() -> None:
    outcome = record(asker="CN-GD", facts=report_facts(lab=None))
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    assert outcome.codes == ("NO_AGREEMENT", "LAB_QUALIFICATION_UNKNOWN")


def test_every_reason_collected_in_a_stable_order() -> None:
    facts = report_facts(
        state=CertState.SUSPENDED,
        state_since=date(2026, 3, 1),
        issuer_key_revoked=True,
        issuer_key_revoked_at=date(2026, 5, 1),
        lab=dataclasses.replace(LAB_OK, state_on_issue_date=CertState.SUSPENDED),
    )
    outcome = record(as_of=date(2025, 6, 1), facts=facts)
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    assert outcome.codes == (
        "AGREEMENT_NOT_IN_FORCE",
        "RECORD_SUSPENDED",
        "LAB_NOT_ACCREDITED",
        "ISSUER_KEY_REVOKED",
    )
    assert record(as_of=date(2025, 6, 1), facts=facts) == outcome


# ---- assessors ----------------------------------------------------------------------

ELECTRICAL = Qualification(
    kind=QualificationKind.CMA_ASSESSOR,
    grade="高级评审员",
    fields=("电子电器", "建筑材料"),
    valid_from=date(2024, 1, 1),
    valid_until=date(2028, 12, 31),
)
FOOD_LAPSED = Qualification(
    kind=QualificationKind.CMA_ASSESSOR,
    grade="评审员",
    fields=("食品",),
    valid_from=date(2020, 1, 1),
    valid_until=date(2025, 12, 31),
)
FOOD_OLDER = dataclasses.replace(FOOD_LAPSED, valid_from=date(2015, 1, 1), valid_until=date(2019, 12, 31))


def assessor_facts(**overrides: Any) -> AssessorFacts:
    values: dict[str, Any] = {
        "registration_number": "CMA-JS-2019-0317",
        "home": "CN-JS",
        "state": CertState.VALID,
        "state_since": date(2024, 1, 1),
        "qualifications": (ELECTRICAL, FOOD_OLDER, FOOD_LAPSED),
        "issuer_key_revoked": False,
    }
    values.update(overrides)
    return AssessorFacts(**values)


def assessor(
    *,
    asker: str = "CN-SH",
    field: str = "电子电器",
    kind: QualificationKind | None = QualificationKind.CMA_ASSESSOR,
    facts: AssessorFacts | None = None,
    as_of: date = AS_OF,
    agreements: list[Agreement] | None = None,
) -> Outcome:
    return decide_assessor(
        asker=asker,
        facts=facts or assessor_facts(),
        field=field,
        kind=kind,
        agreements=AGREEMENTS if agreements is None else agreements,
        as_of=as_of,
    )


@pytest.mark.parametrize("kind", [QualificationKind.CMA_ASSESSOR, None])
def test_assessor_recognised(kind: QualificationKind | None) -> None:
    assert assessor(kind=kind) == Outcome(verdict=Verdict.RECOGNISED, agreement_id="YRD-2026", reasons=())


def test_assessor_not_found() -> None:
    outcome = decide_assessor(
        asker="CN-SH", facts=None, field="食品", kind=None, agreements=AGREEMENTS, as_of=AS_OF
    )
    assert outcome.verdict is Verdict.UNKNOWN
    assert outcome.codes == ("RECORD_NOT_FOUND",)


def test_assessor_field_outside_scope() -> None:
    reason = only(assessor(field="建筑材料"))
    assert reason.code == "FIELD_OUTSIDE_SCOPE"
    assert reason.metadata == {"agreement": "YRD-2026", "field": "建筑材料"}
    assert reason.message == "agreement YRD-2026 covers assessor fields 电子电器, 食品, not 建筑材料"


def test_assessor_own_home_needs_no_agreement() -> None:
    outcome = assessor(asker="CN-JS", field="建筑材料")
    assert outcome == Outcome(verdict=Verdict.RECOGNISED, agreement_id=None, reasons=())


def test_assessor_kind_outside_scope() -> None:
    narrow = dataclasses.replace(YRD, kinds=frozenset({"certificate_status"}))
    reason = only(assessor(agreements=[narrow]))
    assert reason.code == "KIND_OUTSIDE_SCOPE"
    assert reason.metadata == {"agreement": "YRD-2026", "kind": "assessor"}


def test_assessor_no_agreement() -> None:
    reason = only(assessor(asker="CN-BJ"))
    assert reason.code == "NO_AGREEMENT"
    assert reason.metadata == {"asker": "CN-BJ", "issuer": "CN-JS"}


def test_assessor_agreement_not_in_force() -> None:
    reason = only(assessor(as_of=date(2025, 6, 1)))
    assert reason.code == "AGREEMENT_NOT_IN_FORCE"
    assert reason.metadata["agreement"] == "YRD-2026"


def test_qualification_expired() -> None:
    outcome = assessor(field="食品")
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    reason = only(outcome)
    assert reason.code == "QUALIFICATION_EXPIRED"
    # The most recent of the two lapsed qualifications is named.
    assert reason.metadata == {
        "field": "食品",
        "kind": "CMA_ASSESSOR",
        "valid_from": "2020-01-01",
        "valid_until": "2025-12-31",
    }
    assert reason.message == (
        "the assessor's CMA_ASSESSOR qualification for 食品 (评审员) "
        "is valid until 2025-12-31, not on 2026-06-01"
    )


def test_qualification_valid_on_its_last_day() -> None:
    assert assessor(field="食品", as_of=date(2025, 12, 31), asker="CN-JS").verdict is Verdict.RECOGNISED


def test_qualification_not_yet_valid() -> None:
    future = dataclasses.replace(ELECTRICAL, valid_from=date(2026, 7, 1))
    reason = only(assessor(facts=assessor_facts(qualifications=(future,))))
    assert reason.code == "QUALIFICATION_EXPIRED"
    assert reason.metadata == {
        "field": "电子电器",
        "kind": "CMA_ASSESSOR",
        "valid_from": "2026-07-01",
        "valid_until": "2028-12-31",
    }
    assert "valid only from 2026-07-01" in reason.message


def test_a_valid_qualification_outweighs_a_lapsed_one() -> None:
    renewed = dataclasses.replace(FOOD_LAPSED, valid_from=date(2026, 1, 1), valid_until=date(2030, 12, 31))
    facts = assessor_facts(qualifications=(FOOD_LAPSED, renewed))
    assert assessor(field="食品", facts=facts).verdict is Verdict.RECOGNISED


@pytest.mark.parametrize(
    ("field", "kind", "kind_name", "text"),
    [
        ("机动车检测", QualificationKind.CMA_ASSESSOR, "CMA_ASSESSOR", " as CMA_ASSESSOR"),
        ("机动车检测", None, "ANY", ""),
        (
            "电子电器",
            QualificationKind.CERTIFICATION_AUDITOR,
            "CERTIFICATION_AUDITOR",
            " as CERTIFICATION_AUDITOR",
        ),
    ],
)
def test_field_not_qualified(field: str, kind: QualificationKind | None, kind_name: str, text: str) -> None:
    reason = only(assessor(asker="CN-JS", field=field, kind=kind))
    assert reason.code == "FIELD_NOT_QUALIFIED"
    assert reason.metadata == {"field": field, "kind": kind_name}
    assert reason.message == f"the assessor holds no qualification{text} for the field {field}"


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (CertState.SUSPENDED, "RECORD_SUSPENDED"),
        (CertState.REVOKED, "RECORD_REVOKED"),
        (CertState.WITHDRAWN, "RECORD_WITHDRAWN"),
    ],
)
def test_assessor_state(state: CertState, code: str) -> None:
    reason = only(assessor(facts=assessor_facts(state=state, state_since=date(2026, 2, 14))))
    assert reason.code == code
    assert reason.metadata == {"since": "2026-02-14"}
    assert "assessor/CN-JS/CMA-JS-2019-0317" in reason.message


def test_assessor_expired_record_and_qualification_both_reported() -> None:
    facts = assessor_facts(state=CertState.EXPIRED, state_since=date(2029, 1, 1))
    outcome = assessor(asker="CN-JS", facts=facts, as_of=date(2029, 3, 1))
    assert outcome.codes == ("RECORD_EXPIRED", "QUALIFICATION_EXPIRED")
    assert outcome.reasons[0].metadata == {"since": "2029-01-01", "expired_on": "2028-12-31"}
    assert outcome.reasons[1].metadata["valid_until"] == "2028-12-31"


def test_assessor_key_revoked() -> None:
    facts = assessor_facts(issuer_key_revoked=True, issuer_key_revoked_at=date(2026, 5, 1))
    reason = only(assessor(facts=facts))
    assert reason.code == "ISSUER_KEY_REVOKED"
    assert reason.metadata == {"issuer": "CN-JS", "revoked_at": "2026-05-01"}


def test_assessor_every_reason_collected() -> None:
    facts = assessor_facts(state=None, state_since=None, issuer_key_revoked=True)
    outcome = assessor(asker="CN-GD", field="特种设备", facts=facts)
    assert outcome.verdict is Verdict.NOT_RECOGNISED
    assert outcome.codes == (
        "NO_AGREEMENT",
        "RECORD_NOT_YET_VALID",
        "FIELD_NOT_QUALIFIED",
        "ISSUER_KEY_REVOKED",
    )
