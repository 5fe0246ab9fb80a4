"""The Python SDK a provincial system or adapter uses to sign, submit and read.

    from gateway.client import GatewayClient
    from gateway.crypto.suites import PrivateKey
    from gateway.tls import ClientTls

    key = PrivateKey.load(Path("/etc/mrx/CN-JS_2026-01.key.pem"), keyid="CN-JS/2026-01")
    tls = ClientTls(ca=Path("/etc/mrx/tls/ca.crt"), cert=Path("/etc/mrx/tls/CN-JS.crt"),
                    key=Path("/etc/mrx/tls/CN-JS.key"))
    with GatewayClient("gateway.example:7443", sender="CN-JS", signer=key, tls=tls) as gw:
        receipt = gw.publish(certificate)          # Receipt, signature checked
        for outcome in gw.publish_many(batch):     # streamed, one outcome per item
            ...
        outcomes = gw.publish_batch(batch)         # SubmitBatch: many per call

Every receipt is verified against the gateway's public key before it is returned:
pass ``gateway_keys`` from your own copy of the federation file to pin them, or the
client fetches them once from RegistryService (trust on first use). Without ``tls`` the
channel is plaintext, for a gateway on this machine only (docs/operations.md, "Mutual TLS").
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.convert import KIND_NUMBERS, claimed_issuer, record_from_proto, record_to_proto
from gateway.crypto.dsse import (
    DECISION_PAYLOAD_TYPE,
    RECEIPT_PAYLOAD_TYPE,
    SUBMISSION_PAYLOAD_TYPE,
    SignatureError,
    sha256,
    sign_envelope,
    verify_envelope,
)
from gateway.crypto.reads import sign_read
from gateway.crypto.suites import PrivateKey, PublicKey, Suite
from gateway.domain.certificates import CertState, Scheme
from gateway.domain.records import Record
from gateway.pb import (
    audit_pb2,
    audit_pb2_grpc,
    envelope_pb2,
    exchange_pb2,
    exchange_pb2_grpc,
    recognition_pb2,
    recognition_pb2_grpc,
    records_pb2,
    registry_pb2,
    registry_pb2_grpc,
)
from gateway.tls.transport import ClientTls, channel


class ReceiptError(Exception):
    """A receipt did not verify against the gateway's key: do not treat it as proof."""


@dataclass(frozen=True)
class Refusal:
    """Why the gateway refused a submission, decoded from google.rpc.Status."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> Refusal:
        code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
        reason, metadata, violations = "", {}, []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [(v.field, v.description) for v in bad.field_violations]
        return cls(code, status.message, reason, metadata, tuple(violations))

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> Refusal:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
        if status is None:
            return cls(err.code(), err.details() or "")  # type: ignore[attr-defined]
        return cls.from_status(status)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"


class SubmissionRefused(Exception):
    def __init__(self, refusal: Refusal):
        super().__init__(str(refusal))
        self.refusal = refusal


@dataclass(frozen=True)
class Outcome:
    """One streamed item's answer: a verified receipt or a refusal."""

    sequence: int
    receipt: envelope_pb2.Receipt | None
    refusal: Refusal | None


def make_submission(
    record: Record,
    *,
    sender: str,
    signer: PrivateKey,
    message_id: str | None = None,
    created_at: datetime | None = None,
    nonce: bytes | None = None,
) -> envelope_pb2.Envelope:
    """Sign any record (certificate status, assessor, result) as a DSSE envelope for Submit."""
    field, msg = record_to_proto(record)
    submission = records_pb2.Submission(
        header=records_pb2.SubmissionHeader(
            message_id=message_id or str(uuid.uuid4()),
            sender=sender,
            nonce=nonce if nonce is not None else os.urandom(16),
            kind=KIND_NUMBERS[field],  # type: ignore[arg-type]
        ),
    )
    getattr(submission, field).CopyFrom(msg)
    submission.header.created_at.FromDatetime(created_at or datetime.now(UTC))
    return sign_envelope(
        payload_type=SUBMISSION_PAYLOAD_TYPE, payload=submission.SerializeToString(), signer=signer
    )


class DecisionError(ReceiptError):
    """A recognition decision did not verify against the gateway's key."""


def verify_decision(
    envelope: envelope_pb2.Envelope, gateway_keys: dict[str, PublicKey]
) -> recognition_pb2.Decision:
    """Check a decision envelope's type and gateway signature; return the Decision."""
    if len(envelope.signatures) != 1:
        raise DecisionError("a decision carries exactly one signature")
    try:
        verify_envelope(envelope, payload_type=DECISION_PAYLOAD_TYPE, keys=gateway_keys, what="decision")
    except SignatureError as err:
        raise DecisionError(str(err)) from None
    return recognition_pb2.Decision.FromString(envelope.payload)


def verify_receipt(
    envelope: envelope_pb2.Envelope,
    gateway_keys: dict[str, PublicKey],
    sent: envelope_pb2.Envelope | None = None,
) -> envelope_pb2.Receipt:
    """Check a receipt's type and gateway signature, and that it names ``sent``; return it."""
    if len(envelope.signatures) != 1:
        raise ReceiptError("a receipt carries exactly one signature")
    try:
        verify_envelope(envelope, payload_type=RECEIPT_PAYLOAD_TYPE, keys=gateway_keys, what="receipt")
    except SignatureError as err:
        raise ReceiptError(str(err)) from None
    receipt = envelope_pb2.Receipt.FromString(envelope.payload)
    if sent is not None:
        digest = sha256(sent.SerializeToString(deterministic=True))
        submission = records_pb2.Submission.FromString(sent.payload)
        if receipt.envelope_sha256 != digest or receipt.message_id != submission.header.message_id:
            raise ReceiptError(
                f"the receipt names another envelope (message id {receipt.message_id!r}) than the one sent "
                f"({submission.header.message_id!r})"
            )
    return receipt


class ChangeVerificationError(Exception):
    """A Subscribe change whose issuer signature or content does not verify: do not apply it.

    ``log_index`` says which; the feed stops here (resume from it once the cause is known).
    """

    def __init__(self, log_index: int, message: str):
        super().__init__(f"change at log index {log_index}: {message}")
        self.log_index = log_index


@dataclass(frozen=True)
class Change:
    """One accepted record change from Subscribe, its issuer signature verified."""

    log_index: int
    record_key: str
    envelope: envelope_pb2.Envelope
    record: Record


def verify_change(
    change: exchange_pb2.RecordChange, federation_keys: dict[str, tuple[str, PublicKey]]
) -> Change:
    """Check a Subscribe change: a submission envelope signed by a federation key of the
    record's issuer, naming the issuer the gateway says; decode and validate the record.

    ``federation_keys``: key id -> (owner, public key). Raises ChangeVerificationError.
    """
    index = change.log_index
    try:
        envelope = envelope_pb2.Envelope.FromString(change.envelope)
        submission = records_pb2.Submission.FromString(envelope.payload)
    except Exception:  # DecodeError or anything a malformed body makes the parser raise
        raise ChangeVerificationError(index, "the envelope is not a serialized submission") from None
    which = submission.WhichOneof("record")
    if which is None:
        raise ChangeVerificationError(index, "the submission carries no record")
    msg = getattr(submission, which)
    issuer = claimed_issuer(msg)
    if issuer != change.issuer or submission.header.sender != issuer:
        raise ChangeVerificationError(
            index, f"the record's issuer {issuer!r} is not the sender or not the issuer the gateway named"
        )
    keys = {kid: key for kid, (owner, key) in federation_keys.items() if owner == issuer}
    try:
        verify_envelope(envelope, payload_type=SUBMISSION_PAYLOAD_TYPE, keys=keys, what="submission")
    except SignatureError as err:
        raise ChangeVerificationError(index, f"{err} (issuer {issuer})") from None
    try:
        record, _ = record_from_proto(msg)
    except Exception as err:  # InvalidArgument from validation
        raise ChangeVerificationError(index, f"the record does not validate: {err}") from None
    return Change(log_index=index, record_key=change.record_key, envelope=envelope, record=record)


# SubmitBatch limits (proto/mrx/v1/exchange.proto); the SDK splits larger batches.
BATCH_MAX_ENVELOPES = 1000
BATCH_MAX_BYTES = 16 * 1024 * 1024 - 64 * 1024  # leaves room for framing


def _batches(envelopes: Iterable[envelope_pb2.Envelope]) -> Iterator[list[envelope_pb2.Envelope]]:
    call: list[envelope_pb2.Envelope] = []
    size = 0
    for envelope in envelopes:
        n = envelope.ByteSize() + 8
        if call and (len(call) == BATCH_MAX_ENVELOPES or size + n > BATCH_MAX_BYTES):
            yield call
            call, size = [], 0
        call.append(envelope)
        size += n
    if call:
        yield call


class GatewayClient:
    def __init__(
        self,
        target: str,
        *,
        sender: str | None = None,
        signer: PrivateKey | None = None,
        gateway_keys: dict[str, PublicKey] | None = None,
        tls: ClientTls | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
        federation_keys: dict[str, tuple[str, PublicKey]] | None = None,
    ):
        """``tls``: the CA to trust and this participant's client certificate and key
        (gateway.tls.ClientTls); without it (or ready-made ``credentials``) the channel is
        plaintext, which only a loopback target may use (TlsConfigError otherwise).
        ``federation_keys`` (key id -> (owner, public key), from your copy of the federation
        file) pins the keys Subscribe changes are verified with; without it they are
        fetched from RegistryService (trust on first use).
        """
        self.target = target
        options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
        self._channel = channel(target, tls=tls, credentials=credentials, options=options)
        self.exchange = exchange_pb2_grpc.ExchangeServiceStub(self._channel)
        self.registry = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self.recognition = recognition_pb2_grpc.RecognitionServiceStub(self._channel)
        self.sender = sender
        self.signer = signer
        self.timeout = timeout
        self._gateway_keys = gateway_keys
        self._federation_keys = federation_keys
        self._pinned_keys = federation_keys is not None

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    @property
    def gateway_keys(self) -> dict[str, PublicKey]:
        if self._gateway_keys is None:
            participants = self.registry.ListParticipants(
                registry_pb2.ListParticipantsRequest(), timeout=self.timeout
            )
            gateway = [
                p.code for p in participants.participants if p.role == registry_pb2.PARTICIPANT_ROLE_GATEWAY
            ]
            keys: dict[str, PublicKey] = {}
            for code in gateway:
                listed = self.registry.ListKeys(
                    registry_pb2.ListKeysRequest(owner=code), timeout=self.timeout
                )
                for k in listed.keys:
                    keys[k.keyid] = PublicKey.from_pem(k.public_key_pem, Suite.from_proto(k.suite))
            self._gateway_keys = keys
        return self._gateway_keys

    def federation_keys(self, *, refresh: bool = False) -> dict[str, tuple[str, PublicKey]]:
        """Every participant key (revoked ones too: they still verify what they signed
        while valid), key id -> (owner, public key)."""
        if self._federation_keys is None or (refresh and not self._pinned_keys):
            listed = self.registry.ListKeys(registry_pb2.ListKeysRequest(), timeout=self.timeout)
            self._federation_keys = {
                k.keyid: (k.owner, PublicKey.from_pem(k.public_key_pem, Suite.from_proto(k.suite)))
                for k in listed.keys
            }
        return self._federation_keys

    def subscribe(
        self,
        *,
        start_index: int = 0,
        kinds: Sequence[str] = (),
        issuers: Sequence[str] = (),
        schemes: Sequence[Scheme] = (),
        certificate_numbers: Sequence[str] = (),
        holder_credit_codes: Sequence[str] = (),
        until_caught_up: bool = False,
        on_caught_up: Callable[[int], None] | None = None,
    ) -> Iterator[Change]:
        """Follow the log (ExchangeService.Subscribe): every accepted change this client's
        sender may see and the filters match, oldest first, backfill then live, without
        end (``until_caught_up``: stop once the backfill reaches the end of the log;
        ``on_caught_up(next_index)`` is called when it does).

        Each change's issuer signature is verified against the federation keys before it
        is yielded (ChangeVerificationError otherwise). Resume after an error with
        ``start_index`` = the last change's log_index + 1: nothing is lost or repeated.
        Closing the iterator cancels the call; from another thread, close the client (the
        iterator then raises grpc.RpcError CANCELLED). Refusals raise grpc.RpcError (decode
        with Refusal.from_rpc_error); UNAVAILABLE means reconnect and resume.
        """
        if self.signer is None or self.sender is None:
            raise ValueError("reads are signed: this client needs a sender and signer")
        request = exchange_pb2.SubscribeRequest(
            start_index=start_index,
            kinds=list(kinds),
            issuers=list(issuers),
            schemes=[int(s) for s in schemes],  # type: ignore[misc]
            certificate_numbers=list(certificate_numbers),
            holder_credit_codes=list(holder_credit_codes),
        )
        metadata = sign_read(
            signer=self.signer,
            principal=self.sender,
            method="/mrx.v1.ExchangeService/Subscribe",
            request=request,
            now=self.now(),
        )
        keys = self.federation_keys()
        call = self.exchange.Subscribe(request, metadata=metadata)
        try:
            for event in call:
                which = event.WhichOneof("event")
                if which == "change":
                    try:
                        yield verify_change(event.change, keys)
                    except ChangeVerificationError:
                        if self._pinned_keys:
                            raise
                        # Perhaps a key registered after the keys were fetched: fetch once more.
                        keys = self.federation_keys(refresh=True)
                        yield verify_change(event.change, keys)
                elif which == "caught_up":
                    if on_caught_up is not None:
                        on_caught_up(event.caught_up.next_index)
                    if until_caught_up:
                        return
        finally:
            call.cancel()

    def sign(self, record: Record, **kwargs: Any) -> envelope_pb2.Envelope:
        if self.signer is None or self.sender is None:
            raise ValueError("this client has no sender and signer; it can only read")
        return make_submission(record, sender=self.sender, signer=self.signer, **kwargs)

    def submit(self, envelope: envelope_pb2.Envelope) -> envelope_pb2.Receipt:
        """Submit a signed envelope; raises SubmissionRefused with the decoded reason."""
        try:
            response = self.exchange.Submit(
                exchange_pb2.SubmitRequest(envelope=envelope), timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise SubmissionRefused(Refusal.from_rpc_error(err)) from None
        return verify_receipt(response.receipt, self.gateway_keys, envelope)

    def publish(self, record: Record, **kwargs: Any) -> envelope_pb2.Receipt:
        return self.submit(self.sign(record, **kwargs))

    def submit_many(self, envelopes: Iterable[envelope_pb2.Envelope]) -> Iterator[Outcome]:
        """Stream envelopes; yields one Outcome per envelope, in order."""
        keys = self.gateway_keys
        sent: list[envelope_pb2.Envelope] = []

        def requests() -> Iterator[exchange_pb2.SubmitRequest]:
            for envelope in envelopes:
                sent.append(envelope)
                yield exchange_pb2.SubmitRequest(envelope=envelope)

        for response in self.exchange.SubmitStream(requests()):
            if response.HasField("receipt"):
                envelope = sent[response.sequence]
                yield Outcome(response.sequence, verify_receipt(response.receipt, keys, envelope), None)
            else:
                yield Outcome(response.sequence, None, Refusal.from_status(response.error))

    def publish_many(self, records: Iterable[Record]) -> Iterator[Outcome]:
        return self.submit_many(self.sign(r) for r in records)

    def submit_batch(self, envelopes: Iterable[envelope_pb2.Envelope]) -> list[Outcome]:
        """SubmitBatch: one Outcome per envelope, in order; the adapters' throughput path.

        Split into calls of at most BATCH_MAX_ENVELOPES envelopes and BATCH_MAX_BYTES
        bytes; each call is one transaction at the gateway. A call that fails as a whole
        (UNAVAILABLE, a timeout) raises SubmissionRefused: resend the same envelopes and
        those already committed come back with their original receipts.
        """
        keys = self.gateway_keys
        outcomes: list[Outcome] = []
        for call in _batches(envelopes):
            try:
                response = self.exchange.SubmitBatch(
                    exchange_pb2.SubmitBatchRequest(envelopes=call), timeout=self.timeout
                )
            except grpc.RpcError as err:
                raise SubmissionRefused(Refusal.from_rpc_error(err)) from None
            base = len(outcomes)
            for result in response.results:
                if result.HasField("receipt"):
                    receipt = verify_receipt(result.receipt, keys, call[result.sequence])
                    outcomes.append(Outcome(base + result.sequence, receipt, None))
                else:
                    outcomes.append(Outcome(base + result.sequence, None, Refusal.from_status(result.error)))
        return outcomes

    def publish_batch(self, records: Iterable[Record]) -> list[Outcome]:
        return self.submit_batch(self.sign(r) for r in records)

    def now(self) -> datetime:
        """The time reads are signed at (a subclass may supply another clock)."""
        return datetime.now(UTC)

    def signed_read(self, service: str, name: str, request: Any) -> Any:
        """A signed read: this client's sender is the reader (docs/signing.md section 12)."""
        if self.signer is None or self.sender is None:
            raise ValueError("reads are signed: this client needs a sender and signer")
        metadata = sign_read(
            signer=self.signer,
            principal=self.sender,
            method=f"/mrx.v1.{service}/{name}",
            request=request,
            now=self.now(),
        )
        stub = self.recognition if service == "RecognitionService" else self.exchange
        return getattr(stub, name)(request, metadata=metadata, timeout=self.timeout)

    def get_record(self, record_key: str) -> exchange_pb2.RecordView:
        view: exchange_pb2.RecordView = self.signed_read(
            "ExchangeService", "GetRecord", exchange_pb2.GetRecordRequest(record_key=record_key)
        )
        return view

    def check_recognition(
        self,
        *,
        record_key: str | None = None,
        assessor: recognition_pb2.AssessorQuestion | None = None,
        as_of: str = "",
    ) -> recognition_pb2.Decision:
        """Ask for a signed recognition decision; returns it after checking the gateway's signature.

        The call is signed with this client's key: the asker is this client's sender.
        """
        request = recognition_pb2.CheckRecognitionRequest(as_of=as_of)
        if record_key is not None:
            request.record_key = record_key
        if assessor is not None:
            request.assessor.CopyFrom(assessor)
        response = self.signed_read("RecognitionService", "CheckRecognition", request)
        return verify_decision(response.decision, self.gateway_keys)

    def get_certificate(self, scheme: Scheme, number: str) -> exchange_pb2.CertificateView:
        request = exchange_pb2.GetCertificateRequest(scheme=int(scheme), certificate_number=number)  # type: ignore[arg-type]
        view: exchange_pb2.CertificateView = self.signed_read("ExchangeService", "GetCertificate", request)
        return view

    def query_certificates(
        self,
        *,
        holder_credit_code: str = "",
        issuing_body: str = "",
        issuer: str = "",
        scheme: Scheme | None = None,
        state: CertState | None = None,
        page_size: int = 0,
    ) -> Iterator[exchange_pb2.CertificateView]:
        """Every matching certificate, following page tokens."""
        request = exchange_pb2.QueryCertificatesRequest(
            holder_credit_code=holder_credit_code,
            issuing_body=issuing_body,
            issuer=issuer,
            scheme=int(scheme or 0),  # type: ignore[arg-type]
            state=int(state or 0),  # type: ignore[arg-type]
            page_size=page_size,
        )
        while True:
            page = self.signed_read("ExchangeService", "QueryCertificates", request)
            yield from page.certificates
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token


class AuditClient:
    """Signed reads of the audit log, for secretariats, provinces and monitors.

    Every call is signed with the principal's federation key (see audit.proto); the
    gateway answers only with the exchanges the principal may see.
    """

    def __init__(
        self,
        target: str,
        *,
        principal: str,
        signer: PrivateKey,
        tls: ClientTls | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
    ):
        """``tls`` and ``credentials`` as for GatewayClient: plaintext only to loopback."""
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        self._channel = channel(target, tls=tls, credentials=credentials, options=options)
        self.stub = audit_pb2_grpc.AuditServiceStub(self._channel)
        self.registry = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self.principal = principal
        self.signer = signer
        self.timeout = timeout

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, name: str, request: Any) -> Any:
        metadata = sign_read(
            signer=self.signer,
            principal=self.principal,
            method=f"/mrx.v1.AuditService/{name}",
            request=request,
        )
        return getattr(self.stub, name)(request, metadata=metadata, timeout=self.timeout)

    def checkpoint(self) -> envelope_pb2.Envelope:
        response: audit_pb2.GetCheckpointResponse = self._call(
            "GetCheckpoint", audit_pb2.GetCheckpointRequest()
        )
        return response.checkpoint

    def inclusion_proof(
        self, *, log_index: int | None = None, envelope_sha256: bytes | None = None, tree_size: int = 0
    ) -> audit_pb2.GetInclusionProofResponse:
        request = audit_pb2.GetInclusionProofRequest(tree_size=tree_size)
        if log_index is not None:
            request.log_index = log_index
        if envelope_sha256 is not None:
            request.envelope_sha256 = envelope_sha256
        response: audit_pb2.GetInclusionProofResponse = self._call("GetInclusionProof", request)
        return response

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        request = audit_pb2.GetConsistencyProofRequest(old_size=old_size, new_size=new_size)
        response: audit_pb2.GetConsistencyProofResponse = self._call("GetConsistencyProof", request)
        return list(response.hashes)

    def envelope(self, *, log_index: int) -> audit_pb2.ExchangeEntry:
        entry: audit_pb2.ExchangeEntry = self._call(
            "GetEnvelope", audit_pb2.GetEnvelopeRequest(log_index=log_index)
        )
        return entry

    def exchanges(self, request: audit_pb2.ListExchangesRequest) -> Iterator[audit_pb2.ExchangeEntry]:
        """Every matching exchange visible to the principal, following page tokens."""
        request = audit_pb2.ListExchangesRequest.FromString(request.SerializeToString())
        while True:
            page: audit_pb2.ListExchangesResponse = self._call("ListExchanges", request)
            yield from page.entries
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token


class ReportError(ReceiptError):
    """A reconciliation report did not verify against the gateway's key."""


def verify_report(envelope: envelope_pb2.Envelope, gateway_keys: dict[str, PublicKey]) -> Any:
    """Check a reconciliation report's type and gateway signature; return the
    ReconciliationReport."""
    from gateway.pb import reconcile_pb2
    from gateway.reconcile.digests import REPORT_PAYLOAD_TYPE

    if len(envelope.signatures) != 1:
        raise ReportError("a report carries exactly one signature")
    try:
        verify_envelope(envelope, payload_type=REPORT_PAYLOAD_TYPE, keys=gateway_keys, what="report")
    except SignatureError as err:
        raise ReportError(str(err)) from None
    return reconcile_pb2.ReconciliationReport.FromString(envelope.payload)


class ReconcileClient(GatewayClient):
    """Signed calls of ReconciliationService (proto/mrx/v1/reconcile.proto); the driver of
    a run is gateway.reconcile.participant.reconcile. Counts the bytes it exchanges."""

    def __init__(self, target: str, *, clock: Any = None, **kwargs: Any):
        from gateway.pb import reconcile_pb2_grpc

        super().__init__(target, **kwargs)
        self.reconciliation = reconcile_pb2_grpc.ReconciliationServiceStub(self._channel)
        self._clock = clock
        self.bytes_sent = 0
        self.bytes_received = 0

    def __enter__(self) -> ReconcileClient:
        return self

    def now(self) -> datetime:
        return self._clock() if self._clock is not None else datetime.now(UTC)

    def call(self, name: str, request: Any, *, timeout: float | None = None) -> Any:
        if self.signer is None or self.sender is None:
            raise ValueError("reconciliation calls are signed: this client needs a sender and signer")
        raw = request.SerializeToString()
        metadata = sign_read(
            signer=self.signer,
            principal=self.sender,
            method=f"/mrx.v1.ReconciliationService/{name}",
            request=raw,
            now=self.now(),
        )
        response = getattr(self.reconciliation, name)(
            request, metadata=metadata, timeout=timeout or self.timeout
        )
        if name == "ListRuns":
            return response
        self.bytes_sent += len(raw)
        self.bytes_received += response.ByteSize()
        return response

    def get_report(self, run_id: str) -> Any:
        """The verified ReconciliationReport of a run."""
        from gateway.pb import reconcile_pb2

        response = self.call("GetReport", reconcile_pb2.GetReportRequest(run_id=run_id))
        return verify_report(response.report, self.gateway_keys)

    def list_runs(self, *, participant: str = "", limit: int = 0) -> Iterator[Any]:
        """ListRunsItem messages: runs newest first, then members not reconciled in 24 h."""
        from gateway.pb import reconcile_pb2

        yield from self.call("ListRuns", reconcile_pb2.ListRunsRequest(participant=participant, limit=limit))
