"""Protobuf <-> domain translation, shared by the servicers and the SDK.

The only place that knows both the wire messages and the domain dataclasses.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.domain.certificates import Certificate, build_certificate
from gateway.domain.errors import FieldViolation, InvalidArgument
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
