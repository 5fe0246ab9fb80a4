"""The one mapping from domain errors to gRPC status, applied in one interceptor.

Every refusal carries a google.rpc.Status with an ErrorInfo (domain "mrx.gateway", the
machine-readable reason, metadata) and, for INVALID_ARGUMENT, a BadRequest listing each
field violation. Anything else is INTERNAL with a correlation id and no internals; the
exception is logged under the same id so an operator can find it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.domain import errors as e
from gateway.observability.logs import REQUEST_ID
from gateway.services.bursts import STORE_FAILURES
from gateway.store.errors import is_unavailable, store_unavailable

log = logging.getLogger(__name__)

ERROR_DOMAIN = "mrx.gateway"

CODES: dict[type[e.MrxError], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    e.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    e.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def code_of(err: e.MrxError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.UNKNOWN


# Refusals echo caller input (key ids, numbers, field values); bounded so that a
# 10,000-character key id cannot make a 10 KB trailer.
MAX_MESSAGE = 512
MAX_METADATA_VALUE = 128
MAX_METADATA_ENTRIES = 16
MAX_VIOLATIONS = 50
# The whole encoded Status travels in one trailer (grpc-status-details-bin, base64):
# clients refuse metadata over 8 KiB by default, so the details stay well under that.
MAX_DETAILS_BYTES = 4096


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_status(err: e.MrxError) -> status_pb2.Status:
    code = code_of(err)
    metadata = {
        _cut(k, 64): _cut(v, MAX_METADATA_VALUE) for k, v in list(err.metadata.items())[:MAX_METADATA_ENTRIES]
    }
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=metadata)
    details = [info]
    if isinstance(err, e.InvalidArgument) and err.violations:
        budget = MAX_DETAILS_BYTES - info.ByteSize() - len(err.message[:MAX_MESSAGE].encode())
        bad = error_details_pb2.BadRequest()
        for v in err.violations[:MAX_VIOLATIONS]:
            item = error_details_pb2.BadRequest.FieldViolation(
                field=_cut(v.field, 128), description=_cut(v.description, 256)
            )
            if bad.ByteSize() + item.ByteSize() + 8 > budget:
                break  # the first violations are listed; the message names the first
            bad.field_violations.append(item)
        details.append(bad)
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    if isinstance(err, e.ResourceExhausted) and err.retry_after is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromTimedelta(err.retry_after)
        a = any_pb2.Any()
        a.Pack(retry)
        packed.append(a)
    return status_pb2.Status(code=code.value[0], message=_cut(err.message, MAX_MESSAGE), details=packed)


def internal_status(correlation_id: str) -> status_pb2.Status:
    # The id is also in an ErrorInfo so that a client can show it without parsing the
    # message; reason UNSPECIFIED: an INTERNAL error has no reason a caller can act on.
    info = error_details_pb2.ErrorInfo(
        reason="UNSPECIFIED", domain=ERROR_DOMAIN, metadata={"request_id": correlation_id}
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; quote correlation id {correlation_id} to the operator",
        details=[packed],
    )


def _trailers(status: status_pb2.Status) -> tuple[grpc.StatusCode, str, Any]:
    st = rpc_status.to_status(status)
    return st.code, st.details, st.trailing_metadata


# The exact bytes of the request being handled, for checks that must see what the
# client sent rather than a re-encoding (signed reads). Set by ErrorInterceptor.
REQUEST_BYTES: contextvars.ContextVar[bytes] = contextvars.ContextVar("mrx_request_bytes", default=b"")


def _status_of(exc: BaseException, method: str) -> status_pb2.Status:
    if isinstance(exc, e.MrxError):
        return to_status(exc)
    if is_unavailable(exc):
        STORE_FAILURES.note(type(exc).__name__)
        return to_status(store_unavailable())
    return _internal(exc, method)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    await context.abort(*_trailers(_status_of(exc, method)))


def _decoder(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    if deserializer is None:
        return lambda raw: raw

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # DecodeError, or anything a malformed body makes the parser raise
            raise e.InvalidArgument(
                "the request body is not a valid serialized message of the method's request type",
                reason="MALFORMED_REQUEST",
                violations=[e.FieldViolation("request", "not a decodable protobuf message")],
            ) from None

    return decode


def _wrap_unary(
    fn: Callable[..., Any], method: str, executor: Executor, decode: Callable[[bytes], Any]
) -> Callable[..., Any]:
    is_async = inspect.iscoroutinefunction(fn)

    async def handler(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            REQUEST_BYTES.set(raw)
            request = decode(raw)
            if is_async:
                return await fn(request, context)
            # Reads are plain functions doing blocking SQL: they run in the pool, never
            # on the loop that serves the submissions (with this call's context vars).
            ctx = contextvars.copy_context()
            return await asyncio.get_running_loop().run_in_executor(executor, ctx.run, fn, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc, method)
            raise  # unreachable: abort raises

    return handler


def _wrap_stream(
    fn: Callable[..., AsyncIterator[Any]], method: str, decode: Callable[[bytes], Any], streaming_in: bool
) -> Callable[..., Any]:
    async def handler(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            if streaming_in:

                async def requests() -> AsyncIterator[Any]:
                    async for item in raw:
                        yield decode(item)

                request: Any = requests()
            else:
                REQUEST_BYTES.set(raw)
                request = decode(raw)
            async for item in fn(request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return handler


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Applies the mapping above to every handler of the (asyncio) server.

    Requests arrive as bytes and are decoded here, so an undecodable body is
    INVALID_ARGUMENT (gRPC's own deserializer would answer INTERNAL) and the exact bytes
    stay available to the handler (``REQUEST_BYTES``). Plain (synchronous) unary
    handlers run in ``executor``; streaming handlers must be async generators.
    """

    def __init__(self, executor: Executor):
        self._executor = executor

    async def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        decode = _decoder(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, self._executor, decode),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, decode, streaming_in=False),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, method, decode, streaming_in=True),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        return handler


class SyncErrorInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """The same mapping for a synchronous ``grpc.Server`` serving unary methods.

    The gateway itself runs on grpc.aio; this serves the read-only servicers when they
    are mounted on a thread-pool server (pytest-grpc's, or an embedding application).
    """

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or not handler.unary_unary:
            return handler
        fn, method = handler.unary_unary, handler_call_details.method

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return fn(request, context)
            except Exception as exc:
                if type(exc) is Exception:  # grpc's own abort signal
                    raise
                context.abort_with_status(rpc_status.to_status(_status_of(exc, method)))
                raise  # unreachable: abort raises

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _internal(exc: BaseException, method: str) -> status_pb2.Status:
    # The call's request id (observability/interceptor.py) when there is one: the caller
    # already has it in its response metadata, and every log line of the call carries it.
    correlation_id = REQUEST_ID.get() or uuid.uuid4().hex[:16]
    log.error("unexpected error in %s, correlation id %s", method, correlation_id, exc_info=exc)
    return internal_status(correlation_id)
