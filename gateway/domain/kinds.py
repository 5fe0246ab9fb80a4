"""One definition per record kind: its name, number, key format, issuer, subject, end of validity.

Every other module (the converter, the store, recognition, the federation's agreement
checks, and the adapters and reconciliation on the client side) asks this registry
rather than spelling a key or a kind name itself: a kind's knowledge lives here and
nowhere else (tests/unit/test_architecture.py keeps it that way). The protobuf side of
each kind (message class, oneof field, builders) is the thin table in gateway/convert.py,
keyed by the same names, because the domain imports no protobuf.

Record keys are ``kind/part/part...`` and fit in ``MAX_KEY_LEN`` characters. No key
part but the last may contain "/", so a key splits one way only and one record's key
can never look like a part of another's; the PT analyte is the last part, so it may
keep the "/" of units such as N/mm².

A kind reads a record by attribute name (key parts directly, the subject by a dotted
path such as ``holder.credit_code``; an enum as its name), so the registry needs none of
the record classes and they, in turn, take their ``key`` from here without an import
cycle. A result's lab part is ``lab_identity``: the CMA number, or the accreditation
number of a Hong Kong or Macau lab without one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

# Receipts, audit leaves and reconciliation store keys in columns of this width.
MAX_KEY_LEN = 200

CERTIFICATE_STATUS = "certificate_status"
ASSESSOR = "assessor"
TEST_REPORT = "test_report"
PT_RESULT = "pt_result"
SPOT_CHECK = "spot_check"


class KindNumber(enum.IntEnum):
    """Values equal ``mrx.v1.RecordKind``."""

    CERTIFICATE_STATUS = 1
    ASSESSOR = 2
    TEST_REPORT = 3
    PT_RESULT = 4
    SPOT_CHECK = 5


# The protobuf message class of each kind, by name. The domain imports no protobuf, so
# gateway.convert (the one place that knows both sides) binds them when it is imported;
# ``Kind.proto_class`` reads them from here.
_PROTO_CLASSES: dict[str, type[Any]] = {}


def bind_proto_class(name: str, proto_class: type[Any]) -> None:
    """Called by gateway.convert only: the wire message of kind ``name``."""
    if name not in KINDS:
        raise ValueError(f"unknown record kind {name!r}")
    _PROTO_CLASSES[name] = proto_class


def _read(record: object, path: str) -> object:
    if "." not in path:
        return getattr(record, path)
    value = record
    for name in path.split("."):
        value = getattr(value, name)
    return value


def _text(value: object) -> str:
    # An enum part (the certificate scheme) is keyed by name: "CCC" reads in a log, 1 does not.
    if type(value) is str:
        return value
    return value.name if isinstance(value, enum.Enum) else str(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Kind:
    """Everything the exchange knows of one record kind, independent of the wire."""

    # The record-key prefix, the Submission oneof field and the name agreements use.
    name: str
    number: KindNumber
    # Said to people: "test report".
    title: str
    # Attribute names of the key parts after the kind, in key order.
    key_parts: tuple[str, ...]
    # The participant that may publish it (an assessor's home).
    issuer_field: str
    # What the record is about, for the store's ``subject`` column and filters: the
    # lab behind a result, the target of a spot check, a certificate's holder.
    subject_field: str | None
    # The last day the record is valid on, inclusive; None: it never expires.
    valid_until_field: str | None

    def key(self, record: object) -> str:
        """The stable key of ``record`` (any object with this kind's key attributes)."""
        # On the write path for every record, so it skips format_key's checks: the parts
        # are this kind's own by construction.
        return "/".join((self.name, *(_text(getattr(record, p)) for p in self.key_parts)))

    def format_key(self, **parts: str) -> str:
        """The key made of named parts: ``CERTIFICATE.format_key(scheme="CMA", certificate_number=n)``."""
        if set(parts) != set(self.key_parts):
            raise ValueError(f"a {self.name} key has the parts {', '.join(self.key_parts)}")
        return "/".join((self.name, *(parts[p] for p in self.key_parts)))

    def parse_key(self, key: str) -> dict[str, str]:
        """The named parts of a key of this kind; ValueError when it is not one."""
        prefix = self.name + "/"
        if not key.startswith(prefix):
            raise ValueError(f"{key[:60]!r} is not a {self.name} key")
        values = key[len(prefix) :].split("/", len(self.key_parts) - 1)
        if len(values) != len(self.key_parts) or not all(values):
            shape = "/".join(f"<{p}>" for p in self.key_parts)
            raise ValueError(f"a {self.name} key is {self.name}/{shape}")
        return dict(zip(self.key_parts, values, strict=True))

    @property
    def proto_class(self) -> type[Any]:
        """The ``mrx.v1`` message class of this kind (bound by gateway.convert)."""
        try:
            return _PROTO_CLASSES[self.name]
        except KeyError:
            raise LookupError(
                f"no protobuf class bound for {self.name}: import gateway.convert, which binds them"
            ) from None

    def issuer(self, record: object) -> str:
        return str(_read(record, self.issuer_field))

    def subject(self, record: object) -> str:
        return "" if self.subject_field is None else _text(_read(record, self.subject_field))

    def valid_until(self, record: object) -> date | None:
        if self.valid_until_field is None:
            return None
        value = _read(record, self.valid_until_field)
        return value if isinstance(value, date) else None


def lab_identity(lab_cma_number: str, accreditation_number: str) -> str:
    """A result's lab (the ``lab`` key part and subject): its CMA number, or for a Hong Kong
    or Macau lab without one, its accreditation number ("HOKLAS 058")."""
    return lab_cma_number or accreditation_number


CERTIFICATE = Kind(
    name=CERTIFICATE_STATUS,
    number=KindNumber.CERTIFICATE_STATUS,
    title="certificate status",
    key_parts=("scheme", "certificate_number"),
    issuer_field="issuer",
    subject_field="holder.credit_code",
    valid_until_field="expiry_date",
)
ASSESSOR_KIND = Kind(
    name=ASSESSOR,
    number=KindNumber.ASSESSOR,
    title="assessor",
    key_parts=("home", "registration_number"),
    issuer_field="home",
    subject_field=None,
    valid_until_field="valid_until",
)
TEST_REPORT_KIND = Kind(
    name=TEST_REPORT,
    number=KindNumber.TEST_REPORT,
    title="test report",
    key_parts=("issuer", "report_number"),
    issuer_field="issuer",
    # ``lab``: the CMA number, or the accreditation number of a Hong Kong or Macau lab.
    subject_field="lab",
    valid_until_field=None,
)
PT_RESULT_KIND = Kind(
    name=PT_RESULT,
    number=KindNumber.PT_RESULT,
    title="PT result",
    key_parts=("issuer", "scheme_id", "round", "lab", "analyte"),
    issuer_field="issuer",
    subject_field="lab",
    valid_until_field=None,
)
SPOT_CHECK_KIND = Kind(
    name=SPOT_CHECK,
    number=KindNumber.SPOT_CHECK,
    title="spot check",
    key_parts=("issuer", "check_id"),
    issuer_field="issuer",
    subject_field="target_credit_code",
    valid_until_field=None,
)

KINDS: Mapping[str, Kind] = {
    k.name: k for k in (CERTIFICATE, ASSESSOR_KIND, TEST_REPORT_KIND, PT_RESULT_KIND, SPOT_CHECK_KIND)
}
KINDS_BY_NUMBER: Mapping[int, Kind] = {int(k.number): k for k in KINDS.values()}


def kind_names() -> tuple[str, ...]:
    """Every kind's name, in RecordKind order."""
    return tuple(KINDS)


def kind_named(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown record kind {name[:40]!r} (known: {', '.join(KINDS)})") from None


def kind_of_key(key: str) -> Kind:
    """The kind a record key belongs to; ValueError when it names none."""
    return kind_named(key.split("/", 1)[0])


def kind_of_record(record: object) -> Kind:
    """The kind of a domain record (its class says which by a ``kind`` name)."""
    return kind_named(str(getattr(record, "kind", "")))
