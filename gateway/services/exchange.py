"""ExchangeService: Submit, SubmitBatch, SubmitStream, GetCertificate, QueryCertificates, GetRecord.

Thin: protobuf in, protobuf out. Submissions are the ledger's (gateway/ledger/front.py);
reads are plain functions the server runs in its thread pool.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any

import grpc

from gateway.convert import us_to_datetime
from gateway.domain.certificates import CertState, Scheme, derive_state
from gateway.domain.errors import FieldViolation, InvalidArgument, MrxError, NotFound, Unavailable
from gateway.domain.kinds import ASSESSOR_KIND, kind_of_key
from gateway.ledger.front import Submitter
from gateway.ledger.values import Accepted
from gateway.pb import envelope_pb2, exchange_pb2, exchange_pb2_grpc, records_pb2
from gateway.services.auth import ReadAuthenticator, client_participant
from gateway.services.errors import to_status
from gateway.services.paging import bad_token, decode_token, encode_token, has_control_chars
from gateway.services.subscribe import Subscriptions
from gateway.store.reads import CertificateFilter, ReadStore, StoredCertificate
from gateway.store.record_reads import RecordReads

log = logging.getLogger(__name__)

SERVICE = "/mrx.v1.ExchangeService/"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class ExchangeServicer(exchange_pb2_grpc.ExchangeServiceServicer):
    def __init__(
        self,
        *,
        submitter: Submitter,
        store: ReadStore,
        today: Callable[[], date],
        records: RecordReads,
        auth: ReadAuthenticator,
        subscriptions: Subscriptions | None = None,
    ):
        self._auth = auth
        self._subscriptions = subscriptions
        self._submitter = submitter
        self._store = store
        self._today = today
        self._records = records

    async def Submit(
        self, request: exchange_pb2.SubmitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.SubmitResponse:
        accepted = await self._submitter.submit(request.envelope, peer=client_participant(context))
        return exchange_pb2.SubmitResponse(receipt=self._submitter.receipt(accepted))

    async def SubmitBatch(
        self, request: exchange_pb2.SubmitBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.SubmitBatchResponse:
        results = await self._submitter.submit_batch(request.envelopes, peer=client_participant(context))
        signed = await self._submitter.receipts(results)
        return exchange_pb2.SubmitBatchResponse(
            results=[
                exchange_pb2.SubmitStreamResponse(sequence=seq, error=to_status(item))
                if isinstance(item, MrxError)
                else exchange_pb2.SubmitStreamResponse(sequence=seq, receipt=item)
                for seq, item in enumerate(signed)
            ]
        )

    async def SubmitStream(
        self,
        request_iterator: AsyncIterator[exchange_pb2.SubmitRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[exchange_pb2.SubmitStreamResponse]:
        async def envelopes() -> AsyncIterator[envelope_pb2.Envelope]:
            async for request in request_iterator:
                yield request.envelope

        sequence = 0
        async for result in self._submitter.stream(envelopes(), peer=client_participant(context)):
            yield self._stream_response(sequence, result)
            sequence += 1

    async def Subscribe(
        self, request: exchange_pb2.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[exchange_pb2.SubscribeEvent]:
        if self._subscriptions is None:
            raise Unavailable("this gateway serves no change feed", reason="SHUTTING_DOWN")
        async for event in self._subscriptions.subscribe(request, context):
            yield event

    def _stream_response(
        self, sequence: int, result: Accepted | MrxError
    ) -> exchange_pb2.SubmitStreamResponse:
        if isinstance(result, MrxError):
            return exchange_pb2.SubmitStreamResponse(sequence=sequence, error=to_status(result))
        return exchange_pb2.SubmitStreamResponse(sequence=sequence, receipt=self._submitter.receipt(result))

    def GetCertificate(
        self, request: exchange_pb2.GetCertificateRequest, context: grpc.ServicerContext
    ) -> exchange_pb2.CertificateView:
        self._auth.authenticate(context, SERVICE + "GetCertificate", request)
        violations = []
        if request.scheme == records_pb2.CERTIFICATE_SCHEME_UNSPECIFIED:
            violations.append(FieldViolation("scheme", "required"))
        elif request.scheme not in Scheme._value2member_map_:
            violations.append(FieldViolation("scheme", f"unknown scheme {request.scheme}"))
        if not request.certificate_number:
            violations.append(FieldViolation("certificate_number", "required"))
        violations += _text_violations(certificate_number=request.certificate_number)
        if violations:
            raise InvalidArgument(
                f"{violations[0].field}: {violations[0].description}", violations=violations
            )
        row = self._store.get_certificate(request.scheme, request.certificate_number)
        if row is None:
            raise NotFound(
                f"no {Scheme(request.scheme).name} certificate {request.certificate_number} is published",
                reason="CERTIFICATE_NOT_FOUND",
            )
        return self._view(row, self._today())

    def QueryCertificates(
        self, request: exchange_pb2.QueryCertificatesRequest, context: grpc.ServicerContext
    ) -> exchange_pb2.QueryCertificatesResponse:
        self._auth.authenticate(context, SERVICE + "QueryCertificates", request)
        violations = []
        if request.page_size < 0:
            violations.append(FieldViolation("page_size", "must not be negative"))
        if request.scheme and request.scheme not in Scheme._value2member_map_:
            violations.append(FieldViolation("scheme", f"unknown scheme {request.scheme}"))
        if request.state and request.state not in CertState._value2member_map_:
            violations.append(FieldViolation("state", f"unknown state {request.state}"))
        violations += _text_violations(
            holder_credit_code=request.holder_credit_code,
            issuing_body=request.issuing_body,
            issuer=request.issuer,
        )
        if violations:
            raise InvalidArgument(
                f"{violations[0].field}: {violations[0].description}", violations=violations
            )
        flt = CertificateFilter(
            holder_credit_code=request.holder_credit_code,
            issuing_body=request.issuing_body,
            issuer=request.issuer,
            scheme=request.scheme,
            state=request.state,
        )
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(request.page_token, flt) if request.page_token else None
        today = self._today()
        rows = self._store.query_certificates(flt, today=today, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        token = _encode_token(rows[-1], flt) if more else ""
        return exchange_pb2.QueryCertificatesResponse(
            certificates=[self._view(r, today) for r in rows], next_page_token=token
        )

    def GetRecord(
        self, request: exchange_pb2.GetRecordRequest, context: grpc.ServicerContext
    ) -> exchange_pb2.RecordView:
        principal = self._auth.authenticate(context, SERVICE + "GetRecord", request)
        key = check_record_key(request.record_key, field="record_key")
        kind = kind_of_key(key)
        if kind is ASSESSOR_KIND:
            # Assessor records are personal data: checked before the lookup, so a refusal
            # says nothing about whether the record exists.
            home = kind.parse_key(key)["home"]
            self._auth.require_personal_data(principal, issuer=home, kind=kind.name, today=self._today())
        snap = self._records.snapshot(key)
        if snap is None:
            raise NotFound(f"no record {key} has been published", reason="RECORD_NOT_FOUND")
        latest = snap.history[-1]
        view = exchange_pb2.RecordView(
            record_key=key,
            version=snap.version,
            log_index=snap.log_index,
            effective_state=int(derive_state(CertState(latest.state), snap.valid_until, self._today()))  # type: ignore[arg-type]
            if snap.valid_until is not None
            else latest.state,
            pt_classification=snap.classification or 0,  # type: ignore[arg-type]
        )
        view.envelope.ParseFromString(snap.envelope)
        view.received_at.FromDatetime(us_to_datetime(snap.received_at_us))
        return view

    @staticmethod
    def _view(row: StoredCertificate, today: date) -> exchange_pb2.CertificateView:
        view = exchange_pb2.CertificateView(log_index=row.log_index)
        view.envelope.ParseFromString(row.envelope)
        submission = records_pb2.Submission.FromString(view.envelope.payload)
        view.certificate.CopyFrom(submission.certificate_status)
        view.effective_state = int(derive_state(CertState(row.state), row.expiry_date, today))  # type: ignore[assignment]
        view.received_at.FromDatetime(us_to_datetime(row.received_at_us))
        return view


MAX_FILTER_LEN = 64


def _text_violations(**fields: str) -> list[FieldViolation]:
    """Lookup strings: bounded and free of control characters (PostgreSQL refuses NUL)."""
    found = []
    for name, value in fields.items():
        if len(value) > MAX_FILTER_LEN:
            found.append(FieldViolation(name, f"at most {MAX_FILTER_LEN} characters"))
        elif has_control_chars(value):
            found.append(FieldViolation(name, "must not contain control characters"))
    return found


def _parses(key: str) -> bool:
    try:
        kind_of_key(key).parse_key(key)
    except ValueError:
        return False
    return True


def check_record_key(key: str, *, field: str) -> str:
    """A record key as the gateway issues them: kind/... , bounded, no control characters."""
    problem = None
    if not key:
        problem = "required"
    elif len(key) > 200:
        problem = "at most 200 characters"
    elif has_control_chars(key):
        problem = "must not contain control characters"
    elif not _parses(key):
        problem = "must look like <kind>/<issuer or scheme>/<number>, as in receipts"
    if problem:
        raise InvalidArgument(f"{field}: {problem}", violations=[FieldViolation(field, problem)])
    return key


def _filter_digest(flt: CertificateFilter) -> str:
    raw = json.dumps([flt.holder_credit_code, flt.issuing_body, flt.issuer, flt.scheme, flt.state])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _encode_token(row: StoredCertificate, flt: CertificateFilter) -> str:
    return encode_token(_filter_digest(flt), row.scheme, row.certificate_number)


def _decode_token(token: str, flt: CertificateFilter) -> tuple[int, str]:
    scheme, number = decode_token(token, _filter_digest(flt), 2)
    if (
        not isinstance(scheme, int)
        or scheme not in Scheme._value2member_map_
        or not isinstance(number, str)
        or _text_violations(n=number)
    ):
        raise bad_token()
    return scheme, number
