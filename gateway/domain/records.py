"""Assessor records and results (test reports, PT results, spot checks): model, validation, life cycle.

Every kind shares the certificate life cycle (``certificates.TRANSITIONS``): a
suspended record may return to valid or end as revoked or withdrawn; revoked and
withdrawn are final and may be republished only as themselves (to correct the reason
text). EXPIRED is never published: it is derived from ``valid_until``. A correction
of a record's content is a new version in the same state; readers always see the
newest version.

What the states mean per kind:

Assessor (评审员 / 审核员 / 技术专家 / 检查员)
    VALID: registered; may serve on review teams within the fields and validity
    periods of their qualifications. SUSPENDED (暂停评审员资格): e.g. a failed or
    missing evaluation, a complaint under investigation, missed continuing training;
    may return to VALID. REVOKED (撤销评审员资格): misconduct such as falsified
    review records or an undeclared conflict of interest; final. WITHDRAWN (注销):
    retirement, own request, death or leaving the field; final. EXPIRED: derived once
    every qualification is past its ``valid_until`` (a renewed qualification is a new
    version with a later date).

Test report (检验检测报告)
    VALID: as issued. SUSPENDED: under review after a complaint or a suspected error;
    not to be relied on meanwhile. REVOKED (作废): declared void, e.g. falsified or
    wrong data; final. WITHDRAWN (撤回): withdrawn by its issuer, e.g. replaced by a
    corrected report under a new report number; final. Reports never expire: a report
    states a result on a date.

PT result (能力验证结果)
    VALID: as published by the scheme provider; a corrected value is a new version
    (and is classified again). SUSPENDED: under appeal (申诉). REVOKED: void, e.g.
    collusion between participants; final. WITHDRAWN: the provider withdrew the result
    or cancelled the round; final. Never expires.

Spot check (双随机、一公开 监督抽查结果)
    VALID: published. SUSPENDED: a re-test (复检) or review requested by the target is
    pending. REVOKED: overturned on re-test or administrative review; final.
    WITHDRAWN: published in error; final. Never expires.

Record keys, kind names and what each kind is about are defined once, in
``gateway.domain.kinds``.

Hong Kong and Macau labs have no CMA qualification (资质认定 is a mainland scheme): a
test report or PT result whose issuer is CN-HK or CN-MO may leave ``lab_cma_number``
empty, and then its ``accreditation_number`` (e.g. "HOKLAS 058") is required and is the
lab's identity: in the PT key's lab slot, in the store's subject, and in recognition,
which checks that accreditation instead of a CMA qualification.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import ClassVar, NamedTuple, Protocol, TypeVar
from zoneinfo import ZoneInfo

from gateway.domain import identifiers
from gateway.domain.certificates import (
    MAX_NAME_LEN,
    MAX_REASON_LEN,
    MAX_VERSION,
    STATES_NEEDING_REASON,
    CertState,
    VersionedState,
    _enum_member,
    _parse_date,
    _quote,
    _text_problem,
    check_transition,
)
from gateway.domain.errors import FieldViolation, collect
from gateway.domain.kinds import (
    ASSESSOR,
    ASSESSOR_KIND,
    MAX_KEY_LEN,
    PT_RESULT,
    PT_RESULT_KIND,
    SPOT_CHECK,
    SPOT_CHECK_KIND,
    TEST_REPORT,
    TEST_REPORT_KIND,
    lab_identity,
)

# Expiry dates and "effective on" days are Chinese calendar dates.
CHINA = ZoneInfo("Asia/Shanghai")

MAX_NUMBER_LEN = identifiers.MAX_CERTIFICATE_NUMBER_LEN
MAX_GRADE_LEN = 40
MAX_FIELD_LEN = 40
MAX_FIELDS = 50
MAX_QUALIFICATIONS = 50
MAX_EVALUATIONS = 200
MAX_EVALUATION_RESULT_LEN = 40
MAX_NOTE_LEN = 1000
MAX_PRODUCT_LEN = 200
MAX_STANDARD_LEN = 200
MAX_ACCREDITATION_LEN = 64
MAX_ITEMS = 100
MAX_ITEM_LEN = 200
MAX_FOLLOW_UP_LEN = 1000
# The PT key holds five parts; these limits keep the longest possible key within
# MAX_KEY_LEN ("pt_result/" + 11-character participant code + 4 separators = 25).
MAX_SCHEME_ID_LEN = 40
MAX_ROUND_LEN = 20
MAX_PT_LAB_CMA_LEN = 40
MAX_ANALYTE_LEN = MAX_KEY_LEN - 25 - MAX_SCHEME_ID_LEN - MAX_ROUND_LEN - MAX_PT_LAB_CMA_LEN

_E = TypeVar("_E", bound=enum.IntEnum)


class QualificationKind(enum.IntEnum):
    """Values equal ``mrx.v1.QualificationKind``."""

    CMA_ASSESSOR = 1  # 资质认定评审员
    CERTIFICATION_AUDITOR = 2  # 认证审核员
    TECHNICAL_EXPERT = 3  # 技术专家
    INSPECTOR = 4  # 检查员


class Conclusion(enum.IntEnum):
    """Values equal ``mrx.v1.Conclusion``."""

    CONFORMING = 1
    NONCONFORMING = 2
    INFORMATIVE = 3


class PtClass(enum.IntEnum):
    """Values equal ``mrx.v1.PtClass``."""

    SATISFACTORY = 1
    QUESTIONABLE = 2
    UNSATISFACTORY = 3


class SpotCheckOutcome(enum.IntEnum):
    """Values equal ``mrx.v1.SpotCheckOutcome``."""

    CONFORMING = 1
    NONCONFORMING = 2


class Record(Protocol):
    """What the exchange needs of any record, certificates included."""

    @property
    def key(self) -> str: ...

    @property
    def issuer(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def state(self) -> CertState: ...

    @property
    def effective_at(self) -> datetime: ...


# ---- model ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Qualification:
    kind: QualificationKind
    grade: str
    fields: tuple[str, ...]
    valid_from: date
    valid_until: date  # inclusive

    def valid_on(self, on: date) -> bool:
        return self.valid_from <= on <= self.valid_until


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    date: date
    evaluator: str
    result: str
    note: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessor:
    """One version of an assessor record, as the home participant published it."""

    kind: ClassVar[str] = ASSESSOR

    registration_number: str
    name: str
    home: str
    qualifications: tuple[Qualification, ...]
    state: CertState
    reason: str
    effective_at: datetime
    evaluations: tuple[Evaluation, ...]
    version: int

    @property
    def issuer(self) -> str:
        return self.home

    @property
    def key(self) -> str:
        return ASSESSOR_KIND.key(self)

    @property
    def valid_until(self) -> date | None:
        # The record as a whole lapses only when its last qualification does; which
        # fields are still covered is decided per qualification.
        return max((q.valid_until for q in self.qualifications), default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class TestReport:
    kind: ClassVar[str] = TEST_REPORT
    # pytest would otherwise try to collect this class from test modules importing it.
    __test__: ClassVar[bool] = False

    report_number: str
    issuer: str
    lab_name: str
    lab_cma_number: str
    accreditation_number: str
    product: str
    standard: str
    conclusion: Conclusion
    issue_date: date
    state: CertState
    reason: str
    effective_at: datetime
    version: int

    @property
    def key(self) -> str:
        return TEST_REPORT_KIND.key(self)

    @property
    def lab(self) -> str:
        """The lab's identity: its CMA number, or its accreditation number when it has none."""
        return lab_identity(self.lab_cma_number, self.accreditation_number)

    @property
    def valid_until(self) -> date | None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PtResult:
    kind: ClassVar[str] = PT_RESULT

    issuer: str
    scheme_id: str
    round: str
    lab_name: str
    lab_cma_number: str
    analyte: str
    assigned_value: float | None
    sigma: float | None
    reported_value: float
    z_score: float
    report_date: date
    state: CertState
    reason: str
    effective_at: datetime
    version: int
    classification: PtClass
    # The lab's accreditation; the lab's identity when it has no CMA number (HK/MO).
    accreditation_number: str = ""

    @property
    def key(self) -> str:
        return PT_RESULT_KIND.key(self)

    @property
    def lab(self) -> str:
        """The key's lab slot: the CMA number, or the accreditation number when there is none."""
        return lab_identity(self.lab_cma_number, self.accreditation_number)

    @property
    def valid_until(self) -> date | None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class SpotCheck:
    kind: ClassVar[str] = SPOT_CHECK

    check_id: str
    issuer: str
    target_name: str
    target_credit_code: str
    check_date: date
    items: tuple[str, ...]
    outcome: SpotCheckOutcome
    follow_up: str
    state: CertState
    reason: str
    effective_at: datetime
    version: int

    @property
    def key(self) -> str:
        return SPOT_CHECK_KIND.key(self)

    @property
    def valid_until(self) -> date | None:
        return None


AnyRecord = Assessor | TestReport | PtResult | SpotCheck


# ---- proficiency testing ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PtBoundaries:
    """Where ISO 13528 z-score classes meet; sources differ on which side a boundary lies.

    Defaults: |z| <= 2 satisfactory, 2 < |z| < 3 questionable, |z| >= 3 unsatisfactory.
    """

    satisfactory_max: float = 2.0
    unsatisfactory_min: float = 3.0
    # True: |z| == satisfactory_max is satisfactory (else questionable).
    satisfactory_inclusive: bool = True
    # True: |z| == unsatisfactory_min is unsatisfactory (else questionable).
    unsatisfactory_inclusive: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.satisfactory_max) and math.isfinite(self.unsatisfactory_min)):
            raise ValueError("PT boundaries must be finite numbers")
        if not 0 < self.satisfactory_max <= self.unsatisfactory_min:
            raise ValueError(
                f"PT boundaries need 0 < satisfactory_max <= unsatisfactory_min, "
                f"got {self.satisfactory_max} and {self.unsatisfactory_min}"
            )
        if (
            self.satisfactory_max == self.unsatisfactory_min
            and self.satisfactory_inclusive
            and self.unsatisfactory_inclusive
        ):
            raise ValueError(f"|z| = {self.satisfactory_max} would be both satisfactory and unsatisfactory")


DEFAULT_PT_BOUNDARIES = PtBoundaries()


def classify_z(z: float, boundaries: PtBoundaries = DEFAULT_PT_BOUNDARIES) -> PtClass:
    """The ISO 13528 class of a z-score (or a zeta score) under ``boundaries``."""
    if not math.isfinite(z):
        raise ValueError(f"z-score must be a finite number, got {z}")
    a = abs(z)
    b = boundaries
    if a < b.satisfactory_max or (b.satisfactory_inclusive and a == b.satisfactory_max):
        return PtClass.SATISFACTORY
    if a > b.unsatisfactory_min or (b.unsatisfactory_inclusive and a == b.unsatisfactory_min):
        return PtClass.UNSATISFACTORY
    return PtClass.QUESTIONABLE


# ---- life cycle -------------------------------------------------------------------


def check_record_transition(previous: VersionedState | None, new: Record) -> None:
    """``certificates.check_transition`` for every kind: same rules, same refusals."""
    # One implementation keeps the rules from drifting apart between kinds.
    check_transition(previous, new)


class StateOn(NamedTuple):
    """A record's state on a day and the first day of that state.

    ``state`` None: no version had taken effect yet (the record was not yet valid), and
    ``since`` is None too. For EXPIRED, ``since`` is the day after ``valid_until``.
    """

    state: CertState | None
    since: date | None


def state_on(
    history: Sequence[tuple[datetime, CertState]],
    on: date,
    valid_until: date | None,
    *,
    tz: tzinfo = CHINA,
) -> StateOn:
    """The state in force on calendar day ``on``, from a record's version history.

    ``history`` holds (effective_at, state) per version, oldest version first;
    ``effective_at`` must be time-zone aware and is read as a calendar day in ``tz``.
    A version is in force from its effective day, inclusive, so a suspension effective
    at 15:00 counts for the whole day. The newest version whose effective day is on or
    before ``on`` wins, even if an older version names a later day (a backdated
    correction overrides what it corrects). ``since`` is the effective day of the first
    version in the unbroken run of that state, so republishing a suspension to fix its
    reason text does not move "suspended since".

    A VALID or SUSPENDED record reads EXPIRED on every day after ``valid_until``
    (the last day of validity); REVOKED and WITHDRAWN stay as they are.
    """
    in_force: list[tuple[date, CertState]] = []
    for effective_at, state in history:
        if effective_at.tzinfo is None or effective_at.utcoffset() is None:
            raise ValueError("effective_at in a record history must carry a time zone")
        day = effective_at.astimezone(tz).date()
        if day <= on:
            in_force.append((day, state))
    if not in_force:
        return StateOn(state=None, since=None)
    state = in_force[-1][1]
    since = in_force[-1][0]
    for day, earlier in reversed(in_force):
        if earlier is not state:
            break
        since = day
    if valid_until is not None and on > valid_until and state in (CertState.VALID, CertState.SUSPENDED):
        return StateOn(state=CertState.EXPIRED, since=valid_until + timedelta(days=1))
    return StateOn(state=state, since=since)


# ---- validation ---------------------------------------------------------------------


class QualificationInput(Protocol):
    """A submitted qualification; ``mrx.v1.AssessorQualification`` satisfies it."""

    @property
    def kind(self) -> int: ...

    @property
    def grade(self) -> str: ...

    @property
    def fields(self) -> Sequence[str]: ...

    @property
    def valid_from(self) -> str: ...

    @property
    def valid_until(self) -> str: ...


class EvaluationInput(Protocol):
    """A submitted evaluation; ``mrx.v1.Evaluation`` satisfies it."""

    @property
    def date(self) -> str: ...

    @property
    def evaluator(self) -> str: ...

    @property
    def result(self) -> str: ...

    @property
    def note(self) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmittedQualification:
    """A plain ``QualificationInput`` for callers without protobuf messages."""

    kind: int
    grade: str
    fields: Sequence[str]
    valid_from: str
    valid_until: str

    @classmethod
    def of(cls, q: Qualification) -> SubmittedQualification:
        return cls(
            kind=int(q.kind),
            grade=q.grade,
            fields=q.fields,
            valid_from=q.valid_from.isoformat(),
            valid_until=q.valid_until.isoformat(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmittedEvaluation:
    """A plain ``EvaluationInput`` for callers without protobuf messages."""

    date: str
    evaluator: str
    result: str
    note: str

    @classmethod
    def of(cls, e: Evaluation) -> SubmittedEvaluation:
        return cls(date=e.date.isoformat(), evaluator=e.evaluator, result=e.result, note=e.note)


class _Form:
    """Collects every violation and warning of one submission under a field prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.violations: list[FieldViolation] = []
        self.warnings: list[str] = []

    def bad(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field=f"{self.prefix}.{field}", description=description))

    def warn(self, field: str, message: str | None) -> None:
        if message is not None:
            self.warnings.append(f"{self.prefix}.{field}: {message}")

    def text(
        self, field: str, value: str, *, max_len: int, required: bool = True, multiline: bool = False
    ) -> bool:
        problem = _text_problem(value, max_len=max_len, required=required, multiline=multiline)
        if problem:
            self.bad(field, problem)
        return problem is None

    def label(self, field: str, value: str, *, max_len: int) -> None:
        # Labels are compared for equality (fields against agreements, analytes inside
        # keys), where " 食品" and "食品" would silently differ.
        if self.text(field, value, max_len=max_len) and value != value.strip():
            self.bad(field, "must not start or end with whitespace")

    def key_part(self, field: str, value: str, *, max_len: int, slash_ok: bool = False) -> None:
        if not value:
            self.bad(field, "required")
        elif len(value) > max_len:
            self.bad(field, f"must be at most {max_len} characters, got {len(value)}")
        else:
            try:
                identifiers.check_certificate_number(value)
            except ValueError as e:
                self.bad(field, str(e))
            else:
                if not slash_ok and "/" in value:
                    self.bad(field, "must not contain '/': it separates the parts of the record key")

    def lab_identity(
        self,
        *,
        issuer: str,
        lab_cma_number: str,
        accreditation_number: str,
        cma_max_len: int,
        accreditation_max_len: int,
        slash_ok: bool,
    ) -> None:
        """The lab's CMA number, or for a Hong Kong or Macau issuer its accreditation instead."""
        by_accreditation = not lab_cma_number and issuer in identifiers.HK_MO_PARTICIPANTS
        if not by_accreditation:
            self.key_part("lab_cma_number", lab_cma_number, max_len=cma_max_len, slash_ok=slash_ok)
        if not self.text(
            "accreditation_number", accreditation_number, max_len=accreditation_max_len, required=False
        ):
            return
        shaped = identifiers.ACCREDITATION_ID_RE.match(accreditation_number) is not None
        if by_accreditation and not accreditation_number:
            self.bad(
                "accreditation_number",
                "required when lab_cma_number is empty: a Hong Kong or Macau lab is identified by its "
                "accreditation, e.g. 'HOKLAS 058'",
            )
        elif by_accreditation and not shaped:
            # It stands in for the CMA number, so it must be one the gateway can look up.
            self.bad(
                "accreditation_number",
                f"identifies the lab (lab_cma_number is empty), so it must be an HKAS or CNAS "
                f"accreditation id such as 'HOKLAS 058' or 'CNAS L1234', got {_quote(accreditation_number)}",
            )
        elif accreditation_number and not shaped:
            # Optional: not every lab is accredited, and CMA alone lets a lab issue reports.
            self.warn(
                "accreditation_number",
                f"{accreditation_number!r} is not a CNAS/HKAS accreditation id "
                f"(e.g. 'CNAS L1234', 'HOKLAS 058'); accepted",
            )

    def participant(self, field: str, value: str) -> None:
        if not value:
            self.bad(field, "required")
        elif not identifiers.is_participant_code(value):
            self.bad(field, f"must be a participant code such as CN-JS, got {_quote(value)}")

    def day(self, field: str, value: str) -> date | None:
        parsed, problem = _parse_date(value)
        if problem:
            self.bad(field, problem)
        return parsed

    def member(self, field: str, cls: type[_E], value: int) -> _E | None:
        member, problem = _enum_member(cls, value)
        if problem:
            self.bad(field, problem)
        return member

    def number(self, field: str, value: float) -> float | None:
        if not math.isfinite(value):
            self.bad(field, f"must be a finite number, got {value}")
            return None
        return float(value)

    def life_cycle(
        self, *, state: int, reason: str, effective_at: datetime | None, version: int, expired: str
    ) -> tuple[CertState | None, datetime | None]:
        state_v, problem = _enum_member(CertState, state)
        if state_v is CertState.EXPIRED:
            state_v = None
            problem = f"{expired}; publish VALID/SUSPENDED/REVOKED/WITHDRAWN"
        if problem:
            self.bad("state", problem)

        reason_ok = self.text("reason", reason, max_len=MAX_REASON_LEN, required=False, multiline=True)
        if reason_ok and state_v in STATES_NEEDING_REASON and not reason.strip():
            assert state_v is not None
            self.bad("reason", f"required when state is {state_v.name}: say why")

        effective_utc: datetime | None = None
        if effective_at is None:
            self.bad("effective_at", "required")
        elif effective_at.tzinfo is None or effective_at.utcoffset() is None:
            # A naive time is ambiguous by eight hours between UTC and Beijing time.
            self.bad("effective_at", "must carry a time zone")
        else:
            effective_utc = effective_at.astimezone(UTC)

        if version < 1:
            self.bad("version", "must be at least 1")
        elif version > MAX_VERSION:
            self.bad("version", f"must be at most {MAX_VERSION}")
        return state_v, effective_utc

    def done(self, message: str) -> None:
        collect(self.violations, message)


def build_assessor(
    *,
    registration_number: str,
    name: str,
    home: str,
    qualifications: Sequence[QualificationInput],
    state: int,
    reason: str,
    effective_at: datetime | None,
    evaluations: Sequence[EvaluationInput],
    version: int,
    field_prefix: str = ASSESSOR,
) -> tuple[Assessor, list[str]]:
    """Validate a submitted assessor record and build it; see ``build_certificate``.

    Raises InvalidArgument listing every violation (``assessor.qualifications[0].fields[1]``
    etc.). Returns the record and warnings.
    """
    f = _Form(field_prefix)
    f.key_part("registration_number", registration_number, max_len=MAX_NUMBER_LEN)
    f.text("name", name, max_len=MAX_NAME_LEN)
    f.participant("home", home)

    quals: list[Qualification] = []
    if not qualifications:
        f.bad("qualifications", "at least one qualification is required")
    elif len(qualifications) > MAX_QUALIFICATIONS:
        f.bad("qualifications", f"at most {MAX_QUALIFICATIONS} allowed, got {len(qualifications)}")
    else:
        for i, q in enumerate(qualifications):
            p = f"qualifications[{i}]"
            kind_v = f.member(f"{p}.kind", QualificationKind, q.kind)
            f.text(f"{p}.grade", q.grade, max_len=MAX_GRADE_LEN)
            if not q.fields:
                f.bad(f"{p}.fields", "at least one technical field is required")
            elif len(q.fields) > MAX_FIELDS:
                f.bad(f"{p}.fields", f"at most {MAX_FIELDS} allowed, got {len(q.fields)}")
            else:
                for j, tech in enumerate(q.fields):
                    f.label(f"{p}.fields[{j}]", tech, max_len=MAX_FIELD_LEN)
            start = f.day(f"{p}.valid_from", q.valid_from)
            end = f.day(f"{p}.valid_until", q.valid_until)
            if start is not None and end is not None and end < start:
                f.bad(f"{p}.valid_until", f"must not be before valid_from ({start.isoformat()})")
            elif kind_v is not None and start is not None and end is not None:
                quals.append(
                    Qualification(
                        kind=kind_v, grade=q.grade, fields=tuple(q.fields), valid_from=start, valid_until=end
                    )
                )

    evals: list[Evaluation] = []
    if len(evaluations) > MAX_EVALUATIONS:
        f.bad("evaluations", f"at most {MAX_EVALUATIONS} allowed, got {len(evaluations)}")
    else:
        for i, e in enumerate(evaluations):
            p = f"evaluations[{i}]"
            on = f.day(f"{p}.date", e.date)
            f.text(f"{p}.evaluator", e.evaluator, max_len=MAX_NAME_LEN)
            f.text(f"{p}.result", e.result, max_len=MAX_EVALUATION_RESULT_LEN)
            f.text(f"{p}.note", e.note, max_len=MAX_NOTE_LEN, required=False, multiline=True)
            if on is not None:
                evals.append(Evaluation(date=on, evaluator=e.evaluator, result=e.result, note=e.note))

    state_v, effective_utc = f.life_cycle(
        state=state,
        reason=reason,
        effective_at=effective_at,
        version=version,
        expired="EXPIRED is derived from the qualifications' valid_until",
    )
    f.done("invalid assessor record")
    assert state_v is not None and effective_utc is not None
    record = Assessor(
        registration_number=registration_number,
        name=name,
        home=home,
        qualifications=tuple(quals),
        state=state_v,
        reason=reason,
        effective_at=effective_utc,
        evaluations=tuple(evals),
        version=version,
    )
    return record, f.warnings


def build_test_report(
    *,
    report_number: str,
    issuer: str,
    lab_name: str,
    lab_cma_number: str,
    accreditation_number: str,
    product: str,
    standard: str,
    conclusion: int,
    issue_date: str,
    state: int,
    reason: str,
    effective_at: datetime | None,
    version: int,
    field_prefix: str = TEST_REPORT,
) -> tuple[TestReport, list[str]]:
    """Validate a submitted test report and build it; see ``build_certificate``."""
    f = _Form(field_prefix)
    f.key_part("report_number", report_number, max_len=MAX_NUMBER_LEN)
    f.participant("issuer", issuer)
    f.text("lab_name", lab_name, max_len=MAX_NAME_LEN)
    # Not part of this key, but it is looked up as a CMA certificate number, so the same
    # shape rules apply; CMA number formats are weakly sourced, so nothing stricter.
    f.lab_identity(
        issuer=issuer,
        lab_cma_number=lab_cma_number,
        accreditation_number=accreditation_number,
        cma_max_len=MAX_NUMBER_LEN,
        accreditation_max_len=MAX_ACCREDITATION_LEN,
        slash_ok=True,
    )
    f.text("product", product, max_len=MAX_PRODUCT_LEN)
    f.text("standard", standard, max_len=MAX_STANDARD_LEN)
    conclusion_v = f.member("conclusion", Conclusion, conclusion)
    issue_d = f.day("issue_date", issue_date)
    state_v, effective_utc = f.life_cycle(
        state=state,
        reason=reason,
        effective_at=effective_at,
        version=version,
        expired="EXPIRED is never published, and test reports do not expire",
    )
    f.done("invalid test report")
    assert conclusion_v is not None and issue_d is not None
    assert state_v is not None and effective_utc is not None
    record = TestReport(
        report_number=report_number,
        issuer=issuer,
        lab_name=lab_name,
        lab_cma_number=lab_cma_number,
        accreditation_number=accreditation_number,
        product=product,
        standard=standard,
        conclusion=conclusion_v,
        issue_date=issue_d,
        state=state_v,
        reason=reason,
        effective_at=effective_utc,
        version=version,
    )
    return record, f.warnings


def build_pt_result(
    *,
    issuer: str,
    scheme_id: str,
    round: str,
    lab_name: str,
    lab_cma_number: str,
    analyte: str,
    assigned_value: float | None,
    sigma: float | None,
    reported_value: float,
    z_score: float,
    report_date: str,
    state: int,
    reason: str,
    effective_at: datetime | None,
    version: int,
    boundaries: PtBoundaries = DEFAULT_PT_BOUNDARIES,
    z_tolerance: float = 0.01,
    field_prefix: str = PT_RESULT,
    accreditation_number: str = "",
) -> tuple[PtResult, list[str]]:
    """Validate a submitted PT result, check its z-score and classify it.

    When ``assigned_value`` and ``sigma`` are given, ``z_score`` must lie within
    ``z_tolerance`` of (reported_value - assigned_value) / sigma: providers publish z
    rounded to two decimals, so the default allows that rounding and little more. The
    class is computed from the submitted ``z_score`` (the figure the lab was told) with
    ``boundaries``; any class the submitter holds is ignored.
    """
    if not (math.isfinite(z_tolerance) and z_tolerance >= 0):
        raise ValueError(f"z_tolerance must be a finite number >= 0, got {z_tolerance}")
    f = _Form(field_prefix)
    f.participant("issuer", issuer)
    f.key_part("scheme_id", scheme_id, max_len=MAX_SCHEME_ID_LEN)
    f.key_part("round", round, max_len=MAX_ROUND_LEN)
    f.text("lab_name", lab_name, max_len=MAX_NAME_LEN)
    # The lab is a key part: whichever identifies it must fit the slot and hold no "/".
    f.lab_identity(
        issuer=issuer,
        lab_cma_number=lab_cma_number,
        accreditation_number=accreditation_number,
        cma_max_len=MAX_PT_LAB_CMA_LEN,
        accreditation_max_len=MAX_PT_LAB_CMA_LEN,
        slash_ok=False,
    )
    f.label("analyte", analyte, max_len=MAX_ANALYTE_LEN)

    assigned = None if assigned_value is None else f.number("assigned_value", assigned_value)
    sigma_v = None if sigma is None else f.number("sigma", sigma)
    if sigma_v is not None and sigma_v <= 0:
        f.bad("sigma", f"must be greater than 0, got {sigma_v}")
        sigma_v = None
    if (assigned_value is None) != (sigma is None):
        missing = "sigma" if sigma is None else "assigned_value"
        f.bad(missing, "assigned_value and sigma must be given together or not at all")
    reported = f.number("reported_value", reported_value)
    z = f.number("z_score", z_score)
    if assigned is not None and sigma_v is not None and reported is not None and z is not None:
        expected = (reported - assigned) / sigma_v
        if not math.isfinite(expected):
            f.bad("sigma", "too small: (reported_value - assigned_value) / sigma is not a finite number")
        elif abs(z - expected) > z_tolerance:
            f.bad(
                "z_score",
                f"does not match the values: (reported_value - assigned_value) / sigma = "
                f"({reported:g} - {assigned:g}) / {sigma_v:g} = {expected:.4f}, got {z:g} "
                f"(tolerance {z_tolerance:g})",
            )
    report_d = f.day("report_date", report_date)
    state_v, effective_utc = f.life_cycle(
        state=state,
        reason=reason,
        effective_at=effective_at,
        version=version,
        expired="EXPIRED is never published, and PT results do not expire",
    )
    f.done("invalid PT result")
    assert reported is not None and z is not None and report_d is not None
    assert state_v is not None and effective_utc is not None
    record = PtResult(
        issuer=issuer,
        scheme_id=scheme_id,
        round=round,
        lab_name=lab_name,
        lab_cma_number=lab_cma_number,
        analyte=analyte,
        assigned_value=assigned,
        sigma=sigma_v,
        reported_value=reported,
        z_score=z,
        report_date=report_d,
        state=state_v,
        reason=reason,
        effective_at=effective_utc,
        version=version,
        classification=classify_z(z, boundaries),
        accreditation_number=accreditation_number,
    )
    return record, f.warnings


def build_spot_check(
    *,
    check_id: str,
    issuer: str,
    target_name: str,
    target_credit_code: str,
    check_date: str,
    items: Sequence[str],
    outcome: int,
    follow_up: str,
    state: int,
    reason: str,
    effective_at: datetime | None,
    version: int,
    field_prefix: str = SPOT_CHECK,
) -> tuple[SpotCheck, list[str]]:
    """Validate a submitted spot-check result and build it; see ``build_certificate``."""
    f = _Form(field_prefix)
    f.key_part("check_id", check_id, max_len=MAX_NUMBER_LEN)
    f.participant("issuer", issuer)
    f.text("target_name", target_name, max_len=MAX_NAME_LEN)
    if not target_credit_code:
        f.bad("target_credit_code", "required")
    elif issuer in identifiers.HK_MO_PARTICIPANTS:
        # A Hong Kong or Macau target has no credit code; its local registration number
        # identifies it as a certificate holder's does.
        try:
            f.warn("target_credit_code", identifiers.check_hk_mo_holder_id(issuer, target_credit_code))
        except ValueError as e:
            f.bad("target_credit_code", str(e))
    else:
        try:
            f.warn("target_credit_code", identifiers.check_credit_code(target_credit_code).warning)
        except ValueError as e:
            f.bad("target_credit_code", str(e))
    check_d = f.day("check_date", check_date)
    if not items:
        f.bad("items", "at least one checked item is required")
    elif len(items) > MAX_ITEMS:
        f.bad("items", f"at most {MAX_ITEMS} allowed, got {len(items)}")
    else:
        for i, item in enumerate(items):
            f.text(f"items[{i}]", item, max_len=MAX_ITEM_LEN)
    outcome_v = f.member("outcome", SpotCheckOutcome, outcome)
    f.text("follow_up", follow_up, max_len=MAX_FOLLOW_UP_LEN, required=False, multiline=True)
    state_v, effective_utc = f.life_cycle(
        state=state,
        reason=reason,
        effective_at=effective_at,
        version=version,
        expired="EXPIRED is never published, and spot checks do not expire",
    )
    f.done("invalid spot check")
    assert check_d is not None and outcome_v is not None
    assert state_v is not None and effective_utc is not None
    record = SpotCheck(
        check_id=check_id,
        issuer=issuer,
        target_name=target_name,
        target_credit_code=target_credit_code,
        check_date=check_d,
        items=tuple(items),
        outcome=outcome_v,
        follow_up=follow_up,
        state=state_v,
        reason=reason,
        effective_at=effective_utc,
        version=version,
    )
    return record, f.warnings
