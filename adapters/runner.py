"""The adapter runner behind ``mrx adapter run``: local changes -> signed batches -> receipts.

Order of a batch (why nothing is lost or sent twice under a new id):
1. map rows; unmappable rows go to rejects.jsonl and the log, the rest to the batch;
2. sign each record with a message id derived from the change (adapters.mapping.message_id);
3. write the signed envelopes to the outbox (fsync) *before* sending;
4. submit (SubmitBatch), retrying with backoff while the gateway is unreachable;
5. verify every receipt against the gateway's key; record refusals (not retried);
6. only then persist the cursor and clear the outbox.
The next batch is read, mapped and signed while one is at the gateway (one worker thread
sends), but it reaches the outbox and the wire only after step 6 of the batch before.
A crash between 3 and 6 resends the outbox's very bytes on the next start, and the gateway
answers already-committed envelopes with their original receipts.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import grpc
import tenacity

from adapters import Adapter, Mapped
from adapters.base import AdapterError
from adapters.state import Pending, State, sent_by_reconciliation
from gateway.client import GatewayClient, Outcome, ReceiptError, SubmissionRefused, make_submission
from gateway.crypto.suites import PrivateKey
from gateway.domain.records import Record
from gateway.pb import envelope_pb2, records_pb2
from gateway.reconcile.digests import message_id  # one derivation, shared with `mrx reconcile run`

log = logging.getLogger("mrx.adapter")

# Whole-call failures worth waiting out; anything else the gateway says is an answer.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
STALE_MESSAGE = "STALE_MESSAGE"


class GatewayUnavailable(AdapterError):
    """The gateway stayed unreachable for the whole retry budget; the outbox is kept."""


@dataclass
class Summary:
    read: int = 0
    mapped: int = 0
    unmappable: int = 0
    sent: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    warnings: int = 0

    def lines(self) -> list[str]:
        refused = sum(self.refused.values())
        out = [
            f"read {self.read}, mapped {self.mapped}, unmappable {self.unmappable}, "
            f"sent {self.sent}, accepted {self.accepted}, refused {refused}"
            + (f", accepted with warnings {self.warnings}" if self.warnings else "")
        ]
        out += [f"  refused {reason}: {n}" for reason, n in sorted(self.refused.items())]
        return out

    @property
    def clean(self) -> bool:
        return self.unmappable == 0 and not self.refused


class Runner:
    def __init__(
        self,
        adapter: Adapter,
        client: GatewayClient,
        state: State,
        *,
        signer: PrivateKey | None,
        batch_size: int = 500,
        retry_seconds: float = 300.0,
        retry_wait: float = 1.0,
        out: IO[str] | None = None,
        progress: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        after_send: Callable[[], None] | None = None,
    ):
        self.adapter = adapter
        self.client = client
        self.state = state
        self.signer = signer
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self.retry_wait = retry_wait
        self.out = out or sys.stdout
        self.progress = progress
        self.clock = clock
        # Test seam: runs after the gateway answered and before the cursor moves (a crash there).
        self.after_send = after_send
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrx-adapter-send")
        self._stopping = threading.Event()
        self._inflight: tuple[Future[tuple[Pending, list[Outcome]]], Pending] | None = None

    def close(self) -> None:
        """Stop the sending thread and close the gateway connection."""
        self._stopping.set()  # a send being retried gives up after its current attempt
        self._pool.shutdown(wait=True)
        self.client.close()

    # --- one pass --------------------------------------------------------------------------

    def run_once(self, *, dry_run: bool = False) -> Summary:
        summary = Summary()
        if not dry_run:
            pending = self.state.pending()
            if pending is not None:
                log.warning(
                    "resending %d envelope(s) left in the outbox by an earlier run", len(pending.envelopes)
                )
                self._send(pending, summary)
        cursor = self.state.cursor()
        batch: list[Mapped] = []
        rejects: list[dict[str, Any]] = []
        end_cursor = cursor
        try:
            for mapped in self._rows(cursor):
                summary.read += 1
                if mapped.cursor is not None:
                    end_cursor = mapped.cursor
                if mapped.record is None:
                    summary.unmappable += 1
                    rejects += self._reject(mapped)
                    if dry_run:
                        for problem in mapped.problems:
                            print(f"cannot map {mapped.where}: {problem.field}: {problem.why}", file=self.out)
                    continue
                summary.mapped += 1
                summary.warnings += bool(mapped.warnings)
                batch.append(mapped)
                if len(batch) >= self.batch_size:
                    self._flush(batch, rejects, end_cursor, summary, dry_run)
                    batch, rejects = [], []
            self._flush(batch, rejects, end_cursor, summary, dry_run)
            self._finish_inflight(summary)
        except BaseException:
            # A batch already at the gateway: record its answer if it comes, so that what
            # was accepted is in the reports and the cursor; if not, the outbox keeps it.
            if self._inflight is not None:
                with contextlib.suppress(Exception):
                    self._finish_inflight(summary)
            raise
        return summary

    def _rows(self, cursor: str | None) -> Iterator[Mapped]:
        rows = self.adapter.changes(cursor)
        if not self.progress:
            return rows
        from tqdm import tqdm

        return iter(tqdm(rows, unit=" rows", file=sys.stderr, desc="reading", mininterval=1.0))

    def _reject(self, mapped: Mapped) -> list[dict[str, Any]]:
        for problem in mapped.problems:
            log.warning("cannot map %s: %s: %s", mapped.where, problem.field, problem.why)
        return [{"where": mapped.where, "field": p.field, "why": p.why} for p in mapped.problems]

    def _flush(
        self,
        batch: list[Mapped],
        rejects: list[dict[str, Any]],
        end_cursor: str | None,
        summary: Summary,
        dry_run: bool,
    ) -> None:
        if dry_run:
            for mapped in batch:
                record = mapped.record
                assert record is not None
                print(
                    f"would send {record.key} v{record.version} {record.state.name} "
                    f"(id {message_id(record)}, from {mapped.where})",
                    file=self.out,
                )
                for warning in mapped.warnings:
                    print(f"  warning: {warning}", file=self.out)
            return
        batch = self._not_sent_by_reconciliation(batch)
        records = [m.record for m in batch if m.record is not None]
        # Signed while the previous batch is still at the gateway (the pipelining), but
        # written to the outbox and sent only once that batch's receipts are recorded and
        # its cursor saved: one batch in flight, one outbox, cursors in order.
        pending = Pending([self._sign(r) for r in records], [m.where for m in batch], end_cursor)
        self._finish_inflight(summary)
        # Reported once the rows before them are settled (a crash re-reports one batch at most).
        self.state.append("rejects.jsonl", rejects)
        if records:
            self.state.save_pending(pending)
            self._inflight = (self._pool.submit(self._exchange, pending), pending)
        elif end_cursor != self.state.cursor():
            self.state.save_cursor(end_cursor)

    def _not_sent_by_reconciliation(self, batch: list[Mapped]) -> list[Mapped]:
        """Drop changes `mrx reconcile run` already sent under the same id (adapters/nightly.py):
        sending them again would put new bytes under a used id, refused in the gateway's log."""
        done = sent_by_reconciliation(self.state)
        if not done:
            return batch
        keep = []
        for mapped in batch:
            assert mapped.record is not None
            index = done.get(message_id(mapped.record))
            if index is None:
                keep.append(mapped)
            else:
                log.info("%s was sent by reconciliation (receipt #%d): not sent again", mapped.where, index)
        return keep

    def _finish_inflight(self, summary: Summary) -> None:
        if self._inflight is None:
            return
        future, _ = self._inflight
        self._inflight = None
        self._record(*future.result(), summary)

    def _sign(self, record: Record, *, mid: str | None = None) -> envelope_pb2.Envelope:
        if self.signer is None:
            raise AdapterError("no signing key: set [gateway] key and keyid in the adapter config")
        return make_submission(
            record,
            sender=self.adapter.participant,
            signer=self.signer,
            message_id=mid or message_id(record),
            created_at=self.clock(),
        )

    # --- sending ---------------------------------------------------------------------------

    def _send(self, pending: Pending, summary: Summary) -> None:
        self._record(*self._exchange(pending), summary)

    def _exchange(self, pending: Pending) -> tuple[Pending, list[Outcome]]:
        """Submit a batch, signing again what the gateway found too old; no bookkeeping."""
        outcomes = self._submit(pending.envelopes)
        stale = [o.sequence for o in outcomes if o.refusal is not None and o.refusal.reason == STALE_MESSAGE]
        if stale:
            # Never committed (a committed envelope is recognised before freshness is judged),
            # so signing again under the same message id is safe; the outbox is updated first.
            envelopes = list(pending.envelopes)
            for i in stale:
                submission = records_pb2.Submission.FromString(envelopes[i].payload)
                record = self._record_of(submission)
                envelopes[i] = self._sign(record, mid=submission.header.message_id)
            pending = Pending(envelopes, pending.wheres, pending.end_cursor)
            self.state.save_pending(pending)
            again = self._submit([envelopes[i] for i in stale])
            for i, outcome in zip(stale, again, strict=True):
                outcomes[i] = Outcome(i, outcome.receipt, outcome.refusal)
        return pending, outcomes

    def _record(self, pending: Pending, outcomes: list[Outcome], summary: Summary) -> None:
        """Receipts and refusals to the reports, then (only then) the cursor."""
        if self.after_send is not None:
            self.after_send()
        receipts, rejects = [], []
        for outcome, envelope, where in zip(outcomes, pending.envelopes, pending.wheres, strict=True):
            header = records_pb2.Submission.FromString(envelope.payload).header
            summary.sent += 1
            if outcome.receipt is not None:
                summary.accepted += 1
                receipts.append(
                    {
                        "where": where,
                        "record_key": outcome.receipt.record_key,
                        "message_id": header.message_id,
                        "log_index": outcome.receipt.log_index,
                    }
                )
            else:
                refusal = outcome.refusal
                assert refusal is not None
                summary.refused[refusal.reason or refusal.code.name] += 1
                log.warning("gateway refused %s (%s): %s", where, header.message_id, refusal)
                rejects.append(
                    {
                        "where": where,
                        "message_id": header.message_id,
                        "reason": refusal.reason,
                        "why": refusal.message,
                        "fields": [list(v) for v in refusal.field_violations],
                    }
                )
        self.state.append("receipts.jsonl", receipts)
        self.state.append("rejects.jsonl", rejects)
        self.state.save_cursor(pending.end_cursor)
        self.state.clear_pending()

    def _record_of(self, submission: records_pb2.Submission) -> Record:
        from gateway.convert import record_from_proto

        field_name = submission.WhichOneof("record")
        assert field_name is not None  # we signed it ourselves
        record, _ = record_from_proto(getattr(submission, field_name))
        return record

    def _submit(self, envelopes: list[envelope_pb2.Envelope]) -> list[Outcome]:
        def retryable(err: BaseException) -> bool:
            if isinstance(err, SubmissionRefused):
                return err.refusal.code in RETRYABLE
            return isinstance(err, grpc.RpcError)  # e.g. fetching the gateway's keys

        def note(state: tenacity.RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            log.warning("gateway unreachable (%s); retry %d", _short(err), state.attempt_number)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(self.retry_seconds) | tenacity.stop_when_event_set(self._stopping),
            wait=tenacity.wait_exponential(multiplier=self.retry_wait, max=30),
            retry=tenacity.retry_if_exception(retryable),
            before_sleep=note,
            reraise=True,
        )
        try:
            return retrying(self.client.submit_batch, envelopes)
        except (SubmissionRefused, grpc.RpcError) as err:
            raise GatewayUnavailable(
                f"the gateway at {self.client.target} stayed unreachable for {self.retry_seconds:.0f} s "
                f"({_short(err)}); {len(envelopes)} signed change(s) wait in the outbox and are resent "
                "unchanged on the next run"
            ) from None
        except ReceiptError as err:
            raise AdapterError(
                f"a receipt did not verify ({err}); the cursor was not moved. Check the gateway's key "
                "([gateway] federation) before running again"
            ) from None

    def run_loop(self, *, interval: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Poll until ``stop()``: a failing pass is logged and retried at the next poll."""
        from adapters.base import SourceError

        while not stop():
            try:
                summary = self.run_once()
                for line in summary.lines():
                    log.info("%s", line)
                if summary.read:
                    print("\n".join(summary.lines()), file=self.out, flush=True)
            except (SourceError, GatewayUnavailable) as err:
                log.error("%s", err)
                print(f"mrx adapter: {err}", file=sys.stderr, flush=True)
            deadline = time.monotonic() + interval
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(1.0, interval))


def _short(err: BaseException | None) -> str:
    if isinstance(err, SubmissionRefused):
        return f"{err.refusal.code.name}"
    if isinstance(err, grpc.RpcError):
        code = err.code() if hasattr(err, "code") else None
        return getattr(code, "name", type(err).__name__)
    return type(err).__name__


def runner_for(adapter: Adapter, *, dry_run: bool, progress: bool) -> Runner:
    """The runner for a loaded adapter: its key, its gateway client, its state directory."""
    assert adapter.config is not None
    gw = adapter.config.gateway
    # A dry run signs nothing, so it may run without the key.
    signer = None if dry_run and gw.key is None else gw.load_signer(adapter.config.path)
    client = GatewayClient(gw.address, sender=adapter.participant, signer=signer, **gw.client_options())
    return Runner(
        adapter,
        client,
        State(adapter.config.state_dir),
        signer=signer,
        batch_size=adapter.config.batch_size,
        retry_seconds=gw.retry_seconds,
        progress=progress,
    )
