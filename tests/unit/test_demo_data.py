from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from gateway.demo_fixtures import (
    CERTIFICATION_BODIES,
    DEMO_HOLDERS,
    DEMO_PARTICIPANTS,
    DEMO_REASONS,
    SERIAL_BLOCK,
    demo_certificates,
    demo_status_change,
)
from gateway.domain.certificates import (
    Certificate,
    CertState,
    Scheme,
    build_certificate,
    check_transition,
    effective_state,
)
from gateway.domain.errors import FailedPrecondition
from gateway.domain.identifiers import CCC_NUMBER_RE, CNCA_BODY_RE, check_credit_code

TODAY = date(2025, 6, 1)
# Real division code prefixes (province, or city for the Shenzhen/Zhuhai holders).
DIVISION_PREFIX = {
    "CN-SH": "31",
    "CN-JS": "3205",
    "CN-ZJ": "3301",
    "CN-AH": "3401",
    "CN-BJ": "11",
    "CN-TJ": "12",
    "CN-HE": "1301",
    "CN-GD": "4403",
    "CN-HK": "4403",
    "CN-MO": "4404",
    "CN-FJ": "3501",
    "CN-SN": "6101",
}


def resubmit(cert: Certificate) -> tuple[Certificate, list[str]]:
    return build_certificate(
        certificate_number=cert.certificate_number,
        scheme=int(cert.scheme),
        issuing_body=cert.issuing_body,
        issuer=cert.issuer,
        holder_name=cert.holder.name,
        holder_credit_code=cert.holder.credit_code,
        scope=cert.scope,
        state=int(cert.state),
        reason=cert.reason,
        effective_at=cert.effective_at,
        issue_date=cert.issue_date.isoformat(),
        expiry_date=cert.expiry_date.isoformat(),
        version=cert.version,
    )


def test_participants() -> None:
    assert set(DEMO_PARTICIPANTS) == set(DIVISION_PREFIX)


@pytest.mark.parametrize("participant", sorted(DIVISION_PREFIX))
def test_holders_have_regular_codes_in_their_province(participant: str) -> None:
    holders = DEMO_HOLDERS[participant]
    assert len(holders) >= 2
    for holder in holders:
        assert check_credit_code(holder.credit_code).warning is None
        assert holder.credit_code[2:].startswith(DIVISION_PREFIX[participant])
        assert holder.name.endswith("有限公司")


def test_all_credit_codes_distinct() -> None:
    codes = [h.credit_code for hs in DEMO_HOLDERS.values() for h in hs]
    assert len(codes) == len(set(codes))


def test_certification_bodies_are_cnca_numbers() -> None:
    assert CERTIFICATION_BODIES[0].approval_number == "CNCA-R-2002-001"
    assert CERTIFICATION_BODIES[0].ccc_code == "01"
    for body in CERTIFICATION_BODIES:
        assert CNCA_BODY_RE.match(body.approval_number)


@pytest.mark.parametrize("participant", sorted(DIVISION_PREFIX))
def test_every_demo_certificate_round_trips_without_warnings(participant: str) -> None:
    certs = demo_certificates(participant, count=40, today=TODAY)
    assert len(certs) == 40
    for cert in certs:
        rebuilt, warnings = resubmit(cert)
        assert warnings == []
        assert rebuilt == cert
        assert cert.issuer == participant
        assert cert.holder in DEMO_HOLDERS[participant]


def test_shapes_and_dates() -> None:
    certs = demo_certificates("CN-JS", count=40, today=TODAY)
    schemes = {c.scheme for c in certs}
    assert {Scheme.CCC, Scheme.QMS, Scheme.EMS, Scheme.OHSMS} <= schemes
    for cert in certs:
        assert cert.state is CertState.VALID
        assert cert.version == 1
        assert cert.reason == ""
        assert cert.issue_date < TODAY
        assert effective_state(cert, TODAY) is CertState.VALID
        assert cert.effective_at == datetime.combine(cert.issue_date, time(), tzinfo=UTC)
        years = cert.expiry_date.year - cert.issue_date.year
        if cert.scheme is Scheme.CCC:
            assert CCC_NUMBER_RE.match(cert.certificate_number)
            assert cert.certificate_number[:4] == str(cert.issue_date.year)
            assert cert.certificate_number[4:6] == "01"
            assert cert.issuing_body == "CNCA-R-2002-001"
            assert years == 5
        else:
            assert cert.certificate_number.endswith("R0M")
            assert years == 3


def test_deterministic() -> None:
    assert demo_certificates("CN-SH", count=20, today=TODAY) == demo_certificates(
        "CN-SH", count=20, today=TODAY
    )


def test_start_serial_continues_sequence() -> None:
    whole = demo_certificates("CN-ZJ", count=20, today=TODAY)
    assert demo_certificates("CN-ZJ", count=10, start_serial=11, today=TODAY) == whole[10:]


def test_keys_unique_across_participants() -> None:
    keys = [c.key for p in DEMO_PARTICIPANTS for c in demo_certificates(p, count=50, today=TODAY)]
    assert len(keys) == len(set(keys))


def test_last_serial_of_block_still_valid() -> None:
    (cert,) = demo_certificates("CN-SN", count=1, start_serial=SERIAL_BLOCK, today=TODAY)
    _, warnings = resubmit(cert)
    assert warnings == []


@pytest.mark.parametrize(
    ("issuer", "count", "start"),
    [("CN-XX", 1, 1), ("CN-SH", 1, 0), ("CN-SH", 2, SERIAL_BLOCK), ("CN-SH", -1, 1)],
)
def test_bad_arguments(issuer: str, count: int, start: int) -> None:
    with pytest.raises(ValueError):
        demo_certificates(issuer, count=count, start_serial=start, today=TODAY)


def test_leap_day_issue_expires_feb_28() -> None:
    leap = date(2024, 2, 29)
    for days in range(1000):
        (cert,) = demo_certificates("CN-BJ", count=1, today=leap + timedelta(days=days))
        if cert.issue_date == leap:
            expected = date(2029, 2, 28) if cert.scheme is Scheme.CCC else date(2027, 2, 28)
            assert cert.expiry_date == expected
            return
    raise AssertionError("no 'today' puts a demo issue date on 29 February")


def test_status_change_life_cycle() -> None:
    cert = demo_certificates("CN-JS", count=1, today=TODAY)[0]
    at = datetime(2025, 6, 1, 2, tzinfo=UTC)
    suspended = demo_status_change(
        cert, state=CertState.SUSPENDED, reason=DEMO_REASONS[CertState.SUSPENDED][0], effective_at=at
    )
    assert suspended.version == 2
    assert suspended.state is CertState.SUSPENDED
    assert suspended.reason == "监督抽查不合格，暂停证书"
    assert suspended.effective_at == at
    assert suspended.certificate_number == cert.certificate_number
    assert cert.state is CertState.VALID  # the original is untouched
    check_transition(cert, suspended)
    _, warnings = resubmit(suspended)
    assert warnings == []

    revoked = demo_status_change(
        suspended, state=CertState.REVOKED, reason=DEMO_REASONS[CertState.REVOKED][0], effective_at=at
    )
    check_transition(suspended, revoked)
    reinstated = demo_status_change(
        revoked, state=CertState.VALID, reason=DEMO_REASONS[CertState.VALID][0], effective_at=at
    )
    with pytest.raises(FailedPrecondition):
        check_transition(revoked, reinstated)


def test_every_demo_reason_is_accepted() -> None:
    cert = demo_certificates("CN-FJ", count=1, today=TODAY)[0]
    for state, reasons in DEMO_REASONS.items():
        assert reasons
        for reason in reasons:
            changed = demo_status_change(cert, state=state, reason=reason, effective_at=cert.effective_at)
            _, warnings = resubmit(changed)
            assert warnings == []
    assert set(DEMO_REASONS) == {CertState.VALID, CertState.SUSPENDED, CertState.REVOKED, CertState.WITHDRAWN}
