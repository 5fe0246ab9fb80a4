"""The inbound direction: other provinces' changes applied to the local system through a sink.

``apply_changes`` takes any iterator of Change-like objects (the SDK's
``GatewayClient.subscribe`` yields them: log index, the issuer's signed envelope, the
decoded record) and a sink. Each change's envelope is verified against the issuer's own
federation keys here, whatever the feed already checked: the sink writes into a system
the gateway does not control. The inbound cursor (the next log index wanted) is
persisted only after the change is applied, so a crash re-applies at most one change,
which the sink skips as not newer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from adapters.base import AdapterError, Sink
from adapters.state import State
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
    skipped_kinds: dict[str, int] = field(default_factory=dict)


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


def apply_changes(
    changes: Iterable[ChangeLike],
    sink: Sink,
    state: State,
    *,
    keys_of: Mapping[str, Mapping[str, PublicKey]],
    kinds: Iterable[str] | None = None,
) -> InboundSummary:
    """Verify and apply each change in order; persist the cursor after each one applied.

    ``keys_of``: participant -> key id -> public key, from your own federation file.
    ``kinds``: the record kinds the sink takes (others are skipped, the cursor moves on).
    Raises InboundRefused (a bad signature) or the sink's error; the cursor then stays
    before that change.
    """
    wanted = set(kinds) if kinds is not None else None
    summary = InboundSummary()
    for change in changes:
        summary.received += 1
        kind = change.record.key.split("/", 1)[0]
        if wanted is not None and kind not in wanted:
            summary.skipped_kinds[kind] = summary.skipped_kinds.get(kind, 0) + 1
        else:
            record = verify_change(change, keys_of)
            if sink.apply(record):
                summary.applied += 1
            else:
                summary.unchanged += 1
        state.save_cursor(str(change.log_index + 1), CURSOR_NAME)
    return summary


def federation_keys(federation: Federation) -> dict[str, dict[str, PublicKey]]:
    """participant -> key id -> public key, from the province's own copy of the federation.

    Revoked and expired keys are kept: a change signed before a key's revocation is still
    the issuer's (the gateway judged the key at the change's signing time).
    """
    keys: dict[str, dict[str, PublicKey]] = {}
    for record in federation.keys.values():
        keys.setdefault(record.owner, {})[record.keyid] = record.public_key
    return keys
