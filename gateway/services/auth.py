"""Authenticating readers by signature, and what each principal may see.

A read carries four metadata entries (see proto/mrx/v1/audit.proto): the principal,
its key id, the time of signing and a signature over
PAE(READ_REQUEST_PAYLOAD_TYPE, "<full method>\\n<signed-at>\\n" || SHA-256(request)).
Binding the method and the request digest means a captured signature cannot be
replayed against another call; the freshness window bounds how long it can be replayed
against the same one (reads are idempotent, so that is harmless).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc
from google.protobuf.message import Message

from gateway.crypto.reads import (
    MD_KEYID,
    MD_PRINCIPAL,
    MD_SIGNATURE,
    MD_SIGNED_AT,
    read_signing_input,
)
from gateway.domain.errors import PermissionDenied, Unauthenticated
from gateway.registry.federation import Federation, Participant, Role


@dataclass(frozen=True)
class Principal:
    participant: Participant
    # Participants whose exchanges this principal may see; None means every one.
    parties: frozenset[str] | None

    @property
    def code(self) -> str:
        return self.participant.code

    def sees(self, *codes: str) -> bool:
        return self.parties is None or any(c in self.parties for c in codes)

    def require_scope(self, codes: Sequence[str], what: str) -> None:
        if self.parties is not None and not set(codes) <= self.parties:
            raise PermissionDenied(
                f"{self.code} may not read {what}: its scope is " + ", ".join(sorted(self.parties)),
                reason="OUTSIDE_SCOPE",
                metadata={"principal": self.code},
            )


class ReadAuthenticator:
    def __init__(self, federation: Federation, *, clock: Callable[[], datetime]):
        self._federation = federation
        self._clock = clock

    def authenticate(self, context: grpc.ServicerContext, method: str, request: Message) -> Principal:
        md: dict[str, str | bytes] = {}
        for item in context.invocation_metadata() or ():
            md[item.key] = item.value
        missing = [k for k in (MD_PRINCIPAL, MD_KEYID, MD_SIGNED_AT, MD_SIGNATURE) if k not in md]
        if missing:
            raise Unauthenticated(
                "audit reads must be signed; missing metadata " + ", ".join(missing),
                reason="MISSING_CREDENTIALS",
            )
        principal, keyid, signed_at, signature = (
            str(md[MD_PRINCIPAL]),
            str(md[MD_KEYID]),
            str(md[MD_SIGNED_AT]),
            md[MD_SIGNATURE],
        )
        now = self._clock()
        key = self._federation.key_for_signature(keyid, at=now)
        if key.owner != principal:
            raise Unauthenticated(
                f"key {keyid} does not belong to {principal[:32]!r}",
                reason="SENDER_NOT_KEY_OWNER",
                metadata={"keyid": keyid},
            )
        try:
            when = datetime.fromisoformat(signed_at.replace("Z", "+00:00"))
        except ValueError:
            raise Unauthenticated(
                f"{MD_SIGNED_AT} is not an RFC 3339 time", reason="BAD_CREDENTIALS"
            ) from None
        window = self._federation.freshness_window
        if when.tzinfo is None or abs(now - when) > window:
            raise Unauthenticated(
                f"the read signature was made at {signed_at}, outside {window.total_seconds():.0f} s of the "
                f"gateway clock ({now.isoformat(timespec='seconds')})",
                reason="STALE_CREDENTIALS",
            )
        if not isinstance(signature, bytes) or not key.public_key.verify(
            read_signing_input(method, signed_at, request), signature
        ):
            raise Unauthenticated(f"read signature does not verify with key {keyid}", reason="BAD_SIGNATURE")
        participant = self._federation.participants[key.owner]
        return Principal(participant, self._parties(participant))

    def _parties(self, participant: Participant) -> frozenset[str] | None:
        if participant.role is Role.GATEWAY:
            return None
        if participant.role is Role.SECRETARIAT:
            # Its alliance's members, and itself: a secretariat may not write, but its
            # refused attempts are logged and it may see them.
            alliances = [a for a in self._federation.alliances.values() if a.secretariat == participant.code]
            return frozenset({participant.code, *(m for a in alliances for m in a.members)})
        return frozenset({participant.code})
