"""DSSE envelopes: sign a payload's exact bytes, verify the bytes as received.

Signing covers PAE(payload_type, payload), never a re-serialised message, so a
verifier in any language needs only the envelope's two fields and the public key.
docs/signing.md specifies this for non-Python implementers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from gateway.crypto.suites import PrivateKey, PublicKey, Suite, pae
from gateway.pb import envelope_pb2

SUBMISSION_PAYLOAD_TYPE = "application/vnd.mrx.submission.v1+protobuf"
RECEIPT_PAYLOAD_TYPE = "application/vnd.mrx.receipt.v1+protobuf"
DECISION_PAYLOAD_TYPE = "application/vnd.mrx.decision.v1+protobuf"


def sha256(data: bytes) -> bytes:
    """SHA-256 digest; receipts name the submission envelope by this over its received bytes."""
    return hashlib.sha256(data).digest()


def sign_envelope(*, payload_type: str, payload: bytes, signer: PrivateKey) -> envelope_pb2.Envelope:
    """An envelope carrying ``payload`` with one signature by ``signer``."""
    signature = envelope_pb2.Signature(
        keyid=signer.keyid,
        sig=signer.sign(pae(payload_type, payload)),
        suite=envelope_pb2.SignatureSuite.ValueType(signer.suite.proto),
    )
    return envelope_pb2.Envelope(payload_type=payload_type, payload=payload, signatures=[signature])


class SignatureError(ValueError):
    """A signature that does not verify; ``reason`` is the refusal reason the gateway uses."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def verify_signature(
    envelope: envelope_pb2.Envelope, signature: envelope_pb2.Signature, key: PublicKey
) -> None:
    """The one place a DSSE signature is checked (gateway, SDK, auditor tools, demo).

    The signature's declared suite must be the key's own (the suite field must not be
    able to steer verification), and the signature must verify over
    PAE(payload_type, payload) as received. Which key may be used at all is the caller's
    decision, made from the keyid via the federation or pinned keys.
    """
    try:
        declared = Suite.from_proto(signature.suite)
    except ValueError:
        declared = None
    if declared is not key.suite:
        raise SignatureError("SUITE_MISMATCH", f"the signature's suite is not the key's ({key.suite.value})")
    if not key.verify(pae(envelope.payload_type, envelope.payload), signature.sig):
        raise SignatureError("BAD_SIGNATURE", "the signature does not verify")


def verify_envelope(
    envelope: envelope_pb2.Envelope, *, payload_type: str, keys: Mapping[str, PublicKey], what: str
) -> str:
    """Check ``envelope`` is a ``payload_type`` envelope signed by one of ``keys`` (by key id).

    Returns the key id that verified; raises SignatureError naming what failed.
    """
    if envelope.payload_type != payload_type:
        raise SignatureError("WRONG_PAYLOAD_TYPE", f"not a {what} envelope ({envelope.payload_type[:80]!r})")
    if not envelope.signatures:
        raise SignatureError("UNSIGNED", f"the {what} carries no signature")
    failures = []
    for signature in envelope.signatures:
        key = keys.get(signature.keyid)
        if key is None:
            failures.append(f"{signature.keyid[:80]!r} is not a trusted key")
            continue
        try:
            verify_signature(envelope, signature, key)
        except SignatureError as err:
            failures.append(f"signature by {signature.keyid}: {err}")
            continue
        return signature.keyid
    raise SignatureError("BAD_SIGNATURE", f"the {what} does not verify: " + "; ".join(failures))


def verify_envelope_signature(envelope: envelope_pb2.Envelope, key: PublicKey) -> bool:
    """True if some signature on the envelope, in ``key``'s suite, verifies under ``key``."""
    for signature in envelope.signatures:
        try:
            verify_signature(envelope, signature, key)
        except SignatureError:
            continue
        return True
    return False
