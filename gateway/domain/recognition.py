"""Mutual-recognition agreements and the rules that decide recognition.

Pure: no I/O. The gateway gathers the facts (the record's state history, the issuer's
key, the lab's CMA qualification) and this module decides, following the ILAC MRA /
IAF MLA logic: an agreement between the two parties covers that kind of record, and the
record (and what it rests on) was valid on the date.

``decide_record`` / ``decide_assessor`` answer:

- UNKNOWN, RECORD_NOT_FOUND: the gateway holds no such record (no other reasons).
- Agreement (skipped when the asker is the issuer: an own record needs none):
  NO_AGREEMENT when no agreement binds asker and issuer. Otherwise each binding
  agreement, by id, is checked for scope (KIND_OUTSIDE_SCOPE; SCHEME_OUTSIDE_SCOPE for
  certificates; FIELD_OUTSIDE_SCOPE for assessors) and, if it covers the record, for
  AGREEMENT_NOT_IN_FORCE on the date. The first that covers and is in force is the one
  relied on, and nothing is said about the others; if none qualifies, every binding
  agreement's reasons are listed, each with metadata ``agreement``.
- Record state on the date (own records too): RECORD_SUSPENDED / RECORD_REVOKED /
  RECORD_WITHDRAWN with ``since`` (first day of that state); RECORD_EXPIRED with
  ``since`` (first day past validity) and ``expired_on`` (the expiry date printed on the
  record, its last valid day); RECORD_NOT_YET_VALID when no version had taken effect.
- Test reports: LAB_QUALIFICATION_UNKNOWN when the lab's CMA qualification is not held;
  LAB_NOT_ACCREDITED when it was not VALID on the report's issue date. A Hong Kong or
  Macau lab without a CMA number is judged by its accreditation (HOKLAS) instead, and
  the reasons say so (metadata ``checked`` = ACCREDITATION, ``lab_accreditation_number``).
- Assessors: a qualification of the asked kind (any kind if none is asked) listing the
  field and valid on the date is required: FIELD_NOT_QUALIFIED when none lists the
  field, QUALIFICATION_EXPIRED (``valid_from``/``valid_until``) when those that do are
  expired or not yet valid.
- ISSUER_KEY_REVOKED when the key that signed the judged version is revoked.

Verdict: NOT_RECOGNISED if any reason other than RECORD_NOT_FOUND and
LAB_QUALIFICATION_UNKNOWN applies; else UNKNOWN if one of those does; else RECOGNISED
with the agreement relied on (None for an own record) and no reasons. All dates are
calendar days in China (Asia/Shanghai).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from gateway.domain.certificates import CertState
from gateway.domain.kinds import ASSESSOR, ASSESSOR_KIND, CERTIFICATE_STATUS, TEST_REPORT, kind_names
from gateway.domain.records import Qualification, QualificationKind


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """A mutual-recognition agreement as written in the federation file."""

    id: str
    name: str
    # Participants bound by it, alliances already expanded to their members.
    parties: frozenset[str]
    # Record kinds covered, by ``gateway.domain.kinds`` name.
    kinds: frozenset[str]
    # Certificate schemes covered by name ("CCC", "QMS", ...); empty: every scheme.
    schemes: frozenset[str]
    # Assessor technical fields covered; empty: every field.
    fields: frozenset[str]
    effective_from: date
    effective_until: date | None  # inclusive; None: open-ended
    alliance: str | None = None  # set when the agreement is alliance-wide

    def in_force(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_until is None or on <= self.effective_until)

    def binds(self, a: str, b: str) -> bool:
        return a in self.parties and b in self.parties


RECORD_KINDS = frozenset(kind_names())


# ---- decisions ------------------------------------------------------------------------
#
# Reasons are collected, not short-circuited: an asker told only "no agreement" would
# fix that and come back to learn the certificate is revoked. They are listed in a fixed
# order (agreement, record state, lab or qualification, issuer key) so that equal facts
# give byte-identical signed decisions.


class Verdict(enum.IntEnum):
    """Values equal ``mrx.v1.Verdict``."""

    RECOGNISED = 1
    NOT_RECOGNISED = 2
    UNKNOWN = 3


class ReasonCode(enum.StrEnum):
    """The ``DecisionReason.code`` values; stable, clients switch on them."""

    NO_AGREEMENT = "NO_AGREEMENT"
    KIND_OUTSIDE_SCOPE = "KIND_OUTSIDE_SCOPE"
    SCHEME_OUTSIDE_SCOPE = "SCHEME_OUTSIDE_SCOPE"
    FIELD_OUTSIDE_SCOPE = "FIELD_OUTSIDE_SCOPE"
    AGREEMENT_NOT_IN_FORCE = "AGREEMENT_NOT_IN_FORCE"
    RECORD_SUSPENDED = "RECORD_SUSPENDED"
    RECORD_REVOKED = "RECORD_REVOKED"
    RECORD_WITHDRAWN = "RECORD_WITHDRAWN"
    RECORD_EXPIRED = "RECORD_EXPIRED"
    RECORD_NOT_YET_VALID = "RECORD_NOT_YET_VALID"
    QUALIFICATION_EXPIRED = "QUALIFICATION_EXPIRED"
    FIELD_NOT_QUALIFIED = "FIELD_NOT_QUALIFIED"
    LAB_NOT_ACCREDITED = "LAB_NOT_ACCREDITED"
    ISSUER_KEY_REVOKED = "ISSUER_KEY_REVOKED"
    RECORD_NOT_FOUND = "RECORD_NOT_FOUND"
    LAB_QUALIFICATION_UNKNOWN = "LAB_QUALIFICATION_UNKNOWN"


# Reasons that say the gateway cannot decide, rather than that the answer is no. Any
# other reason outweighs them: a revoked report is not recognised whatever its lab.
UNKNOWN_REASONS = frozenset({ReasonCode.RECORD_NOT_FOUND, ReasonCode.LAB_QUALIFICATION_UNKNOWN})


@dataclass(frozen=True, slots=True, kw_only=True)
class Reason:
    code: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    verdict: Verdict
    # The agreement that recognises the record; None for an own record and whenever
    # the verdict is not RECOGNISED.
    agreement_id: str | None
    reasons: tuple[Reason, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


@dataclass(frozen=True, slots=True, kw_only=True)
class LabFacts:
    """What the lab's right to issue the report rests on, as the gateway holds it.

    A mainland lab's CMA qualification (certificate scheme CMA, number ``cma_number``);
    for a Hong Kong or Macau lab without one, its accreditation (``accreditation_number``,
    e.g. "HOKLAS 058", published as scheme HOKLAS number "058") instead.
    """

    cma_number: str
    found: bool
    # From ``records.state_on`` on the report's issue date; None: not yet in effect.
    state_on_issue_date: CertState | None
    since: date | None
    issue_date: date | None = None  # the report's, for the message
    # Set when the lab has no CMA number and its accreditation was checked instead.
    accreditation_number: str = ""

    @property
    def by_accreditation(self) -> bool:
        return not self.cma_number and bool(self.accreditation_number)

    @property
    def checked(self) -> str:
        """What was checked, for the reasons' text."""
        if self.by_accreditation:
            return f"accreditation {self.accreditation_number}"
        return f"CMA qualification (资质认定) {self.cma_number}".rstrip()

    def metadata(self) -> dict[str, str]:
        if self.by_accreditation:
            return {"lab_accreditation_number": self.accreditation_number, "checked": "ACCREDITATION"}
        return {"lab_cma_number": self.cma_number}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFacts:
    """What the gateway knows of a record (any kind but assessors) as of the asked date."""

    kind: str
    key: str
    issuer: str
    # Certificate scheme by name ("CCC"); None for other kinds.
    scheme: str | None
    # From ``records.state_on`` on the asked date; None: no version in effect yet.
    state: CertState | None
    state_since: date | None
    # Whether the key that signed the judged version is revoked.
    issuer_key_revoked: bool
    issuer_key_revoked_at: date | None
    # Test reports only; None there means the report names no lab the gateway can look up.
    lab: LabFacts | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AssessorFacts:
    registration_number: str
    home: str
    state: CertState | None
    state_since: date | None
    qualifications: tuple[Qualification, ...]
    issuer_key_revoked: bool
    issuer_key_revoked_at: date | None = None

    @property
    def key(self) -> str:
        return ASSESSOR_KIND.key(self)


def _iso(d: date | None) -> str:
    return d.isoformat() if d is not None else ""


def _listing(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


def _agreement_reasons(
    *,
    asker: str,
    issuer: str,
    kind: str,
    scheme: str | None,
    field: str | None,
    agreements: Sequence[Agreement],
    as_of: date,
) -> tuple[str | None, list[Reason]]:
    """The agreement to rely on (first by id), or every reason why none can be."""
    binding = sorted((a for a in agreements if a.binds(asker, issuer)), key=lambda a: a.id)
    if not binding:
        return None, [
            Reason(
                code=ReasonCode.NO_AGREEMENT,
                message=f"no mutual-recognition agreement (互认协议) binds {asker} and {issuer}",
                metadata={"asker": asker, "issuer": issuer},
            )
        ]
    reasons: list[Reason] = []
    for a in binding:
        scope: list[Reason] = []
        if kind not in a.kinds:
            scope.append(
                Reason(
                    code=ReasonCode.KIND_OUTSIDE_SCOPE,
                    message=f"agreement {a.id} covers {_listing(a.kinds)} records, not {kind}",
                    metadata={"agreement": a.id, "kind": kind},
                )
            )
        if kind == CERTIFICATE_STATUS and a.schemes and scheme not in a.schemes:
            scope.append(
                Reason(
                    code=ReasonCode.SCHEME_OUTSIDE_SCOPE,
                    message=f"agreement {a.id} covers certificate schemes {_listing(a.schemes)}, "
                    f"not {scheme or 'an unnamed scheme'}",
                    metadata={"agreement": a.id, "scheme": scheme or ""},
                )
            )
        if field is not None and a.fields and field not in a.fields:
            scope.append(
                Reason(
                    code=ReasonCode.FIELD_OUTSIDE_SCOPE,
                    message=f"agreement {a.id} covers assessor fields {_listing(a.fields)}, not {field}",
                    metadata={"agreement": a.id, "field": field},
                )
            )
        if scope:
            reasons.extend(scope)
            continue
        if a.in_force(as_of):
            # One agreement that fits is enough; what the others lack is beside the point.
            return a.id, []
        until = f" until {a.effective_until.isoformat()}" if a.effective_until is not None else ""
        metadata = {"agreement": a.id, "effective_from": a.effective_from.isoformat()}
        if a.effective_until is not None:
            metadata["effective_until"] = a.effective_until.isoformat()
        reasons.append(
            Reason(
                code=ReasonCode.AGREEMENT_NOT_IN_FORCE,
                message=f"agreement {a.id} is in force from {a.effective_from.isoformat()}{until}, "
                f"not on {as_of.isoformat()}",
                metadata=metadata,
            )
        )
    return None, reasons


_STATE_REASONS: Mapping[CertState, tuple[ReasonCode, str]] = {
    CertState.SUSPENDED: (ReasonCode.RECORD_SUSPENDED, "suspended (暂停)"),
    CertState.REVOKED: (ReasonCode.RECORD_REVOKED, "revoked (撤销)"),
    CertState.WITHDRAWN: (ReasonCode.RECORD_WITHDRAWN, "withdrawn (注销)"),
}


def _state_reasons(key: str, state: CertState | None, since: date | None, as_of: date) -> list[Reason]:
    if state is CertState.VALID:
        return []
    if state is None:
        return [
            Reason(
                code=ReasonCode.RECORD_NOT_YET_VALID,
                message=f"{key} had no version in effect on {as_of.isoformat()}",
                metadata={"as_of": as_of.isoformat()},
            )
        ]
    if state is CertState.EXPIRED:
        # ``since`` is the first day past validity; the record's own "expiry date" (the
        # date printed on it, still in force) is the day before.
        metadata = {"since": _iso(since)}
        text = ""
        if since is not None:
            expired_on = since - timedelta(days=1)
            metadata["expired_on"] = expired_on.isoformat()
            text = f": valid until {expired_on.isoformat()}, expired (过期) since {since.isoformat()}"
        return [
            Reason(
                code=ReasonCode.RECORD_EXPIRED,
                message=f"{key} had expired on {as_of.isoformat()}{text}",
                metadata=metadata,
            )
        ]
    code, word = _STATE_REASONS[state]
    text = f" (since {since.isoformat()})" if since is not None else ""
    return [
        Reason(
            code=code,
            message=f"on {as_of.isoformat()}, {key} was {word}{text}",
            metadata={"since": _iso(since)},
        )
    ]


def _key_reasons(issuer: str, revoked: bool, revoked_at: date | None) -> list[Reason]:
    if not revoked:
        return []
    at = f" on {revoked_at.isoformat()}" if revoked_at is not None else ""
    return [
        Reason(
            code=ReasonCode.ISSUER_KEY_REVOKED,
            message=f"the {issuer} key that signed the record was revoked{at}; its signature proves nothing",
            metadata={"issuer": issuer, "revoked_at": _iso(revoked_at)},
        )
    ]


def _lab_reasons(lab: LabFacts | None) -> list[Reason]:
    if lab is None or not lab.found:
        if lab is None:
            what, metadata = "CMA qualification (资质认定) for the lab", {"lab_cma_number": ""}
        else:
            what, metadata = lab.checked, lab.metadata()
        return [
            Reason(
                code=ReasonCode.LAB_QUALIFICATION_UNKNOWN,
                message=f"the gateway holds no {what}",
                metadata=metadata,
            )
        ]
    if lab.state_on_issue_date is CertState.VALID:
        return []
    on = (
        f"the report's issue date {lab.issue_date.isoformat()}"
        if lab.issue_date
        else "the report's issue date"
    )
    state = lab.state_on_issue_date.name if lab.state_on_issue_date is not None else "NOT_YET_VALID"
    since = f" (since {lab.since.isoformat()})" if lab.since is not None else ""
    metadata = {**lab.metadata(), "lab_state": state, "since": _iso(lab.since)}
    if lab.issue_date is not None:
        metadata["issue_date"] = lab.issue_date.isoformat()
    what = (
        f"accreditation {lab.accreditation_number}"
        if lab.by_accreditation
        else f"CMA qualification {lab.cma_number}"
    )
    return [
        Reason(
            code=ReasonCode.LAB_NOT_ACCREDITED,
            message=f"the lab's {what} was {state} on {on}{since}",
            metadata=metadata,
        )
    ]


def _outcome(agreement_id: str | None, reasons: list[Reason]) -> Outcome:
    if any(r.code not in UNKNOWN_REASONS for r in reasons):
        return Outcome(verdict=Verdict.NOT_RECOGNISED, agreement_id=None, reasons=tuple(reasons))
    if reasons:
        return Outcome(verdict=Verdict.UNKNOWN, agreement_id=None, reasons=tuple(reasons))
    return Outcome(verdict=Verdict.RECOGNISED, agreement_id=agreement_id, reasons=())


def _not_found(what: str) -> Outcome:
    return Outcome(
        verdict=Verdict.UNKNOWN,
        agreement_id=None,
        reasons=(Reason(code=ReasonCode.RECORD_NOT_FOUND, message=f"the gateway holds no such {what}"),),
    )


def decide_record(
    *, asker: str, facts: RecordFacts | None, agreements: Sequence[Agreement], as_of: date
) -> Outcome:
    """Does ``asker`` recognise the record on ``as_of``? See the module docstring for the rules."""
    if facts is None:
        return _not_found("record")
    agreement_id: str | None = None
    reasons: list[Reason] = []
    # A participant relies on its own records without an agreement, but not on one that
    # is revoked or lapsed any more than on a neighbour's.
    if asker != facts.issuer:
        agreement_id, reasons = _agreement_reasons(
            asker=asker,
            issuer=facts.issuer,
            kind=facts.kind,
            scheme=facts.scheme,
            field=None,
            agreements=agreements,
            as_of=as_of,
        )
    reasons += _state_reasons(facts.key, facts.state, facts.state_since, as_of)
    if facts.kind == TEST_REPORT:
        reasons += _lab_reasons(facts.lab)
    reasons += _key_reasons(facts.issuer, facts.issuer_key_revoked, facts.issuer_key_revoked_at)
    return _outcome(agreement_id, reasons)


def _qualification_reasons(
    quals: Sequence[Qualification], *, field: str, kind: QualificationKind | None, as_of: date
) -> list[Reason]:
    kind_name = kind.name if kind is not None else "ANY"
    listing = [q for q in quals if (kind is None or q.kind is kind) and field in q.fields]
    if any(q.valid_on(as_of) for q in listing):
        return []
    if not listing:
        of_kind = f" as {kind.name}" if kind is not None else ""
        return [
            Reason(
                code=ReasonCode.FIELD_NOT_QUALIFIED,
                message=f"the assessor holds no qualification{of_kind} for the field {field}",
                metadata={"field": field, "kind": kind_name},
            )
        ]
    # Name the qualification nearest to being usable: the one valid most recently.
    q = max(listing, key=lambda q: (q.valid_until, q.valid_from))
    if q.valid_from > as_of:
        when = f"only from {q.valid_from.isoformat()}"
    else:
        when = f"until {q.valid_until.isoformat()}"
    return [
        Reason(
            code=ReasonCode.QUALIFICATION_EXPIRED,
            message=f"the assessor's {q.kind.name} qualification for {field} ({q.grade}) is valid "
            f"{when}, not on {as_of.isoformat()}",
            metadata={
                "field": field,
                "kind": q.kind.name,
                "valid_from": q.valid_from.isoformat(),
                "valid_until": q.valid_until.isoformat(),
            },
        )
    ]


def decide_assessor(
    *,
    asker: str,
    facts: AssessorFacts | None,
    field: str,
    kind: QualificationKind | None,
    agreements: Sequence[Agreement],
    as_of: date,
) -> Outcome:
    """May the assessor serve on ``asker``'s review team for ``field`` on ``as_of``?

    ``kind`` None accepts a qualification of any kind.
    """
    if facts is None:
        return _not_found("assessor")
    agreement_id: str | None = None
    reasons: list[Reason] = []
    if asker != facts.home:
        agreement_id, reasons = _agreement_reasons(
            asker=asker,
            issuer=facts.home,
            kind=ASSESSOR,
            scheme=None,
            field=field,
            agreements=agreements,
            as_of=as_of,
        )
    reasons += _state_reasons(facts.key, facts.state, facts.state_since, as_of)
    reasons += _qualification_reasons(facts.qualifications, field=field, kind=kind, as_of=as_of)
    reasons += _key_reasons(facts.home, facts.issuer_key_revoked, facts.issuer_key_revoked_at)
    return _outcome(agreement_id, reasons)
