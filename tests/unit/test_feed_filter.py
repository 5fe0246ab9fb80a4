"""ChangeFilter: which log rows a subscription delivers (no database, no network)."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.client import make_submission
from gateway.crypto.suites import PrivateKey, Suite
from gateway.demo_fixtures import demo_certificates
from gateway.ledger.feed import ChangeFilter
from gateway.pb import records_pb2
from gateway.store.feed_reads import FeedRow

CERT = records_pb2.RECORD_KIND_CERTIFICATE_STATUS
ASSESSOR = records_pb2.RECORD_KIND_ASSESSOR

KEY = PrivateKey.generate(Suite.ED25519, "CN-JS/test")
CERTS = demo_certificates("CN-JS", count=2, today=datetime.now(UTC).date())


def _row(index: int, cert_no: int = 0, kind: int = CERT, issuer: str = "CN-JS") -> FeedRow:
    cert = CERTS[cert_no]
    envelope = make_submission(cert, sender="CN-JS", signer=KEY).SerializeToString()
    key = f"certificate_status/{cert.scheme.name}/{cert.certificate_number}"
    if kind == ASSESSOR:
        key = f"assessor/{issuer}/A-1"
    return FeedRow(index, 0, kind, key, 1, issuer, envelope)


def test_an_empty_filter_matches_what_is_visible():
    assert ChangeFilter().matches(_row(0))
    hidden = ChangeFilter(visible=lambda kind, issuer: kind != ASSESSOR)
    assert hidden.matches(_row(0)) and not hidden.matches(_row(1, kind=ASSESSOR))


def test_every_non_empty_filter_must_match():
    cert = CERTS[0]
    assert ChangeFilter(kinds=frozenset({CERT}), issuers=frozenset({"CN-JS"})).matches(_row(0))
    assert not ChangeFilter(issuers=frozenset({"CN-SH"})).matches(_row(0))
    assert not ChangeFilter(kinds=frozenset({ASSESSOR})).matches(_row(0))
    assert ChangeFilter(certificate_numbers=frozenset({cert.certificate_number})).matches(_row(0))
    assert not ChangeFilter(certificate_numbers=frozenset({cert.certificate_number})).matches(_row(1, 1))
    assert ChangeFilter(schemes=frozenset({cert.scheme.name})).matches(_row(0))
    assert not ChangeFilter(schemes=frozenset({"NOPE"})).matches(_row(0))
    holder = frozenset({cert.holder.credit_code})
    assert ChangeFilter(holder_credit_codes=holder).matches(_row(0))
    assert not ChangeFilter(holder_credit_codes=frozenset({"91320000000000000X"})).matches(_row(0))


def test_certificate_filters_exclude_other_kinds_and_narrow_the_sql():
    flt = ChangeFilter(schemes=frozenset({"CCC"}))
    assert not flt.matches(_row(0, kind=ASSESSOR))
    assert set(flt.sql_kinds()) == {CERT}
    assert set(ChangeFilter(schemes=frozenset({"CCC"}), kinds=frozenset({ASSESSOR})).sql_kinds()) == {-1}
    narrowed = ChangeFilter(issuers=frozenset({"CN-JS", "CN-GD"}), candidate_issuers=frozenset({"CN-JS"}))
    assert narrowed.sql_issuers() == {"CN-JS"}
    assert ChangeFilter().sql_issuers() is None
