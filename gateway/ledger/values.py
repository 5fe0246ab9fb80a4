"""Plain values that cross the process boundary between the front ends and the writer.

Only builtins, domain records and these dataclasses: they are pickled over a pipe. An
``MrxError`` does not pickle reliably (keyword-only constructor), so a refusal travels
as a ``Refusal`` and becomes an exception again on the front end's side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.domain import errors as e
from gateway.domain.records import Record

_KINDS: dict[str, type[e.MrxError]] = {
    cls.__name__: cls
    for cls in (
        e.MrxError,
        e.InvalidArgument,
        e.Unauthenticated,
        e.PermissionDenied,
        e.AlreadyExists,
        e.FailedPrecondition,
        e.NotFound,
        e.OutOfRange,
        e.ResourceExhausted,
        e.Unavailable,
    )
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refusal as a plain value; ``error()`` turns it back into the domain exception."""

    kind: str
    message: str
    reason: str
    metadata: tuple[tuple[str, str], ...] = ()
    violations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, err: e.MrxError, **metadata: str) -> Refusal:
        violations = getattr(err, "violations", ())
        return cls(
            kind=type(err).__name__ if type(err).__name__ in _KINDS else "MrxError",
            message=err.message,
            reason=err.reason,
            metadata=tuple(sorted({**err.metadata, **metadata}.items())),
            violations=tuple((v.field, v.description) for v in violations),
        )

    def error(self) -> e.MrxError:
        cls = _KINDS.get(self.kind, e.MrxError)
        if cls is e.InvalidArgument:
            return e.InvalidArgument(
                self.message,
                reason=self.reason,
                metadata=dict(self.metadata),
                violations=[e.FieldViolation(f, d) for f, d in self.violations],
            )
        return cls(self.message, reason=self.reason, metadata=dict(self.metadata))


@dataclass(frozen=True, slots=True)
class Accepted:
    """The committed outcome of an accepted submission."""

    receipt_payload: bytes  # serialized mrx.v1.Receipt, signed by the gateway on the way out
    log_index: int
    duplicate: bool  # identical bytes were accepted before: this is the original receipt


Outcome = Accepted | Refusal


@dataclass(slots=True, kw_only=True)
class Staged:
    """A submission whose signature is proven, on its way into the log.

    Everything the append rules need and nothing else; decided refusals travel with it
    because the log records them too (and the replay check must come first).
    """

    envelope: bytes
    envelope_sha256: bytes
    sender: str
    message_id: str
    kind: int
    record_key: str
    record_version: int
    subject_issuer: str
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    record: Record | None = None
    # Decided before the replay check (freshness): an identical resubmission still gets
    # its original receipt, a reused id with a stale clock is reported as stale.
    early_refusal: Refusal | None = None
    # Decided after the replay check (authorization, field validation).
    late_refusal: Refusal | None = None
    warnings: tuple[str, ...] = ()
