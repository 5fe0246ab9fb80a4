"""Signed reads: the metadata a reader attaches to one call (see proto/mrx/v1/audit.proto).

A read carries four metadata entries: the principal, its key id, the time of signing and
a signature over PAE(READ_REQUEST_PAYLOAD_TYPE, "<full method>\\n<signed-at>\\n" ||
SHA-256(request)). Shared by the SDK (signing) and the server (verifying).
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message

from gateway.crypto.dsse import sha256
from gateway.crypto.suites import PrivateKey, pae

READ_REQUEST_PAYLOAD_TYPE = "application/vnd.mrx.read-request.v1"
MD_PRINCIPAL = "x-mrx-principal"
MD_KEYID = "x-mrx-keyid"
MD_SIGNED_AT = "x-mrx-signed-at"
MD_SIGNATURE = "x-mrx-signature-bin"


def read_signing_input(method: str, signed_at: str, request: Message) -> bytes:
    digest = sha256(request.SerializeToString(deterministic=True))
    return pae(READ_REQUEST_PAYLOAD_TYPE, f"{method}\n{signed_at}\n".encode() + digest)


def sign_read(
    *, signer: PrivateKey, principal: str, method: str, request: Message, now: datetime | None = None
) -> list[tuple[str, str | bytes]]:
    """The metadata a reader attaches to one call."""
    signed_at = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = signer.sign(read_signing_input(method, signed_at, request))
    return [
        (MD_PRINCIPAL, principal),
        (MD_KEYID, signer.keyid),
        (MD_SIGNED_AT, signed_at),
        (MD_SIGNATURE, signature),
    ]
