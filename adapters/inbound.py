"""The inbound direction: other provinces' changes applied to the local system through a sink.

``apply_changes`` takes any iterator of Change-like objects (the SDK's
``GatewayClient.subscribe`` yields them: log index, the issuer's signed envelope, the
decoded record) and a sink. Each change's envelope is verified against the issuer's own
federation keys here, whatever the feed already checked: the sink writes into a system
the gateway does not control. Changes are applied in batches, each in one local
transaction, and the inbound cursor (the next log index wanted) is persisted once per
batch, only after the batch is applied: a crash re-applies at most one batch, which the
sink skips as not newer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import tenacity

from adapters.base import AdapterError, Sink
from adapters.state import State
from gateway.client import ChangeVerificationError, GatewayClient, Refusal
from gateway.convert import claimed_issuer, record_from_proto
from gateway.crypto.dsse import SUBMISSION_PAYLOAD_TYPE, SignatureError, verify_envelope
from gateway.crypto.suites import PublicKey
from gateway.domain.errors import MrxError
from gateway.domain.records import Record
from gateway.pb import envelope_pb2, records_pb2
from gateway.registry.federation import Federation

log = logging.getLogger("mrx.adapter.inbound")
CURSOR_NAME = "inbound_cursor"


class ChangeLike(Protocol):
    @property
    def log_index(self) -> int: ...

    @property
    def envelope(self) -> envelope_pb2.Envelope: ...

    @property
    def record(self) -> Record: ...


class InboundRefused(AdapterError):
    """A change failed verification: it is not applied and the cursor stays before it."""


@dataclass
class InboundSummary:
    received: int = 0
    applied: int = 0
    unchanged: int = 0
    own: int = 0
    reconnects: int = 0
    skipped_kinds: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        skipped = sum(self.skipped_kinds.values())
        return (
            f"inbound: received {self.received}, applied {self.applied}, unchanged {self.unchanged}, "
            f"own {self.own}, other kinds {skipped}"
            + (f", reconnected {self.reconnects}" if self.reconnects else "")
        )


def start_index(state: State) -> int:
    """The first log index to ask the change feed for."""
    cursor = state.cursor(CURSOR_NAME)
    return int(cursor) if cursor is not None else 0


def verify_change(change: ChangeLike, keys_of: Mapping[str, Mapping[str, PublicKey]]) -> Record:
    """The record the issuer signed, after checking its signature with the issuer's keys."""
    envelope = change.envelope
    try:
        submission = records_pb2.Submission.FromString(envelope.payload)
    except Exception:  # protobuf raises DecodeError, whose base differs across versions
        raise InboundRefused(
            f"log index {change.log_index}: the envelope payload is not a submission"
        ) from None
    field_name = submission.WhichOneof("record")
    if field_name is None:
        raise InboundRefused(f"log index {change.log_index}: the submission carries no record")
    msg = getattr(submission, field_name)
    issuer = claimed_issuer(msg)
    if submission.header.sender != issuer:
        raise InboundRefused(
            f"log index {change.log_index}: sent by {submission.header.sender}, not its issuer"
        )
    try:
        verify_envelope(
            envelope, payload_type=SUBMISSION_PAYLOAD_TYPE, keys=keys_of.get(issuer, {}), what="submission"
        )
    except SignatureError as err:
        raise InboundRefused(f"log index {change.log_index}: issuer {issuer}'s signature: {err}") from None
    try:
        record, _ = record_from_proto(msg)
    except MrxError as err:
        raise InboundRefused(f"log index {change.log_index}: the signed record is invalid: {err}") from None
    if record.key != change.record.key or record.version != change.record.version:
        raise InboundRefused(
            f"log index {change.log_index}: the feed's record ({change.record.key} v{change.record.version}) "
            f"is not the one the issuer signed ({record.key} v{record.version})"
        )
    return record


BATCH_SIZE = 500
BATCH_SECONDS = 0.2


class BatchApplier:
    """Applies changes in batches: one sink transaction and one cursor save per batch.

    A batch is flushed when it holds ``batch_size`` changes, when ``batch_seconds`` have
    passed since its first change (checked as each change arrives), at the end of the feed,
    and by ``follow`` when the feed reports it has caught up. Once ``live`` (after the
    caught-up mark) every change is flushed as it arrives: nothing says whether another
    follows soon, and a change must not wait in memory for one.

    Within a flush, every change is verified before anything is written. A change that
    does not verify ends the batch there: the changes before it are applied and the cursor
    saved before it, then InboundRefused is raised -- the same outcome as applying one
    change at a time, whatever the batch boundaries. A sink failure rolls the whole batch
    back and leaves the cursor at the batch's first change. A crash after the sink commits
    and before the cursor is saved re-applies the batch on restart, which the sink skips
    (same version): nothing is lost, nothing goes backwards.
    """

    def __init__(
        self,
        sink: Sink,
        state: State,
        *,
        keys_of: Mapping[str, Mapping[str, PublicKey]],
        kinds: Iterable[str] | None = None,
        skip_issuers: Iterable[str] = (),
        summary: InboundSummary | None = None,
        batch_size: int = BATCH_SIZE,
        batch_seconds: float = BATCH_SECONDS,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.sink = sink
        self.state = state
        self.keys_of = keys_of
        self.wanted = set(kinds) if kinds is not None else None
        self.own = set(skip_issuers)
        self.summary = summary if summary is not None else InboundSummary()
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.live = False
        self.pending: list[ChangeLike] = []
        self.started = 0.0

    def add(self, change: ChangeLike) -> None:
        self.summary.received += 1
        if not self.pending:
            self.started = time.monotonic()
        self.pending.append(change)
        if (
            self.live
            or len(self.pending) >= self.batch_size
            or time.monotonic() - self.started >= self.batch_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Apply the pending changes in one sink transaction, then save the cursor after them."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        summary = self.summary
        records: list[Record] = []
        skipped: dict[str, int] = {}
        own = 0
        refused: InboundRefused | None = None
        for i, change in enumerate(batch):
            kind = change.record.key.split("/", 1)[0]
            if self.wanted is not None and kind not in self.wanted:
                skipped[kind] = skipped.get(kind, 0) + 1
            elif change.record.issuer in self.own:
                own += 1
            else:
                try:
                    records.append(verify_change(change, self.keys_of))
                except InboundRefused as err:
                    refused = err
                    batch = batch[:i]
                    break
        if records:
            changed = apply_records(self.sink, records)
            applied = sum(changed)
            summary.applied += applied
            summary.unchanged += len(changed) - applied
        summary.own += own
        for kind, n in skipped.items():
            summary.skipped_kinds[kind] = summary.skipped_kinds.get(kind, 0) + n
        if batch:
            self.state.save_cursor(str(batch[-1].log_index + 1), CURSOR_NAME)
        if refused is not None:
            raise refused


def apply_records(sink: Sink, records: Sequence[Record]) -> list[bool]:
    """Apply records in order: in one transaction when the sink can (``apply_batch``)."""
    apply_batch = getattr(sink, "apply_batch", None)
    if apply_batch is not None:
        return list(apply_batch(records))
    return [sink.apply(record) for record in records]


def apply_changes(
    changes: Iterable[ChangeLike],
    sink: Sink,
    state: State,
    *,
    keys_of: Mapping[str, Mapping[str, PublicKey]],
    kinds: Iterable[str] | None = None,
    skip_issuers: Iterable[str] = (),
    summary: InboundSummary | None = None,
    batch_size: int = BATCH_SIZE,
    batch_seconds: float = BATCH_SECONDS,
) -> InboundSummary:
    """Verify and apply changes in order, in batches; persist the cursor after each batch applied.

    ``keys_of``: participant -> key id -> public key, from your own federation file.
    ``kinds``: the record kinds the sink takes (others are skipped, the cursor moves on).
    ``skip_issuers``: issuers whose records are not applied (the participant's own: the
    feed returns them too, and the local system already has them).
    Raises InboundRefused (a bad signature) or the sink's error; the cursor then stays
    before that change (InboundRefused) or before its batch (a sink error).
    See BatchApplier for the batch rules.
    """
    applier = BatchApplier(
        sink,
        state,
        keys_of=keys_of,
        kinds=kinds,
        skip_issuers=skip_issuers,
        summary=summary,
        batch_size=batch_size,
        batch_seconds=batch_seconds,
    )
    return run_applier(changes, applier)


def run_applier(changes: Iterable[ChangeLike], applier: BatchApplier) -> InboundSummary:
    try:
        for change in changes:
            applier.add(change)
    except Exception:
        # The feed failed (a dropped connection, a change the SDK refused): the changes
        # received before the failure are good, so keep them and resume after them.
        applier.flush()
        raise
    applier.flush()
    return applier.summary


def federation_keys(federation: Federation) -> dict[str, dict[str, PublicKey]]:
    """participant -> key id -> public key, from the province's own copy of the federation.

    Revoked and expired keys are kept: a change signed before a key's revocation is still
    the issuer's (the gateway judged the key at the change's signing time).
    """
    keys: dict[str, dict[str, PublicKey]] = {}
    for record in federation.keys.values():
        keys.setdefault(record.owner, {})[record.keyid] = record.public_key
    return keys


def follow(
    client: GatewayClient,
    sink: Sink,
    state: State,
    *,
    participant: str,
    keys_of: Mapping[str, Mapping[str, PublicKey]],
    kinds: Sequence[str],
    until_caught_up: bool,
    retry_seconds: float = 300.0,
    retry_wait: float = 1.0,
    stop: threading.Event | None = None,
    batch_size: int = BATCH_SIZE,
    batch_seconds: float = BATCH_SECONDS,
) -> InboundSummary:
    """Subscribe as ``participant`` and apply other issuers' changes through ``sink``.

    Starts at the persisted inbound cursor. When the gateway is unavailable (restarting,
    network), reconnects with exponential backoff and resumes from the cursor saved after
    the last batch applied: nothing is lost, and nothing applied twice (the sink would
    skip it anyway, as not newer). Changes are applied in batches (BatchApplier): the
    backfill in batches of up to ``batch_size`` changes or ``batch_seconds``, the batch in
    hand as soon as the feed says it has caught up, live changes one by one.
    ``until_caught_up``: return once the log's end is reached (``--once``); otherwise
    follow live until ``stop`` is set, or until the feed has kept failing for
    ``retry_seconds`` with no change or caught-up mark in between.
    """
    summary = InboundSummary()
    stop = stop or threading.Event()
    applier = BatchApplier(
        sink,
        state,
        keys_of=keys_of,
        kinds=kinds,
        skip_issuers=(participant,),
        summary=summary,
        batch_size=batch_size,
        batch_seconds=batch_seconds,
    )

    def caught_up(next_index: int) -> None:
        failing_since[0] = None  # the feed works: a later failure gets a fresh retry budget
        # Called inside the SDK's generator, in this thread, before it waits for live
        # changes: apply the batch in hand now rather than when the next change comes.
        applier.flush()
        applier.live = True
        # Everything below next_index that this participant may see is now applied: skip
        # the rescan next time.
        if next_index > start_index(state):
            state.save_cursor(str(next_index), CURSOR_NAME)

    failing_since: list[float | None] = [None]

    def one_connection() -> None:
        start = start_index(state)
        changes = client.subscribe(
            start_index=start, kinds=kinds, until_caught_up=until_caught_up, on_caught_up=caught_up
        )
        applier.live = False  # a new connection starts with a backfill
        try:
            run_applier(_until(changes, stop, failing_since), applier)
        except ChangeVerificationError as err:
            raise InboundRefused(f"the change feed sent a change that does not verify: {err}") from None
        finally:
            close = getattr(changes, "close", None)
            if close is not None:
                close()

    def retryable(err: BaseException) -> bool:
        return isinstance(err, grpc.RpcError) and not stop.is_set() and retryable_code(err)

    def note(retry: tenacity.RetryCallState) -> None:
        summary.reconnects += 1
        log.warning(
            "change feed interrupted; reconnecting from log index %d (attempt %d)",
            start_index(state),
            retry.attempt_number,
        )

    def give_up(_: tenacity.RetryCallState) -> bool:
        # Measured from the first failure since the feed last delivered something, so a
        # quiet live feed that later drops still gets the whole budget.
        now = time.monotonic()
        since = failing_since[0]
        if since is None:
            since = failing_since[0] = now
        return stop.is_set() or now - since > retry_seconds

    retrying = tenacity.Retrying(
        stop=give_up,
        wait=tenacity.wait_exponential(multiplier=retry_wait, max=30),
        retry=tenacity.retry_if_exception(retryable),
        before_sleep=note,
        reraise=True,
    )
    try:
        retrying(one_connection)
    except grpc.RpcError as err:
        if stop.is_set() and err.code() == grpc.StatusCode.CANCELLED:
            return summary
        resume = f"the inbound cursor stays at log index {start_index(state)}, the next run resumes there"
        if retryable_code(err):
            raise InboundUnavailable(
                f"the change feed at {client.target} stayed unavailable ({err.code().name}); {resume}"
            ) from None
        # A refusal (e.g. PERMISSION_DENIED: a key the gateway does not accept): say what it said.
        refusal = Refusal.from_rpc_error(err)
        raise InboundRefused(
            f"the gateway refused the subscription: {refusal.code.name} {refusal.reason}: "
            f"{refusal.message}; {resume}"
        ) from None
    return summary


def retryable_code(err: grpc.RpcError) -> bool:
    code = err.code() if hasattr(err, "code") else None
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class InboundUnavailable(AdapterError):
    """The change feed could not be reached within the retry budget; the cursor is kept."""


def _until(
    changes: Iterator[ChangeLike], stop: threading.Event, failing_since: list[float | None]
) -> Iterator[ChangeLike]:
    for change in changes:
        failing_since[0] = None
        yield change
        if stop.is_set():
            return
