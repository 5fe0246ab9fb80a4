"""Protobuf <-> domain translation, shared by the servicers and the SDK.

The only place that knows both the wire messages and the domain dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.domain.certificates import Certificate, Scheme, build_certificate
from gateway.domain.errors import FieldViolation, InvalidArgument
from gateway.domain.kinds import (
    ASSESSOR,
    ASSESSOR_KIND,
    CERTIFICATE,
    CERTIFICATE_STATUS,
    MAX_KEY_LEN,
    PT_RESULT,
    PT_RESULT_KIND,
    SPOT_CHECK,
    SPOT_CHECK_KIND,
    TEST_REPORT,
    TEST_REPORT_KIND,
    Kind,
    bind_proto_class,
    kind_named,
    lab_identity,
)
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

AnyRecordMessage = (
    records_pb2.CertificateStatus
    | records_pb2.AssessorRecord
    | records_pb2.TestReport
    | records_pb2.PtResult
    | records_pb2.SpotCheck
)


@dataclass(frozen=True, slots=True)
class WireKind:
    """The protobuf side of one ``gateway.domain.kinds.Kind``: the message and the domain class.

    The Submission oneof field and the ``RecordKind`` number are the kind's own name and
    number (the proto was written to match), so they are not repeated here.
    """

    kind: Kind
    proto_class: type[AnyRecordMessage]
    record_class: type[Record]

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def field(self) -> str:
        return self.kind.name

    @property
    def number(self) -> int:
        return int(self.kind.number)


WIRE_KINDS: Mapping[str, WireKind] = {
    w.name: w
    for w in (
        WireKind(CERTIFICATE, records_pb2.CertificateStatus, Certificate),
        WireKind(ASSESSOR_KIND, records_pb2.AssessorRecord, Assessor),
        WireKind(TEST_REPORT_KIND, records_pb2.TestReport, TestReport),
        WireKind(PT_RESULT_KIND, records_pb2.PtResult, PtResult),
        WireKind(SPOT_CHECK_KIND, records_pb2.SpotCheck, SpotCheck),
    )
}
_BY_PROTO: Mapping[type, WireKind] = {w.proto_class: w for w in WIRE_KINDS.values()}
for _wire in WIRE_KINDS.values():
    # So that ``Kind.proto_class`` answers wherever a kind is at hand.
    bind_proto_class(_wire.name, _wire.proto_class)

# Submission oneof field by RecordKind number, and back; derived, kept for their callers.
KIND_FIELDS: Mapping[int, str] = {w.number: w.field for w in WIRE_KINDS.values()}
KIND_NUMBERS: Mapping[str, int] = {w.field: w.number for w in WIRE_KINDS.values()}


def wire_kind(kind: Kind | str) -> WireKind:
    """The protobuf side of a kind (``wire_kind(kind).proto_class``); ValueError when unknown."""
    return WIRE_KINDS[kind_named(kind).name if isinstance(kind, str) else kind.name]


def wire_kind_of(msg: AnyRecordMessage) -> WireKind:
    return _BY_PROTO[type(msg)]


def claimed_issuer(msg: AnyRecordMessage) -> str:
    """The participant the record says may publish it (an assessor's home)."""
    return str(getattr(msg, wire_kind_of(msg).kind.issuer_field))


_RAW_PART_LEN = 64
# A participant code is at most 11 characters; 16 is the width of the columns holding one.
_RAW_PARTICIPANT_LEN = 16


def _raw_part(msg: AnyRecordMessage, part: str) -> str:
    if part == "scheme":
        try:
            return Scheme(getattr(msg, part)).name
        except ValueError:
            return f"SCHEME_{getattr(msg, part)}"
    if part == "lab":
        return lab_identity(getattr(msg, "lab_cma_number"), getattr(msg, "accreditation_number"))  # noqa: B009
    return str(getattr(msg, part))


def raw_record_key(msg: AnyRecordMessage) -> str:
    """The record key from unvalidated fields, for logging a refused submission."""
    kind = wire_kind_of(msg).kind
    limits = {kind.issuer_field: _RAW_PARTICIPANT_LEN}
    key = kind.format_key(**{p: _raw_part(msg, p)[: limits.get(p, _RAW_PART_LEN)] for p in kind.key_parts})
    return key[:MAX_KEY_LEN]


def _when(msg: AnyRecordMessage, prefix: str) -> datetime | None:
    if not msg.HasField("effective_at"):
        return None
    return timestamp_to_datetime(msg.effective_at, field=f"{prefix}.effective_at")


def record_from_proto(
    msg: AnyRecordMessage, *, pt_boundaries: PtBoundaries = DEFAULT_PT_BOUNDARIES
) -> tuple[Record, list[str]]:
    """Validate and convert any record; raises InvalidArgument listing every bad field."""
    if isinstance(msg, records_pb2.CertificateStatus):
        return certificate_from_proto(msg, field_prefix=CERTIFICATE_STATUS)
    if isinstance(msg, records_pb2.AssessorRecord):
        return build_assessor(
            registration_number=msg.registration_number,
            name=msg.name,
            home=msg.home,
            qualifications=msg.qualifications,
            state=msg.state,
            reason=msg.reason,
            effective_at=_when(msg, ASSESSOR),
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
            effective_at=_when(msg, TEST_REPORT),
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
            effective_at=_when(msg, PT_RESULT),
            version=msg.version,
            boundaries=pt_boundaries,
            accreditation_number=msg.accreditation_number,
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
        effective_at=_when(msg, SPOT_CHECK),
        version=msg.version,
    )


def record_to_proto(record: Record) -> tuple[str, AnyRecordMessage]:
    """The Submission oneof field name and message for a domain record (SDK side)."""
    if isinstance(record, Certificate):
        return CERTIFICATE_STATUS, certificate_to_proto(record)
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
            accreditation_number=record.accreditation_number,
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
