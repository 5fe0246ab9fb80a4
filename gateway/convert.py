"""Protobuf <-> domain translation, shared by the servicers and the SDK.

The only place that knows both the wire messages and the domain dataclasses.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.domain.certificates import Certificate, Scheme, build_certificate
from gateway.domain.errors import FieldViolation, InvalidArgument
from gateway.domain.records import (
    DEFAULT_PT_BOUNDARIES,
    Assessor,
    PtBoundaries,
    PtResult,
    Record,
    SpotCheck,
    TestReport,
    build_assessor,
    build_pt_result,
    build_spot_check,
    build_test_report,
)
from gateway.pb import records_pb2


def timestamp_to_datetime(ts: Timestamp, *, field: str) -> datetime:
    """A Timestamp as an aware UTC datetime; INVALID_ARGUMENT when outside years 1-9999."""
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"{field}: outside the range a timestamp may take (years 1-9999)",
            violations=[FieldViolation(field, "outside years 1-9999")],
        ) from None


def certificate_from_proto(
    msg: records_pb2.CertificateStatus, *, field_prefix: str
) -> tuple[Certificate, list[str]]:
    """Validate and convert; raises InvalidArgument listing every bad field."""
    effective_at = (
        timestamp_to_datetime(msg.effective_at, field=f"{field_prefix}.effective_at")
        if msg.HasField("effective_at")
        else None
    )
    return build_certificate(
        certificate_number=msg.certificate_number,
        scheme=msg.scheme,
        issuing_body=msg.issuing_body,
        issuer=msg.issuer,
        holder_name=msg.holder.name,
        holder_credit_code=msg.holder.credit_code,
        scope=msg.scope,
        state=msg.state,
        reason=msg.reason,
        effective_at=effective_at,
        issue_date=msg.issue_date,
        expiry_date=msg.expiry_date,
        version=msg.version,
        field_prefix=field_prefix,
    )


def certificate_to_proto(cert: Certificate) -> records_pb2.CertificateStatus:
    msg = records_pb2.CertificateStatus(
        certificate_number=cert.certificate_number,
        scheme=int(cert.scheme),  # type: ignore[arg-type]
        issuing_body=cert.issuing_body,
        issuer=cert.issuer,
        holder=records_pb2.Holder(name=cert.holder.name, credit_code=cert.holder.credit_code),
        scope=cert.scope,
        state=int(cert.state),  # type: ignore[arg-type]
        reason=cert.reason,
        issue_date=cert.issue_date.isoformat(),
        expiry_date=cert.expiry_date.isoformat(),
        version=cert.version,
    )
    msg.effective_at.FromDatetime(cert.effective_at)
    return msg


def us_to_datetime(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def parse_iso_date(value: str) -> date:
    return date.fromisoformat(value)


# ---- every record kind ------------------------------------------------------------------

# Submission oneof field by RecordKind number; the kind names double as record-key prefixes.
KIND_FIELDS = {
    records_pb2.RECORD_KIND_CERTIFICATE_STATUS: "certificate_status",
    records_pb2.RECORD_KIND_ASSESSOR: "assessor",
    records_pb2.RECORD_KIND_TEST_REPORT: "test_report",
    records_pb2.RECORD_KIND_PT_RESULT: "pt_result",
    records_pb2.RECORD_KIND_SPOT_CHECK: "spot_check",
}
KIND_NUMBERS = {name: number for number, name in KIND_FIELDS.items()}

AnyRecordMessage = (
    records_pb2.CertificateStatus
    | records_pb2.AssessorRecord
    | records_pb2.TestReport
    | records_pb2.PtResult
    | records_pb2.SpotCheck
)


def claimed_issuer(msg: AnyRecordMessage) -> str:
    """The participant the record says may publish it (an assessor's home)."""
    return msg.home if isinstance(msg, records_pb2.AssessorRecord) else msg.issuer


def raw_record_key(msg: AnyRecordMessage) -> str:
    """The record key from unvalidated fields, for logging a refused submission."""
    if isinstance(msg, records_pb2.CertificateStatus):
        try:
            scheme = Scheme(msg.scheme).name
        except ValueError:
            scheme = f"SCHEME_{msg.scheme}"
        return f"certificate_status/{scheme}/{msg.certificate_number[:64]}"
    if isinstance(msg, records_pb2.AssessorRecord):
        return f"assessor/{msg.home[:16]}/{msg.registration_number[:64]}"
    if isinstance(msg, records_pb2.TestReport):
        return f"test_report/{msg.issuer[:16]}/{msg.report_number[:64]}"
    if isinstance(msg, records_pb2.PtResult):
        parts = (msg.scheme_id[:40], msg.round[:20], msg.lab_cma_number[:40], msg.analyte[:60])
        return f"pt_result/{msg.issuer[:16]}/" + "/".join(parts)
    return f"spot_check/{msg.issuer[:16]}/{msg.check_id[:64]}"


def _when(msg: AnyRecordMessage, prefix: str) -> datetime | None:
    if not msg.HasField("effective_at"):
        return None
    return timestamp_to_datetime(msg.effective_at, field=f"{prefix}.effective_at")


def record_from_proto(
    msg: AnyRecordMessage, *, pt_boundaries: PtBoundaries = DEFAULT_PT_BOUNDARIES
) -> tuple[Record, list[str]]:
    """Validate and convert any record; raises InvalidArgument listing every bad field."""
    if isinstance(msg, records_pb2.CertificateStatus):
        return certificate_from_proto(msg, field_prefix="certificate_status")
    if isinstance(msg, records_pb2.AssessorRecord):
        return build_assessor(
            registration_number=msg.registration_number,
            name=msg.name,
            home=msg.home,
            qualifications=msg.qualifications,
            state=msg.state,
            reason=msg.reason,
            effective_at=_when(msg, "assessor"),
            evaluations=msg.evaluations,
            version=msg.version,
        )
    if isinstance(msg, records_pb2.TestReport):
        return build_test_report(
            report_number=msg.report_number,
            issuer=msg.issuer,
            lab_name=msg.lab_name,
            lab_cma_number=msg.lab_cma_number,
            accreditation_number=msg.accreditation_number,
            product=msg.product,
            standard=msg.standard,
            conclusion=msg.conclusion,
            issue_date=msg.issue_date,
            state=msg.state,
            reason=msg.reason,
            effective_at=_when(msg, "test_report"),
            version=msg.version,
        )
    if isinstance(msg, records_pb2.PtResult):
        return build_pt_result(
            issuer=msg.issuer,
            scheme_id=msg.scheme_id,
            round=msg.round,
            lab_name=msg.lab_name,
            lab_cma_number=msg.lab_cma_number,
            analyte=msg.analyte,
            assigned_value=msg.assigned_value if msg.HasField("assigned_value") else None,
            sigma=msg.sigma if msg.HasField("sigma") else None,
            reported_value=msg.reported_value,
            z_score=msg.z_score,
            report_date=msg.report_date,
            state=msg.state,
            reason=msg.reason,
            effective_at=_when(msg, "pt_result"),
            version=msg.version,
            boundaries=pt_boundaries,
        )
    return build_spot_check(
        check_id=msg.check_id,
        issuer=msg.issuer,
        target_name=msg.target_name,
        target_credit_code=msg.target_credit_code,
        check_date=msg.check_date,
        items=list(msg.items),
        outcome=msg.outcome,
        follow_up=msg.follow_up,
        state=msg.state,
        reason=msg.reason,
        effective_at=_when(msg, "spot_check"),
        version=msg.version,
    )


def record_to_proto(record: Record) -> tuple[str, AnyRecordMessage]:
    """The Submission oneof field name and message for a domain record (SDK side)."""
    if isinstance(record, Certificate):
        return "certificate_status", certificate_to_proto(record)
    msg: AnyRecordMessage
    if isinstance(record, Assessor):
        msg = records_pb2.AssessorRecord(
            registration_number=record.registration_number,
            name=record.name,
            home=record.home,
            qualifications=[
                records_pb2.AssessorQualification(
                    kind=int(q.kind),  # type: ignore[arg-type]
                    grade=q.grade,
                    fields=q.fields,
                    valid_from=q.valid_from.isoformat(),
                    valid_until=q.valid_until.isoformat(),
                )
                for q in record.qualifications
            ],
            evaluations=[
                records_pb2.Evaluation(
                    date=e.date.isoformat(), evaluator=e.evaluator, result=e.result, note=e.note
                )
                for e in record.evaluations
            ],
        )
    elif isinstance(record, TestReport):
        msg = records_pb2.TestReport(
            report_number=record.report_number,
            issuer=record.issuer,
            lab_name=record.lab_name,
            lab_cma_number=record.lab_cma_number,
            accreditation_number=record.accreditation_number,
            product=record.product,
            standard=record.standard,
            conclusion=int(record.conclusion),  # type: ignore[arg-type]
            issue_date=record.issue_date.isoformat(),
        )
    elif isinstance(record, PtResult):
        msg = records_pb2.PtResult(
            issuer=record.issuer,
            scheme_id=record.scheme_id,
            round=record.round,
            lab_name=record.lab_name,
            lab_cma_number=record.lab_cma_number,
            analyte=record.analyte,
            reported_value=record.reported_value,
            z_score=record.z_score,
            report_date=record.report_date.isoformat(),
        )
        if record.assigned_value is not None and record.sigma is not None:
            msg.assigned_value = record.assigned_value
            msg.sigma = record.sigma
    elif isinstance(record, SpotCheck):
        msg = records_pb2.SpotCheck(
            check_id=record.check_id,
            issuer=record.issuer,
            target_name=record.target_name,
            target_credit_code=record.target_credit_code,
            check_date=record.check_date.isoformat(),
            items=record.items,
            outcome=int(record.outcome),  # type: ignore[arg-type]
            follow_up=record.follow_up,
        )
    else:
        raise TypeError(f"not a record: {type(record).__name__}")
    msg.state = int(record.state)  # type: ignore[assignment]
    msg.reason = record.reason
    msg.version = record.version
    msg.effective_at.FromDatetime(record.effective_at)
    return record.kind, msg
