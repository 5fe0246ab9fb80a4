"""Which table holds a record's current state, and its row there.

Certificates have their own table (it backs GetCertificate and QueryCertificates);
every other kind shares ``records``. Both are keyed by the record key for the
writer's stateful checks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table

from gateway.domain.certificates import Certificate
from gateway.domain.kinds import kind_of_record
from gateway.domain.records import Record
from gateway.store.schema import certificates, records


def us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def current_row(record: Record, log_index: int) -> tuple[Table, dict[str, Any]]:
    """The table and the full row of the record's current state."""
    common = {
        "record_key": record.key,
        "issuer": record.issuer,
        "state": int(record.state),
        "version": record.version,
        "effective_at_us": us(record.effective_at),
        "log_index": log_index,
    }
    if isinstance(record, Certificate):
        return certificates, {
            **common,
            "scheme": int(record.scheme),
            "certificate_number": record.certificate_number,
            "issuing_body": record.issuing_body,
            "holder_credit_code": record.holder.credit_code,
            "holder_name": record.holder.name,
            "issue_date": record.issue_date,
            "expiry_date": record.expiry_date,
        }
    kind = kind_of_record(record)
    return records, {
        **common,
        "kind": int(kind.number),
        "valid_until": kind.valid_until(record),
        "subject": kind.subject(record)[:SUBJECT_LEN],
        "classification": _int_or_none(getattr(record, "classification", None)),
    }


# The width of records.subject.
SUBJECT_LEN = 64


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int) else None


# Column orders for the writer's fixed SQL (gateway/store/sql/). The key columns come
# first; an update rewrites the columns after them.
CERTIFICATE_COLUMNS = (
    "record_key",
    "scheme",
    "certificate_number",
    "issuer",
    "issuing_body",
    "holder_credit_code",
    "holder_name",
    "state",
    "version",
    "effective_at_us",
    "issue_date",
    "expiry_date",
    "log_index",
)
CERTIFICATE_KEY_COLUMNS = 4  # record_key, scheme, certificate_number, issuer never change
RECORD_COLUMNS = (
    "record_key",
    "kind",
    "issuer",
    "state",
    "version",
    "effective_at_us",
    "valid_until",
    "subject",
    "classification",
    "log_index",
)
RECORD_KEY_COLUMNS = 3  # record_key, kind, issuer


def current_values(record: Record, log_index: int) -> tuple[str, tuple[Any, ...]]:
    """The table name and the row (in the column order above) of a record's current state."""
    table, row = current_row(record, log_index)
    columns = CERTIFICATE_COLUMNS if table is certificates else RECORD_COLUMNS
    return table.name, tuple(row[c] for c in columns)
