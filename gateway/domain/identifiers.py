"""Identifiers that appear in records, and how strictly each is checked.

Unified social credit code (统一社会信用代码, GB 32100-2015)
    Refused when it is not 18 characters, holds a character outside the code's
    31-character alphabet (lower case included: the standard defines upper case only,
    and silently upper-casing would let two spellings of one code reach the store), or
    its check character (position 18) does not match positions 1-17.

    Legacy rule: real, officially issued codes exist whose check character fails,
    notably Fujian codes with ``M000`` in positions 9-12. A code whose *only* defect is
    its check character, and whose positions 9-12 are exactly ``M000``, is accepted with
    a warning. The rule is kept that narrow on purpose: a broader one ("accept any code
    whose embedded organisation code is itself irregular") would also accept most
    ordinary typing mistakes, which is exactly what the check character exists to catch.
    Widen it only with evidence of another issued family of codes.

    The embedded organisation code (positions 9-17, GB 11714) is *not* checked when
    validating: GB 32100 makes position 18 the integrity check over the whole code,
    and there is no evidence that every registering authority's positions 9-17 pass
    GB 11714, so that check could only produce refusals (or warnings) on weak grounds.
    ``make_credit_code`` does compute it, so constructed codes are fully regular.

Certificate numbers
    Only the shape that would break storage or display is refused (empty, too long,
    whitespace or control characters). Scheme-specific formats are weakly sourced, so a
    number that deviates (e.g. a CCC number that is not 16 digits, as older ones are)
    gets a warning, never a refusal.

Issuing bodies
    Expected to be a CNCA approval number (``CNCA-R-2002-001``) or an accreditation id
    (``CNAS C001-M``, ``HKCAS 003``, ``HOKLAS 058``, ``HKIAS 850S``). No official
    numbering rule for either was found, and some schemes (e.g. CMA qualifications) are
    issued by authorities that have neither, so any other shape gets a warning only.

Hong Kong and Macau
    Neither has unified social credit codes or CMA qualifications. For a record whose
    issuer is CN-HK or CN-MO, a certificate holder's ``credit_code`` may be empty (the
    accreditation or certificate number identifies the holder), a Hong Kong Business
    Registration number (8 digits; the first 8 of the BR certificate number), a Macau
    commercial registration number (digits; weakly sourced, so another shape only
    warns), or a credit code of a mainland-registered holder, checked as above. HKAS
    accreditations (HOKLAS labs, HKCAS certification bodies, HKIAS inspection bodies)
    are numbered with three digits and an optional letter ("058", "850S"); as a lab's
    identity on a result they are written with the programme: "HOKLAS 058".

Participant codes and message ids are gateway-defined, so they are enforced strictly.
Patterns are anchored with ``\\A``/``\\Z`` because ``$`` also matches before a trailing
newline, which would let ``"CN-SH\\n"`` through ``re.match``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
USCC_LENGTH = 18
ORG_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
LEGACY_ORG_PREFIX = "M000"

PARTICIPANT_RE = re.compile(r"\A[A-Z]{2,5}-[A-Z]{2,5}\Z")
MESSAGE_ID_RE = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")
# [0-9] rather than \d: \d also matches full-width and other Unicode digits.
CCC_NUMBER_RE = re.compile(r"\A[0-9]{16}\Z")
CNCA_BODY_RE = re.compile(r"\ACNCA-R-[0-9]{4}-[0-9]{3}\Z")
ACCREDITATION_ID_RE = re.compile(
    r"\A(?:CNAS [A-Z]{1,2}[0-9]{1,5}(?:-[A-Z]{1,2})?|(?:HKAS|HOKLAS|HKCAS|HKIAS) [0-9]{3}[A-Z]?)\Z"
)

MAX_CERTIFICATE_NUMBER_LEN = 64

# Participants whose labs and holders carry no mainland identifier (no CMA
# qualification, no unified social credit code).
HK_MO_PARTICIPANTS = frozenset({"CN-HK", "CN-MO"})
# Only the Hong Kong Accreditation Service (part of Hong Kong's ITC) grants these.
HKAS_ISSUER = "CN-HK"
HKAS_BODY = "HKAS"
HKAS_SCHEMES = ("HOKLAS", "HKCAS", "HKIAS")
HKAS_NUMBER_RE = re.compile(r"\A[0-9]{3}[A-Z]?\Z")
HK_BUSINESS_REGISTRATION_RE = re.compile(r"\A[0-9]{8}\Z")
MO_REGISTRATION_RE = re.compile(r"\A[0-9]{1,8}\Z")

_USCC_VALUE = {ch: i for i, ch in enumerate(USCC_ALPHABET)}
_DIVISION_RE = re.compile(r"\A[0-9]{6}\Z")


def _describe_char(ch: str) -> str:
    # repr() would hide what a non-printing or full-width character is; a code point
    # and a name let the sender find it in their own data.
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def uscc_check_char(first17: str) -> str:
    """The GB 32100-2015 check character (position 18) for positions 1-17."""
    if len(first17) != USCC_LENGTH - 1:
        raise ValueError(f"expected 17 characters, got {len(first17)}")
    total = 0
    for pos, (ch, weight) in enumerate(zip(first17, USCC_WEIGHTS, strict=True), start=1):
        value = _USCC_VALUE.get(ch)
        if value is None:
            raise ValueError(f"character {_describe_char(ch)} at position {pos} is not in the code alphabet")
        total += value * weight
    return USCC_ALPHABET[(31 - total % 31) % 31]


def _org_char_value(ch: str) -> int:
    if "0" <= ch <= "9":
        return ord(ch) - ord("0")
    if "A" <= ch <= "Z":
        return ord(ch) - ord("A") + 10
    raise ValueError(f"character {_describe_char(ch)} is not allowed in an organisation code")


def org_code_check_char(first8: str) -> str:
    """The GB 11714 check character (9th) of an organisation code."""
    if len(first8) != len(ORG_CODE_WEIGHTS):
        raise ValueError(f"expected 8 characters, got {len(first8)}")
    total = sum(_org_char_value(ch) * w for ch, w in zip(first8, ORG_CODE_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


@dataclass(frozen=True)
class CreditCodeCheck:
    """A credit code that was accepted, with a warning if only a legacy rule let it in."""

    code: str
    warning: str | None


def check_credit_code(code: str) -> CreditCodeCheck:
    """Validate a unified social credit code; see the module docstring for the rules.

    Raises ValueError with a reason meant for the sender's developer.
    """
    if len(code) != USCC_LENGTH:
        raise ValueError(f"must be {USCC_LENGTH} characters, got {len(code)}")
    for pos, ch in enumerate(code, start=1):
        if ch in _USCC_VALUE:
            continue
        if ch.upper() in _USCC_VALUE:
            raise ValueError(f"character {ch!r} at position {pos} must be upper case")
        if ch in "IOSVZ":
            raise ValueError(
                f"character {ch!r} at position {pos} is not used in credit codes (I, O, S, V, Z never are)"
            )
        raise ValueError(
            f"character {_describe_char(ch)} at position {pos} is not allowed; "
            f"only 0-9 and upper-case letters except I, O, S, V, Z"
        )
    if uscc_check_char(code[:17]) == code[17]:
        return CreditCodeCheck(code=code, warning=None)
    if code[8:12] == LEGACY_ORG_PREFIX:
        return CreditCodeCheck(
            code=code,
            warning=(
                f"credit code {code}: check character does not match GB 32100-2015; "
                f"accepted as a known legacy form (M000 in positions 9-12)"
            ),
        )
    # The expected character is deliberately not given: when the check fails, a
    # character among 1-17 is usually mistyped, and quoting the "right" check character
    # invites fixing the wrong one.
    raise ValueError(
        "check character (position 18) does not match GB 32100-2015; a character is likely mistyped"
    )


def make_credit_code(
    *, registering_authority: str = "9", org_type: str = "1", division: str, org_code8: str
) -> str:
    """Build a fully regular credit code (both check characters computed), for fixtures and demos."""
    if len(registering_authority) != 1 or registering_authority not in _USCC_VALUE:
        raise ValueError("registering_authority must be one character of the code alphabet")
    if len(org_type) != 1 or org_type not in _USCC_VALUE:
        raise ValueError("org_type must be one character of the code alphabet")
    if not _DIVISION_RE.match(division):
        raise ValueError("division must be a 6-digit administrative division code")
    if len(org_code8) != 8 or any(ch not in _USCC_VALUE for ch in org_code8):
        raise ValueError("org_code8 must be 8 characters of the code alphabet")
    first17 = registering_authority + org_type + division + org_code8 + org_code_check_char(org_code8)
    return first17 + uscc_check_char(first17)


def is_participant_code(s: str) -> bool:
    """Participant and principal codes: ``CN-SH``, ``CN-HK``, ``YRD-SEC``, ``MRX-GW``."""
    return PARTICIPANT_RE.match(s) is not None


def is_message_id(s: str) -> bool:
    return MESSAGE_ID_RE.match(s) is not None


def _is_unsafe_char(ch: str) -> bool:
    # Cc: C0/C1 controls; Cf: invisible format characters (zero-width, bidi overrides)
    # that make two numbers look identical; Cs: lone surrogates, which cannot be encoded.
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs")


def check_certificate_number(number: str) -> None:
    """Refuse only numbers that cannot be stored, keyed or shown reliably."""
    if not number:
        raise ValueError("required")
    if len(number) > MAX_CERTIFICATE_NUMBER_LEN:
        raise ValueError(f"must be at most {MAX_CERTIFICATE_NUMBER_LEN} characters, got {len(number)}")
    for pos, ch in enumerate(number, start=1):
        if ch.isspace() or _is_unsafe_char(ch):
            raise ValueError(
                f"character {_describe_char(ch)} at position {pos} is not allowed "
                f"(no whitespace or control characters)"
            )


def certificate_number_warning(scheme_name: str, number: str) -> str | None:
    """A warning when a number deviates from its scheme's usual shape; never a refusal.

    ``scheme_name`` is the scheme's enum name (``"CCC"``); only CCC has a shape
    reliable enough to compare against.
    """
    if scheme_name == "CCC" and not CCC_NUMBER_RE.match(number):
        return (
            f"certificate number {number!r} is not the usual 16-digit CCC form "
            f"(year + body code + product category + serial); accepted"
        )
    return None


def issuing_body_warning(body: str) -> str | None:
    """A warning when an issuing body is neither a CNCA approval number nor an accreditation id."""
    # HKAS grants HOKLAS/HKCAS/HKIAS accreditations itself, under its own name.
    if CNCA_BODY_RE.match(body) or ACCREDITATION_ID_RE.match(body) or body == HKAS_BODY:
        return None
    return (
        f"issuing body {body!r} is neither a CNCA approval number (CNCA-R-YYYY-NNN) "
        f"nor a CNAS/HKAS accreditation id; accepted, but readers may not be able to look it up"
    )


def hkas_accreditation(accreditation_number: str) -> tuple[str, str] | None:
    """``("HOKLAS", "058")`` for ``"HOKLAS 058"``: the certificate scheme and number an
    HKAS accreditation is published under; None for any other shape (CNAS, foreign)."""
    programme, _, number = accreditation_number.partition(" ")
    if programme in HKAS_SCHEMES and HKAS_NUMBER_RE.match(number):
        return programme, number
    return None


def check_hk_mo_holder_id(issuer: str, code: str) -> str | None:
    """Validate a holder identifier published by CN-HK or CN-MO; returns a warning or None.

    Raises ValueError with a reason meant for the sender's developer. Empty is allowed.
    """
    if not code:
        return None
    if len(code) == USCC_LENGTH:
        return check_credit_code(code).warning
    if issuer == "CN-HK":
        if HK_BUSINESS_REGISTRATION_RE.match(code):
            return None
        raise ValueError(
            "must be a Hong Kong Business Registration number (8 digits), a unified social credit "
            "code (18 characters), or empty"
        )
    check_certificate_number(code)
    if MO_REGISTRATION_RE.match(code):
        return None
    return (
        f"holder identifier {code!r} is neither a credit code nor the usual Macau commercial "
        f"registration number (digits); accepted"
    )
