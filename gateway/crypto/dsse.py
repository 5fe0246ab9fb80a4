"""DSSE envelopes: sign a payload's exact bytes, verify the bytes as received.

Signing covers PAE(payload_type, payload), never a re-serialised message, so a
verifier in any language needs only the envelope's two fields and the public key.
docs/signing.md specifies this for non-Python implementers.
"""

from __future__ import annotations

import hashlib

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


def verify_envelope_signature(envelope: envelope_pb2.Envelope, key: PublicKey) -> bool:
    """True if some signature on the envelope, in ``key``'s suite, verifies under ``key``.

    Which key to use (and whether it may be used at all) is the caller's decision,
    made from the signature's keyid via the federation; this only does the arithmetic.
    A signature whose declared suite differs from the key's is never tried: the suite
    field must not be able to steer verification.
    """
    signed = pae(envelope.payload_type, envelope.payload)
    for signature in envelope.signatures:
        try:
            declared = Suite.from_proto(signature.suite)
        except ValueError:
            continue
        if declared is key.suite and key.verify(signed, signature.sig):
            return True
    return False
