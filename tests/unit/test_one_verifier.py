"""DSSE signatures are checked in one place (gateway.crypto.dsse.verify_signature), and
the SDK checks that a receipt is about the envelope it sent, not only its signature."""

from __future__ import annotations

import ast
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.client import DecisionError, ReceiptError, make_submission, verify_decision, verify_receipt
from gateway.crypto.dsse import (
    DECISION_PAYLOAD_TYPE,
    RECEIPT_PAYLOAD_TYPE,
    SignatureError,
    sha256,
    sign_envelope,
    verify_signature,
)
from gateway.crypto.suites import PrivateKey, Suite
from gateway.demo_fixtures import demo_certificates
from gateway.pb import envelope_pb2

ROOT = Path(__file__).resolve().parents[2]


def _receipt_for(envelope: envelope_pb2.Envelope, key: PrivateKey) -> envelope_pb2.Envelope:
    from gateway.pb import records_pb2

    submission = records_pb2.Submission.FromString(envelope.payload)
    receipt = envelope_pb2.Receipt(
        message_id=submission.header.message_id,
        sender=submission.header.sender,
        envelope_sha256=sha256(envelope.SerializeToString(deterministic=True)),
        outcome=envelope_pb2.OUTCOME_ACCEPTED,
        log_index=7,
    )
    return sign_envelope(payload_type=RECEIPT_PAYLOAD_TYPE, payload=receipt.SerializeToString(), signer=key)


def test_a_receipt_must_name_the_envelope_sent():
    gw = PrivateKey.generate(Suite.ED25519, "MRX-GW/t")
    js = PrivateKey.generate(Suite.ED25519, "CN-JS/t")
    a, b = demo_certificates("CN-JS", count=2, today=date(2026, 11, 23))
    sent = make_submission(a, sender="CN-JS", signer=js, created_at=datetime(2026, 11, 23, tzinfo=UTC))
    other = make_submission(b, sender="CN-JS", signer=js, created_at=datetime(2026, 11, 23, tzinfo=UTC))
    keys = {"MRX-GW/t": gw.public_key()}
    assert verify_receipt(_receipt_for(sent, gw), keys, sent).log_index == 7
    with pytest.raises(ReceiptError, match="another envelope"):
        verify_receipt(_receipt_for(other, gw), keys, sent)


def test_the_suite_field_cannot_steer_verification():
    gw = PrivateKey.generate(Suite.ED25519, "MRX-GW/t")
    decision = sign_envelope(payload_type=DECISION_PAYLOAD_TYPE, payload=b"x", signer=gw)
    decision.signatures[0].suite = envelope_pb2.SIGNATURE_SUITE_ECDSA_P256_SHA256
    with pytest.raises(SignatureError) as info:
        verify_signature(decision, decision.signatures[0], gw.public_key())
    assert info.value.reason == "SUITE_MISMATCH"
    with pytest.raises(DecisionError):
        verify_decision(decision, {"MRX-GW/t": gw.public_key()})


def test_signature_arithmetic_lives_in_gateway_crypto_only():
    """No module outside gateway/crypto builds a PAE or calls a key's verify itself."""
    offenders = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1] in ("crypto", "pb"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = (
                    node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                )
                if name == "pae" or (name == "verify" and "signature" not in ast.unparse(node.func)):
                    if "_verifier" in ast.unparse(node.func):
                        continue  # the ledger's Verifier.verify: the pipeline, not arithmetic
                    offenders.append(f"{rel}:{node.lineno} {ast.unparse(node)[:80]}")
    assert offenders == []
