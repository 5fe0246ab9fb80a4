"""ExchangeService: Submit, SubmitStream, GetCertificate, QueryCertificates."""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from typing import Any

import grpc

from gateway.convert import KIND_NUMBERS, us_to_datetime
from gateway.domain.certificates import CertState, Scheme, derive_state
from gateway.domain.errors import FieldViolation, InvalidArgument, MrxError, NotFound
from gateway.pb import exchange_pb2, exchange_pb2_grpc, records_pb2
from gateway.pipeline import Pipeline
from gateway.services.errors import internal_status, to_status
from gateway.services.paging import bad_token, decode_token, encode_token, has_control_chars
from gateway.store.reads import CertificateFilter, ReadStore, StoredCertificate
from gateway.store.record_reads import RecordReads
from gateway.store.sequencer import Accepted

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Unanswered items one stream may have in flight; beyond this the gateway stops
# reading and HTTP/2 flow control pushes back on the client. Measured: 2,048 only
# added queueing latency (p50 3-4 s) for the same throughput as 512.
STREAM_WINDOW = 512
_DONE = object()


class ExchangeServicer(exchange_pb2_grpc.ExchangeServiceServicer):
    def __init__(
        self,
        *,
        pipeline: Pipeline,
        store: ReadStore,
        today: Callable[[], date],
        verify_pool: ThreadPoolExecutor,
        records: RecordReads,
    ):
        self._pipeline = pipeline
        self._store = store
        self._today = today
        self._verify_pool = verify_pool
        self._records = records

    def Submit(
        self, request: exchange_pb2.SubmitRequest, context: grpc.ServicerContext
    ) -> exchange_pb2.SubmitResponse:
        accepted = self._pipeline.submit(request.envelope).result()
        return exchange_pb2.SubmitResponse(receipt=self._pipeline.sign_receipt(accepted))

    def SubmitStream(
        self, request_iterator: Iterator[exchange_pb2.SubmitRequest], context: grpc.ServicerContext
    ) -> Iterator[exchange_pb2.SubmitStreamResponse]:
        # Three stages so the stream stays full: a reader hands envelopes to the verify
        # pool (signature checks run in parallel, the GIL is released), a forwarder
        # passes verified items to the sequencer in stream order (two versions of one
        # certificate in one stream must be applied in the order sent), and this
        # generator answers in order as commits land.
        verified: queue.Queue[Any] = queue.Queue(maxsize=STREAM_WINDOW)
        committed: queue.Queue[Any] = queue.Queue(maxsize=STREAM_WINDOW)
        # Set when the RPC ends for any reason: a cancelled client stops draining the
        # queues, and the helper threads must not stay blocked on them forever.
        ended = threading.Event()
        context.add_callback(ended.set)

        def put(q: queue.Queue[Any], item: Any) -> bool:
            while not ended.is_set():
                try:
                    q.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                for request in request_iterator:
                    if not put(verified, self._verify_pool.submit(self._pipeline.verify, request.envelope)):
                        return
            except Exception:  # the client went away mid-stream; answer what was read
                log.debug("stream reader stopped", exc_info=True)
            finally:
                put(verified, _DONE)

        def forward() -> None:
            while True:
                try:
                    item = verified.get(timeout=0.5)
                except queue.Empty:
                    if ended.is_set():
                        return
                    continue
                if item is _DONE:
                    break
                try:
                    # Already-verified items are still committed after a cancel: the
                    # client may retry them and will then get the original receipt.
                    result: Any = self._pipeline.sequencer.submit(item.result())
                except Exception as exc:
                    result = exc
                if not put(committed, result):
                    return
            put(committed, _DONE)

        threading.Thread(target=read, name="mrx-stream-read", daemon=True).start()
        threading.Thread(target=forward, name="mrx-stream-forward", daemon=True).start()
        sequence = 0
        while (item := committed.get()) is not _DONE:
            yield self._stream_response(sequence, item)
            sequence += 1

    def _stream_response(
        self, sequence: int, item: Future[Accepted] | Exception
    ) -> exchange_pb2.SubmitStreamResponse:
        try:
            if isinstance(item, Exception):
                raise item
            receipt = self._pipeline.sign_receipt(item.result())
            return exchange_pb2.SubmitStreamResponse(sequence=sequence, receipt=receipt)
        except MrxError as err:
            return exchange_pb2.SubmitStreamResponse(sequence=sequence, error=to_status(err))
        except Exception:
            correlation_id = uuid.uuid4().hex[:16]
            log.exception("stream item %d failed, correlation id %s", sequence, correlation_id)
            return exchange_pb2.SubmitStreamResponse(sequence=sequence, error=internal_status(correlation_id))

    def GetCertificate(
        self, request: exchange_pb2.GetCertificateRequest, context: grpc.ServicerContext
    ) -> exchange_pb2.CertificateView:
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
        key = check_record_key(request.record_key, field="record_key")
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


def check_record_key(key: str, *, field: str) -> str:
    """A record key as the gateway issues them: kind/... , bounded, no control characters."""
    problem = None
    if not key:
        problem = "required"
    elif len(key) > 200:
        problem = "at most 200 characters"
    elif has_control_chars(key):
        problem = "must not contain control characters"
    elif key.split("/", 1)[0] not in KIND_NUMBERS or key.count("/") < 2:
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
