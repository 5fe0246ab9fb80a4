"""Hong Kong and Macau labs and holders: validation, keys and recognition (pure, no network)."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pytest

from gateway.convert import record_from_proto, record_to_proto
from gateway.demo_fixtures import (
    DEMO_HK_LABS,
    demo_hk_accreditations,
    demo_hk_pt_results,
    demo_hk_test_reports,
    demo_pt_results,
    demo_spot_checks,
    demo_test_reports,
)
from gateway.domain.certificates import CertState, Scheme
from gateway.domain.errors import InvalidArgument
from gateway.domain.identifiers import check_hk_mo_holder_id, hkas_accreditation
from gateway.domain.kinds import MAX_KEY_LEN, PT_RESULT_KIND
from gateway.domain.recognition import (
    Agreement,
    LabFacts,
    RecordFacts,
    Verdict,
    decide_record,
)
from gateway.domain.records import MAX_ANALYTE_LEN, MAX_PT_LAB_CMA_LEN, MAX_SCHEME_ID_LEN, PtResult

REF = date(2026, 11, 1)


def submit(record: Any, **changes: Any) -> tuple[Any, list[str]]:
    """Validate ``record`` with ``changes`` applied to its wire form, as the gateway does."""
    _, msg = record_to_proto(record)
    for name, value in changes.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                setattr(getattr(msg, name), sub, v)
        else:
            setattr(msg, name, value)
    return record_from_proto(msg)


def refused(record: Any, **changes: Any) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        submit(record, **changes)
    return {v.field: v.description for v in info.value.violations}


# --- accreditation records ---------------------------------------------------------------


def test_hoklas_accreditation_is_published_by_hong_kong_under_its_registration_number():
    cert, warnings = submit(demo_hk_accreditations(today=REF)[0])
    assert (cert.scheme, cert.certificate_number, cert.issuer) == (Scheme.HOKLAS, "058", "CN-HK")
    assert cert.key == "certificate_status/HOKLAS/058"
    assert cert.holder.credit_code == "31527046" and warnings == []


@pytest.mark.parametrize("number", ["058", "850S", "001"])
def test_hkas_numbers_accepted(number: str):
    cert, _ = submit(demo_hk_accreditations(today=REF)[0], certificate_number=number)
    assert cert.certificate_number == number


@pytest.mark.parametrize("number", ["HOKLAS 058", "58", "0580", "058s", "L058"])
def test_hkas_numbers_refused_with_the_field_named(number: str):
    problems = refused(demo_hk_accreditations(today=REF)[0], certificate_number=number)
    assert "three digits and an optional letter" in problems["certificate_status.certificate_number"]


@pytest.mark.parametrize("scheme", [Scheme.HOKLAS, Scheme.HKCAS, Scheme.HKIAS])
def test_hkas_schemes_only_from_hong_kong(scheme: Scheme):
    base = demo_hk_accreditations(today=REF)[0]
    problems = refused(base, scheme=int(scheme), issuer="CN-GD", holder={"credit_code": ""})
    assert "published by CN-HK" in problems["certificate_status.issuer"]


@pytest.mark.parametrize(
    ("issuer", "code", "warns"),
    [
        ("CN-HK", "", False),  # the accreditation number identifies the holder
        ("CN-HK", "31527046", False),  # Business Registration number
        ("CN-MO", "12345", False),  # Macau commercial registration number
        ("CN-MO", "SO-12345", True),  # weakly sourced shape: accepted with a warning
    ],
)
def test_hong_kong_and_macau_holder_identifiers(issuer: str, code: str, warns: bool):
    assert (check_hk_mo_holder_id(issuer, code) is not None) is warns
    cert, warnings = submit(
        demo_hk_accreditations(today=REF)[0],
        scheme=int(Scheme.QMS) if issuer == "CN-MO" else int(Scheme.HOKLAS),
        issuer=issuer,
        holder={"credit_code": code},
    )
    assert cert.holder.credit_code == code
    assert bool(warnings) is warns


@pytest.mark.parametrize("code", ["3152704", "HK31527046", "3152704-6"])
def test_hong_kong_holder_identifier_refused(code: str):
    problems = refused(demo_hk_accreditations(today=REF)[0], holder={"credit_code": code})
    assert "Business Registration number (8 digits)" in problems["certificate_status.holder.credit_code"]


def test_mainland_holders_still_need_a_credit_code():
    cert = demo_hk_accreditations(today=REF)[0]
    problems = refused(cert, scheme=int(Scheme.QMS), issuer="CN-GD", holder={"credit_code": ""})
    assert problems["certificate_status.holder.credit_code"] == "required"
    problems = refused(cert, scheme=int(Scheme.QMS), issuer="CN-GD", holder={"credit_code": "31527046"})
    assert "18 characters" in problems["certificate_status.holder.credit_code"]


# --- test reports and PT results -----------------------------------------------------------


def test_hong_kong_report_without_cma_number_is_identified_by_its_accreditation():
    report, warnings = submit(demo_hk_test_reports(count=1, today=REF)[0])
    assert (report.lab_cma_number, report.accreditation_number, report.lab) == (
        "",
        "HOKLAS 058",
        "HOKLAS 058",
    )
    assert warnings == []


@pytest.mark.parametrize("issuer", ["CN-HK", "CN-MO"])
def test_hong_kong_and_macau_reports_need_the_accreditation_when_no_cma(issuer: str):
    problems = refused(demo_hk_test_reports(count=1, today=REF)[0], issuer=issuer, accreditation_number="")
    assert problems == {"test_report.accreditation_number": problems["test_report.accreditation_number"]}
    assert "required when lab_cma_number is empty" in problems["test_report.accreditation_number"]


def test_an_accreditation_standing_in_for_the_lab_must_be_a_known_shape():
    problems = refused(demo_hk_test_reports(count=1, today=REF)[0], accreditation_number="HK lab 58")
    assert "HKAS or CNAS accreditation id" in problems["test_report.accreditation_number"]
    # A Macau lab accredited by CNAS is a valid identity too.
    report, _ = submit(
        demo_hk_test_reports(count=1, today=REF)[0], issuer="CN-MO", accreditation_number="CNAS L9054"
    )
    assert report.lab == "CNAS L9054"


def test_mainland_reports_still_need_a_cma_number():
    problems = refused(demo_test_reports("CN-GD", count=1, today=REF)[0], lab_cma_number="")
    assert problems == {"test_report.lab_cma_number": "required"}
    # Even with an accreditation: the mainland rule is unchanged.
    problems = refused(
        demo_test_reports("CN-GD", count=1, today=REF)[0],
        lab_cma_number="",
        accreditation_number="HOKLAS 058",
    )
    assert problems == {"test_report.lab_cma_number": "required"}


def test_a_hong_kong_lab_with_a_cma_number_keeps_it_as_its_identity():
    report, _ = submit(demo_hk_test_reports(count=1, today=REF)[0], lab_cma_number="202619000116")
    assert report.lab == "202619000116"


def test_hong_kong_pt_result_keys_the_lab_by_accreditation():
    pt, warnings = submit(demo_hk_pt_results(count=1, today=REF)[0])
    assert isinstance(pt, PtResult) and warnings == []
    assert PT_RESULT_KIND.parse_key(pt.key)["lab"] == "HOKLAS 058"
    assert pt.key.startswith("pt_result/CN-HK/HKAS-PT-2026-03/2026-1/HOKLAS 058/")


def test_pt_results_need_a_lab_identity():
    problems = refused(demo_hk_pt_results(count=1, today=REF)[0], accreditation_number="")
    assert "required when lab_cma_number is empty" in problems["pt_result.accreditation_number"]
    problems = refused(demo_pt_results("CN-BJ", count=1, today=REF)[0], lab_cma_number="")
    assert problems == {"pt_result.lab_cma_number": "required"}


def test_the_longest_hong_kong_pt_key_fits():
    longest = dataclasses.replace(
        demo_hk_pt_results(count=1, today=REF)[0],
        issuer="ABCDE-ABCDE",
        scheme_id="S" * MAX_SCHEME_ID_LEN,
        round="R" * 20,
        accreditation_number="CNAS " + "L" + "1" * 5 + "-AB",
        analyte="A" * MAX_ANALYTE_LEN,
    )
    assert len(longest.accreditation_number) <= MAX_PT_LAB_CMA_LEN
    assert len(longest.key) <= MAX_KEY_LEN


def test_hkas_accreditation_names_the_record_to_check():
    assert hkas_accreditation("HOKLAS 058") == ("HOKLAS", "058")
    assert hkas_accreditation("HKIAS 850S") == ("HKIAS", "850S")
    assert hkas_accreditation("CNAS L1234") is None
    assert hkas_accreditation("HOKLAS058") is None
    assert [lab.accreditation_number for lab in DEMO_HK_LABS] == ["HOKLAS 058", "HOKLAS 212"]


# --- recognition ---------------------------------------------------------------------------

GBA = Agreement(
    id="GBA-2026-CEPA",
    name="GBA",
    parties=frozenset({"CN-GD", "CN-HK", "CN-MO"}),
    kinds=frozenset({"certificate_status", "test_report"}),
    schemes=frozenset({"CCC", "QMS"}),
    fields=frozenset(),
    effective_from=date(2026, 1, 1),
    effective_until=None,
)


def hk_report_facts(lab: LabFacts) -> RecordFacts:
    return RecordFacts(
        kind="test_report",
        key="test_report/CN-HK/HK-2026-000001",
        issuer="CN-HK",
        scheme=None,
        state=CertState.VALID,
        state_since=date(2026, 3, 1),
        issuer_key_revoked=False,
        issuer_key_revoked_at=None,
        lab=lab,
    )


def hk_lab(*, found: bool, state: CertState | None) -> LabFacts:
    return LabFacts(
        cma_number="",
        accreditation_number="HOKLAS 058",
        found=found,
        state_on_issue_date=state,
        since=date(2026, 2, 1) if found else None,
        issue_date=date(2026, 3, 1),
    )


def test_recognised_when_the_accreditation_was_valid():
    out = decide_record(
        asker="CN-GD",
        facts=hk_report_facts(hk_lab(found=True, state=CertState.VALID)),
        agreements=[GBA],
        as_of=REF,
    )
    assert (out.verdict, out.agreement_id, out.reasons) == (Verdict.RECOGNISED, "GBA-2026-CEPA", ())


def test_not_recognised_when_the_accreditation_was_suspended_and_the_reason_names_it():
    out = decide_record(
        asker="CN-GD",
        facts=hk_report_facts(hk_lab(found=True, state=CertState.SUSPENDED)),
        agreements=[GBA],
        as_of=REF,
    )
    assert out.verdict is Verdict.NOT_RECOGNISED and out.codes == ("LAB_NOT_ACCREDITED",)
    reason = out.reasons[0]
    assert "accreditation HOKLAS 058 was SUSPENDED" in reason.message and "CMA" not in reason.message
    assert reason.metadata["lab_accreditation_number"] == "HOKLAS 058"
    assert reason.metadata["checked"] == "ACCREDITATION"


def test_unknown_when_the_accreditation_is_not_held():
    out = decide_record(
        asker="CN-GD", facts=hk_report_facts(hk_lab(found=False, state=None)), agreements=[GBA], as_of=REF
    )
    assert out.verdict is Verdict.UNKNOWN and out.codes == ("LAB_QUALIFICATION_UNKNOWN",)
    assert out.reasons[0].message == "the gateway holds no accreditation HOKLAS 058"
    assert out.reasons[0].metadata == {"lab_accreditation_number": "HOKLAS 058", "checked": "ACCREDITATION"}


def test_mainland_lab_reasons_unchanged():
    lab = LabFacts(cma_number="202410000100", found=False, state_on_issue_date=None, since=None)
    out = decide_record(asker="CN-GD", facts=hk_report_facts(lab), agreements=[GBA], as_of=REF)
    assert out.reasons[0].message == "the gateway holds no CMA qualification (资质认定) 202410000100"
    assert out.reasons[0].metadata == {"lab_cma_number": "202410000100"}


def test_hong_kong_spot_check_targets_are_named_by_registration_number():
    check = dataclasses.replace(demo_spot_checks("CN-GD", count=1, today=REF)[0], issuer="CN-HK")
    record, warnings = submit(check, target_credit_code="31527046")
    assert (record.target_credit_code, warnings) == ("31527046", [])
    assert refused(check, target_credit_code="") == {"spot_check.target_credit_code": "required"}
    problems = refused(check, target_credit_code="3152")
    assert "Business Registration number" in problems["spot_check.target_credit_code"]
    # Mainland issuers: a credit code, as before.
    mainland = demo_spot_checks("CN-GD", count=1, today=REF)[0]
    assert (
        "18 characters" in refused(mainland, target_credit_code="31527046")["spot_check.target_credit_code"]
    )
