"""Authenticating readers by signature, and what each principal may see.

A read carries five metadata entries (gateway/crypto/reads.py, docs/signing.md section
10): the principal, its key id, the time of signing, a nonce and a signature over the
method, the time, the nonce and the SHA-256 of the exact request bytes received.
Binding the method and the request bytes means a captured signature cannot be used for
another call; the nonce (refused when seen again within the window) and the 60 s window
mean it cannot be replayed against the same one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from gateway.crypto.reads import (
    MD_KEYID,
    MD_NONCE,
    MD_PRINCIPAL,
    MD_SIGNATURE,
    MD_SIGNED_AT,
    NONCE_PATTERN,
    verify_read,
)
from gateway.domain.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from gateway.registry.federation import Federation, Participant, Role
from gateway.services.errors import REQUEST_BYTES
from gateway.tls import PeerIdentityError, peer_participant


@dataclass(frozen=True)
class Principal:
    participant: Participant
    # Participants whose exchanges this principal may see; None means every one.
    parties: frozenset[str] | None
    # The key the read was signed with (a long stream checks it again: key_still_valid).
    keyid: str = ""

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


def client_participant(context: Any) -> str | None:
    """The participant of the call's client certificate (mutual TLS), or None without one."""
    try:
        return peer_participant(context)
    except PeerIdentityError as err:
        raise Unauthenticated(
            f"the client certificate does not name one participant: {err}", reason="BAD_CLIENT_CERTIFICATE"
        ) from None


# Reads are signed for one call and one moment: far shorter than the submission window.
READ_WINDOW = timedelta(seconds=60)


class NonceCache:
    """(principal, nonce) pairs seen within the window: a captured read cannot be replayed.

    Per replica: with several replicas a captured read could be replayed once at each
    other replica within the window (reads are idempotent; the window bounds it).
    """

    def __init__(self, window: timedelta, *, max_entries: int = 1_000_000):
        self._window = window.total_seconds()
        self._max = max_entries
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def first_use(self, principal: str, nonce: str) -> bool:
        """False if this principal used this nonce within the window; ResourceExhausted if
        the cache is full (it then refuses new reads until entries expire, never accepts
        a replay)."""
        now = time.monotonic()
        with self._lock:
            if now >= self._next_purge:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                self._next_purge = now + self._window / 4
            if (principal, nonce) in self._seen:
                return False
            if len(self._seen) >= self._max:
                raise ResourceExhausted(
                    "the gateway is answering too many signed reads; retry shortly",
                    reason="RATE_LIMITED",
                    retry_after=timedelta(seconds=max(self._next_purge - now, 1.0)),
                )
            # Kept for twice the window: a signed-at up to one window in the future
            # stays acceptable for a window after it.
            self._seen[(principal, nonce)] = now + 2 * self._window
            return True


class RateLimiter:
    """Token bucket per principal: ``rate`` reads per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float):
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, principal: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(principal, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens < 1:
                wait = (1 - tokens) / self._rate
                self._buckets[principal] = (tokens, now)
                raise ResourceExhausted(
                    f"{principal} is over its read rate of {self._rate:g} per second; retry in {wait:.2f} s",
                    reason="RATE_LIMITED",
                    metadata={"principal": principal, "rate_per_second": f"{self._rate:g}"},
                    retry_after=timedelta(seconds=wait),
                )
            self._buckets[principal] = (tokens - 1, now)


@dataclass(frozen=True, kw_only=True)
class ReadLimits:
    window: timedelta = READ_WINDOW
    rate: float = 200.0  # reads per second per principal
    burst: float = 400.0


class ReadAuthenticator:
    """Checks a signed read (crypto/reads.py) and says what its principal may see."""

    def __init__(
        self, federation: Federation, *, clock: Callable[[], datetime], limits: ReadLimits | None = None
    ):
        self._federation = federation
        self._clock = clock
        self._limits = limits or ReadLimits()
        self._nonces = NonceCache(self._limits.window)
        self._rates = RateLimiter(self._limits.rate, self._limits.burst)

    def authenticate(self, context: Any, method: str, request: Message) -> Principal:
        md: dict[str, str | bytes] = {}
        for item in context.invocation_metadata() or ():
            key, value = (item.key, item.value) if hasattr(item, "key") else item
            md[key] = value
        missing = [k for k in (MD_PRINCIPAL, MD_KEYID, MD_SIGNED_AT, MD_NONCE, MD_SIGNATURE) if k not in md]
        if missing:
            raise Unauthenticated(
                "reads must be signed (docs/signing.md section 12); missing metadata " + ", ".join(missing),
                reason="MISSING_CREDENTIALS",
            )
        principal, keyid, signed_at, nonce, signature = (
            str(md[MD_PRINCIPAL]),
            str(md[MD_KEYID]),
            str(md[MD_SIGNED_AT]),
            str(md[MD_NONCE]),
            md[MD_SIGNATURE],
        )
        now = self._clock()
        key = self._federation.key_for_signature(keyid, at=now)
        if key.owner != principal:
            raise Unauthenticated(
                f"key {keyid[:64]} does not belong to {principal[:32]!r}",
                reason="SENDER_NOT_KEY_OWNER",
                metadata={"keyid": keyid},
            )
        try:
            when = datetime.fromisoformat(signed_at.replace("Z", "+00:00"))
        except ValueError:
            raise Unauthenticated(
                f"{MD_SIGNED_AT} is not an RFC 3339 time", reason="BAD_CREDENTIALS"
            ) from None
        if not NONCE_PATTERN.fullmatch(nonce):
            raise Unauthenticated(
                f"{MD_NONCE} must be 16-64 characters of A-Z a-z 0-9 _ -", reason="BAD_CREDENTIALS"
            )
        window = self._limits.window
        if when.tzinfo is None or abs(now - when) > window:
            raise Unauthenticated(
                f"the read signature was made at {signed_at[:32]}, outside "
                f"{window.total_seconds():.0f} s of the gateway clock ({now.isoformat(timespec='seconds')})",
                reason="STALE_CREDENTIALS",
            )
        raw = REQUEST_BYTES.get() or request.SerializeToString()
        if not isinstance(signature, bytes) or not verify_read(
            key.public_key,
            method=method,
            signed_at=signed_at,
            nonce=nonce,
            request_bytes=raw,
            signature=signature,
        ):
            raise Unauthenticated(
                f"read signature does not verify with key {keyid}: it must cover the exact request "
                "bytes sent (docs/signing.md section 12)",
                reason="BAD_SIGNATURE",
            )
        peer = client_participant(context)
        if peer is not None and peer != principal:
            raise PermissionDenied(
                f"the connection's client certificate is {peer}'s, but the read is signed by "
                f"{principal[:16]}: each participant reads over its own certificate",
                reason="CERTIFICATE_MISMATCH",
                metadata={"certificate": peer, "principal": principal[:16]},
            )
        self._rates.take(principal)
        # After the rate limit: a principal over its rate cannot fill the nonce cache.
        if not self._nonces.first_use(principal, nonce):
            raise Unauthenticated(
                f"nonce {nonce} was already used within the last {window.total_seconds():.0f} s: "
                "sign each read anew",
                reason="REPLAYED_REQUEST",
            )
        participant = self._federation.participants[key.owner]
        return Principal(participant, self._parties(participant), keyid=keyid)

    def key_still_valid(self, principal: Principal) -> None:
        """For calls that outlive the signing (Subscribe): the key the call was signed with
        must still be valid now; raises the error a new call with it would get."""
        self._federation.key_for_signature(principal.keyid, at=self._clock())

    def require_personal_data(self, principal: Principal, *, issuer: str, kind: str, today: date) -> None:
        """Records about people (assessors): the issuer, its secretariats, the gateway, and
        members bound to the issuer by an agreement in force that covers the kind."""
        if principal.parties is None or issuer in principal.parties:
            return
        if principal.participant.role is Role.MEMBER:
            for agreement in self._federation.agreements_between(principal.code, issuer):
                if kind in agreement.kinds and agreement.in_force(today):
                    return
        raise PermissionDenied(
            f"{principal.code} may not read {issuer}'s {kind} records: they hold personal data, visible only "
            "to the issuer, its alliance secretariat and members bound to it by an agreement covering them",
            reason="PERSONAL_DATA",
            metadata={"principal": principal.code, "issuer": issuer[:16]},
        )

    def may_see(self, principal: Principal, *, issuer: str, kind: str, today: date) -> bool:
        """May ``principal`` receive ``issuer``'s records of ``kind`` (a record-key prefix)?
        Its own scope (its alliance's members for a secretariat), or, for a member, an
        issuer bound to it by an agreement in force that covers the kind; assessor records
        (personal data) are covered only by an agreement naming assessors."""
        if principal.parties is None or issuer in principal.parties:
            return True
        if principal.participant.role is not Role.MEMBER:
            return False
        return any(
            kind in a.kinds and a.in_force(today)
            for a in self._federation.agreements_between(principal.code, issuer)
        )

    def reachable_issuers(self, principal: Principal) -> frozenset[str] | None:
        """Every issuer whose records ``principal`` could ever see under any agreement (None:
        all); narrows what a subscription reads before ``may_see`` decides row by row."""
        if principal.parties is None:
            return None
        found = set(principal.parties)
        if principal.participant.role is Role.MEMBER:
            for agreement in self._federation.agreements.values():
                if principal.code in agreement.parties:
                    found |= agreement.parties
        return frozenset(found)

    def _parties(self, participant: Participant) -> frozenset[str] | None:
        if participant.role is Role.GATEWAY:
            return None
        if participant.role is Role.SECRETARIAT:
            # Its alliance's members, and itself: a secretariat may not write, but its
            # refused attempts are logged and it may see them.
            alliances = [a for a in self._federation.alliances.values() if a.secretariat == participant.code]
            return frozenset({participant.code, *(m for a in alliances for m in a.members)})
        return frozenset({participant.code})
