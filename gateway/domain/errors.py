"""The one exception hierarchy of the gateway.

Every refusal the gateway makes is one of these. Each carries a machine-readable
``reason`` (UPPER_SNAKE_CASE, stable: clients switch on it) and optional ``metadata``
(string to string, e.g. the stored version). ``gateway.services.errors`` maps each class
to exactly one gRPC status code, in one table, applied in one place. Nothing here knows
about gRPC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: a dotted path into the submission and why it is invalid."""

    field: str
    description: str


class MrxError(Exception):
    """Base of every refusal. ``str(err)`` is safe to show to the caller."""

    default_reason = "REFUSED"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason}: {self.message})"


class InvalidArgument(MrxError):
    """The request is malformed or a field is invalid; resending it unchanged fails again."""

    default_reason = "INVALID_FIELDS"

    def __init__(
        self,
        message: str,
        *,
        violations: Iterable[FieldViolation] = (),
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)


class Unauthenticated(MrxError):
    """The signature could not be tied to a valid federation key."""

    default_reason = "BAD_SIGNATURE"


class PermissionDenied(MrxError):
    """Authenticated, but this principal may not do this (e.g. publish another's record)."""

    default_reason = "NOT_ISSUER"


class AlreadyExists(MrxError):
    """An identifier that must be unique is taken (message id reused with other bytes)."""

    default_reason = "MESSAGE_ID_REUSED"


class FailedPrecondition(MrxError):
    """Valid on its own but not in the current state (stale version, illegal transition, clock)."""

    default_reason = "FAILED_PRECONDITION"


class NotFound(MrxError):
    default_reason = "NOT_FOUND"


class OutOfRange(MrxError):
    default_reason = "OUT_OF_RANGE"


class ResourceExhausted(MrxError):
    """A limit was hit (rate, concurrent streams, batch size); ``retry_after`` says when to retry."""

    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after: timedelta | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class Unavailable(MrxError):
    """The gateway cannot take the request now (shutting down); safe to retry."""

    default_reason = "UNAVAILABLE"


def collect(violations: list[FieldViolation], message: str = "invalid fields") -> None:
    """Raise InvalidArgument listing every violation, if there are any."""
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(f"{message}: {first.field}: {first.description}{more}", violations=violations)
