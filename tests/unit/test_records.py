from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.domain.certificates import FINAL_STATES, MAX_VERSION, TRANSITIONS, CertState
from gateway.domain.errors import FailedPrecondition, InvalidArgument
from gateway.domain.identifiers import USCC_ALPHABET, make_credit_code, uscc_check_char
from gateway.domain.records import (
    DEFAULT_PT_BOUNDARIES,
    MAX_ANALYTE_LEN,
    MAX_KEY_LEN,
    MAX_PT_LAB_CMA_LEN,
    MAX_ROUND_LEN,
    MAX_SCHEME_ID_LEN,
    Assessor,
    Conclusion,
    Evaluation,
    PtBoundaries,
    PtClass,
    PtResult,
    Qualification,
    QualificationKind,
    Record,
    SpotCheck,
    SpotCheckOutcome,
    StateOn,
    SubmittedEvaluation,
    SubmittedQualification,
    TestReport,
    build_assessor,
    build_pt_result,
    build_spot_check,
    build_test_report,
    check_record_transition,
    classify_z,
    state_on,
)
from gateway.pb import records_pb2

BEIJING = timezone(timedelta(hours=8))
T0 = datetime(2025, 3, 1, tzinfo=UTC)
TARGET_CODE = make_credit_code(division="320505", org_code8="MA1MXP4D")
# A Fujian-style code whose check character fails, accepted as the known legacy form.
_LEGACY_FIRST17 = "91350100M000100Y4"
LEGACY_CODE = _LEGACY_FIRST17 + next(c for c in USCC_ALPHABET if c != uscc_check_char(_LEGACY_FIRST17))


def qual(**overrides: Any) -> SubmittedQualification:
    values: dict[str, Any] = {
        "kind": 1,
        "grade": "高级评审员",
        "fields": ("电子电器", "食品"),
        "valid_from": "2024-01-01",
        "valid_until": "2028-12-31",
    }
    values.update(overrides)
    return SubmittedQualification(**values)


def evaluation(**overrides: Any) -> SubmittedEvaluation:
    values: dict[str, Any] = {
        "date": "2025-01-10",
        "evaluator": "江苏省市场监督管理局",
        "result": "合格",
        "note": "",
    }
    values.update(overrides)
    return SubmittedEvaluation(**values)


def assessor_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "registration_number": "CMA-JS-2019-0317",
        "name": "王建国",
        "home": "CN-JS",
        "qualifications": [qual()],
        "state": 1,
        "reason": "",
        "effective_at": T0,
        "evaluations": [evaluation()],
        "version": 1,
    }
    kwargs.update(overrides)
    return kwargs


def report_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "report_number": "SH-2026-000123",
        "issuer": "CN-SH",
        "lab_name": "上海市质量监督检验技术研究院（示例）",
        "lab_cma_number": "202409000100",
        "accreditation_number": "CNAS L0158",
        "product": "便携式计算机",
        "standard": "GB 4943.1-2022",
        "conclusion": 1,
        "issue_date": "2026-02-10",
        "state": 1,
        "reason": "",
        "effective_at": T0,
        "version": 1,
    }
    kwargs.update(overrides)
    return kwargs


def pt_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "issuer": "CN-BJ",
        "scheme_id": "CNCA-PT-2026-017",
        "round": "2026-1",
        "lab_name": "北京市产品质量监督检验研究院（示例）",
        "lab_cma_number": "202401000108",
        "analyte": "铅 (Pb) in 大米",
        "assigned_value": 0.182,
        "sigma": 0.018,
        "reported_value": 0.2157,
        "z_score": 1.87,
        "report_date": "2026-04-20",
        "state": 1,
        "reason": "",
        "effective_at": T0,
        "version": 1,
    }
    kwargs.update(overrides)
    return kwargs


def spot_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "check_id": "JS-SC-2026-0042",
        "issuer": "CN-JS",
        "target_name": "苏州明德电子科技有限公司",
        "target_credit_code": TARGET_CODE,
        "check_date": "2026-03-18",
        "items": ["认证证书有效性", "CCC 标志使用"],
        "outcome": 2,
        "follow_up": "责令整改",
        "state": 1,
        "reason": "",
        "effective_at": T0,
        "version": 1,
    }
    kwargs.update(overrides)
    return kwargs


BUILDERS: dict[str, tuple[Callable[..., tuple[Any, list[str]]], Callable[..., dict[str, Any]]]] = {
    "assessor": (build_assessor, assessor_kwargs),
    "test_report": (build_test_report, report_kwargs),
    "pt_result": (build_pt_result, pt_kwargs),
    "spot_check": (build_spot_check, spot_kwargs),
}


def violations_of(kind: str, **overrides: Any) -> dict[str, str]:
    build, kwargs = BUILDERS[kind]
    with pytest.raises(InvalidArgument) as exc:
        build(**kwargs(**overrides))
    assert exc.value.reason == "INVALID_FIELDS"
    return {v.field: v.description for v in exc.value.violations}


def build(kind: str, **overrides: Any) -> Any:
    builder, kwargs = BUILDERS[kind]
    record, warnings = builder(**kwargs(**overrides))
    assert warnings == []
    return record


# ---- enums and model ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "proto", "prefix"),
    [
        (QualificationKind, records_pb2.QualificationKind, "QUALIFICATION_KIND_"),
        (Conclusion, records_pb2.Conclusion, "CONCLUSION_"),
        (PtClass, records_pb2.PtClass, "PT_CLASS_"),
        (SpotCheckOutcome, records_pb2.SpotCheckOutcome, "SPOT_CHECK_OUTCOME_"),
    ],
)
def test_enum_values_match_the_contract(cls: Any, proto: Any, prefix: str) -> None:
    contract = {name.removeprefix(prefix): value for name, value in proto.items() if value != 0}
    assert {m.name: m.value for m in cls} == contract


def test_valid_assessor_builds() -> None:
    record, warnings = build_assessor(
        **assessor_kwargs(
            qualifications=[
                qual(),
                qual(kind=3, grade="技术专家", fields=["建筑材料"], valid_until="2030-06-30"),
            ],
            effective_at=datetime(2025, 3, 1, 8, tzinfo=BEIJING),
        )
    )
    assert warnings == []
    assert record == Assessor(
        registration_number="CMA-JS-2019-0317",
        name="王建国",
        home="CN-JS",
        qualifications=(
            Qualification(
                kind=QualificationKind.CMA_ASSESSOR,
                grade="高级评审员",
                fields=("电子电器", "食品"),
                valid_from=date(2024, 1, 1),
                valid_until=date(2028, 12, 31),
            ),
            Qualification(
                kind=QualificationKind.TECHNICAL_EXPERT,
                grade="技术专家",
                fields=("建筑材料",),
                valid_from=date(2024, 1, 1),
                valid_until=date(2030, 6, 30),
            ),
        ),
        state=CertState.VALID,
        reason="",
        effective_at=T0,
        evaluations=(
            Evaluation(date=date(2025, 1, 10), evaluator="江苏省市场监督管理局", result="合格", note=""),
        ),
        version=1,
    )
    assert record.effective_at.utcoffset() == timedelta(0)
    assert record.key == "assessor/CN-JS/CMA-JS-2019-0317"
    assert record.issuer == "CN-JS"
    assert record.kind == "assessor"
    assert record.valid_until == date(2030, 6, 30)
    assert record.qualifications[0].valid_on(date(2028, 12, 31))
    assert not record.qualifications[0].valid_on(date(2029, 1, 1))
    assert not record.qualifications[0].valid_on(date(2023, 12, 31))


def test_assessor_without_evaluations_allowed() -> None:
    assert build("assessor", evaluations=[]).evaluations == ()


def test_valid_test_report_builds() -> None:
    record = build("test_report")
    assert record == TestReport(
        report_number="SH-2026-000123",
        issuer="CN-SH",
        lab_name="上海市质量监督检验技术研究院（示例）",
        lab_cma_number="202409000100",
        accreditation_number="CNAS L0158",
        product="便携式计算机",
        standard="GB 4943.1-2022",
        conclusion=Conclusion.CONFORMING,
        issue_date=date(2026, 2, 10),
        state=CertState.VALID,
        reason="",
        effective_at=T0,
        version=1,
    )
    assert (record.key, record.kind, record.valid_until) == (
        "test_report/CN-SH/SH-2026-000123",
        "test_report",
        None,
    )


def test_test_report_accreditation_optional() -> None:
    assert build("test_report", accreditation_number="").accreditation_number == ""


def test_test_report_unusual_accreditation_warns() -> None:
    _, warnings = build_test_report(**report_kwargs(accreditation_number="IAS TL-123"))
    assert warnings == [
        "test_report.accreditation_number: 'IAS TL-123' is not a CNAS/HKAS accreditation id "
        "(e.g. 'CNAS L1234', 'HOKLAS 058'); accepted"
    ]


def test_valid_pt_result_builds() -> None:
    record = build("pt_result")
    assert record == PtResult(
        issuer="CN-BJ",
        scheme_id="CNCA-PT-2026-017",
        round="2026-1",
        lab_name="北京市产品质量监督检验研究院（示例）",
        lab_cma_number="202401000108",
        analyte="铅 (Pb) in 大米",
        assigned_value=0.182,
        sigma=0.018,
        reported_value=0.2157,
        z_score=1.87,
        report_date=date(2026, 4, 20),
        state=CertState.VALID,
        reason="",
        effective_at=T0,
        version=1,
        classification=PtClass.SATISFACTORY,
    )
    assert record.key == "pt_result/CN-BJ/CNCA-PT-2026-017/2026-1/202401000108/铅 (Pb) in 大米"
    assert (record.kind, record.valid_until) == ("pt_result", None)


def test_pt_analyte_may_hold_a_slash() -> None:
    record = build("pt_result", analyte="抗压强度 (N/mm²) in 混凝土试块")
    assert record.key.endswith("/202401000108/抗压强度 (N/mm²) in 混凝土试块")


def test_valid_spot_check_builds() -> None:
    record = build("spot_check")
    assert record == SpotCheck(
        check_id="JS-SC-2026-0042",
        issuer="CN-JS",
        target_name="苏州明德电子科技有限公司",
        target_credit_code=TARGET_CODE,
        check_date=date(2026, 3, 18),
        items=("认证证书有效性", "CCC 标志使用"),
        outcome=SpotCheckOutcome.NONCONFORMING,
        follow_up="责令整改",
        state=CertState.VALID,
        reason="",
        effective_at=T0,
        version=1,
    )
    assert (record.key, record.kind, record.valid_until) == (
        "spot_check/CN-JS/JS-SC-2026-0042",
        "spot_check",
        None,
    )


def test_spot_check_legacy_credit_code_warning_passes_through() -> None:
    record, warnings = build_spot_check(**spot_kwargs(target_credit_code=LEGACY_CODE))
    assert record.target_credit_code == LEGACY_CODE
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"spot_check.target_credit_code: credit code {LEGACY_CODE}: check character"
    )


def test_every_kind_is_a_record() -> None:
    records: list[Record] = [build(kind) for kind in BUILDERS]
    assert [r.key.split("/", 1)[0] for r in records] == list(BUILDERS)
    assert [r.issuer for r in records] == ["CN-JS", "CN-SH", "CN-BJ", "CN-JS"]


def test_longest_pt_key_fits() -> None:
    record = build(
        "pt_result",
        issuer="ABCDE-FGHIJ",
        scheme_id="S" * MAX_SCHEME_ID_LEN,
        round="R" * MAX_ROUND_LEN,
        lab_cma_number="1" * MAX_PT_LAB_CMA_LEN,
        analyte="铅" * MAX_ANALYTE_LEN,
    )
    assert len(record.key) == MAX_KEY_LEN


def test_longest_other_keys_fit() -> None:
    long = "9" * 64
    keys = [
        build("assessor", home="ABCDE-FGHIJ", registration_number=long).key,
        build("test_report", issuer="ABCDE-FGHIJ", report_number=long).key,
        build("spot_check", issuer="ABCDE-FGHIJ", check_id=long).key,
    ]
    assert max(len(k) for k in keys) <= MAX_KEY_LEN


def test_records_are_frozen() -> None:
    record = build("test_report")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.state = CertState.REVOKED


# ---- violations ---------------------------------------------------------------------

# Rules every kind shares: (overrides, field, description).
COMMON_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"state": 0}, "state", "required"),
    ({"state": 9}, "state", "unknown enum value 9"),
    ({"state": 2, "reason": ""}, "reason", "required when state is SUSPENDED"),
    ({"state": 3, "reason": " "}, "reason", "required when state is REVOKED"),
    ({"state": 4, "reason": "\n"}, "reason", "required when state is WITHDRAWN"),
    ({"reason": "因" * 1001}, "reason", "must be at most 1000 characters, got 1001"),
    ({"reason": "a\x07"}, "reason", "control character U+0007 at position 2"),
    ({"effective_at": None}, "effective_at", "required"),
    ({"effective_at": datetime(2025, 3, 1)}, "effective_at", "must carry a time zone"),
    ({"version": 0}, "version", "must be at least 1"),
    ({"version": MAX_VERSION + 1}, "version", f"must be at most {MAX_VERSION}"),
]
EXPIRED_MESSAGES = {
    "assessor": "EXPIRED is derived from the qualifications' valid_until",
    "test_report": "EXPIRED is never published, and test reports do not expire",
    "pt_result": "EXPIRED is never published, and PT results do not expire",
    "spot_check": "EXPIRED is never published, and spot checks do not expire",
}


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize(("overrides", "field", "description"), COMMON_CASES)
def test_common_violation(kind: str, overrides: dict[str, Any], field: str, description: str) -> None:
    found = violations_of(kind, **overrides)
    assert list(found) == [f"{kind}.{field}"]
    assert found[f"{kind}.{field}"].startswith(description)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_expired_state_refused(kind: str) -> None:
    found = violations_of(kind, state=5)
    assert found == {f"{kind}.state": f"{EXPIRED_MESSAGES[kind]}; publish VALID/SUSPENDED/REVOKED/WITHDRAWN"}


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("state", [CertState.SUSPENDED, CertState.REVOKED, CertState.WITHDRAWN])
def test_reasoned_states_build(kind: str, state: CertState) -> None:
    assert build(kind, state=int(state), reason="复检不合格").state is state


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_field_prefix(kind: str) -> None:
    builder, kwargs = BUILDERS[kind]
    with pytest.raises(InvalidArgument) as exc:
        builder(**kwargs(version=0), field_prefix="submission.record")
    assert [v.field for v in exc.value.violations] == ["submission.record.version"]


ISSUER_FIELD = {"assessor": "home", "test_report": "issuer", "pt_result": "issuer", "spot_check": "issuer"}


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize(
    ("value", "description"),
    [("", "required"), ("js", "must be a participant code such as CN-JS, got 'js'"), ("CN-JS\n", "must be")],
)
def test_participant_code(kind: str, value: str, description: str) -> None:
    field = ISSUER_FIELD[kind]
    found = violations_of(kind, **{field: value})
    assert list(found) == [f"{kind}.{field}"]
    assert found[f"{kind}.{field}"].startswith(description)


KEY_PART_CASES: list[tuple[str, str, int]] = [
    ("assessor", "registration_number", 64),
    ("test_report", "report_number", 64),
    ("pt_result", "scheme_id", MAX_SCHEME_ID_LEN),
    ("pt_result", "round", MAX_ROUND_LEN),
    ("pt_result", "lab_cma_number", MAX_PT_LAB_CMA_LEN),
    ("spot_check", "check_id", 64),
]


@pytest.mark.parametrize(("kind", "field", "max_len"), KEY_PART_CASES)
@pytest.mark.parametrize(
    ("value", "description"),
    [
        ("", "required"),
        (None, "must be at most {max_len} characters, got {over}"),
        ("A/B", "must not contain '/': it separates the parts of the record key"),
        ("A B", "character U+0020 SPACE at position 2 is not allowed"),
        ("A\u200bB", "character U+200B ZERO WIDTH SPACE at position 2 is not allowed"),
    ],
)
def test_key_part_rules(kind: str, field: str, max_len: int, value: str | None, description: str) -> None:
    value = "9" * (max_len + 1) if value is None else value
    found = violations_of(kind, **{field: value})
    assert list(found) == [f"{kind}.{field}"]
    assert found[f"{kind}.{field}"].startswith(description.format(max_len=max_len, over=max_len + 1))


def test_report_lab_cma_number_may_hold_a_slash() -> None:
    # Not part of the report's key, and CMA number shapes are too weakly sourced to refuse.
    assert build("test_report", lab_cma_number="(2021)国认监认字/001号").lab_cma_number.endswith("001号")


A = "assessor."
Q = "assessor.qualifications[0]."
E = "assessor.evaluations[0]."


@pytest.mark.parametrize(
    ("overrides", "field", "description"),
    [
        ({"name": ""}, A + "name", "required"),
        ({"name": "名" * 201}, A + "name", "must be at most 200 characters, got 201"),
        ({"name": "王\u202e建国"}, A + "name", "control character U+202E at position 2"),
        ({"qualifications": []}, A + "qualifications", "at least one qualification is required"),
        ({"qualifications": [qual()] * 51}, A + "qualifications", "at most 50 allowed, got 51"),
        ({"qualifications": [qual(kind=0)]}, Q + "kind", "required"),
        ({"qualifications": [qual(kind=7)]}, Q + "kind", "unknown enum value 7"),
        ({"qualifications": [qual(grade="")]}, Q + "grade", "required"),
        ({"qualifications": [qual(grade="级" * 41)]}, Q + "grade", "must be at most 40 characters, got 41"),
        ({"qualifications": [qual(fields=[])]}, Q + "fields", "at least one technical field is required"),
        ({"qualifications": [qual(fields=["食品"] * 51)]}, Q + "fields", "at most 50 allowed, got 51"),
        ({"qualifications": [qual(fields=["食品", ""])]}, Q + "fields[1]", "required"),
        (
            {"qualifications": [qual(fields=[" 食品"])]},
            Q + "fields[0]",
            "must not start or end with whitespace",
        ),
        ({"qualifications": [qual(fields=["食品\t"])]}, Q + "fields[0]", "control character U+0009"),
        ({"qualifications": [qual(fields=["食" * 41])]}, Q + "fields[0]", "must be at most 40 characters"),
        ({"qualifications": [qual(valid_from="")]}, Q + "valid_from", "required"),
        (
            {"qualifications": [qual(valid_from="2024/01/01")]},
            Q + "valid_from",
            "must be a date as YYYY-MM-DD",
        ),
        ({"qualifications": [qual(valid_until="2025-02-29")]}, Q + "valid_until", "2025-02-29 is not a real"),
        (
            {"qualifications": [qual(valid_until="2023-12-31")]},
            Q + "valid_until",
            "must not be before valid_from (2024-01-01)",
        ),
        ({"evaluations": [evaluation()] * 201}, A + "evaluations", "at most 200 allowed, got 201"),
        ({"evaluations": [evaluation(date="")]}, E + "date", "required"),
        (
            {"evaluations": [evaluation(date="2025-13-01")]},
            E + "date",
            "2025-13-01 is not a real calendar date",
        ),
        ({"evaluations": [evaluation(evaluator="")]}, E + "evaluator", "required"),
        ({"evaluations": [evaluation(result="")]}, E + "result", "required"),
        ({"evaluations": [evaluation(result="合" * 41)]}, E + "result", "must be at most 40 characters"),
        ({"evaluations": [evaluation(note="注" * 1001)]}, E + "note", "must be at most 1000 characters"),
        ({"evaluations": [evaluation(note="a\x00")]}, E + "note", "control character U+0000"),
    ],
)
def test_assessor_violation(overrides: dict[str, Any], field: str, description: str) -> None:
    found = violations_of("assessor", **overrides)
    assert list(found) == [field]
    assert found[field].startswith(description)


def test_assessor_multiline_note_allowed() -> None:
    record = build("assessor", evaluations=[evaluation(note="第一行\n第二行")])
    assert record.evaluations[0].note == "第一行\n第二行"


def test_every_assessor_violation_collected_at_once() -> None:
    found = violations_of(
        "assessor",
        registration_number="",
        name="",
        home="js",
        qualifications=[qual(), qual(kind=0, grade="", fields=["", " x"], valid_from="x", valid_until="")],
        state=2,
        reason="",
        effective_at=None,
        evaluations=[evaluation(), evaluation(date="soon", evaluator="", result="")],
        version=0,
    )
    assert list(found) == [
        "assessor.registration_number",
        "assessor.name",
        "assessor.home",
        "assessor.qualifications[1].kind",
        "assessor.qualifications[1].grade",
        "assessor.qualifications[1].fields[0]",
        "assessor.qualifications[1].fields[1]",
        "assessor.qualifications[1].valid_from",
        "assessor.qualifications[1].valid_until",
        "assessor.evaluations[1].date",
        "assessor.evaluations[1].evaluator",
        "assessor.evaluations[1].result",
        "assessor.reason",
        "assessor.effective_at",
        "assessor.version",
    ]


R = "test_report."


@pytest.mark.parametrize(
    ("overrides", "field", "description"),
    [
        ({"lab_name": ""}, R + "lab_name", "required"),
        ({"lab_name": "实" * 201}, R + "lab_name", "must be at most 200 characters"),
        ({"lab_cma_number": ""}, R + "lab_cma_number", "required"),
        ({"lab_cma_number": "1" * 65}, R + "lab_cma_number", "must be at most 64 characters, got 65"),
        ({"lab_cma_number": "2024 09"}, R + "lab_cma_number", "character U+0020 SPACE at position 5"),
        ({"accreditation_number": "C" * 65}, R + "accreditation_number", "must be at most 64 characters"),
        ({"accreditation_number": "CNAS\x00L1"}, R + "accreditation_number", "control character U+0000"),
        ({"product": ""}, R + "product", "required"),
        ({"product": "品" * 201}, R + "product", "must be at most 200 characters"),
        ({"standard": ""}, R + "standard", "required"),
        ({"standard": "G" * 201}, R + "standard", "must be at most 200 characters"),
        ({"conclusion": 0}, R + "conclusion", "required"),
        ({"conclusion": 4}, R + "conclusion", "unknown enum value 4"),
        ({"issue_date": ""}, R + "issue_date", "required"),
        ({"issue_date": "2026-2-10"}, R + "issue_date", "must be a date as YYYY-MM-DD, got '2026-2-10'"),
        ({"issue_date": "2026-02-30"}, R + "issue_date", "2026-02-30 is not a real calendar date"),
    ],
)
def test_test_report_violation(overrides: dict[str, Any], field: str, description: str) -> None:
    found = violations_of("test_report", **overrides)
    assert list(found) == [field]
    assert found[field].startswith(description)


def test_every_test_report_violation_collected_at_once() -> None:
    found = violations_of(
        "test_report",
        report_number="",
        issuer="",
        lab_name="",
        lab_cma_number="",
        accreditation_number="\x01",
        product="",
        standard="",
        conclusion=0,
        issue_date="",
        state=0,
        effective_at=None,
        version=0,
    )
    assert list(found) == [
        R + f
        for f in (
            "report_number",
            "issuer",
            "lab_name",
            "lab_cma_number",
            "accreditation_number",
            "product",
            "standard",
            "conclusion",
            "issue_date",
            "state",
            "effective_at",
            "version",
        )
    ]


PT = "pt_result."


@pytest.mark.parametrize(
    ("overrides", "field", "description"),
    [
        ({"lab_name": ""}, PT + "lab_name", "required"),
        ({"analyte": ""}, PT + "analyte", "required"),
        (
            {"analyte": "铅" * (MAX_ANALYTE_LEN + 1)},
            PT + "analyte",
            f"must be at most {MAX_ANALYTE_LEN} characters",
        ),
        ({"analyte": "铅 in 大米 "}, PT + "analyte", "must not start or end with whitespace"),
        ({"analyte": "铅\nin 大米"}, PT + "analyte", "control character U+000A"),
        ({"report_date": ""}, PT + "report_date", "required"),
        ({"report_date": "2026-04-31"}, PT + "report_date", "2026-04-31 is not a real calendar date"),
        ({"sigma": 0.0}, PT + "sigma", "must be greater than 0, got 0.0"),
        ({"sigma": -0.018}, PT + "sigma", "must be greater than 0, got -0.018"),
        ({"sigma": None}, PT + "sigma", "assigned_value and sigma must be given together or not at all"),
        ({"assigned_value": None}, PT + "assigned_value", "assigned_value and sigma must be given together"),
        ({"z_score": 1.90}, PT + "z_score", "does not match the values"),
        (
            {"sigma": 1e-320},
            PT + "sigma",
            "too small: (reported_value - assigned_value) / sigma is not a finite",
        ),
    ],
)
def test_pt_violation(overrides: dict[str, Any], field: str, description: str) -> None:
    found = violations_of("pt_result", **overrides)
    assert list(found) == [field]
    assert found[field].startswith(description)


@pytest.mark.parametrize("field", ["assigned_value", "sigma", "reported_value", "z_score"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_pt_non_finite_numbers_refused(field: str, value: float) -> None:
    found = violations_of("pt_result", **{field: value})
    # A bad number makes the z check impossible, so it is the only violation.
    assert found == {PT + field: f"must be a finite number, got {value}"}


def test_pt_z_mismatch_names_the_z_the_values_give() -> None:
    found = violations_of("pt_result", z_score=-1.87)
    assert found == {
        PT + "z_score": "does not match the values: (reported_value - assigned_value) / sigma = "
        "(0.2157 - 0.182) / 0.018 = 1.8722, got -1.87 (tolerance 0.01)"
    }


@pytest.mark.parametrize(
    ("z", "ok"), [(1.8722, True), (1.863, True), (1.881, True), (1.86, False), (1.89, False)]
)
def test_pt_z_tolerance_default(z: float, ok: bool) -> None:
    if ok:
        assert build("pt_result", z_score=z).z_score == z
    else:
        assert list(violations_of("pt_result", z_score=z)) == [PT + "z_score"]


def test_pt_z_tolerance_configurable() -> None:
    record, _ = build_pt_result(**pt_kwargs(z_score=1.80), z_tolerance=0.1)
    assert record.z_score == 1.80
    with pytest.raises(InvalidArgument):
        build_pt_result(**pt_kwargs(z_score=1.87), z_tolerance=0.0)


@pytest.mark.parametrize("tolerance", [-0.01, math.nan, math.inf])
def test_pt_bad_tolerance_is_a_programming_error(tolerance: float) -> None:
    with pytest.raises(ValueError, match="z_tolerance"):
        build_pt_result(**pt_kwargs(), z_tolerance=tolerance)


def test_pt_without_assigned_value_and_sigma_takes_z_as_given() -> None:
    record = build("pt_result", assigned_value=None, sigma=None, z_score=-3.4)
    assert (record.assigned_value, record.sigma, record.z_score) == (None, None, -3.4)
    assert record.classification is PtClass.UNSATISFACTORY


def test_pt_classified_with_the_boundaries_given() -> None:
    kwargs = pt_kwargs(assigned_value=None, sigma=None, z_score=2.5)
    assert build_pt_result(**kwargs)[0].classification is PtClass.QUESTIONABLE
    lenient = PtBoundaries(satisfactory_max=2.5, unsatisfactory_min=3.5)
    assert build_pt_result(**kwargs, boundaries=lenient)[0].classification is PtClass.SATISFACTORY


def test_every_pt_violation_collected_at_once() -> None:
    found = violations_of(
        "pt_result",
        issuer="",
        scheme_id="",
        round="a/b",
        lab_name="",
        lab_cma_number="",
        analyte="",
        assigned_value=math.nan,
        sigma=-1.0,
        reported_value=math.inf,
        z_score=math.nan,
        report_date="",
        state=5,
        effective_at=None,
        version=0,
    )
    assert list(found) == [
        PT + f
        for f in (
            "issuer",
            "scheme_id",
            "round",
            "lab_name",
            "lab_cma_number",
            "analyte",
            "assigned_value",
            "sigma",
            "reported_value",
            "z_score",
            "report_date",
            "state",
            "effective_at",
            "version",
        )
    ]


S = "spot_check."


@pytest.mark.parametrize(
    ("overrides", "field", "description"),
    [
        ({"target_name": ""}, S + "target_name", "required"),
        ({"target_name": "名" * 201}, S + "target_name", "must be at most 200 characters"),
        ({"target_credit_code": ""}, S + "target_credit_code", "required"),
        ({"target_credit_code": TARGET_CODE[:-1]}, S + "target_credit_code", "must be 18 characters, got 17"),
        (
            {"target_credit_code": "914403001922038217"},
            S + "target_credit_code",
            "check character (position 18)",
        ),
        ({"check_date": ""}, S + "check_date", "required"),
        ({"check_date": "2026-03-32"}, S + "check_date", "2026-03-32 is not a real calendar date"),
        ({"items": []}, S + "items", "at least one checked item is required"),
        ({"items": ["项"] * 101}, S + "items", "at most 100 allowed, got 101"),
        ({"items": ["认证证书有效性", ""]}, S + "items[1]", "required"),
        ({"items": ["项" * 201]}, S + "items[0]", "must be at most 200 characters"),
        ({"outcome": 0}, S + "outcome", "required"),
        ({"outcome": 3}, S + "outcome", "unknown enum value 3"),
        ({"follow_up": "改" * 1001}, S + "follow_up", "must be at most 1000 characters"),
        ({"follow_up": "a\u2029b"}, S + "follow_up", "control character U+2029"),
    ],
)
def test_spot_check_violation(overrides: dict[str, Any], field: str, description: str) -> None:
    found = violations_of("spot_check", **overrides)
    assert list(found) == [field]
    assert found[field].startswith(description)


def test_spot_check_follow_up_optional_and_multiline() -> None:
    assert build("spot_check", outcome=1, follow_up="").follow_up == ""
    assert build("spot_check", follow_up="责令整改\n30 日内复查").follow_up == "责令整改\n30 日内复查"


def test_every_spot_check_violation_collected_at_once() -> None:
    found = violations_of(
        "spot_check",
        check_id="",
        issuer="",
        target_name="",
        target_credit_code="x",
        check_date="",
        items=[],
        outcome=0,
        follow_up="\x00",
        state=0,
        effective_at=datetime(2026, 1, 1),
        version=-1,
    )
    assert list(found) == [
        S + f
        for f in (
            "check_id",
            "issuer",
            "target_name",
            "target_credit_code",
            "check_date",
            "items",
            "outcome",
            "follow_up",
            "state",
            "effective_at",
            "version",
        )
    ]


# ---- PT classification --------------------------------------------------------------


@pytest.mark.parametrize(
    ("z", "expected"),
    [
        (0.0, PtClass.SATISFACTORY),
        (1.99, PtClass.SATISFACTORY),
        (2.0, PtClass.SATISFACTORY),
        (-2.0, PtClass.SATISFACTORY),
        (2.0000001, PtClass.QUESTIONABLE),
        (-2.5, PtClass.QUESTIONABLE),
        (2.9999999, PtClass.QUESTIONABLE),
        (3.0, PtClass.UNSATISFACTORY),
        (-3.0, PtClass.UNSATISFACTORY),
        (7.5, PtClass.UNSATISFACTORY),
    ],
)
def test_classify_z_iso_13528_default(z: float, expected: PtClass) -> None:
    assert classify_z(z) is expected
    assert classify_z(z, DEFAULT_PT_BOUNDARIES) is expected


@pytest.mark.parametrize(
    ("satisfactory_inclusive", "unsatisfactory_inclusive", "at_2", "at_3"),
    [
        (True, True, PtClass.SATISFACTORY, PtClass.UNSATISFACTORY),
        (False, True, PtClass.QUESTIONABLE, PtClass.UNSATISFACTORY),
        (True, False, PtClass.SATISFACTORY, PtClass.QUESTIONABLE),
        (False, False, PtClass.QUESTIONABLE, PtClass.QUESTIONABLE),
    ],
)
def test_classify_z_boundary_inclusivity(
    satisfactory_inclusive: bool, unsatisfactory_inclusive: bool, at_2: PtClass, at_3: PtClass
) -> None:
    b = PtBoundaries(
        satisfactory_inclusive=satisfactory_inclusive, unsatisfactory_inclusive=unsatisfactory_inclusive
    )
    assert [classify_z(z, b) for z in (2.0, -2.0)] == [at_2, at_2]
    assert [classify_z(z, b) for z in (3.0, -3.0)] == [at_3, at_3]
    # Away from the boundaries inclusivity changes nothing.
    assert [classify_z(z, b) for z in (1.999, 2.001, 2.999, 3.001)] == [
        PtClass.SATISFACTORY,
        PtClass.QUESTIONABLE,
        PtClass.QUESTIONABLE,
        PtClass.UNSATISFACTORY,
    ]


def test_pt_builder_classifies_at_boundaries_with_both_settings() -> None:
    exclusive = PtBoundaries(satisfactory_inclusive=False, unsatisfactory_inclusive=False)
    # 0.146 and 0.236 give z = -2.0 and 3.0 exactly (to float precision) from 0.182 / 0.018.
    for reported, z, default_class, exclusive_class in (
        (0.146, -2.0, PtClass.SATISFACTORY, PtClass.QUESTIONABLE),
        (0.236, 3.0, PtClass.UNSATISFACTORY, PtClass.QUESTIONABLE),
    ):
        kwargs = pt_kwargs(reported_value=reported, z_score=z)
        assert build_pt_result(**kwargs)[0].classification is default_class
        assert build_pt_result(**kwargs, boundaries=exclusive)[0].classification is exclusive_class


def test_equal_boundaries_allowed_when_one_side_is_exclusive() -> None:
    b = PtBoundaries(satisfactory_max=2.0, unsatisfactory_min=2.0, unsatisfactory_inclusive=False)
    assert [classify_z(z, b) for z in (2.0, 2.01)] == [PtClass.SATISFACTORY, PtClass.UNSATISFACTORY]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"satisfactory_max": 0.0}, "0 < satisfactory_max <= unsatisfactory_min"),
        ({"satisfactory_max": -1.0}, "0 < satisfactory_max"),
        ({"satisfactory_max": 3.5}, "0 < satisfactory_max <= unsatisfactory_min"),
        ({"satisfactory_max": math.nan}, "finite"),
        ({"unsatisfactory_min": math.inf}, "finite"),
        ({"satisfactory_max": 3.0}, "both satisfactory and unsatisfactory"),
    ],
)
def test_bad_boundaries_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PtBoundaries(**kwargs)


@pytest.mark.parametrize("z", [math.nan, math.inf])
def test_classify_non_finite_refused(z: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        classify_z(z)


# ---- life cycle ---------------------------------------------------------------------

STATES = [CertState.VALID, CertState.SUSPENDED, CertState.REVOKED, CertState.WITHDRAWN]


def version_of(kind: str, state: CertState, version: int) -> Any:
    return dataclasses.replace(
        build(kind), state=state, reason="原因" if state is not CertState.VALID else "", version=version
    )


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize(("before", "after"), list(itertools.product(STATES, STATES)))
def test_transitions_for_every_kind(kind: str, before: CertState, after: CertState) -> None:
    previous = version_of(kind, before, 1)
    new = version_of(kind, after, 2)
    legal = before not in FINAL_STATES or after is before
    assert legal == (after in TRANSITIONS[before])
    if legal:
        check_record_transition(previous, new)
    else:
        with pytest.raises(FailedPrecondition) as exc:
            check_record_transition(previous, new)
        assert exc.value.reason == "ILLEGAL_TRANSITION"
        assert exc.value.metadata == {"from_state": before.name, "to_state": after.name}
        assert new.key in exc.value.message


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("submitted", [1, 2])
def test_stale_version_for_every_kind(kind: str, submitted: int) -> None:
    with pytest.raises(FailedPrecondition) as exc:
        check_record_transition(
            version_of(kind, CertState.VALID, 2), version_of(kind, CertState.VALID, submitted)
        )
    assert exc.value.reason == "STALE_VERSION"
    assert exc.value.metadata == {"stored_version": "2", "submitted_version": str(submitted)}


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("state", STATES)
def test_first_publication_in_any_state(kind: str, state: CertState) -> None:
    check_record_transition(None, version_of(kind, state, 1))


# ---- state on a date ----------------------------------------------------------------


def at(d: date, hour: int = 9) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=BEIJING)


V1 = date(2025, 1, 10)
SUSPENDED_ON = date(2026, 3, 1)
RESTORED_ON = date(2026, 4, 15)
UNTIL = date(2027, 1, 9)
HISTORY = [
    (at(V1), CertState.VALID),
    (at(SUSPENDED_ON), CertState.SUSPENDED),
    (at(RESTORED_ON), CertState.VALID),
]


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (V1 - timedelta(days=1), StateOn(state=None, since=None)),
        (V1, StateOn(state=CertState.VALID, since=V1)),
        (SUSPENDED_ON - timedelta(days=1), StateOn(state=CertState.VALID, since=V1)),
        (SUSPENDED_ON, StateOn(state=CertState.SUSPENDED, since=SUSPENDED_ON)),
        (RESTORED_ON - timedelta(days=1), StateOn(state=CertState.SUSPENDED, since=SUSPENDED_ON)),
        (RESTORED_ON, StateOn(state=CertState.VALID, since=RESTORED_ON)),
        (UNTIL, StateOn(state=CertState.VALID, since=RESTORED_ON)),
        (UNTIL + timedelta(days=1), StateOn(state=CertState.EXPIRED, since=UNTIL + timedelta(days=1))),
        (date(2030, 1, 1), StateOn(state=CertState.EXPIRED, since=UNTIL + timedelta(days=1))),
    ],
)
def test_state_on_boundaries(on: date, expected: StateOn) -> None:
    assert state_on(HISTORY, on, UNTIL) == expected


def test_state_on_is_a_pair() -> None:
    state, since = state_on(HISTORY, SUSPENDED_ON, UNTIL)
    assert (state, since) == (CertState.SUSPENDED, SUSPENDED_ON)


def test_state_on_without_end_never_expires() -> None:
    assert state_on(HISTORY, date(2099, 1, 1), None) == StateOn(state=CertState.VALID, since=RESTORED_ON)


def test_suspended_record_expires_too() -> None:
    history = HISTORY[:2]
    assert state_on(history, UNTIL, UNTIL).state is CertState.SUSPENDED
    assert state_on(history, UNTIL + timedelta(days=1), UNTIL) == StateOn(
        state=CertState.EXPIRED, since=UNTIL + timedelta(days=1)
    )


@pytest.mark.parametrize("final", [CertState.REVOKED, CertState.WITHDRAWN])
def test_final_states_do_not_turn_expired(final: CertState) -> None:
    history = [*HISTORY, (at(date(2026, 6, 1)), final)]
    assert state_on(history, date(2030, 1, 1), UNTIL) == StateOn(state=final, since=date(2026, 6, 1))


def test_effective_day_is_the_china_calendar_day() -> None:
    # 2026-02-28 17:00 UTC is 2026-03-01 01:00 in Beijing: in force on 1 March, not before.
    history = [(at(V1), CertState.VALID), (datetime(2026, 2, 28, 17, tzinfo=UTC), CertState.SUSPENDED)]
    assert state_on(history, date(2026, 2, 28), None).state is CertState.VALID
    assert state_on(history, date(2026, 3, 1), None) == StateOn(state=CertState.SUSPENDED, since=SUSPENDED_ON)
    assert state_on(history, date(2026, 2, 28), None, tz=UTC).state is CertState.SUSPENDED


def test_republished_state_keeps_its_since() -> None:
    history = [*HISTORY[:2], (at(date(2026, 3, 10)), CertState.SUSPENDED)]
    assert state_on(history, date(2026, 3, 20), None) == StateOn(
        state=CertState.SUSPENDED, since=SUSPENDED_ON
    )


def test_newest_version_wins_even_if_backdated() -> None:
    # Version 3 corrects version 2: the suspension should have taken effect in February.
    history = [*HISTORY[:2], (at(date(2026, 2, 1)), CertState.REVOKED)]
    assert state_on(history, date(2026, 3, 5), None) == StateOn(
        state=CertState.REVOKED, since=date(2026, 2, 1)
    )
    # Before the correction's day, only version 1 was in effect.
    assert state_on(history, date(2026, 1, 31), None) == StateOn(state=CertState.VALID, since=V1)


def test_state_on_empty_history_is_not_yet_valid() -> None:
    assert state_on([], date(2026, 1, 1), UNTIL) == StateOn(state=None, since=None)


def test_state_on_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="time zone"):
        state_on([(datetime(2026, 1, 1), CertState.VALID)], date(2026, 1, 2), None)


def test_assessor_valid_until_drives_expiry() -> None:
    record = build("assessor")
    history = [(record.effective_at, record.state)]
    assert state_on(history, date(2028, 12, 31), record.valid_until).state is CertState.VALID
    assert state_on(history, date(2029, 1, 1), record.valid_until).state is CertState.EXPIRED
