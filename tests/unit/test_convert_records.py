"""gateway.convert for every record kind: proto <-> domain, keys, issuers, kind names."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from gateway.convert import (
    KIND_FIELDS,
    KIND_NUMBERS,
    claimed_issuer,
    raw_record_key,
    record_from_proto,
    record_to_proto,
)
from gateway.demo_fixtures import (
    DEMO_PARTICIPANTS,
    demo_assessors,
    demo_certificates,
    demo_lab_cma_certificates,
    demo_pt_results,
    demo_spot_checks,
    demo_test_reports,
)
from gateway.domain.certificates import CertState
from gateway.domain.errors import InvalidArgument
from gateway.domain.records import PtBoundaries, PtClass
from gateway.pb import records_pb2

REF = date(2026, 11, 1)
MAKERS = {
    "assessor": lambda p: demo_assessors(p, count=6, today=REF),
    "test_report": lambda p: demo_test_reports(p, count=6, today=REF),
    "pt_result": lambda p: demo_pt_results(p, count=14, today=REF),
    "spot_check": lambda p: demo_spot_checks(p, count=6, today=REF),
    "certificate_status": lambda p: demo_certificates(p, count=8, today=REF),
}


def test_kind_names_are_the_submission_oneof_fields():
    oneof = records_pb2.Submission.DESCRIPTOR.oneofs_by_name["record"]
    assert set(KIND_FIELDS.values()) == {f.name for f in oneof.fields}
    for number, name in KIND_FIELDS.items():
        assert records_pb2.RecordKind.Name(number) == f"RECORD_KIND_{name.upper()}"
        assert KIND_NUMBERS[name] == number


@pytest.mark.parametrize("participant", DEMO_PARTICIPANTS)
@pytest.mark.parametrize("kind", MAKERS)
def test_demo_records_round_trip_through_proto(kind, participant):
    for record in MAKERS[kind](participant):
        field, msg = record_to_proto(record)
        assert field == kind
        back, warnings = record_from_proto(msg)
        assert back == record
        assert warnings == []
        assert raw_record_key(msg) == record.key
        assert claimed_issuer(msg) == record.issuer == participant
        # The wire form is what a Submission carries, byte for byte after a reparse.
        reparsed = type(msg).FromString(msg.SerializeToString())
        assert record_from_proto(reparsed)[0] == record


def test_lab_cma_certificates_round_trip_with_their_warning():
    for cert in demo_lab_cma_certificates("CN-JS", today=REF):
        _, msg = record_to_proto(cert)
        back, warnings = record_from_proto(msg)
        assert back == cert
        assert len(warnings) == 1 and warnings[0].startswith("certificate_status.issuing_body")
        assert raw_record_key(msg) == f"certificate_status/CMA/{cert.certificate_number}"


def test_pt_class_is_recomputed_not_carried():
    result = dataclasses.replace(
        demo_pt_results("CN-BJ", count=1, today=REF)[0],
        assigned_value=10.0,
        sigma=2.0,
        reported_value=14.0,
        z_score=2.0,
    )
    _, msg = record_to_proto(result)
    assert msg.classification == records_pb2.PT_CLASS_UNSPECIFIED
    msg.classification = records_pb2.PT_CLASS_UNSATISFACTORY
    assert record_from_proto(msg)[0].classification is PtClass.SATISFACTORY
    strict = PtBoundaries(satisfactory_inclusive=False)
    assert record_from_proto(msg, pt_boundaries=strict)[0].classification is PtClass.QUESTIONABLE


def test_pt_assigned_value_and_sigma_travel_together():
    bare = dataclasses.replace(
        demo_pt_results("CN-BJ", count=1, today=REF)[0], assigned_value=None, sigma=None
    )
    _, msg = record_to_proto(bare)
    assert not msg.HasField("assigned_value") and not msg.HasField("sigma")
    assert record_from_proto(msg)[0] == bare


def test_effective_at_is_read_back_in_utc():
    beijing = timezone(timedelta(hours=8))
    report = dataclasses.replace(
        demo_test_reports("CN-SH", count=1, today=REF)[0],
        effective_at=datetime(2026, 3, 1, 8, 30, tzinfo=beijing),
    )
    _, msg = record_to_proto(report)
    back, _ = record_from_proto(msg)
    assert back.effective_at == datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
    assert back.effective_at.tzinfo is UTC


@pytest.mark.parametrize("kind", ["assessor", "test_report", "pt_result", "spot_check"])
def test_missing_effective_at_is_named_under_the_kind(kind):
    record = MAKERS[kind]("CN-JS")[0]
    _, msg = record_to_proto(record)
    msg.ClearField("effective_at")
    with pytest.raises(InvalidArgument) as info:
        record_from_proto(msg)
    assert [v.field for v in info.value.violations] == [f"{kind}.effective_at"]


@pytest.mark.parametrize("kind", ["assessor", "test_report", "pt_result", "spot_check"])
def test_out_of_range_effective_at_is_invalid_argument(kind):
    _, msg = record_to_proto(MAKERS[kind]("CN-JS")[0])
    msg.effective_at.seconds = 253_402_300_800  # 10000-01-01
    with pytest.raises(InvalidArgument) as info:
        record_from_proto(msg)
    assert [v.field for v in info.value.violations] == [f"{kind}.effective_at"]


def test_raw_record_key_of_unvalidated_records_is_bounded():
    msg = records_pb2.TestReport(issuer="X" * 100, report_number="9" * 500)
    assert raw_record_key(msg) == f"test_report/{'X' * 16}/{'9' * 64}"
    pt = records_pb2.PtResult(
        issuer="CN-BJ", scheme_id="S" * 90, round="R", lab_cma_number="L", analyte="a/b"
    )
    assert raw_record_key(pt) == f"pt_result/CN-BJ/{'S' * 64}/R/L/a/b"
    huge = records_pb2.PtResult(issuer="CN-BJ", scheme_id="S" * 90, round="R" * 90, analyte="A" * 90)
    assert len(raw_record_key(huge)) == 200
    # A Hong Kong lab without a CMA number is keyed by its accreditation, as validated ones are.
    hk = records_pb2.PtResult(issuer="CN-HK", scheme_id="S", round="R", accreditation_number="HOKLAS 058")
    assert raw_record_key(hk) == "pt_result/CN-HK/S/R/HOKLAS 058/"
    assert raw_record_key(records_pb2.CertificateStatus(scheme=99, certificate_number="N")) == (
        "certificate_status/SCHEME_99/N"
    )
    assert claimed_issuer(records_pb2.AssessorRecord(home="CN-SN")) == "CN-SN"


def test_record_to_proto_refuses_other_objects():
    with pytest.raises(TypeError):
        record_to_proto(object())  # type: ignore[arg-type]


def test_final_states_survive_the_round_trip():
    check = dataclasses.replace(
        demo_spot_checks("CN-JS", count=1, today=REF)[0],
        state=CertState.WITHDRAWN,
        reason="发布错误",
        version=4,
    )
    _, msg = record_to_proto(check)
    assert (msg.state, msg.reason, msg.version) == (records_pb2.CERTIFICATE_STATE_WITHDRAWN, "发布错误", 4)
    assert record_from_proto(msg)[0] == check
