from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.domain.certificates import (
    FINAL_STATES,
    MAX_VERSION,
    TRANSITIONS,
    Certificate,
    CertState,
    Holder,
    Scheme,
    build_certificate,
    check_transition,
    effective_state,
)
from gateway.domain.errors import FailedPrecondition, InvalidArgument
from gateway.domain.identifiers import USCC_ALPHABET, make_credit_code, uscc_check_char

HOLDER_CODE = make_credit_code(division="320505", org_code8="MA1MXP4D")
BEIJING = timezone(timedelta(hours=8))


def valid_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "certificate_number": "2025010901000001",
        "scheme": 1,
        "issuing_body": "CNCA-R-2002-001",
        "issuer": "CN-JS",
        "holder_name": "苏州明德电子科技有限公司",
        "holder_credit_code": HOLDER_CODE,
        "scope": "便携式计算机",
        "state": 1,
        "reason": "",
        "effective_at": datetime(2025, 3, 1, tzinfo=UTC),
        "issue_date": "2025-03-01",
        "expiry_date": "2030-03-01",
        "version": 1,
    }
    kwargs.update(overrides)
    return kwargs


def violations_of(**overrides: Any) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as exc:
        build_certificate(**valid_kwargs(**overrides))
    assert exc.value.reason == "INVALID_FIELDS"
    return {v.field: v.description for v in exc.value.violations}


def test_proto_enum_values() -> None:
    assert [(s.name, s.value) for s in Scheme] == [
        ("CCC", 1),
        ("CMA", 2),
        ("QMS", 3),
        ("EMS", 4),
        ("OHSMS", 5),
        ("ISMS", 6),
        ("FSMS", 7),
        ("ENMS", 8),
        ("ORGANIC", 9),
        ("GREEN_PRODUCT", 10),
        ("SERVICE", 11),
        ("VOLUNTARY_PRODUCT", 12),
        ("HOKLAS", 13),
        ("HKCAS", 14),
        ("HKIAS", 15),
    ]
    assert [(s.name, s.value) for s in CertState] == [
        ("VALID", 1),
        ("SUSPENDED", 2),
        ("REVOKED", 3),
        ("WITHDRAWN", 4),
        ("EXPIRED", 5),
    ]
    assert frozenset({CertState.REVOKED, CertState.WITHDRAWN}) == FINAL_STATES


def test_valid_submission_builds() -> None:
    cert, warnings = build_certificate(**valid_kwargs())
    assert warnings == []
    assert cert == Certificate(
        certificate_number="2025010901000001",
        scheme=Scheme.CCC,
        issuing_body="CNCA-R-2002-001",
        issuer="CN-JS",
        holder=Holder(name="苏州明德电子科技有限公司", credit_code=HOLDER_CODE),
        scope="便携式计算机",
        state=CertState.VALID,
        reason="",
        effective_at=datetime(2025, 3, 1, tzinfo=UTC),
        issue_date=date(2025, 3, 1),
        expiry_date=date(2030, 3, 1),
        version=1,
    )
    assert cert.key == "certificate_status/CCC/2025010901000001"


def test_effective_at_normalised_to_utc() -> None:
    cert, _ = build_certificate(**valid_kwargs(effective_at=datetime(2025, 3, 1, 8, tzinfo=BEIJING)))
    assert cert.effective_at == datetime(2025, 3, 1, 0, tzinfo=UTC)
    assert cert.effective_at.utcoffset() == timedelta(0)


def test_multiline_scope_and_reason_allowed() -> None:
    cert, _ = build_certificate(
        **valid_kwargs(scope="便携式计算机\n微型计算机", state=2, reason="监督抽查不合格\n暂停证书")
    )
    assert cert.scope == "便携式计算机\n微型计算机"
    assert cert.state is CertState.SUSPENDED


def test_expiry_equal_to_issue_allowed() -> None:
    cert, _ = build_certificate(**valid_kwargs(expiry_date="2025-03-01"))
    assert cert.expiry_date == cert.issue_date


def test_max_lengths_allowed() -> None:
    cert, _ = build_certificate(
        **valid_kwargs(
            certificate_number="1" * 64,
            scheme=3,
            holder_name="名" * 200,
            scope="范" * 2000,
            reason="因" * 1000,
            version=MAX_VERSION,
        )
    )
    assert cert.version == MAX_VERSION


P = "certificate_status."


@pytest.mark.parametrize(
    ("overrides", "field", "description"),
    [
        ({"certificate_number": ""}, "certificate_number", "required"),
        ({"certificate_number": "1" * 65}, "certificate_number", "must be at most 64 characters, got 65"),
        ({"certificate_number": "2025 01"}, "certificate_number", "character U+0020 SPACE at position 5"),
        ({"scheme": 0}, "scheme", "required"),
        ({"scheme": 17}, "scheme", "unknown enum value 17"),
        ({"scheme": -1}, "scheme", "unknown enum value -1"),
        ({"issuing_body": ""}, "issuing_body", "required"),
        ({"issuing_body": "   "}, "issuing_body", "required"),
        ({"issuing_body": "C" * 65}, "issuing_body", "must be at most 64 characters, got 65"),
        ({"issuing_body": "CNCA\x00"}, "issuing_body", "control character U+0000 at position 5"),
        ({"issuer": ""}, "issuer", "required"),
        ({"issuer": "cn-js"}, "issuer", "must be a participant code such as CN-JS, got 'cn-js'"),
        ({"issuer": "CN-JS\n"}, "issuer", "must be a participant code such as CN-JS"),
        ({"holder_name": ""}, "holder.name", "required"),
        ({"holder_name": " \t"}, "holder.name", "required"),
        ({"holder_name": "名" * 201}, "holder.name", "must be at most 200 characters, got 201"),
        (
            {"holder_name": "苏州\n明德"},
            "holder.name",
            "control character U+000A at position 3 is not allowed",
        ),
        ({"holder_name": "苏州\u202e明德"}, "holder.name", "control character U+202E at position 3"),
        ({"holder_credit_code": ""}, "holder.credit_code", "required"),
        ({"holder_credit_code": HOLDER_CODE[:-1]}, "holder.credit_code", "must be 18 characters, got 17"),
        (
            {"holder_credit_code": HOLDER_CODE.lower()},
            "holder.credit_code",
            "character 'm' at position 9 must be upper case",
        ),
        ({"holder_credit_code": "914403001922038217"}, "holder.credit_code", "check character (position 18)"),
        ({"scope": ""}, "scope", "required"),
        ({"scope": "范" * 2001}, "scope", "must be at most 2000 characters, got 2001"),
        (
            {"scope": "a\r\nb"},
            "scope",
            "control character U+000D at position 2 is not allowed; only line feed",
        ),
        ({"scope": "a\u2028b"}, "scope", "control character U+2028"),
        ({"state": 0}, "state", "required"),
        ({"state": 9}, "state", "unknown enum value 9"),
        (
            {"state": 5},
            "state",
            "EXPIRED is derived from expiry_date; publish VALID/SUSPENDED/REVOKED/WITHDRAWN",
        ),
        ({"reason": "因" * 1001}, "reason", "must be at most 1000 characters, got 1001"),
        ({"reason": "a\x07"}, "reason", "control character U+0007 at position 2"),
        ({"state": 2, "reason": ""}, "reason", "required when state is SUSPENDED"),
        ({"state": 3, "reason": "  "}, "reason", "required when state is REVOKED"),
        ({"state": 4, "reason": "\n"}, "reason", "required when state is WITHDRAWN"),
        ({"effective_at": None}, "effective_at", "required"),
        ({"effective_at": datetime(2025, 3, 1)}, "effective_at", "must carry a time zone"),
        ({"issue_date": ""}, "issue_date", "required"),
        ({"issue_date": "2025-3-1"}, "issue_date", "must be a date as YYYY-MM-DD, got '2025-3-1'"),
        ({"issue_date": "20250301"}, "issue_date", "must be a date as YYYY-MM-DD"),
        ({"issue_date": "2025-03-01T00:00"}, "issue_date", "must be a date as YYYY-MM-DD"),
        ({"issue_date": "2025-02-29"}, "issue_date", "2025-02-29 is not a real calendar date"),
        ({"issue_date": "0000-01-01"}, "issue_date", "0000-01-01 is not a real calendar date"),
        ({"expiry_date": ""}, "expiry_date", "required"),
        ({"expiry_date": "２０３０-03-01"}, "expiry_date", "must be a date as YYYY-MM-DD"),
        ({"expiry_date": "2030-13-01"}, "expiry_date", "2030-13-01 is not a real calendar date"),
        ({"expiry_date": "2025-02-28"}, "expiry_date", "must not be before issue_date (2025-03-01)"),
        ({"version": 0}, "version", "must be at least 1"),
        ({"version": -5}, "version", "must be at least 1"),
        ({"version": MAX_VERSION + 1}, "version", f"must be at most {MAX_VERSION}"),
    ],
)
def test_single_violation(overrides: dict[str, Any], field: str, description: str) -> None:
    found = violations_of(**overrides)
    assert list(found) == [P + field]
    assert found[P + field].startswith(description)


def test_every_violation_collected_at_once() -> None:
    found = violations_of(
        certificate_number="",
        scheme=0,
        issuing_body="",
        issuer="js",
        holder_name="",
        holder_credit_code="x",
        scope="",
        state=2,
        reason="",
        effective_at=None,
        issue_date="2025/03/01",
        expiry_date="soon",
        version=0,
    )
    assert list(found) == [
        P + f
        for f in (
            "certificate_number",
            "scheme",
            "issuing_body",
            "issuer",
            "holder.name",
            "holder.credit_code",
            "scope",
            "reason",
            "effective_at",
            "issue_date",
            "expiry_date",
            "version",
        )
    ]


def test_error_message_names_first_field_and_count() -> None:
    with pytest.raises(InvalidArgument) as exc:
        build_certificate(**valid_kwargs(scheme=0, version=0))
    assert str(exc.value) == "invalid certificate status: certificate_status.scheme: required (and 1 more)"


def test_field_prefix() -> None:
    with pytest.raises(InvalidArgument) as exc:
        build_certificate(**valid_kwargs(scheme=0, field_prefix="submission.certificate_status"))
    assert [v.field for v in exc.value.violations] == ["submission.certificate_status.scheme"]


def test_bad_date_skips_ordering_check() -> None:
    found = violations_of(issue_date="2025-02-30", expiry_date="2020-01-01")
    assert list(found) == [P + "issue_date"]


def test_long_values_not_echoed_in_full() -> None:
    found = violations_of(issuer="X" * 10_000)
    assert len(found[P + "issuer"]) < 120


def legacy_credit_code() -> str:
    first17 = "91350100M000100Y4"
    return first17 + next(c for c in USCC_ALPHABET if c != uscc_check_char(first17))


def test_warnings_collected_with_field_paths() -> None:
    legacy = legacy_credit_code()
    cert, warnings = build_certificate(
        **valid_kwargs(
            certificate_number="A2003-0109-1", issuing_body="国家认监委", holder_credit_code=legacy
        )
    )
    assert cert.holder.credit_code == legacy
    assert len(warnings) == 3
    assert warnings[0].startswith(P + "certificate_number: ")
    assert "16-digit CCC" in warnings[0]
    assert warnings[1].startswith(P + "issuing_body: ")
    assert warnings[2].startswith(P + "holder.credit_code: ")
    assert "known legacy form" in warnings[2]


def test_ccc_shape_warning_only_for_ccc() -> None:
    _, warnings = build_certificate(**valid_kwargs(certificate_number="00125Q31234R1M", scheme=3))
    assert warnings == []


def test_warnings_not_returned_when_refused() -> None:
    # Invalid submissions raise; a warning on another field must not hide the refusal.
    found = violations_of(holder_credit_code=legacy_credit_code(), version=0)
    assert list(found) == [P + "version"]


# --- transitions ----------------------------------------------------------------------

PUBLISHABLE = [CertState.VALID, CertState.SUSPENDED, CertState.REVOKED, CertState.WITHDRAWN]
ALLOWED = {
    (CertState.VALID, CertState.VALID),
    (CertState.VALID, CertState.SUSPENDED),
    (CertState.VALID, CertState.REVOKED),
    (CertState.VALID, CertState.WITHDRAWN),
    (CertState.SUSPENDED, CertState.VALID),
    (CertState.SUSPENDED, CertState.SUSPENDED),
    (CertState.SUSPENDED, CertState.REVOKED),
    (CertState.SUSPENDED, CertState.WITHDRAWN),
    (CertState.REVOKED, CertState.REVOKED),
    (CertState.WITHDRAWN, CertState.WITHDRAWN),
}


def make_cert(state: CertState = CertState.VALID, version: int = 1) -> Certificate:
    cert, _ = build_certificate(**valid_kwargs(state=int(state), reason="原因", version=version))
    return cert


@pytest.mark.parametrize(("before", "after"), list(itertools.product(list(CertState), repeat=2)))
def test_transition_table_exhaustive(before: CertState, after: CertState) -> None:
    previous = dataclasses.replace(make_cert(), state=before, version=3)
    new = dataclasses.replace(make_cert(), state=after, version=4)
    if (before, after) in ALLOWED:
        check_transition(previous, new)
    else:
        with pytest.raises(FailedPrecondition) as exc:
            check_transition(previous, new)
        assert exc.value.reason == "ILLEGAL_TRANSITION"
        assert exc.value.metadata == {"from_state": before.name, "to_state": after.name}
        assert f"from {before.name}" in exc.value.message


def test_transition_table_is_data() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED


@pytest.mark.parametrize("state", PUBLISHABLE)
def test_first_publication_any_state(state: CertState) -> None:
    check_transition(None, make_cert(state))


@pytest.mark.parametrize(("stored", "submitted"), [(5, 5), (5, 4), (5, 1)])
def test_stale_version(stored: int, submitted: int) -> None:
    with pytest.raises(FailedPrecondition) as exc:
        check_transition(make_cert(version=stored), make_cert(version=submitted))
    assert exc.value.reason == "STALE_VERSION"
    assert exc.value.metadata == {"stored_version": str(stored), "submitted_version": str(submitted)}
    assert "certificate_status/CCC/2025010901000001" in exc.value.message


def test_stale_version_checked_before_transition() -> None:
    with pytest.raises(FailedPrecondition) as exc:
        check_transition(make_cert(CertState.REVOKED, version=5), make_cert(CertState.VALID, version=2))
    assert exc.value.reason == "STALE_VERSION"


def test_version_gap_allowed() -> None:
    check_transition(make_cert(version=1), make_cert(CertState.SUSPENDED, version=10))


# --- effective state ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "on_expiry_day", "day_after"),
    [
        (CertState.VALID, CertState.VALID, CertState.EXPIRED),
        (CertState.SUSPENDED, CertState.SUSPENDED, CertState.EXPIRED),
        (CertState.REVOKED, CertState.REVOKED, CertState.REVOKED),
        (CertState.WITHDRAWN, CertState.WITHDRAWN, CertState.WITHDRAWN),
    ],
)
def test_effective_state_boundary(state: CertState, on_expiry_day: CertState, day_after: CertState) -> None:
    cert = make_cert(state)
    assert cert.expiry_date == date(2030, 3, 1)
    assert effective_state(cert, date(2025, 3, 1)) is state
    assert effective_state(cert, date(2030, 3, 1)) is on_expiry_day
    assert effective_state(cert, date(2030, 3, 2)) is day_after
