"""Jurisdiction: what each participant may publish, and the rules that judge a record by it.

The federation file declares, per participant, identifiers that belong to it alone:
certificate-number blocks, CMA issuing-authority codes, labs (CMA numbers, with ``?``
for a digit that changes, or accreditation numbers), assessor registration prefixes,
and the certification bodies it supervises. A record is judged against every
participant's declarations, not only its sender's, so that a participant that declares
nothing still cannot publish what another has declared.

Two levels of confidence (DOMAIN.md: a weak rule warns, it never refuses):

- **Refused** (PERMISSION_DENIED ``OUTSIDE_JURISDICTION``): the record uses an identifier
  the federation file declares, verbatim, for another participant -- a certificate
  number inside another's block, a lab (or a lab's CMA qualification) declared under
  another, an assessor registration number under another's prefix.
- **Accepted with a warning** (``OUTSIDE_DECLARED_JURISDICTION: ...``) where the link
  rests on a shape or on a practice that has exceptions: a CMA number whose
  issuing-authority code (read from the number's shape) is another's; a certificate
  from a body another participant supervises (bodies certify clients nationwide); a PT
  result naming another's lab (PT schemes enrol labs from other provinces); an
  identifier outside everything the sender declared. A sender with no declaration at
  all gets ``NO_DECLARED_JURISDICTION``: joining stays possible, and the flag says why
  nothing was checked.

Pure: standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.domain.errors import PermissionDenied
from gateway.domain.kinds import CERTIFICATE_STATUS

OUTSIDE_JURISDICTION = "OUTSIDE_JURISDICTION"
OUTSIDE_DECLARED_JURISDICTION = "OUTSIDE_DECLARED_JURISDICTION"
NO_DECLARED_JURISDICTION = "NO_DECLARED_JURISDICTION"

# A lab pattern's wildcard: one character, any value (the year in a CMA number changes
# at every six-yearly renewal; the rest identifies the lab).
WILDCARD = "?"
# CMA issuing-authority code of national (CNCA) qualifications: nobody's province.
NATIONAL_CMA_AUTHORITY = "00"


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateBlock:
    """Certificate numbers of ``schemes`` whose serial digits lie in ``first..last``.

    The serial is ``serial_digits`` digits starting at 1-based position ``serial_at``;
    with ``length`` set, only numbers of exactly that length are in the block.
    """

    schemes: frozenset[str]
    serial_at: int
    serial_digits: int
    first: int
    last: int
    length: int | None = None

    def serial(self, number: str) -> int | None:
        """The serial this block reads from ``number``; None when the number has another shape."""
        if self.length is not None and len(number) != self.length:
            return None
        digits = number[self.serial_at - 1 : self.serial_at - 1 + self.serial_digits]
        if len(digits) != self.serial_digits or not (digits.isascii() and digits.isdigit()):
            return None
        return int(digits)

    def contains(self, scheme: str, number: str) -> bool:
        if scheme not in self.schemes:
            return False
        serial = self.serial(number)
        return serial is not None and self.first <= serial <= self.last

    def overlaps(self, other: CertificateBlock) -> bool:
        """Both could contain one number: a shared scheme, same serial position, ranges meet."""
        return (
            bool(self.schemes & other.schemes)
            and (self.serial_at, self.serial_digits) == (other.serial_at, other.serial_digits)
            and (self.length is None or other.length is None or self.length == other.length)
            and self.first <= other.last
            and other.first <= self.last
        )

    def describe(self) -> str:
        schemes = ",".join(sorted(self.schemes))
        end = self.serial_at + self.serial_digits - 1
        return f"{schemes} serial (characters {self.serial_at}-{end}) {self.first}..{self.last}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Jurisdiction:
    """What one participant declares as its own (keys/README.md, [[jurisdictions]])."""

    certification_bodies: tuple[str, ...] = ()
    cma_authorities: tuple[str, ...] = ()
    labs: tuple[str, ...] = ()
    assessor_prefixes: tuple[str, ...] = ()
    certificate_blocks: tuple[CertificateBlock, ...] = ()


def normalise_identifier(text: str) -> str:
    """Upper case, spaces removed: "CNAS L0326", "cnas l0326" and "CNASL0326" are one lab."""
    return "".join(text.split()).upper()


def lab_pattern_matches(pattern: str, identifier: str) -> bool:
    """``identifier`` matches ``pattern`` (both normalised; ``?`` stands for one character)."""
    return len(pattern) == len(identifier) and all(
        p in (WILDCARD, c) for p, c in zip(pattern, identifier, strict=True)
    )


def lab_patterns_overlap(a: str, b: str) -> bool:
    """Some identifier matches both patterns."""
    return len(a) == len(b) and all(x == y or WILDCARD in (x, y) for x, y in zip(a, b, strict=True))


def cma_authority_code(cma_number: str) -> str | None:
    """The issuing-authority code of a 12-digit CMA number (year, code, field, serial).

    Low confidence (DOMAIN.md: sources disagree on the form), so callers only warn on it.
    """
    if len(cma_number) == 12 and cma_number.isascii() and cma_number.isdigit():
        return cma_number[4:6]
    return None


@dataclass(frozen=True, slots=True)
class _Owner:
    participant: str
    entry: str  # the declaration that matched, as written in the file


@dataclass(slots=True)
class Assessment:
    """What the jurisdiction rules say about one record: warnings (a refusal is raised)."""

    warnings: list[str] = field(default_factory=list)

    def warn(self, field_path: str, message: str) -> None:
        self.warnings.append(f"{OUTSIDE_DECLARED_JURISDICTION}: {field_path}: {message}")


def _refuse(*, field_path: str, value: str, owner: _Owner, sender: str, what: str) -> PermissionDenied:
    shown = value if len(value) <= 80 else value[:80] + "..."
    return PermissionDenied(
        f"{field_path} {shown!r} is {what} declared for {owner.participant} in the federation file "
        f"({owner.entry!r}); {sender} may not publish it. If the declaration is wrong, the federation "
        "file must change, not the record.",
        reason=OUTSIDE_JURISDICTION,
        metadata={
            "field": field_path,
            "value": shown,
            "declared_for": owner.participant,
            "declared_as": owner.entry,
            "sender": sender,
        },
    )


class Jurisdictions:
    """Every participant's declarations, indexed for the checks; immutable once built."""

    def __init__(self, declared: Mapping[str, Jurisdiction]):
        self.declared: Mapping[str, Jurisdiction] = dict(declared)
        self._bodies: dict[str, str] = {}
        self._authorities: dict[str, str] = {}
        self._labs: list[tuple[str, str]] = []  # (normalised pattern, participant)
        self._prefixes: list[tuple[str, str]] = []  # (normalised prefix, participant)
        self._blocks: list[tuple[CertificateBlock, str]] = []
        for code, j in self.declared.items():
            self._bodies.update((normalise_identifier(b), code) for b in j.certification_bodies)
            self._authorities.update((a, code) for a in j.cma_authorities)
            self._labs += [(normalise_identifier(lab), code) for lab in j.labs]
            self._prefixes += [(normalise_identifier(p), code) for p in j.assessor_prefixes]
            self._blocks += [(b, code) for b in j.certificate_blocks]

    def __bool__(self) -> bool:
        return bool(self.declared)

    # --- consistency of the declarations (the loader reports these) ----------------------

    def conflicts(self) -> list[tuple[str, str]]:
        """(participant, problem) for every identifier two participants both declare."""
        found: list[tuple[str, str]] = []
        items = list(self.declared.items())
        for i, (a, ja) in enumerate(items):
            for b, jb in items[i + 1 :]:
                found += [(b, p) for p in _pair_conflicts(a, ja, jb)]
        return found

    # --- lookups -------------------------------------------------------------------------

    def lab_owner(self, identifier: str) -> _Owner | None:
        """Who declares the lab with this CMA or accreditation number (exactly, or by pattern)."""
        wanted = normalise_identifier(identifier)
        if not wanted:
            return None
        for pattern, code in self._labs:
            if lab_pattern_matches(pattern, wanted):
                return _Owner(code, pattern)
        return None

    def block_owner(self, scheme: str, number: str) -> tuple[_Owner, CertificateBlock] | None:
        for block, code in self._blocks:
            if block.contains(scheme, number):
                return _Owner(code, block.describe()), block
        return None

    def assessor_owner(self, registration_number: str) -> _Owner | None:
        wanted = normalise_identifier(registration_number)
        for prefix, code in self._prefixes:
            if wanted.startswith(prefix):
                return _Owner(code, prefix)
        return None

    # --- the rules, one per record kind --------------------------------------------------

    def _start(self, sender: str) -> tuple[Assessment, Jurisdiction | None]:
        assessment = Assessment()
        own = self.declared.get(sender)
        # A federation that declares no jurisdiction at all has not taken the feature up:
        # flagging every record would be noise.
        if own is None and self.declared:
            assessment.warnings.append(
                f"{NO_DECLARED_JURISDICTION}: {sender} declares no jurisdiction in the federation file, so "
                "only identifiers declared for other participants were checked; flagged for the secretariat"
            )
        return assessment, own

    def check_certificate(
        self, *, sender: str, scheme: str, number: str, issuing_body: str, prefix: str = CERTIFICATE_STATUS
    ) -> list[str]:
        """Refuse (raise) or return warnings for a certificate status ``sender`` publishes.

        ``scheme`` is the scheme's name (CCC, CMA, QMS, ...). A CMA certificate is a lab's
        qualification: its number is judged by the lab rules.
        """
        assessment, own = self._start(sender)
        field_path = f"{prefix}.certificate_number"
        if scheme == "CMA":
            self._lab(assessment, own, sender=sender, field_path=field_path, cma_number=number, refuse=True)
            return assessment.warnings
        found = self.block_owner(scheme, number)
        if found is not None and found[0].participant != sender:
            raise _refuse(
                field_path=field_path, value=number, owner=found[0], sender=sender, what="inside the block"
            )
        if found is None and own is not None and any(scheme in b.schemes for b in own.certificate_blocks):
            assessment.warn(
                field_path,
                f"{number} lies in none of the {scheme} certificate-number blocks {sender} declares; "
                "flagged for the secretariat",
            )
        body_owner = self._bodies.get(normalise_identifier(issuing_body))
        if body_owner is not None and body_owner != sender:
            assessment.warn(
                f"{prefix}.issuing_body",
                f"{issuing_body} is supervised by {body_owner}, not {sender}; accepted because a body "
                "certifies clients in every province; flagged for the secretariat",
            )
        return assessment.warnings

    def check_assessor(self, *, sender: str, registration_number: str) -> list[str]:
        """Refuse (raise) or return warnings for an assessor record whose home is ``sender``."""
        assessment, own = self._start(sender)
        field_path = "assessor.registration_number"
        owner = self.assessor_owner(registration_number)
        if owner is not None and owner.participant != sender:
            raise _refuse(
                field_path=field_path,
                value=registration_number,
                owner=owner,
                sender=sender,
                what="under the registration prefix",
            )
        if owner is None and own is not None and own.assessor_prefixes:
            assessment.warn(
                field_path,
                f"{registration_number} starts with none of the prefixes {sender} declares "
                f"({', '.join(own.assessor_prefixes)}); flagged for the secretariat",
            )
        return assessment.warnings

    def check_test_report(self, *, sender: str, lab_cma_number: str, accreditation_number: str) -> list[str]:
        """A report by a lab declared for another participant is refused: the lab issued it."""
        assessment, own = self._start(sender)
        self._lab(
            assessment,
            own,
            sender=sender,
            field_path="test_report.lab_cma_number",
            cma_number=lab_cma_number,
            accreditation_number=accreditation_number,
            accreditation_path="test_report.accreditation_number",
            refuse=True,
        )
        return assessment.warnings

    def check_pt_result(
        self, *, sender: str, lab_cma_number: str, accreditation_number: str = ""
    ) -> list[str]:
        """A PT result naming another's lab is flagged, not refused: schemes enrol labs from anywhere."""
        assessment, own = self._start(sender)
        self._lab(
            assessment,
            own,
            sender=sender,
            field_path="pt_result.lab_cma_number",
            cma_number=lab_cma_number,
            accreditation_number=accreditation_number,
            accreditation_path="pt_result.accreditation_number",
        )
        return assessment.warnings

    def check_other(self, *, sender: str) -> list[str]:
        """Kinds with no declared identifier (spot checks): only the no-declaration flag."""
        return self._start(sender)[0].warnings

    def _lab(
        self,
        assessment: Assessment,
        own: Jurisdiction | None,
        *,
        sender: str,
        field_path: str,
        cma_number: str,
        accreditation_number: str = "",
        accreditation_path: str = "",
        refuse: bool = False,
    ) -> None:
        # A Hong Kong or Macau lab may have no CMA number: its accreditation alone names it.
        named = [(field_path, cma_number)] if cma_number else []
        if accreditation_number:
            named.append((accreditation_path, accreditation_number))
        owners = [(path, value, self.lab_owner(value)) for path, value in named]
        for path, value, owner in owners:
            if owner is None or owner.participant == sender:
                continue
            if refuse:
                raise _refuse(field_path=path, value=value, owner=owner, sender=sender, what="a lab")
            assessment.warn(
                path,
                f"{value} is a lab declared for {owner.participant}, not {sender}; accepted because PT "
                "schemes enrol labs from other provinces; flagged for the secretariat",
            )
            return
        if any(owner is not None for _, _, owner in owners):
            return  # declared for the sender itself
        if not cma_number:
            return  # no CMA number, so no issuing-authority code to read
        code = cma_authority_code(cma_number)
        authority_owner = self._authorities.get(code) if code is not None else None
        if authority_owner is not None and authority_owner != sender:
            assessment.warn(
                field_path,
                f"{cma_number} carries CMA issuing-authority code {code}, declared for {authority_owner}, "
                f"not {sender} (read from the number's shape, which is not certain); flagged for the "
                "secretariat",
            )
        elif (
            authority_owner is None
            and code != NATIONAL_CMA_AUTHORITY
            and own is not None
            and (own.labs or own.cma_authorities)
        ):
            assessment.warn(
                field_path,
                f"{cma_number} is neither a lab nor a CMA issuing authority {sender} declares; "
                "flagged for the secretariat",
            )


def _pair_conflicts(a: str, ja: Jurisdiction, jb: Jurisdiction) -> Iterable[str]:
    """Problems (worded for b's entry) with identifiers a and b both declare."""
    bodies_a = {normalise_identifier(x) for x in ja.certification_bodies}
    for body in jb.certification_bodies:
        if normalise_identifier(body) in bodies_a:
            yield f"certification body {body} is also declared for {a}"
    for authority in jb.cma_authorities:
        if authority in ja.cma_authorities:
            yield f"CMA issuing-authority code {authority} is also declared for {a}"
    for lab in jb.labs:
        for other in ja.labs:
            if lab_patterns_overlap(normalise_identifier(lab), normalise_identifier(other)):
                yield f"lab {lab} overlaps lab {other} declared for {a}"
    for prefix in jb.assessor_prefixes:
        for other in ja.assessor_prefixes:
            p, q = normalise_identifier(prefix), normalise_identifier(other)
            if p.startswith(q) or q.startswith(p):
                yield f"assessor prefix {prefix} overlaps {other} declared for {a}"
    for block in jb.certificate_blocks:
        for theirs in ja.certificate_blocks:
            if block.overlaps(theirs):
                yield f"certificate block {block.describe()} overlaps {theirs.describe()} declared for {a}"
