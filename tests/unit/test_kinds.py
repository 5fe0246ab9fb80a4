"""gateway.domain.kinds and its protobuf side: every kind round-trips, every key names its kind."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.convert import (
    KIND_FIELDS,
    KIND_NUMBERS,
    WIRE_KINDS,
    raw_record_key,
    record_from_proto,
    record_to_proto,
    wire_kind,
)
from gateway.demo_fixtures import (
    demo_assessors,
    demo_certificates,
    demo_hk_accreditations,
    demo_hk_pt_results,
    demo_hk_test_reports,
    demo_pt_results,
    demo_spot_checks,
    demo_test_reports,
)
from gateway.domain import kinds
from gateway.domain.kinds import (
    CERTIFICATE,
    PT_RESULT_KIND,
    Kind,
    kind_names,
    kind_of_key,
    kind_of_record,
)
from gateway.domain.recognition import RECORD_KINDS
from gateway.domain.records import Record
from gateway.pb import records_pb2

REF = date(2026, 11, 1)


def every_kind() -> list[Record]:
    """At least one record of each kind, Hong Kong ones (no CMA number) included."""
    return [
        *demo_certificates("CN-JS", count=3, today=REF),
        *demo_hk_accreditations(today=REF),
        *demo_assessors("CN-SN", count=2, today=REF),
        *demo_test_reports("CN-SH", count=2, today=REF),
        *demo_hk_test_reports(count=2, today=REF),
        *demo_pt_results("CN-BJ", count=8, today=REF),
        *demo_hk_pt_results(count=2, today=REF),
        *demo_spot_checks("CN-ZJ", count=2, today=REF),
    ]


def test_the_registry_matches_the_wire_contract():
    assert kind_names() == ("certificate_status", "assessor", "test_report", "pt_result", "spot_check")
    for kind in kinds.KINDS.values():
        # The RecordKind number and the Submission oneof field are the kind's own.
        assert records_pb2.RecordKind.Name(kind.number) == "RECORD_KIND_" + kind.name.upper()  # type: ignore[arg-type]
        assert records_pb2.Submission.DESCRIPTOR.fields_by_name[kind.name].message_type is (
            wire_kind(kind).proto_class.DESCRIPTOR
        )
        assert kinds.KINDS_BY_NUMBER[int(kind.number)] is kind
        assert kind.proto_class is wire_kind(kind).proto_class
    oneof = [f.name for f in records_pb2.Submission.DESCRIPTOR.oneofs_by_name["record"].fields]
    assert oneof == list(kind_names()) == list(WIRE_KINDS)
    assert dict(KIND_FIELDS) == {int(k.number): k.name for k in kinds.KINDS.values()}
    assert dict(KIND_NUMBERS) == {k.name: int(k.number) for k in kinds.KINDS.values()}
    assert frozenset(kind_names()) == RECORD_KINDS


@pytest.mark.parametrize("record", every_kind(), ids=lambda r: r.key[:50])
def test_every_kind_round_trips_domain_proto_domain(record: Record):
    field, msg = record_to_proto(record)
    kind = kind_of_record(record)
    assert field == kind.name and isinstance(msg, wire_kind(kind).proto_class)
    back, warnings = record_from_proto(msg)
    assert back == record and warnings == []
    # The key from the raw message is the validated record's key.
    assert raw_record_key(msg) == record.key


@pytest.mark.parametrize("record", every_kind(), ids=lambda r: r.key[:50])
def test_every_key_names_its_kind_and_parses_back(record: Record):
    kind = kind_of_key(record.key)
    assert kind is kind_of_record(record)
    assert isinstance(record, wire_kind(kind).record_class)
    parts = kind.parse_key(record.key)
    assert tuple(parts) == kind.key_parts
    assert kind.format_key(**parts) == record.key
    assert kind.issuer(record) == record.issuer
    assert len(record.key) <= kinds.MAX_KEY_LEN


def test_every_kind_has_a_record_in_the_fixtures():
    assert {kind_of_record(r).name for r in every_kind()} == set(kind_names())


def test_subject_and_validity_end_per_kind():
    cert = demo_certificates("CN-JS", count=1, today=REF)[0]
    assert CERTIFICATE.subject(cert) == cert.holder.credit_code
    assert CERTIFICATE.valid_until(cert) == cert.expiry_date
    assessor = demo_assessors("CN-SN", count=1, today=REF)[0]
    assert kind_of_record(assessor).valid_until(assessor) == max(
        q.valid_until for q in assessor.qualifications
    )
    assert kind_of_record(assessor).subject(assessor) == ""
    mainland = demo_pt_results("CN-BJ", count=1, today=REF)[0]
    assert PT_RESULT_KIND.subject(mainland) == mainland.lab_cma_number
    assert PT_RESULT_KIND.valid_until(mainland) is None
    hk = demo_hk_pt_results(count=1, today=REF)[0]
    assert PT_RESULT_KIND.subject(hk) == "HOKLAS 058"
    check = demo_spot_checks("CN-ZJ", count=1, today=REF)[0]
    assert kind_of_record(check).subject(check) == check.target_credit_code


def test_the_pt_analyte_keeps_its_slash_as_the_last_part():
    key = "pt_result/CN-BJ/CNCA-PT-2026-017/2026-1/202619000116/抗压强度 (N/mm²) in 混凝土试块"
    assert PT_RESULT_KIND.parse_key(key) == {
        "issuer": "CN-BJ",
        "scheme_id": "CNCA-PT-2026-017",
        "round": "2026-1",
        "lab": "202619000116",
        "analyte": "抗压强度 (N/mm²) in 混凝土试块",
    }
    assert PT_RESULT_KIND.parse_key("pt_result/CN-HK/S/R/HOKLAS 058/Pb")["lab"] == "HOKLAS 058"


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "unknown record kind"),
        ("certificate/CCC/1", "unknown record kind"),
        ("certificate_status/CCC", "certificate_status key is"),
        ("pt_result/CN-BJ/S/R/L", "pt_result key is"),
        ("test_report/CN-JS/", "test_report key is"),
    ],
)
def test_keys_that_name_no_kind_or_lack_parts_are_refused(key: str, why: str):
    with pytest.raises(ValueError, match=why):
        kind_of_key(key).parse_key(key)


def test_format_key_wants_exactly_the_kinds_parts():
    assert CERTIFICATE.format_key(scheme="CMA", certificate_number="202410000100") == (
        "certificate_status/CMA/202410000100"
    )
    with pytest.raises(ValueError, match="scheme, certificate_number"):
        CERTIFICATE.format_key(scheme="CMA")
    with pytest.raises(ValueError, match="not a test_report key"):
        kinds.TEST_REPORT_KIND.parse_key("spot_check/CN-JS/1")


def test_unknown_names_and_records_are_refused():
    with pytest.raises(ValueError, match="unknown record kind 'certificate'"):
        wire_kind("certificate")
    with pytest.raises(ValueError, match="unknown record kind"):
        kind_of_record(object())
    assert isinstance(kind_of_key("spot_check/CN-JS/JS-SC-1"), Kind)
