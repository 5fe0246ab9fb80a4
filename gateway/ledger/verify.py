"""The verification pipeline for signed submissions (DESIGN section 4).

Checks run in this order; the first failure decides the answer:

  size -> envelope shape -> key known and not revoked -> signature
  -> payload parses, sender owns the key, key valid at the signed created_at
                                            (refused here; not an exchange-log entry)
  -> freshness of created_at                (early refusal, logged)
  -> replay: message id unique per sender   (in the writer, logged)
  -> authorization: sender issued the record, sender may write, the record lies
     within the sender's declared jurisdiction  (late refusal, logged)
  -> field validation                       (late refusal, logged)
  -> stored issuer, version and status transition  (in the writer, logged)
  -> commit, then a signed receipt

Anything refused before the signature is proven cannot be attributed to a participant,
so it is counted in metrics but never enters the log: otherwise anyone could fill the
secretariats' audit log with noise under someone else's name. The same holds for a
payload that does not parse or whose header names a sender other than the key's owner:
there is no authenticated sender and message id to log it under.

An identical resubmission is recognised by its envelope digest before freshness is
judged, so a client that retries after a lost reply gets the original receipt even when
its created_at has since aged out of the window.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.message import DecodeError

from gateway.convert import (
    KIND_FIELDS,
    AnyRecordMessage,
    claimed_issuer,
    raw_record_key,
    record_from_proto,
    timestamp_to_datetime,
)
from gateway.crypto.dsse import SUBMISSION_PAYLOAD_TYPE, SignatureError, sha256, verify_signature
from gateway.domain.certificates import Scheme
from gateway.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MrxError,
    PermissionDenied,
    Unauthenticated,
)
from gateway.domain.identifiers import is_message_id
from gateway.domain.records import DEFAULT_PT_BOUNDARIES, PtBoundaries, Record
from gateway.ledger.values import Refusal, Staged
from gateway.observability import metrics
from gateway.pb import envelope_pb2, records_pb2
from gateway.registry.federation import Federation, Role

log = logging.getLogger(__name__)

MIN_NONCE = 16
MAX_NONCE = 64


@dataclass(frozen=True, kw_only=True)
class Limits:
    # A certificate status is a few KiB at most; 256 KiB leaves room for long scopes
    # while keeping a batch of 1,000 within memory bounds.
    max_envelope_bytes: int = 256 * 1024


class Verifier:
    """The stateless checks; ``verify`` turns an envelope into a ``Staged`` value or raises."""

    def __init__(
        self,
        *,
        federation: Federation,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        limits: Limits | None = None,
        pt_boundaries: PtBoundaries = DEFAULT_PT_BOUNDARIES,
    ):
        self.federation = federation
        self.clock = clock
        self.limits = limits or Limits()
        self.pt_boundaries = pt_boundaries
        self._lock = threading.Lock()
        # Refusals that never reach the log, by reason: the operator's view of noise
        # and attacks that the audit log deliberately leaves out.
        self.unlogged_refusals: Counter[str] = Counter()

    def verify(self, envelope: envelope_pb2.Envelope, *, peer: str | None = None) -> Staged:
        """``peer``: the participant named by the call's client certificate (mutual TLS),
        which must then be the sender; None when the call carries no client certificate."""
        try:
            return self._verify(envelope, peer)
        except MrxError as err:
            with self._lock:
                self.unlogged_refusals[err.reason] += 1
            if err.reason in metrics.SIGNATURE_REASONS:
                metrics.note_signature_failure(self._claimed_participant(envelope), err.reason)
            raise

    def _claimed_participant(self, envelope: envelope_pb2.Envelope) -> str:
        """The owner of the key the signature names; "unknown" for a key id the federation
        does not list (never the caller's text: it would make a label per guess)."""
        if not envelope.signatures:
            return "unknown"
        record = self.federation.keys.get(envelope.signatures[0].keyid)
        return record.owner if record is not None else "unknown"

    def _verify(self, envelope: envelope_pb2.Envelope, peer: str | None) -> Staged:
        now = self.clock()
        raw = envelope.SerializeToString(deterministic=True)
        if len(raw) > self.limits.max_envelope_bytes:
            raise InvalidArgument(
                f"envelope is {len(raw)} bytes; the limit is {self.limits.max_envelope_bytes}",
                reason="MESSAGE_TOO_LARGE",
                violations=[
                    FieldViolation("envelope", f"larger than {self.limits.max_envelope_bytes} bytes")
                ],
                metadata={"size": str(len(raw)), "limit": str(self.limits.max_envelope_bytes)},
            )
        self._check_shape(envelope)
        sig = envelope.signatures[0]
        key = self.federation.known_key(sig.keyid)
        try:
            verify_signature(envelope, sig, key.public_key)
        except SignatureError as err:
            if err.reason == "SUITE_MISMATCH":
                raise Unauthenticated(
                    f"signature suite does not match key {key.keyid}, which is {key.suite.value}",
                    reason="SUITE_MISMATCH",
                    metadata={"keyid": key.keyid},
                ) from None
            raise Unauthenticated(
                f"signature does not verify with key {key.keyid}",
                reason="BAD_SIGNATURE",
                metadata={"keyid": key.keyid},
            ) from None
        submission = records_pb2.Submission()
        try:
            submission.ParseFromString(envelope.payload)
        except DecodeError:
            raise InvalidArgument(
                "payload is not a serialized mrx.v1.Submission",
                reason="MALFORMED_PAYLOAD",
                violations=[FieldViolation("envelope.payload", "not a serialized mrx.v1.Submission")],
            ) from None
        header = submission.header
        if header.sender != key.owner:
            raise Unauthenticated(
                f"header.sender {header.sender!r} is not the owner of key {key.keyid} ({key.owner})",
                reason="SENDER_NOT_KEY_OWNER",
                metadata={"keyid": key.keyid, "owner": key.owner},
            )
        if peer is not None and header.sender != peer:
            raise PermissionDenied(
                f"the connection's client certificate is {peer}'s, but the envelope is {header.sender}'s: "
                "each participant submits over its own certificate",
                reason="CERTIFICATE_MISMATCH",
                metadata={"certificate": peer, "sender": header.sender},
            )
        if not is_message_id(header.message_id):
            raise InvalidArgument(
                "header.message_id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
                violations=[FieldViolation("header.message_id", "1-128 characters of A-Z a-z 0-9 . _ : -")],
            )
        # Validity is judged at the signer's own created_at, now that the signature
        # proves it is theirs: a message signed just before a key expired and delivered
        # just after is still good. Freshness (below) bounds how far created_at may
        # stray from the gateway clock, so this never stretches a validity by more
        # than the window. Without created_at, the gateway clock stands in and the
        # missing field is reported with the other violations.
        created = (
            timestamp_to_datetime(header.created_at, field="header.created_at")
            if header.HasField("created_at")
            else now
        )
        self.federation.check_validity(key, at=created)
        return self._classify(submission, raw, now, created)

    @staticmethod
    def _check_shape(envelope: envelope_pb2.Envelope) -> None:
        violations = []
        if envelope.payload_type != SUBMISSION_PAYLOAD_TYPE:
            violations.append(FieldViolation("envelope.payload_type", f"must be {SUBMISSION_PAYLOAD_TYPE!r}"))
        if not envelope.payload:
            violations.append(FieldViolation("envelope.payload", "required"))
        if len(envelope.signatures) != 1:
            violations.append(
                FieldViolation(
                    "envelope.signatures", f"exactly one signature required, got {len(envelope.signatures)}"
                )
            )
        if violations:
            raise InvalidArgument(
                f"malformed envelope: {violations[0].field}: {violations[0].description}",
                reason="MALFORMED_ENVELOPE",
                violations=violations,
            )

    def _classify(
        self, submission: records_pb2.Submission, raw: bytes, now: datetime, created: datetime
    ) -> Staged:
        """Decide the refusals that need no stored state; the writer does the rest."""
        header = submission.header
        msg = _record_message(submission)
        item = Staged(
            received_at=now,
            envelope=raw,
            envelope_sha256=sha256(raw),
            sender=header.sender,
            message_id=header.message_id,
            kind=int(header.kind),
            # Bounded and sanitised: a refused record may carry any strings.
            record_key=_loggable(raw_record_key(msg), 200) if msg is not None else "",
            record_version=min(msg.version, 2**63 - 1) if msg is not None else 0,
            subject_issuer=_loggable(claimed_issuer(msg), 16) if msg is not None else "",
            record=None,
        )
        early = self._freshness(header, now, created)
        item.early_refusal = Refusal.of(early) if early is not None else None
        try:
            record, warnings = self._authorize_and_validate(submission, msg)
        except MrxError as err:
            item.late_refusal = Refusal.of(err)
        else:
            item.record = record
            item.warnings = tuple(warnings)
        return item

    def _freshness(
        self, header: records_pb2.SubmissionHeader, now: datetime, created: datetime
    ) -> MrxError | None:
        if not header.HasField("created_at"):
            return None  # reported with the other field violations
        window = self.federation.freshness_window
        skew = (now - created).total_seconds()
        if abs(skew) <= window.total_seconds():
            return None
        direction = "old" if skew > 0 else "in the future"
        return FailedPrecondition(
            f"created_at {created.isoformat()} is {abs(skew):.0f} s {direction}; the window is "
            f"{window.total_seconds():.0f} s either side of the gateway clock ({now.isoformat()}). "
            "Sign the message again with a fresh created_at and check the sender's clock.",
            reason="STALE_MESSAGE",
            metadata={
                "created_at": created.isoformat(),
                "gateway_time": now.isoformat(),
                "window_seconds": str(int(window / timedelta(seconds=1))),
            },
        )

    def _authorize_and_validate(
        self, submission: records_pb2.Submission, msg: AnyRecordMessage | None
    ) -> tuple[Record, list[str]]:
        header = submission.header
        participant = self.federation.participant(header.sender)
        if participant is None or participant.role is not Role.MEMBER:
            raise PermissionDenied(
                f"{header.sender} is a read-only principal and may not publish records",
                reason="READ_ONLY_PRINCIPAL",
                metadata={"sender": header.sender},
            )
        violations = []
        if not header.HasField("created_at"):
            violations.append(FieldViolation("header.created_at", "required"))
        if not MIN_NONCE <= len(header.nonce) <= MAX_NONCE:
            violations.append(
                FieldViolation("header.nonce", f"{MIN_NONCE}-{MAX_NONCE} random bytes required")
            )
        expected = KIND_FIELDS.get(header.kind)
        record_field = submission.WhichOneof("record")
        if expected is None:
            violations.append(FieldViolation("header.kind", f"unknown record kind {header.kind}"))
        if msg is None or record_field is None:
            violations.append(FieldViolation("record", "exactly one record is required"))
        elif expected is not None and record_field != expected:
            violations.append(
                FieldViolation("header.kind", f"says {expected} but the record is a {record_field}")
            )
        if violations or msg is None:
            raise InvalidArgument(
                f"invalid submission: {violations[0].field}: {violations[0].description}",
                violations=violations,
            )
        issuer = claimed_issuer(msg)
        if issuer != header.sender:
            raise PermissionDenied(
                f"the record names {issuer or '(nobody)'} as its issuer; {header.sender} may publish only "
                "records issued under its own jurisdiction (an assessor's only by its home participant)",
                reason="NOT_ISSUER",
                metadata={"issuer": issuer, "sender": header.sender},
            )
        flags = self._jurisdiction(msg, header.sender)
        record, warnings = record_from_proto(msg, pt_boundaries=self.pt_boundaries)
        if flags:
            # The receipt carries the flags; the operator's log keeps them for the secretariat.
            log.info("jurisdiction flags on %s from %s: %s", raw_record_key(msg)[:200], header.sender, flags)
        return record, [*warnings, *flags]

    def _jurisdiction(self, msg: AnyRecordMessage, sender: str) -> list[str]:
        """Authorization by declared jurisdiction: raises OUTSIDE_JURISDICTION or returns flags.

        Judged on the raw fields before field validation, as authorization comes first; a
        field too malformed to match any declaration matches none and is left to validation.
        """
        rules = self.federation.jurisdictions
        if isinstance(msg, records_pb2.CertificateStatus):
            try:
                scheme = Scheme(msg.scheme).name
            except ValueError:
                return []  # refused by validation
            return rules.check_certificate(
                sender=sender, scheme=scheme, number=msg.certificate_number, issuing_body=msg.issuing_body
            )
        if isinstance(msg, records_pb2.AssessorRecord):
            return rules.check_assessor(sender=sender, registration_number=msg.registration_number)
        if isinstance(msg, records_pb2.TestReport):
            return rules.check_test_report(
                sender=sender,
                lab_cma_number=msg.lab_cma_number,
                accreditation_number=msg.accreditation_number,
            )
        if isinstance(msg, records_pb2.PtResult):
            return rules.check_pt_result(
                sender=sender,
                lab_cma_number=msg.lab_cma_number,
                accreditation_number=msg.accreditation_number,
            )
        return rules.check_other(sender=sender)


def _record_message(submission: records_pb2.Submission) -> AnyRecordMessage | None:
    field = submission.WhichOneof("record")
    if field is None:
        return None
    msg: AnyRecordMessage = getattr(submission, field)
    return msg


def _loggable(text: str, limit: int) -> str:
    """A refused record's string made safe to store: bounded, control characters replaced.

    Such strings come from a signed but unvalidated record; PostgreSQL refuses NUL in
    text, and one bad row must not fail the transaction its whole batch shares.
    """
    return "".join("\ufffd" if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text[:limit])
