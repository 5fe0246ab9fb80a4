"""The read-write side of the store: what the ledger needs of a transaction.

trillian's habit: storage is split read-only / read-write, one module per backend
(``gateway/store/sql/``), and one contract suite (tests/integration/test_storage_contract.py)
runs against every backend. The append *rules* (replay, issuer, version, transition, leaf
and receipt) live in ``gateway.ledger``, written against ``WriteTx``; a backend only knows
how to read and write rows fast.

Rows are plain tuples in column order: the writer builds thousands per second and a
dict or ORM object per row is measurable there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

from gateway.audit.merkle import NodeId
from gateway.domain.records import Record
from gateway.store.rows import current_values

# Arbitrary but fixed: the advisory lock that elects the appender on PostgreSQL. Advisory
# locks are database-wide, so the key includes the schema: gateways on different schemas
# of one database (test runs, staging beside production) do not wait for each other.
LOG_LOCK_ID = 7262002
LOG_LOCK_SQL = f"SELECT pg_advisory_xact_lock({LOG_LOCK_ID}, hashtext(current_schema()))"


class LogEntry(NamedTuple):
    """One row of ``exchanges``, in column order."""

    log_index: int
    received_at_us: int
    sender: str
    message_id: str
    kind: int
    record_key: str
    record_version: int
    subject_issuer: str
    outcome: int
    reason: str
    envelope_sha256: bytes
    envelope: bytes
    receipt: bytes | None
    leaf: bytes


class VersionRow(NamedTuple):
    """One row of ``record_versions``."""

    record_key: str
    version: int
    state: int
    effective_at_us: int
    log_index: int


class StoredState(NamedTuple):
    """A record's current issuer, state and version, as the transition rules need them."""

    issuer: str
    state: int
    version: int


class CurrentWrite(NamedTuple):
    """A record's new current state; ``exists`` says whether a row is to be updated."""

    record: Record
    log_index: int
    exists: bool


class Appended(NamedTuple):
    """Everything one transaction appends."""

    entries: Sequence[LogEntry]
    nodes: Sequence[tuple[NodeId, bytes]]
    versions: Sequence[VersionRow]
    current: Sequence[CurrentWrite]


class WriteTx(Protocol):
    """One read-write transaction holding the append lock of the log.

    Every read sees the transaction's own state; nothing is visible to others until the
    context manager that produced it exits normally (then it is durably committed).
    """

    def log_size(self) -> int:
        """Number of entries in the log (the next log index)."""
        ...

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        """Stored perfect-subtree hashes (a ``gateway.audit.merkle.NodeReader``)."""
        ...

    def accepted_by_digest(self, digests: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
        """For envelopes accepted before: digest -> (log index, receipt payload)."""
        ...

    def used_message_ids(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (sender, message id) pairs consumed by an accepted exchange."""
        ...

    def current_states(self, keys: Sequence[str]) -> dict[str, StoredState]:
        """The current issuer, state and version of the records stored under ``keys``."""
        ...

    def append(self, rows: Appended) -> None:
        """Write the log entries, Merkle nodes, versions and current states."""
        ...


class WriteStore(Protocol):
    """The database as the one writer sees it."""

    dialect: str

    def transaction(self) -> AbstractContextManager[WriteTx]:
        """Begin, take the append lock, yield; commit durably on exit, roll back on error."""
        ...

    def close(self) -> None: ...


def split_current(
    current: Sequence[CurrentWrite],
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, list[tuple[Any, ...]]]]:
    """Current-state rows by table: (new rows to insert, changed rows to update)."""
    new: dict[str, list[tuple[Any, ...]]] = {"certificates": [], "records": []}
    changed: dict[str, list[tuple[Any, ...]]] = {"certificates": [], "records": []}
    for write in current:
        table, values = current_values(write.record, write.log_index)
        (changed if write.exists else new)[table].append(values)
    return new, changed


def chunks(seq: Sequence[object], size: int) -> Iterator[Sequence[object]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
