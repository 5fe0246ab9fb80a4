"""Certificate status records: the canonical model, its validation and its life cycle.

The life cycle follows the CCC rules (CNCA announcement 2008 No. 19): a suspended
certificate may return to valid or end as revoked or withdrawn; revoked and withdrawn
are final. Expiry is never published: it is derived from ``expiry_date``, so a record
cannot contradict its own dates.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import ClassVar, Protocol, TypeVar

from gateway.domain import identifiers
from gateway.domain.errors import FailedPrecondition, FieldViolation, collect
from gateway.domain.kinds import CERTIFICATE, CERTIFICATE_STATUS


class Scheme(enum.IntEnum):
    """Values equal ``mrx.v1.CertificateScheme`` so conversion is ``Scheme(int)``."""

    CCC = 1
    CMA = 2
    QMS = 3
    EMS = 4
    OHSMS = 5
    ISMS = 6
    FSMS = 7
    ENMS = 8
    ORGANIC = 9
    GREEN_PRODUCT = 10
    SERVICE = 11
    VOLUNTARY_PRODUCT = 12
    # Hong Kong Accreditation Service programmes; the number is the HKAS registration
    # number ("058", "850S") and the holder is identified as Hong Kong/Macau holders are.
    HOKLAS = 13  # laboratories
    HKCAS = 14  # certification bodies
    HKIAS = 15  # inspection bodies


class CertState(enum.IntEnum):
    """Values equal ``mrx.v1.CertificateState`` so conversion is ``CertState(int)``."""

    VALID = 1
    SUSPENDED = 2
    REVOKED = 3
    WITHDRAWN = 4
    EXPIRED = 5


FINAL_STATES = frozenset({CertState.REVOKED, CertState.WITHDRAWN})
# A reader learns nothing from "suspended" alone: whether the holder can fix it or the
# product is defective decides what the reader's own bureau does next.
STATES_NEEDING_REASON = frozenset({CertState.SUSPENDED, CertState.REVOKED, CertState.WITHDRAWN})

_OPEN = frozenset({CertState.VALID, CertState.SUSPENDED, CertState.REVOKED, CertState.WITHDRAWN})
# Final states may be republished only as themselves, so an issuer can correct the
# reason text of a revocation without being able to undo it.
TRANSITIONS: dict[CertState, frozenset[CertState]] = {
    CertState.VALID: _OPEN,
    CertState.SUSPENDED: _OPEN,
    CertState.REVOKED: frozenset({CertState.REVOKED}),
    CertState.WITHDRAWN: frozenset({CertState.WITHDRAWN}),
}

MAX_NUMBER_LEN = identifiers.MAX_CERTIFICATE_NUMBER_LEN
MAX_NAME_LEN = 200
MAX_SCOPE_LEN = 2000
MAX_REASON_LEN = 1000
MAX_BODY_LEN = 64
# Stores keep versions in signed 64-bit columns; the wire type (uint64) is wider.
MAX_VERSION = 2**63 - 1

_DATE_RE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_E = TypeVar("_E", bound=enum.IntEnum)


def _quote(value: str, limit: int = 40) -> str:
    # Echo the sender's value so they can find it, but never an unbounded amount of it.
    return repr(value if len(value) <= limit else value[:limit] + "…")


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    name: str
    credit_code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate:
    """One version of one certificate's status, as its issuer published it.

    Build from untrusted input with ``build_certificate``; the constructor does not validate.
    """

    kind: ClassVar[str] = CERTIFICATE_STATUS

    certificate_number: str
    scheme: Scheme
    issuing_body: str
    issuer: str
    holder: Holder
    scope: str
    state: CertState
    reason: str
    effective_at: datetime
    issue_date: date
    expiry_date: date
    version: int

    @property
    def key(self) -> str:
        return CERTIFICATE.key(self)


def _text_problem(value: str, *, max_len: int, required: bool, multiline: bool = False) -> str | None:
    if required and not value.strip():
        return "required"
    if len(value) > max_len:
        return f"must be at most {max_len} characters, got {len(value)}"
    for pos, ch in enumerate(value, start=1):
        if multiline and ch == "\n":
            continue
        # Zl/Zp (U+2028/9) break lines in some viewers but not others; Cf includes
        # invisible bidi overrides that can make a name display as something else.
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            allowed = "; only line feed (U+000A) is allowed" if multiline else ""
            return f"control character U+{ord(ch):04X} at position {pos} is not allowed{allowed}"
    return None


def _parse_date(value: str) -> tuple[date | None, str | None]:
    if not value:
        return None, "required"
    if not _DATE_RE.match(value):
        return None, f"must be a date as YYYY-MM-DD, got {_quote(value)}"
    try:
        return date.fromisoformat(value), None
    except ValueError:
        return None, f"{value} is not a real calendar date"


def _enum_member(cls: type[_E], value: int) -> tuple[_E | None, str | None]:
    if value == 0:
        return None, "required"
    try:
        return cls(value), None
    except ValueError:
        return None, f"unknown enum value {value}"


def build_certificate(
    *,
    certificate_number: str,
    scheme: int,
    issuing_body: str,
    issuer: str,
    holder_name: str,
    holder_credit_code: str,
    scope: str,
    state: int,
    reason: str,
    effective_at: datetime | None,
    issue_date: str,
    expiry_date: str,
    version: int,
    field_prefix: str = CERTIFICATE_STATUS,
) -> tuple[Certificate, list[str]]:
    """Validate a submitted certificate status and build it.

    Every field is checked before anything is raised, so the sender sees all problems
    at once. Raises InvalidArgument whose violations name fields as
    ``<field_prefix>.holder.credit_code`` etc. Returns the certificate and warnings
    (each prefixed with its field path) for weak-rule deviations that were accepted.
    """
    violations: list[FieldViolation] = []
    warnings: list[str] = []

    def bad(field: str, description: str) -> None:
        violations.append(FieldViolation(field=f"{field_prefix}.{field}", description=description))

    def warn(field: str, message: str | None) -> None:
        if message is not None:
            warnings.append(f"{field_prefix}.{field}: {message}")

    scheme_v, scheme_problem = _enum_member(Scheme, scheme)
    hkas = scheme_v is not None and scheme_v.name in identifiers.HKAS_SCHEMES
    if hkas and not identifiers.HKAS_NUMBER_RE.match(certificate_number):
        assert scheme_v is not None
        # Said instead of the generic shape rules: "HOKLAS 058" fails those only for its space.
        bad(
            "certificate_number",
            f"an {scheme_v.name} accreditation is published under its HKAS registration number, "
            f"three digits and an optional letter (e.g. 058 or 850S), got {_quote(certificate_number)}; "
            "the programme is the scheme",
        )
    else:
        try:
            identifiers.check_certificate_number(certificate_number)
        except ValueError as e:
            bad("certificate_number", str(e))
        else:
            if scheme_v is not None:
                number_warning = identifiers.certificate_number_warning(scheme_v.name, certificate_number)
                warn("certificate_number", number_warning)
    if scheme_problem:
        bad("scheme", scheme_problem)
    if hkas:
        assert scheme_v is not None
        if issuer and issuer != identifiers.HKAS_ISSUER:
            bad("issuer", f"{scheme_v.name} accreditations are granted by HKAS and published by CN-HK")

    if problem := _text_problem(issuing_body, max_len=MAX_BODY_LEN, required=True):
        bad("issuing_body", problem)
    else:
        warn("issuing_body", identifiers.issuing_body_warning(issuing_body))

    if not issuer:
        bad("issuer", "required")
    elif not identifiers.is_participant_code(issuer):
        bad("issuer", f"must be a participant code such as CN-JS, got {_quote(issuer)}")

    if problem := _text_problem(holder_name, max_len=MAX_NAME_LEN, required=True):
        bad("holder.name", problem)
    if issuer in identifiers.HK_MO_PARTICIPANTS:
        # No credit codes there: the holder is identified by its certificate or
        # accreditation number, optionally with its local registration number.
        try:
            warn("holder.credit_code", identifiers.check_hk_mo_holder_id(issuer, holder_credit_code))
        except ValueError as e:
            bad("holder.credit_code", str(e))
    elif not holder_credit_code:
        bad("holder.credit_code", "required")
    else:
        try:
            warn("holder.credit_code", identifiers.check_credit_code(holder_credit_code).warning)
        except ValueError as e:
            bad("holder.credit_code", str(e))

    if problem := _text_problem(scope, max_len=MAX_SCOPE_LEN, required=True, multiline=True):
        bad("scope", problem)

    state_v, problem = _enum_member(CertState, state)
    if state_v is CertState.EXPIRED:
        state_v = None
        problem = "EXPIRED is derived from expiry_date; publish VALID/SUSPENDED/REVOKED/WITHDRAWN"
    if problem:
        bad("state", problem)

    if problem := _text_problem(reason, max_len=MAX_REASON_LEN, required=False, multiline=True):
        bad("reason", problem)
    elif state_v is not None and state_v in STATES_NEEDING_REASON and not reason.strip():
        bad("reason", f"required when state is {state_v.name}: say why (e.g. 监督抽查不合格)")

    effective_utc: datetime | None = None
    if effective_at is None:
        bad("effective_at", "required")
    elif effective_at.tzinfo is None or effective_at.utcoffset() is None:
        # A naive time is ambiguous by eight hours between UTC and Beijing time.
        bad("effective_at", "must carry a time zone")
    else:
        effective_utc = effective_at.astimezone(UTC)

    issue_d, problem = _parse_date(issue_date)
    if problem:
        bad("issue_date", problem)
    expiry_d, problem = _parse_date(expiry_date)
    if problem:
        bad("expiry_date", problem)
    elif issue_d is not None and expiry_d is not None and expiry_d < issue_d:
        bad("expiry_date", f"must not be before issue_date ({issue_d.isoformat()})")

    if version < 1:
        bad("version", "must be at least 1")
    elif version > MAX_VERSION:
        bad("version", f"must be at most {MAX_VERSION}")

    collect(violations, "invalid certificate status")
    # collect() raised if any of these were missing; the asserts tell the type checker.
    assert scheme_v is not None and state_v is not None and effective_utc is not None
    assert issue_d is not None and expiry_d is not None
    cert = Certificate(
        certificate_number=certificate_number,
        scheme=scheme_v,
        issuing_body=issuing_body,
        issuer=issuer,
        holder=Holder(name=holder_name, credit_code=holder_credit_code),
        scope=scope,
        state=state_v,
        reason=reason,
        effective_at=effective_utc,
        issue_date=issue_d,
        expiry_date=expiry_d,
        version=version,
    )
    return cert, warnings


class VersionedState(Protocol):
    """What the transition rules need of the stored record: its state and version."""

    @property
    def state(self) -> CertState: ...

    @property
    def version(self) -> int: ...


class VersionedRecord(VersionedState, Protocol):
    """A new version of any record kind: what the transition rules read of it."""

    @property
    def key(self) -> str: ...


def check_transition(previous: VersionedState | None, new: VersionedRecord) -> None:
    """Refuse a new version that is stale or that leaves a final state.

    Raises FailedPrecondition with reason STALE_VERSION or ILLEGAL_TRANSITION. Who may
    publish (the issuer) is checked elsewhere.
    """
    if previous is None:
        # A first publication may be in any state: a participant joining the gateway
        # publishes its backlog, revoked certificates included.
        return
    if new.version <= previous.version:
        raise FailedPrecondition(
            f"version {new.version} of {new.key} is not newer than the stored version {previous.version}",
            reason="STALE_VERSION",
            metadata={"stored_version": str(previous.version), "submitted_version": str(new.version)},
        )
    if new.state not in TRANSITIONS.get(previous.state, frozenset()):
        final = " (a final state)" if previous.state in FINAL_STATES else ""
        raise FailedPrecondition(
            f"{new.key} cannot change from {previous.state.name}{final} to {new.state.name}",
            reason="ILLEGAL_TRANSITION",
            metadata={"from_state": previous.state.name, "to_state": new.state.name},
        )


def derive_state(state: CertState, expiry_date: date, today: date) -> CertState:
    """``effective_state`` for a stored row that is not a full Certificate."""
    if state in (CertState.VALID, CertState.SUSPENDED) and today > expiry_date:
        return CertState.EXPIRED
    return state


def effective_state(cert: Certificate, today: date) -> CertState:
    """The state a reader should act on: VALID or SUSPENDED become EXPIRED after expiry_date.

    The expiry date itself is still in force. Pass ``today`` as the date in China
    (Asia/Shanghai): expiry dates are Chinese calendar dates, and the UTC date lags by
    eight hours each morning.
    """
    return derive_state(cert.state, cert.expiry_date, today)
