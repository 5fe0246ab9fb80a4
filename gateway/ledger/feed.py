"""The change feed behind Subscribe: one shared tailer per gateway process, fanned out.

A subscription first reads the log itself (backfill: keyset pages by log index, at its
own pace), then joins the live set. One tailer task per process reads what was committed
since it last looked, when the local writer reports a commit or every ``poll_interval``
(commits made by other replicas on the same database), and hands each batch to every
live subscription's bounded queue. A subscription whose queue would overflow (a slow
reader) is dropped from the live set and goes back to reading the log from its own
position: the gateway never buffers more than ``queue_rows`` rows for it, and nothing
is lost. Delivery is by log index, so the switch between backfill and live neither
loses nor repeats a change: a live row below the subscription's position is skipped.

The tailer runs only while some subscription is live and stops with the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from gateway.domain.errors import ResourceExhausted, Unavailable
from gateway.observability import metrics
from gateway.pb import envelope_pb2, records_pb2
from gateway.store.feed_reads import FeedPage, FeedReads, FeedRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FeedLimits:
    max_subscriptions: int = 200
    per_principal: int = 8
    # Rows a live subscription may have waiting before it falls back to reading the log.
    queue_rows: int = 1024
    # Rows per backfill or tail read.
    page_rows: int = 256
    # Recent rows the tailer keeps, so a subscription finishing its backfill while the
    # tailer moves on joins from memory instead of reading again.
    ring_rows: int = 2048
    # Commits by other replicas are seen within this many seconds.
    poll_interval: float = 0.5
    # A heartbeat after this many seconds with nothing sent.
    heartbeat: float = 15.0
    # How often an open subscription checks that its signing key is still valid (a key
    # that expires or is revoked while the stream is open ends it).
    key_check: float = 60.0
    # Threads reading the log for the feed (backfills and the tailer).
    read_threads: int = 2


@dataclass(frozen=True, slots=True)
class FeedChange:
    row: FeedRow


@dataclass(frozen=True, slots=True)
class FeedCaughtUp:
    next_index: int


@dataclass(frozen=True, slots=True)
class FeedHeartbeat:
    next_index: int


FeedEvent = FeedChange | FeedCaughtUp | FeedHeartbeat

_CERTIFICATE = records_pb2.RECORD_KIND_CERTIFICATE_STATUS
_SPOT_CHECK = records_pb2.RECORD_KIND_SPOT_CHECK


@dataclass(frozen=True, kw_only=True)
class ChangeFilter:
    """What one subscription wants, and what its principal may see."""

    kinds: frozenset[int] = frozenset()
    issuers: frozenset[str] = frozenset()
    # Certificate scheme names ("CCC", ...), as in certificate record keys.
    schemes: frozenset[str] = frozenset()
    certificate_numbers: frozenset[str] = frozenset()
    holder_credit_codes: frozenset[str] = frozenset()
    # May the principal see records of this kind (key prefix, number) from this issuer?
    visible: Callable[[int, str], bool] = lambda kind, issuer: True
    # Issuers to ask the database for (None: any); narrows the backfill's reads.
    candidate_issuers: frozenset[str] | None = None

    @property
    def certificates_only(self) -> bool:
        return bool(self.schemes or self.certificate_numbers)

    def sql_kinds(self) -> Collection[int]:
        if self.certificates_only:
            return {_CERTIFICATE} if not self.kinds or _CERTIFICATE in self.kinds else {-1}
        return self.kinds

    def sql_issuers(self) -> Collection[str] | None:
        if self.issuers and self.candidate_issuers is not None:
            return self.issuers & self.candidate_issuers
        return self.issuers or self.candidate_issuers

    def matches(self, row: FeedRow) -> bool:
        if self.kinds and row.kind not in self.kinds:
            return False
        if self.issuers and row.issuer not in self.issuers:
            return False
        if self.certificates_only:
            if row.kind != _CERTIFICATE:
                return False
            # certificate_status/<SCHEME>/<number>
            _, scheme, number = row.record_key.split("/", 2)
            if self.schemes and scheme not in self.schemes:
                return False
            if self.certificate_numbers and number not in self.certificate_numbers:
                return False
        if self.holder_credit_codes and _holder(row) not in self.holder_credit_codes:
            return False
        return self.visible(row.kind, row.issuer)


def _holder(row: FeedRow) -> str | None:
    if row.kind not in (_CERTIFICATE, _SPOT_CHECK):
        return None
    submission = records_pb2.Submission.FromString(envelope_pb2.Envelope.FromString(row.envelope).payload)
    if row.kind == _CERTIFICATE:
        return submission.certificate_status.holder.credit_code
    return submission.spot_check.target_credit_code


@dataclass(slots=True)
class _Batch:
    start: int
    rows: list[FeedRow]
    end: int


@dataclass(eq=False)
class Subscription:
    """One open Subscribe call; ``events`` yields what it should send."""

    feed: ChangeFeed
    principal: str
    _pending: deque[_Batch] = field(default_factory=deque)
    _pending_rows: int = 0
    _overflowed: bool = False
    _closed: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.feed._release(self)

    def _offer(self, batch: _Batch) -> bool:
        """From the tailer: False (and the subscription leaves the live set) on overflow."""
        if self._pending_rows + len(batch.rows) + 1 > self.feed.limits.queue_rows:
            self._overflowed = True
            self._pending.clear()
            self._pending_rows = 0
            self._wake.set()
            return False
        self._pending.append(batch)
        self._pending_rows += len(batch.rows) + 1
        self._wake.set()
        return True

    async def events(self, start: int, flt: ChangeFilter) -> AsyncIterator[FeedEvent]:
        feed = self.feed
        cursor = start
        caught_up = False
        last_sent = time.monotonic()
        while True:
            # Backfill from the log, at this subscriber's pace.
            while True:
                feed._check_open()
                page: FeedPage = await feed._read(cursor, flt)
                for row in page.rows:
                    if flt.matches(row):
                        metrics.SUBSCRIBER_LAG.observe(page.end - row.log_index - 1)
                        yield FeedChange(row)
                        last_sent = time.monotonic()
                    cursor = row.log_index + 1
                cursor = max(cursor, page.end)
                if len(page.rows) < feed.page:
                    break  # the end of the log as of this read
                if time.monotonic() - last_sent >= feed.limits.heartbeat:
                    yield FeedHeartbeat(cursor)
                    last_sent = time.monotonic()
            if not feed._join(self, cursor):
                continue  # the tailer moved past what it keeps: read on
            if not caught_up:
                caught_up = True
                yield FeedCaughtUp(cursor)
                last_sent = time.monotonic()
            # Live.
            while True:
                feed._check_open()
                if not self._pending:
                    if self._overflowed or self not in feed._live:
                        break  # too slow for the live queue, or the tailer stopped: read the log
                    self._wake.clear()
                    wait = feed.limits.heartbeat - (time.monotonic() - last_sent)
                    try:
                        await asyncio.wait_for(self._wake.wait(), max(wait, 0.0))
                    except TimeoutError:
                        yield FeedHeartbeat(cursor)
                        last_sent = time.monotonic()
                    continue
                batch = self._pending.popleft()
                self._pending_rows -= len(batch.rows) + 1
                for row in batch.rows:
                    if row.log_index >= cursor and flt.matches(row):
                        metrics.SUBSCRIBER_LAG.observe(self._pending_rows)
                        yield FeedChange(row)
                        last_sent = time.monotonic()
                    cursor = max(cursor, row.log_index + 1)
                cursor = max(cursor, batch.end)


class ChangeFeed:
    """The per-process tailer and the registry of open subscriptions (all on one event loop)."""

    def __init__(
        self, reads: FeedReads, *, executor: Executor | None = None, limits: FeedLimits | None = None
    ):
        self.reads = reads
        self.limits = limits or FeedLimits()
        self.page = self.limits.page_rows
        # Its own threads by default: many subscriptions backfilling at once must not take
        # the pool that serves the unary reads.
        self._own_executor = (
            ThreadPoolExecutor(max_workers=self.limits.read_threads, thread_name_prefix="mrx-feed")
            if executor is None
            else None
        )
        self._executor: Executor = executor or self._own_executor  # type: ignore[assignment]
        self._open: list[Subscription] = []
        self._live: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._next = 0
        self._ring: deque[_Batch] = deque()
        self._ring_rows = 0
        self._shutting_down = False
        # For tests and metrics: subscriptions sent back to the log for being slow, and the
        # most rows any live queue has held.
        self.overflows = 0
        self.max_pending_rows = 0

    # --- what the server and tests use -------------------------------------------------

    @property
    def subscriptions(self) -> int:
        return len(self._open)

    @property
    def tailing(self) -> bool:
        return self._task is not None and not self._task.done()

    def committed(self) -> None:
        """The local writer committed (called from its receiver thread): look now."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    async def log_size(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.reads.log_size)

    def open(self, principal: str) -> Subscription:
        """A new subscription; ResourceExhausted when the caps are reached."""
        self._check_open()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
        limits = self.limits
        mine = sum(1 for s in self._open if s.principal == principal)
        if len(self._open) >= limits.max_subscriptions or mine >= limits.per_principal:
            whose = "the gateway's" if len(self._open) >= limits.max_subscriptions else f"{principal}'s"
            cap = limits.max_subscriptions if whose == "the gateway's" else limits.per_principal
            raise ResourceExhausted(
                f"{whose} limit of {cap} open subscriptions is reached; close one or retry later",
                reason="TOO_MANY_SUBSCRIPTIONS",
                metadata={"principal": principal, "limit": str(cap)},
                retry_after=timedelta(seconds=5),
            )
        sub = Subscription(self, principal)
        self._open.append(sub)
        metrics.SUBSCRIBERS.inc()
        return sub

    async def shutdown(self) -> None:
        """End every subscription with UNAVAILABLE (SHUTTING_DOWN), so a server stop does
        not wait its whole grace period for streams that never end."""
        self._shutting_down = True
        for sub in list(self._open):
            sub._wake.set()
        if self._task is not None:
            self._task.cancel()
        if self._own_executor is not None:
            # Reads under way finish; none starts after this (every read checks first, on the loop).
            self._own_executor.shutdown(wait=False)

    # --- subscriptions' side -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._shutting_down:
            raise Unavailable(
                "the gateway is shutting down: resume on another replica from the last index received + 1",
                reason="SHUTTING_DOWN",
            )

    async def _read(self, start: int, flt: ChangeFilter) -> FeedPage:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor,
            lambda: self.reads.page(start, self.page, kinds=flt.sql_kinds(), issuers=flt.sql_issuers()),
        )

    def _release(self, sub: Subscription) -> None:
        if sub in self._open:
            self._open.remove(sub)
            metrics.SUBSCRIBERS.dec()
        self._live.discard(sub)

    def _join(self, sub: Subscription, cursor: int) -> bool:
        """Make ``sub`` live from ``cursor``; False if the tailer is past it and no longer
        holds the rows in between (the subscription reads the log again)."""
        if self._shutting_down:
            return True  # the live loop raises
        sub._overflowed = False
        if not self.tailing:
            self._next = cursor
            self._ring.clear()
            self._ring_rows = 0
            self._live.add(sub)
            self._task = asyncio.get_running_loop().create_task(self._tail())
            return True
        if cursor < self._next:
            first = self._ring[0].start if self._ring else self._next
            if cursor < first:
                return False
            for batch in self._ring:
                if batch.end > cursor and not sub._offer(batch):
                    sub._overflowed = False
                    return False
        self._live.add(sub)
        return True

    # --- the tailer ------------------------------------------------------------------------

    async def _tail(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        try:
            while self._live and not self._shutting_down:
                self._wake.clear()
                try:
                    page = await loop.run_in_executor(self._executor, self.reads.page, self._next, self.page)
                except Exception as exc:  # the database is away: subscriptions wait (heartbeats go on)
                    log.warning("change feed: reading the log failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(self.limits.poll_interval)
                    continue
                if page.end > self._next:
                    self._publish(_Batch(self._next, page.rows, page.end))
                    self._next = page.end
                    if len(page.rows) == self.page:
                        continue  # more is waiting
                if not self._live:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.limits.poll_interval)
        finally:
            self._live.clear()
            self._ring.clear()
            self._ring_rows = 0
            for sub in list(self._open):
                sub._wake.set()  # anyone still live re-joins (and restarts the tailer)

    def _publish(self, batch: _Batch) -> None:
        self._ring.append(batch)
        self._ring_rows += len(batch.rows) + 1
        while self._ring_rows > self.limits.ring_rows and len(self._ring) > 1:
            old = self._ring.popleft()
            self._ring_rows -= len(old.rows) + 1
        for sub in list(self._live):
            if not sub._offer(batch):
                self._live.discard(sub)
                self.overflows += 1
            self.max_pending_rows = max(self.max_pending_rows, sub._pending_rows)
