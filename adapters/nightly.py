"""The participant's side of reconciliation beside the adapter runner.

Sending what the gateway is missing goes through the runner's own path: the same
message id (gateway.reconcile.digests.message_id), the same outbox in the adapter's
state directory, the same receipts file. So a change is never sent twice:

- a record the runner already sent (its id is in receipts.jsonl) is not sent again by
  reconciliation: its original receipt is reported instead;
- a record reconciliation sent is written to reconciled.jsonl with its receipt, and the
  runner, when it later reads the same change from its source, skips it (it would
  otherwise send new bytes under a used id, which the gateway refuses, in its log).

Different bytes under one id are never sent: the gateway answers only byte-identical
envelopes with their original receipt, and signing again changes created_at.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adapters.state import Pending, State
from gateway.domain.records import Record
from gateway.reconcile.digests import message_id

if TYPE_CHECKING:
    from adapters.runner import Runner

log = logging.getLogger("mrx.adapter")

RECEIPTS = "receipts.jsonl"
# Message ids reconciliation sent, with their receipts: small (a night's missing
# records), so the runner can read it at every batch.
RECONCILED = "reconciled.jsonl"


@dataclass
class Sent:
    """What sending the missing records did, per record key."""

    sent: dict[str, int] = field(default_factory=dict)  # key -> log index of the new receipt
    already: dict[str, int] = field(default_factory=dict)  # key -> log index of the original receipt
    refused: dict[str, str] = field(default_factory=dict)  # key -> the gateway's reason


def receipted(
    state: State, wanted: Iterable[str], *, files: Sequence[str] = (RECEIPTS, RECONCILED)
) -> dict[str, int]:
    """{message id: log index} of the ``wanted`` ids the state's receipt files hold.

    Streams the files: receipts.jsonl grows with every change ever sent."""
    want = set(wanted)
    found: dict[str, int] = {}
    for name in files:
        path = state.dir / name
        if not want or not path.exists():
            continue
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                entry = json.loads(line)
                mid = entry.get("message_id")
                if mid in want and "log_index" in entry:
                    found[mid] = int(entry["log_index"])
    return found


def sent_by_reconciliation(state: State) -> dict[str, int]:
    """{message id: log index} of everything reconciliation sent (the runner skips these)."""
    path = state.dir / RECONCILED
    if not path.exists():
        return {}
    out: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                entry = json.loads(line)
                out[entry["message_id"]] = int(entry["log_index"])
    return out


def send_missing(runner: Runner, records: Sequence[Record]) -> Sent:
    """Send the records the gateway is missing through ``runner``'s path (see above)."""
    from adapters.runner import Summary

    result = Sent()
    # An outbox left by a crash goes first, exactly as the runner's own pass would send it.
    left = runner.state.pending()
    if left is not None:
        runner._record(*runner._exchange(left), Summary())
    by_id = {message_id(r): r for r in records}
    original = receipted(runner.state, by_id)
    for mid, index in original.items():
        result.already[by_id[mid].key] = index
        log.info("%s was sent before (receipt #%d): not sent again", by_id[mid].key, index)
    rest = [r for mid, r in by_id.items() if mid not in original]
    if not rest:
        return result
    pending = Pending(
        [runner._sign(r) for r in rest], [f"reconciliation {r.key}" for r in rest], runner.state.cursor()
    )
    runner.state.save_pending(pending)  # the outbox: a crash from here resends these very bytes
    pending, outcomes = runner._exchange(pending)
    reconciled = []
    for record, outcome in zip(rest, outcomes, strict=True):
        if outcome.receipt is not None:
            result.sent[record.key] = outcome.receipt.log_index
            reconciled.append(
                {
                    "record_key": record.key,
                    "message_id": message_id(record),
                    "log_index": outcome.receipt.log_index,
                }
            )
        else:
            assert outcome.refusal is not None
            result.refused[record.key] = outcome.refusal.reason or outcome.refusal.code.name
    # Before the outbox is cleared (in _record): a crash in between resends the outbox,
    # whose identical bytes get their original receipts.
    runner.state.append(RECONCILED, reconciled)
    runner._record(pending, outcomes, Summary())
    return result
