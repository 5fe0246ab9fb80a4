"""The writer: one process that owns the database, fed batches over a pipe.

Why a process: the append runs thousands of SQLite calls a second, and in a process that
also runs gRPC threads each one waits for the GIL (the convoy measured in
../shared/WRITE-PATH.md). Here the writer has an interpreter of its own; the front end
only pickles staged batches onto a pipe and unpickles outcomes.

Group commit: whatever arrived on the pipes while a commit was in flight (and within
``delay`` of the first message) is applied in the next transaction, up to ``max_items``.
A message is never split across transactions, and messages from one pipe are applied
in the order sent, so a stream's order holds.

Protocol (pickled tuples):
  front -> writer  ("batch", [(chunk_id, [Staged, ...]), ...]) | ("stop",)
  writer -> front  ("ready", pid) | ("fatal", message)
                   ("done", [(chunk_id, [Outcome, ...]), ...], commit number, records)
                   ("failed", [chunk_id, ...], reason) | ("stopped",)

Nothing is acknowledged before its transaction commits. If the writer dies, every chunk
it had not answered is *in doubt*: the front answers UNAVAILABLE, and a retry of the
same bytes gets the original receipt if the commit did land (the replay check).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from gateway.domain.errors import Unavailable
from gateway.ledger.rules import Ledger
from gateway.ledger.values import Outcome, Staged
from gateway.store.errors import is_unavailable
from gateway.store.sql import open_write_store
from gateway.store.writes import WriteStore

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS = 1000
# Measured in bench/: 1 ms lets concurrent unary calls share a commit without adding
# noticeably to their latency (an fsync costs 0.5-2 ms here anyway).
DEFAULT_DELAY = 0.001


@dataclass(frozen=True, kw_only=True)
class WriterOptions:
    max_items: int = DEFAULT_MAX_ITEMS
    delay: float = DEFAULT_DELAY
    log_json: bool = False  # the writer process logs JSON lines (mrx serve --log-format json)


Chunk = tuple[int, list[Staged]]


def serve(conns: Sequence[Connection], store: WriteStore, options: WriterOptions) -> None:
    """The writer loop: read batches from every pipe, commit, answer. Returns on stop or EOF."""
    ledger = Ledger()
    open_conns = list(conns)
    failures = 0
    commits = itertools.count(1)
    while open_conns:
        ready = _wait(open_conns, None)
        work: list[tuple[Connection, list[Chunk]]] = []
        count = 0
        stopping: list[Connection] = []
        deadline = time.monotonic() + options.delay
        while True:
            for conn in ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    open_conns.remove(conn)
                    continue
                if msg[0] == "stop":
                    stopping.append(conn)
                    continue
                chunks = msg[1]
                work.append((conn, chunks))
                count += _size(chunks)
            if count >= options.max_items or stopping:
                break
            active = [c for c in open_conns if c not in stopping]
            if not active:
                break
            ready = _wait(active, max(deadline - time.monotonic(), 0))
            if not ready:
                break
        # Commit in slices of at most max_items, never splitting a message.
        start = 0
        failed = False
        while start < len(work):
            end, size = start, 0
            while end < len(work) and (end == start or size + _size(work[end][1]) <= options.max_items):
                size += _size(work[end][1])
                end += 1
            if failed:
                # A later slice may hold the next chunk of a stream whose earlier chunk
                # just failed: committing it would apply a stream out of order.
                _refuse(work[start:end], "STORE_UNAVAILABLE")
            else:
                failures = _commit(store, ledger, work[start:end], failures, next(commits))
                failed = failures > 0
            start = end
        for conn in stopping:
            _send(conn, ("stopped",))
            open_conns.remove(conn)
    store.close()


def _wait(conns: list[Connection], timeout: float | None) -> list[Connection]:
    return [c for c in wait(conns, timeout) if isinstance(c, Connection)]


def _size(chunks: list[Chunk]) -> int:
    return sum(len(items) for _, items in chunks)


def _commit(
    store: WriteStore, ledger: Ledger, work: list[tuple[Connection, list[Chunk]]], failures: int, number: int
) -> int:
    items = [item for _, chunks in work for _, chunk in chunks for item in chunk]
    try:
        with store.transaction() as tx:
            outcomes = ledger.append(tx, items)
    except Exception as exc:
        ledger.forget()
        store.close()
        if not is_unavailable(exc):
            # Not the database being away: a bug, or one submission the rules cannot take.
            # Apply the chunks one by one so that only the one at fault fails (INTERNAL,
            # logged with its traceback), not everything batched with it.
            if len(work) > 1 or len(work[0][1]) > 1:
                for conn, chunks in work:
                    for one in chunks:
                        _commit(store, ledger, [(conn, [one])], 0, number)
                return failures
            log.error("a chunk of %d submissions could not be applied", len(items), exc_info=exc)
            _refuse(work, "INTERNAL")
            return failures
        # One line per outage, not one traceback per batch: an operator reads these.
        if failures == 0:
            log.error(
                "commit of %d submissions failed: %s: %s", len(items), type(exc).__name__, _first_line(exc)
            )
        failures += 1
        _refuse(work, "STORE_UNAVAILABLE")
        return failures
    if failures:
        log.warning("store available again after %d failed commits", failures)
    pos = 0
    for i, (conn, chunks) in enumerate(work):
        answer = []
        for cid, chunk in chunks:
            answer.append((cid, outcomes[pos : pos + len(chunk)]))
            pos += len(chunk)
        # The transaction's size goes to one front only (0 to the others), so that with
        # several fronts the group-commit histogram counts each transaction once.
        _send(conn, ("done", answer, number, len(items) if i == 0 else 0))
    return 0


def _refuse(work: list[tuple[Connection, list[Chunk]]], reason: str) -> None:
    for conn, chunks in work:
        _send(conn, ("failed", [cid for cid, _ in chunks], reason))


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def _send(conn: Connection, msg: Any) -> None:
    try:
        conn.send(msg)
    except (OSError, ValueError):
        log.warning("a front end went away before its answer was sent")


def writer_main(conns: Sequence[Connection], url: str, options: WriterOptions, log_level: int) -> None:
    """Entry point of the writer process."""
    if options.log_json:
        from gateway.observability.logs import configure

        configure(log_level, "json", process_name="mrx-writer")
    else:
        logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s mrx-writer %(message)s")
    try:
        store = open_write_store(url)
        with store.transaction() as tx:  # fail fast on a database we cannot write
            tx.log_size()
    except Exception as exc:
        for conn in conns:
            _send(
                conn,
                ("fatal", f"the writer cannot open the database: {type(exc).__name__}: {_first_line(exc)}"),
            )
        return
    for conn in conns:
        _send(conn, ("ready", os.getpid()))
    serve(conns, store, options)


class WriterUnavailable(Unavailable):
    """The writer is gone or stopping; submissions are answered UNAVAILABLE."""


class WriterClient:
    """The front end's side of one writer pipe: batches out, outcomes back, futures resolved.

    A sender thread takes every chunk queued since its last send and sends them as one
    message, so chunks queue up while a commit is in flight and share the next one. A
    receiver thread resolves the futures. Neither ever touches the database.
    """

    def __init__(
        self,
        conn: Connection,
        *,
        on_death: Callable[[str], None],
        on_commit: Callable[[int], None] | None = None,
    ):
        """``on_commit(records)``: called once per writer transaction this client is told
        the size of (the metrics' group-commit histogram)."""
        self._conn = conn
        self._on_death = on_death
        self._on_commit = on_commit
        self._lock = threading.Condition()
        self._outbox: list[Chunk] = []
        self._pending: dict[int, Future[list[Outcome]]] = {}
        self._ids = itertools.count()
        self._closed: str | None = None
        self._stopping = False
        self._stopped = threading.Event()
        # Answered commits and the submissions in them (a commit answers several chunks).
        self.commits = 0
        self.committed = 0
        self._last_commit = 0
        # Called on the receiver thread after each answered commit (the change feed wakes).
        self._commit_listeners: list[Callable[[], None]] = []
        self._sender = threading.Thread(target=self._send_loop, name="mrx-writer-send", daemon=True)
        self._receiver = threading.Thread(target=self._recv_loop, name="mrx-writer-recv", daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        if not self._conn.poll(timeout):
            raise RuntimeError("the writer did not start in time")
        msg = self._conn.recv()
        if msg[0] != "ready":
            raise RuntimeError(msg[1])
        self._sender.start()
        self._receiver.start()

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs on the receiver thread after each commit is answered: keep it short."""
        self._commit_listeners.append(listener)

    @property
    def closed_reason(self) -> str | None:
        return self._closed

    def submit(self, items: list[Staged]) -> Future[list[Outcome]]:
        fut: Future[list[Outcome]] = Future()
        with self._lock:
            if self._closed is not None or self._stopping:
                raise WriterUnavailable(
                    "the gateway is not accepting submissions now; retry (on another replica)",
                    reason="SHUTTING_DOWN" if self._stopping else "WRITER_UNAVAILABLE",
                )
            cid = next(self._ids)
            self._pending[cid] = fut
            self._outbox.append((cid, items))
            self._lock.notify()
        return fut

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new chunks, let the writer commit what it has, wait for its answers."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._stopped.wait(timeout)

    def _send_loop(self) -> None:
        try:
            self._send_until_stopped()
        except BaseException as exc:  # never a silent hang: whatever breaks the loop ends the client
            self._die(f"the writer's sender failed ({type(exc).__name__})")

    def _send_until_stopped(self) -> None:
        while True:
            with self._lock:
                while not self._outbox and not self._stopping and self._closed is None:
                    self._lock.wait()
                if self._closed is not None:
                    return
                batch, self._outbox = self._outbox, []
                stopping = self._stopping
            try:
                if batch:
                    self._conn.send(("batch", batch))
                if stopping:
                    self._conn.send(("stop",))
                    return
            except (OSError, ValueError):
                self._die("the writer's pipe is closed")
                return

    def _recv_loop(self) -> None:
        try:
            self._receive_until_stopped()
        except BaseException as exc:
            self._die(f"the writer's receiver failed ({type(exc).__name__})")

    def _receive_until_stopped(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                self._die("the writer process exited")
                return
            if msg[0] == "done":
                if msg[2] != self._last_commit:  # one answer per message; count transactions
                    self.commits += 1
                    self._last_commit = msg[2]
                self.committed += sum(len(outcomes) for _, outcomes in msg[1])
                if self._on_commit is not None and len(msg) > 3 and msg[3]:
                    self._on_commit(msg[3])
                for cid, outcomes in msg[1]:
                    self._resolve(cid, outcomes, None)
                for listener in self._commit_listeners:
                    try:
                        listener()
                    except Exception:  # a listener never takes the receiver (and every receipt) down
                        log.warning("a commit listener failed", exc_info=True)
            elif msg[0] == "failed":
                for cid in msg[1]:
                    error: Exception = (
                        RuntimeError("the writer could not apply this submission (see the writer's log)")
                        if msg[2] == "INTERNAL"
                        else Unavailable("the gateway could not store the submission; retry", reason=msg[2])
                    )
                    self._resolve(cid, None, error)
            elif msg[0] == "stopped":
                with self._lock:
                    self._closed = "stopped"
                    self._lock.notify_all()
                self._stopped.set()
                return

    def _resolve(self, cid: int, outcomes: list[Outcome] | None, error: Exception | None) -> None:
        with self._lock:
            fut = self._pending.pop(cid, None)
        # The caller may have cancelled (a client deadline): its chunk is still committed,
        # and the answer goes nowhere. Without this check set_result would raise here and
        # take the receiver thread, and every later submission, with it.
        if fut is None or not fut.set_running_or_notify_cancel():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(outcomes or [])

    def _die(self, why: str) -> None:
        with self._lock:
            if self._closed is not None:
                return
            self._closed = why
            pending, self._pending = self._pending, {}
            self._outbox = []
            self._lock.notify_all()
        for fut in pending.values():
            if not fut.set_running_or_notify_cancel():
                continue
            # In doubt: the commit may or may not have landed. A retry of the same
            # bytes gets the original receipt if it did.
            fut.set_exception(
                Unavailable(
                    "the gateway's writer stopped before answering; the submission is in doubt. "
                    "Retry the same envelope: if it was committed you get the original receipt",
                    reason="WRITER_UNAVAILABLE",
                )
            )
        self._stopped.set()
        self._on_death(why)


class Writer:
    """Starts and supervises the writer (a process, or a thread for embedded use)."""

    def __init__(
        self,
        url: str,
        *,
        options: WriterOptions | None = None,
        mode: str = "process",
        on_death: Callable[[str], None] = lambda why: None,
        extra_pipes: int = 0,
        conn: Connection | None = None,
        on_commit: Callable[[int], None] | None = None,
    ):
        """``mode``: "process", "thread", or "attached" to a writer another process started
        (``conn``: one of its pipe ends, from ``Writer.extra``)."""
        if mode not in ("process", "thread", "attached") or (mode == "attached") != (conn is not None):
            raise ValueError(f"writer mode must be process, thread or attached (with conn), not {mode!r}")
        self._conn = conn
        self.mode = mode
        self._url = url
        self._options = options or WriterOptions()
        self._on_death = on_death
        self._on_commit = on_commit
        self.process: multiprocessing.process.BaseProcess | None = None
        self._thread: threading.Thread | None = None
        self.client: WriterClient | None = None
        self._extra_pipes = extra_pipes
        # Pipe ends for other front processes (``mrx serve --fronts N``), each to be
        # wrapped in its own WriterClient there.
        self.extra: list[Connection] = []

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> WriterClient:
        if self._conn is not None:
            self.client = WriterClient(self._conn, on_death=self._died, on_commit=self._on_commit)
            self.client.start()
            return self.client
        pairs = [multiprocessing.Pipe(duplex=True) for _ in range(1 + self._extra_pipes)]
        ours = pairs[0][0]
        args = ([t for _, t in pairs], self._url, self._options, logging.getLogger().getEffectiveLevel())
        if self.mode == "process":
            ctx = _context()
            self.process = ctx.Process(target=writer_main, args=args, name="mrx-writer", daemon=True)
            self.process.start()
            for _, t in pairs:
                t.close()  # so each receiver sees EOF when the writer dies
        else:
            self._thread = threading.Thread(target=writer_main, args=args, name="mrx-writer", daemon=True)
            self._thread.start()
        self.extra = [o for o, _ in pairs[1:]]
        self.client = WriterClient(ours, on_death=self._died, on_commit=self._on_commit)
        try:
            self.client.start()
        except BaseException:
            self.kill()
            raise
        return self.client

    def _died(self, why: str) -> None:
        if self.process is not None:
            self.process.join(1.0)
            if self.process.exitcode is not None:
                why = f"{why} (exit code {self.process.exitcode})"
        self._on_death(why)

    def stop(self, timeout: float = 30.0) -> None:
        if self.client is not None and self.client.closed_reason is None:
            self.client.stop(timeout)
        if self.process is not None:
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.kill()
        if self._thread is not None:
            self._thread.join(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def front_context() -> Any:
    """The multiprocessing context further front processes start from (see _context)."""
    return _context()


_CTX: Any = None


def _context() -> Any:
    """forkserver: forking from a clean server process is fast and never copies gRPC threads."""
    global _CTX
    if _CTX is None:
        ctx = multiprocessing.get_context("forkserver")
        # Everything the writer imports, so a new writer starts in milliseconds.
        ctx.set_forkserver_preload(
            ["gateway.ledger.writer", "gateway.store.sql.sqlite", "gateway.store.sql.postgres", "logging"]
        )
        _CTX = ctx
    return _CTX
