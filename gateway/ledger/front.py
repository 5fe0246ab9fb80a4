"""Submission as the front ends serve it: one envelope, a batch, or a stream.

Runs on the gRPC server's asyncio loop. No thread per call: a unary ``Submit`` verifies
inline (Ed25519 ~70 us) and awaits its chunk's future, so 64 calls in flight are 64
coroutines whose chunks queue on the writer pipe while a commit is in flight and share
the next one. Batches and streams are verified in a small thread pool (the signature
check releases the GIL) and handed to the writer one chunk at a time, never one
hand-off per record.

Outcomes are ``Accepted`` or an ``MrxError``; the servicers turn them into protobuf.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway.crypto.dsse import RECEIPT_PAYLOAD_TYPE, sign_envelope
from gateway.crypto.suites import PrivateKey
from gateway.domain.errors import FieldViolation, InvalidArgument, MrxError, ResourceExhausted
from gateway.ledger.values import Accepted, Refusal, Staged
from gateway.ledger.verify import Verifier
from gateway.ledger.writer import WriterClient
from gateway.observability import metrics
from gateway.pb import envelope_pb2

# SubmitBatch: at most this many envelopes and bytes per call (documented in
# exchange.proto and docs/signing.md). 1,000 envelopes is one writer transaction.
MAX_BATCH_ENVELOPES = 1000
MAX_BATCH_BYTES = 16 * 1024 * 1024
# Streams: envelopes handed to the writer together, and chunks in flight per stream.
# Beyond the window the gateway stops reading and HTTP/2 flow control pushes back.
STREAM_CHUNK = 256
# A batch is verified and its receipts signed in up to this many pool threads, at least
# this many envelopes each.
PARALLEL_PARTS = 4
PARALLEL_MIN = 128
STREAM_CHUNKS_IN_FLIGHT = 4
# Bytes of envelopes one stream may have read but not yet handed on.
STREAM_BUFFER_BYTES = 8 * 1024 * 1024

Result = Accepted | MrxError


@dataclass(frozen=True, kw_only=True)
class StreamLimits:
    """Caps on SubmitStream calls, so that no caller can hold the gateway open.

    A stream is anonymous until its first envelope verifies; anonymous streams have a
    smaller pool than the total so that an anonymous flood cannot take every slot from
    the participants. A stream that sends nothing is ended (STREAM_IDLE).
    """

    max_streams: int = 64
    max_anonymous: int = 32
    max_per_sender: int = 8
    first_message_timeout: float = 10.0
    idle_timeout: float = 120.0


class _StreamGate:
    """Counts open streams; used only on the event loop's thread, so it needs no lock."""

    def __init__(self, limits: StreamLimits):
        self.limits = limits
        self.total = 0
        self.anonymous = 0
        self.by_sender: Counter[str] = Counter()

    def open(self) -> None:
        if self.total >= self.limits.max_streams or self.anonymous >= self.limits.max_anonymous:
            raise ResourceExhausted(
                f"the gateway has {self.total} streams open; retry shortly, or use SubmitBatch",
                reason="TOO_MANY_STREAMS",
                retry_after=timedelta(seconds=1),
            )
        self.total += 1
        self.anonymous += 1

    def attribute(self, sender: str) -> None:
        if self.by_sender[sender] >= self.limits.max_per_sender:
            raise ResourceExhausted(
                f"{sender} already has {self.by_sender[sender]} streams open (the limit is "
                f"{self.limits.max_per_sender}); send on those, or use SubmitBatch",
                reason="TOO_MANY_STREAMS",
                metadata={"sender": sender, "limit": str(self.limits.max_per_sender)},
                retry_after=timedelta(seconds=1),
            )
        self.anonymous -= 1
        self.by_sender[sender] += 1

    def close(self, sender: str | None) -> None:
        self.total -= 1
        if sender is None:
            self.anonymous -= 1
        else:
            self.by_sender[sender] -= 1
            if not self.by_sender[sender]:
                del self.by_sender[sender]


class Submitter:
    def __init__(
        self,
        *,
        verifier: Verifier,
        writer: Callable[[], WriterClient],
        gateway_key: PrivateKey,
        executor: Executor,
        stream_limits: StreamLimits | None = None,
    ):
        self._verifier = verifier
        self._writer = writer
        self._key = gateway_key
        self._executor = executor
        self._gate = _StreamGate(stream_limits or StreamLimits())

    def receipt(self, accepted: Accepted) -> envelope_pb2.Envelope:
        """The gateway-signed receipt (Ed25519 is deterministic: a resend gets the same bytes)."""
        return sign_envelope(
            payload_type=RECEIPT_PAYLOAD_TYPE, payload=accepted.receipt_payload, signer=self._key
        )

    async def submit(self, envelope: envelope_pb2.Envelope, *, peer: str | None = None) -> Accepted:
        """Verify and commit one envelope; raise its refusal. ``peer``: see Verifier.verify."""
        try:
            staged = self._verifier.verify(envelope, peer=peer)
            future = self._writer().submit([staged])
        except MrxError as err:
            metrics.note_submission(err.reason)
            raise
        try:
            outcomes = await asyncio.wrap_future(future)
        except MrxError as err:
            metrics.note_submission(err.reason, after_commit_attempt=True)
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.note_submission("INTERNAL")
            raise
        outcome = outcomes[0]
        metrics.note_submission(outcome.reason if isinstance(outcome, Refusal) else None)
        return _result(outcome, raise_refusal=True)  # type: ignore[return-value]

    async def submit_batch(
        self, envelopes: Sequence[envelope_pb2.Envelope], *, peer: str | None = None
    ) -> list[Result]:
        """Verify and commit many envelopes in one transaction; one result each, in order."""
        if len(envelopes) > MAX_BATCH_ENVELOPES:
            raise ResourceExhausted(
                f"a batch carries at most {MAX_BATCH_ENVELOPES} envelopes, this one {len(envelopes)}",
                reason="BATCH_TOO_LARGE",
                metadata={"limit": str(MAX_BATCH_ENVELOPES), "count": str(len(envelopes))},
            )
        if not envelopes:
            raise InvalidArgument(
                "a batch needs at least one envelope",
                reason="EMPTY_BATCH",
                violations=[FieldViolation("envelopes", "at least one envelope required")],
            )
        verified = await self._in_parallel(lambda part: self._verify_all(part, peer), list(envelopes))
        return await self._commit(verified)

    async def receipts(self, results: Sequence[Result]) -> list[envelope_pb2.Envelope | MrxError]:
        """Sign the receipts of a batch's results in the pool (a refusal stays a refusal)."""

        def sign(part: list[Result]) -> list[envelope_pb2.Envelope | MrxError]:
            return [r if isinstance(r, MrxError) else self.receipt(r) for r in part]

        return await self._in_parallel(sign, list(results))

    async def _in_parallel(self, fn: Callable[[list[Any]], list[Any]], items: list[Any]) -> list[Any]:
        """``fn`` over ``items`` in up to 4 pool threads: signature work releases the GIL, so
        one large batch uses more than one core."""
        loop = asyncio.get_running_loop()
        parts = max(1, min(PARALLEL_PARTS, len(items) // PARALLEL_MIN))
        size = -(-len(items) // parts)
        done = await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, fn, items[i : i + size])
                for i in range(0, len(items), size)
            )
        )
        return [x for part in done for x in part]

    @property
    def open_streams(self) -> int:
        return self._gate.total

    async def stream(
        self, envelopes: AsyncIterator[envelope_pb2.Envelope], *, peer: str | None = None
    ) -> AsyncIterator[Result]:
        """One result per envelope, in order; a bad item never ends the stream.

        A reader task drains the call into a bounded queue; each chunk is whatever the
        queue holds (up to STREAM_CHUNK), verified in the pool and committed as one
        writer chunk; results are yielded in order as commits land. When the call ends
        (the client cancels), the generator is closed and its tasks cancelled: nothing is
        left waiting. A stream takes a slot (StreamLimits): anonymous until its first
        envelope verifies, then its sender's; one that sends nothing is ended.
        """
        self._gate.open()
        sender: str | None = None
        # Items are envelopes (or an oversized one's refusal), each with its size; the
        # queue is bounded in count and ``buffered`` in bytes, so a client that sends
        # fast and never reads its answers holds at most STREAM_BUFFER_BYTES here.
        incoming: asyncio.Queue[tuple[envelope_pb2.Envelope | MrxError, int] | None] = asyncio.Queue(
            STREAM_CHUNK * 2
        )
        in_flight: asyncio.Queue[asyncio.Future[list[Result]] | None] = asyncio.Queue(STREAM_CHUNKS_IN_FLIGHT)
        loop = asyncio.get_running_loop()
        room = asyncio.Event()
        room.set()
        buffered = 0
        received = False
        # When the reader began waiting for the client's next message (None while the
        # gateway itself is busy): only that time counts as the client being idle.
        waiting_since: float | None = loop.time()
        ended: list[BaseException] = []  # why the stream ended early, if it did
        limit = self._verifier.limits.max_envelope_bytes

        async def read() -> None:
            nonlocal buffered, received, waiting_since
            it = envelopes.__aiter__()
            try:
                while True:
                    waiting_since = loop.time()
                    try:
                        envelope = await it.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        waiting_since = None
                    received = True
                    size = envelope.ByteSize()
                    item: envelope_pb2.Envelope | MrxError = envelope
                    if size > limit:  # refused as this item, and never held
                        item, size = self._refusal_of(envelope), 0
                    buffered += size
                    while buffered > STREAM_BUFFER_BYTES:
                        room.clear()
                        await room.wait()
                    await incoming.put((item, size))
            except asyncio.CancelledError:
                with contextlib.suppress(asyncio.QueueFull):
                    incoming.put_nowait(None)
                raise
            except MrxError as err:  # e.g. an undecodable message: answer what came before it
                ended.append(err)
            await incoming.put(None)

        def take(entry: tuple[envelope_pb2.Envelope | MrxError, int]) -> envelope_pb2.Envelope | MrxError:
            nonlocal buffered
            buffered -= entry[1]
            room.set()
            return entry[0]

        async def chunk() -> None:
            nonlocal sender
            done = False
            try:
                while not done:
                    first = await incoming.get()
                    if first is None:
                        break
                    batch = [take(first)]
                    while len(batch) < STREAM_CHUNK and not incoming.empty():
                        entry = incoming.get_nowait()
                        if entry is None:
                            done = True
                            break
                        batch.append(take(entry))
                    verified = await loop.run_in_executor(self._executor, self._verify_all, batch, peer)
                    if sender is None:
                        first_ok = next((v for v in verified if isinstance(v, Staged)), None)
                        if first_ok is not None:
                            self._gate.attribute(first_ok.sender)
                            sender = first_ok.sender
                    # Started now, so the next chunk is verified while this one commits.
                    await in_flight.put(asyncio.ensure_future(self._commit(verified)))
            except asyncio.CancelledError:
                raise
            except Exception as err:  # MrxError (e.g. TOO_MANY_STREAMS), or a bug: end, never hang
                ended.append(err)
            await in_flight.put(None)

        async def watch() -> None:
            limits = self._gate.limits
            while True:
                await asyncio.sleep(min(limits.first_message_timeout, limits.idle_timeout) / 4)
                since = waiting_since
                if since is None:
                    continue
                quiet = loop.time() - since
                if quiet > (limits.idle_timeout if received else limits.first_message_timeout):
                    ended.append(
                        ResourceExhausted(
                            f"the stream sent nothing for {quiet:.0f} s; open a stream when there is "
                            "something to send",
                            reason="STREAM_IDLE",
                        )
                    )
                    reader.cancel()  # its cancellation path ends the queue
                    return

        reader = asyncio.ensure_future(read())
        chunker = asyncio.ensure_future(chunk())
        watcher = asyncio.ensure_future(watch())
        try:
            while (fut := await in_flight.get()) is not None:
                for result in await fut:
                    yield result
            if ended:
                raise ended[0]
        finally:
            for task in (reader, chunker, watcher):
                task.cancel()
            self._gate.close(sender)

    def _refusal_of(self, envelope: envelope_pb2.Envelope) -> MrxError:
        """The verifier's refusal of an envelope already known to be refused (oversized)."""
        try:
            self._verifier.verify(envelope)
        except MrxError as err:
            return err
        raise AssertionError("an oversized envelope passed verification")  # pragma: no cover

    def _verify_all(
        self, envelopes: Sequence[envelope_pb2.Envelope | MrxError], peer: str | None = None
    ) -> list[Staged | MrxError]:
        out: list[Staged | MrxError] = []
        for envelope in envelopes:
            if isinstance(envelope, MrxError):  # refused before it was queued
                out.append(envelope)
                continue
            try:
                out.append(self._verifier.verify(envelope, peer=peer))
            except MrxError as err:
                out.append(err)
        return out

    async def _commit(self, verified: list[Staged | MrxError]) -> list[Result]:
        staged = [v for v in verified if isinstance(v, Staged)]
        results: list[Result] = []
        for v in verified:
            if isinstance(v, MrxError):
                metrics.note_submission(v.reason)
        if staged:
            sent = False
            try:
                future = self._writer().submit(staged)
                sent = True
                outcomes = await asyncio.wrap_future(future)
            except MrxError as err:  # writer unavailable or the store failed: each item says so
                for _ in staged:
                    metrics.note_submission(err.reason, after_commit_attempt=sent)
                return [v if isinstance(v, MrxError) else err for v in verified]
        else:
            outcomes = []
        for outcome in outcomes:
            metrics.note_submission(outcome.reason if isinstance(outcome, Refusal) else None)
        it = iter(outcomes)
        for v in verified:
            results.append(v if isinstance(v, MrxError) else _result(next(it), raise_refusal=False))
        return results


def _result(outcome: Accepted | Refusal, *, raise_refusal: bool) -> Result:
    if isinstance(outcome, Refusal):
        err = outcome.error()
        if raise_refusal:
            raise err
        return err
    return outcome
