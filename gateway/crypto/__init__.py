"""Signing suites, the DSSE signing input (PAE), envelopes and key files."""

from gateway.crypto.dsse import (
    RECEIPT_PAYLOAD_TYPE,
    SUBMISSION_PAYLOAD_TYPE,
    sha256,
    sign_envelope,
    verify_envelope_signature,
)
from gateway.crypto.suites import PrivateKey, PublicKey, Signer, Suite, pae

__all__ = [
    "RECEIPT_PAYLOAD_TYPE",
    "SUBMISSION_PAYLOAD_TYPE",
    "PrivateKey",
    "PublicKey",
    "Signer",
    "Suite",
    "pae",
    "sha256",
    "sign_envelope",
    "verify_envelope_signature",
]
