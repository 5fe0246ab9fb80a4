"""The outermost server interceptor: a request id and the RPC metrics for every call.

It sits outside ErrorInterceptor (gateway/services/errors.py), so the status it counts is
the one the caller receives, refusals included. The request id is the caller's
``x-request-id`` metadata entry when sane (logs.request_id_from), else a new one; it is
sent back first thing as ``x-request-id`` in the initial metadata, is on every log line
written while the call runs, and is quoted in an INTERNAL error's ErrorInfo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from gateway.observability import metrics
from gateway.observability.logs import REQUEST_ID, request_id_from

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"


def _offered(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return None


def _code(context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode) -> str:
    try:
        code = context.code()
    except Exception:  # older grpc: no code(); the default is the best we know
        code = None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # some versions hand back the number
        for c in grpc.StatusCode:
            if c.value[0] == code:
                return str(c.name)
    return str(default.name)


async def _begin(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    rid = request_id_from(_offered(context))
    REQUEST_ID.set(rid)
    await context.send_initial_metadata(((REQUEST_ID_KEY, rid),))


def _record(method: str, code: str, started: float) -> None:
    elapsed = time.perf_counter() - started
    metrics.RPC_REQUESTS.labels(method, code).inc()
    metrics.RPC_LATENCY.labels(method).observe(elapsed)
    # An access line at DEBUG (mrx serve --log-level debug): method, status and time only,
    # never the request's content; the request id comes from the context.
    log.debug("%s %s %.1f ms", method, code, elapsed * 1000)


def _wrap_unary(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            await _begin(context)
            return await fn(request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            _record(method, _code(context, code), started)

    return handler


def _wrap_stream(fn: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            await _begin(context)
            async for item in fn(request, context):
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            _record(method, _code(context, code), started)

    return handler


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Request ids and RPC metrics; expects the async handlers ErrorInterceptor makes."""

    async def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
