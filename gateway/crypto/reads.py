"""Signed reads: the metadata a reader attaches to one call (docs/signing.md section 12).

A read carries five metadata entries: the principal, its key id, the time of signing, a
nonce, and a signature over

    PAE("application/vnd.mrx.read-request.v2",
        "<full method>\\n<signed-at>\\n<nonce>\\n" || SHA-256(<request bytes as sent>))

The digest is over the exact bytes on the wire, so any protobuf library (protobufjs
writes default-valued fields; others order unknown fields differently) signs what it
sends. The gateway refuses a nonce it has seen within the window, and a signed-at time
more than the window (60 s) from its clock. Shared by the SDK (signing) and the server
(verifying).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

from google.protobuf.message import Message

from gateway.crypto.dsse import sha256
from gateway.crypto.suites import PrivateKey, PublicKey, pae

READ_REQUEST_PAYLOAD_TYPE = "application/vnd.mrx.read-request.v2"
MD_PRINCIPAL = "x-mrx-principal"
MD_KEYID = "x-mrx-keyid"
MD_SIGNED_AT = "x-mrx-signed-at"
MD_NONCE = "x-mrx-nonce"
MD_SIGNATURE = "x-mrx-signature-bin"
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")


def read_signing_input(method: str, signed_at: str, nonce: str, request_bytes: bytes) -> bytes:
    """The bytes a reader signs: PAE over method, time, nonce and the request's digest."""
    return pae(
        READ_REQUEST_PAYLOAD_TYPE, f"{method}\n{signed_at}\n{nonce}\n".encode() + sha256(request_bytes)
    )


def verify_read(
    key: PublicKey, *, method: str, signed_at: str, nonce: str, request_bytes: bytes, signature: bytes
) -> bool:
    """True if ``signature`` is ``key``'s over this read (the gateway's side of sign_read)."""
    return key.verify(read_signing_input(method, signed_at, nonce, request_bytes), signature)


def new_nonce() -> str:
    return os.urandom(16).hex()


def sign_read(
    *,
    signer: PrivateKey,
    principal: str,
    method: str,
    request: Message | bytes,
    now: datetime | None = None,
    nonce: str | None = None,
) -> list[tuple[str, str | bytes]]:
    """The metadata a reader attaches to one call.

    ``request`` is the message as it will be sent (gRPC's Python stubs send
    ``SerializeToString()``) or the exact bytes.
    """
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    signed_at = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    nonce = nonce or new_nonce()
    signature = signer.sign(read_signing_input(method, signed_at, nonce, raw))
    return [
        (MD_PRINCIPAL, principal),
        (MD_KEYID, signer.keyid),
        (MD_SIGNED_AT, signed_at),
        (MD_NONCE, nonce),
        (MD_SIGNATURE, signature),
    ]
