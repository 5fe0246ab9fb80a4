"""Hong Kong and Macau labs through a real gateway: publish by accreditation, recognise by it.

A HOKLAS-accredited lab has no CMA number. CN-HK publishes the accreditation as a
certificate status (scheme HOKLAS, number "058"); reports and PT results name the lab by
"HOKLAS 058"; CheckRecognition checks that accreditation on the report's issue date.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta

import grpc
import pytest

from gateway.demo_fixtures import (
    demo_hk_accreditations,
    demo_hk_pt_results,
    demo_hk_test_reports,
    demo_test_reports,
)
from gateway.domain.certificates import CertState, Scheme
from gateway.pb import recognition_pb2, records_pb2

Code = grpc.StatusCode
REF = date(2026, 11, 1)
RECOGNISED = recognition_pb2.VERDICT_RECOGNISED
NOT_RECOGNISED = recognition_pb2.VERDICT_NOT_RECOGNISED
UNKNOWN = recognition_pb2.VERDICT_UNKNOWN


def accreditation():
    """HOKLAS 058, VALID since 900 days before REF."""
    return demo_hk_accreditations(today=REF)[0]


def hk_report():
    """A VALID CN-HK report by the HOKLAS 058 lab, with no CMA number."""
    return demo_hk_test_reports(count=1, today=REF)[0]


def reasons(decision) -> list[tuple[str, dict[str, str]]]:
    return [(r.code, dict(r.metadata)) for r in decision.reasons]


@pytest.fixture
def hk(client_for):
    return client_for("CN-HK")


def test_hong_kong_lab_records_are_published_and_read_back(hk, client_for):
    cert = accreditation()
    receipt = hk.publish(cert)
    assert receipt.record_key == "certificate_status/HOKLAS/058"
    view = client_for("CN-GD").get_certificate(Scheme.HOKLAS, "058")
    assert (view.certificate.holder.credit_code, view.certificate.issuing_body) == ("31527046", "HKAS")

    report = hk_report()
    assert hk.publish(report).record_key == report.key

    pt = demo_hk_pt_results(count=1, today=REF)[0]
    receipt = hk.publish(pt)
    assert receipt.record_key == pt.key and "/HOKLAS 058/" in pt.key
    stored = records_pb2.Submission.FromString(client_for("CN-GD").get_record(pt.key).envelope.payload)
    assert (stored.pt_result.lab_cma_number, stored.pt_result.accreditation_number) == ("", "HOKLAS 058")


def test_recognised_while_the_accreditation_is_valid_and_not_once_it_is_suspended(hk, client_for):
    report = hk_report()
    hk.publish(accreditation())
    hk.publish(report)
    gd = client_for("CN-GD")
    d = gd.check_recognition(record_key=report.key, as_of=REF.isoformat())
    assert (d.verdict, d.agreement_id, list(d.reasons)) == (RECOGNISED, "GBA-2026-CEPA", [])

    # HKAS suspends the lab, effective the day before the report was issued.
    suspended_from = report.issue_date - timedelta(days=1)
    hk.publish(
        dataclasses.replace(
            accreditation(),
            version=2,
            state=CertState.SUSPENDED,
            reason="Suspended pending reassessment",
            effective_at=datetime.combine(suspended_from, time(2), tzinfo=UTC),
        )
    )
    d = gd.check_recognition(record_key=report.key, as_of=REF.isoformat())
    assert d.verdict == NOT_RECOGNISED
    assert reasons(d) == [
        (
            "LAB_NOT_ACCREDITED",
            {
                "lab_accreditation_number": "HOKLAS 058",
                "checked": "ACCREDITATION",
                "lab_state": "SUSPENDED",
                "since": suspended_from.isoformat(),
                "issue_date": report.issue_date.isoformat(),
            },
        )
    ]
    assert "accreditation HOKLAS 058 was SUSPENDED" in d.reasons[0].message


def test_unknown_when_the_accreditation_was_never_published(hk, client_for):
    report = dataclasses.replace(
        hk_report(), report_number="HK-2026-000999", accreditation_number="HOKLAS 999"
    )
    hk.publish(report)
    d = client_for("CN-GD").check_recognition(record_key=report.key, as_of=REF.isoformat())
    assert d.verdict == UNKNOWN
    assert reasons(d) == [
        ("LAB_QUALIFICATION_UNKNOWN", {"lab_accreditation_number": "HOKLAS 999", "checked": "ACCREDITATION"})
    ]


def test_a_macau_lab_accredited_by_cnas_cannot_be_looked_up(client_for):
    mo = client_for("CN-MO")
    report = dataclasses.replace(
        hk_report(), issuer="CN-MO", report_number="MO-2026-000001", accreditation_number="CNAS L9054"
    )
    mo.publish(report)
    d = client_for("CN-GD").check_recognition(record_key=report.key, as_of=REF.isoformat())
    assert d.verdict == UNKNOWN
    assert [r.code for r in d.reasons] == ["LAB_QUALIFICATION_UNKNOWN"]
    assert d.reasons[0].message == "the gateway holds no accreditation CNAS L9054"


@pytest.mark.parametrize(
    ("record", "field"),
    [
        # A Hong Kong report with neither a CMA number nor an accreditation names no lab.
        (dataclasses.replace(hk_report(), accreditation_number=""), "test_report.accreditation_number"),
        # The accreditation stands in for the lab, so it must be one the gateway can look up.
        (dataclasses.replace(hk_report(), accreditation_number="lab 58"), "test_report.accreditation_number"),
        (
            dataclasses.replace(demo_hk_pt_results(count=1, today=REF)[0], accreditation_number=""),
            "pt_result.accreditation_number",
        ),
        # The programme is the scheme: the number alone is the HKAS registration number.
        (
            dataclasses.replace(accreditation(), certificate_number="HOKLAS 058"),
            "certificate_status.certificate_number",
        ),
        (
            dataclasses.replace(
                accreditation(), holder=dataclasses.replace(accreditation().holder, credit_code="3152704")
            ),
            "certificate_status.holder.credit_code",
        ),
    ],
    ids=["report-no-lab", "report-bad-accreditation", "pt-no-lab", "hkas-number", "br-number"],
)
def test_hong_kong_records_refused_with_the_field_named_and_nothing_stored(
    record, field, hk, client_for, refused, rpc_refusal
):
    refusal = refused(hk, hk.sign(record), Code.INVALID_ARGUMENT, "INVALID_FIELDS", (field,))
    assert field in refusal.message
    if "//" not in record.key:  # a PT key with no lab is no key at all
        rpc_refusal(lambda: client_for("CN-GD").get_record(record.key), Code.NOT_FOUND, "RECORD_NOT_FOUND")


def test_mainland_reports_still_need_a_cma_number(client_for, refused):
    gd = client_for("CN-GD")
    report = dataclasses.replace(
        demo_test_reports("CN-GD", count=1, today=REF)[0],
        lab_cma_number="",
        accreditation_number="CNAS L0195",
    )
    refused(gd, gd.sign(report), Code.INVALID_ARGUMENT, "INVALID_FIELDS", ("test_report.lab_cma_number",))


def test_only_hong_kong_publishes_hkas_accreditations(client_for, refused):
    gd = client_for("CN-GD")
    cert = dataclasses.replace(accreditation(), issuer="CN-GD")
    # A mainland issuer's holder needs a credit code, so the BR number is refused too.
    fields = ("certificate_status.issuer", "certificate_status.holder.credit_code")
    refusal = refused(gd, gd.sign(cert), Code.INVALID_ARGUMENT, "INVALID_FIELDS", fields)
    assert "published by CN-HK" in dict(refusal.field_violations)["certificate_status.issuer"]
