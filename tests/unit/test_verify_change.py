"""The SDK's check of a Subscribe change (gateway.client.verify_change): no network."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.client import ChangeVerificationError, make_submission, verify_change
from gateway.crypto.suites import PrivateKey, Suite
from gateway.demo_fixtures import demo_certificates
from gateway.pb import exchange_pb2

JS = PrivateKey.generate(Suite.ED25519, "CN-JS/k1")
SH = PrivateKey.generate(Suite.ED25519, "CN-SH/k1")
KEYS = {"CN-JS/k1": ("CN-JS", JS.public_key()), "CN-SH/k1": ("CN-SH", SH.public_key())}
CERT = demo_certificates("CN-JS", count=1, today=datetime.now(UTC).date())[0]


def _change(envelope_bytes: bytes, issuer: str = "CN-JS") -> exchange_pb2.RecordChange:
    return exchange_pb2.RecordChange(
        log_index=7, record_key="certificate_status/x/y", envelope=envelope_bytes, issuer=issuer
    )


def test_a_genuine_change_verifies_and_decodes():
    env = make_submission(CERT, sender="CN-JS", signer=JS)
    change = verify_change(_change(env.SerializeToString()), KEYS)
    assert (change.log_index, change.record, change.envelope) == (7, CERT, env)


def test_a_tampered_payload_is_refused():
    env = make_submission(CERT, sender="CN-JS", signer=JS)
    env.payload = env.payload.replace(CERT.certificate_number.encode(), b"9" * len(CERT.certificate_number))
    with pytest.raises(ChangeVerificationError, match=r"log index 7.*does not verify"):
        verify_change(_change(env.SerializeToString()), KEYS)


def test_a_signature_by_another_participant_is_refused():
    # CN-SH signs a record naming CN-JS as its issuer and sender: SH's key is not CN-JS's.
    forged = make_submission(CERT, sender="CN-JS", signer=SH)
    with pytest.raises(ChangeVerificationError, match="does not verify"):
        verify_change(_change(forged.SerializeToString()), KEYS)


def test_an_issuer_other_than_the_gateway_named_is_refused():
    env = make_submission(CERT, sender="CN-JS", signer=JS)
    with pytest.raises(ChangeVerificationError, match="issuer"):
        verify_change(_change(env.SerializeToString(), issuer="CN-SH"), KEYS)
    with pytest.raises(ChangeVerificationError, match="not a serialized submission"):
        verify_change(_change(b"\xff\xff"), KEYS)
