"""The storage contract: every backend's WriteStore, and the ledger rules on top of it.

trillian's RunAllTests habit: one suite, run against every backend (``database_url`` is
SQLite and PostgreSQL), at the storage seam, with no gRPC in between. A new backend
passes this file before anything else is built on it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from gateway.audit.merkle import CompactRange, inclusion_proof, leaf_hash, root_hash, verify_inclusion
from gateway.demo_fixtures import demo_certificates, demo_status_change
from gateway.domain.certificates import Certificate, CertState
from gateway.domain.errors import FailedPrecondition, InvalidArgument
from gateway.ledger.rules import Ledger
from gateway.ledger.values import Accepted, Refusal, Staged
from gateway.pb import audit_pb2, envelope_pb2
from gateway.store.audit_reads import AuditStore
from gateway.store.reads import ReadStore
from gateway.store.record_reads import RecordReads
from gateway.store.sql import open_write_store
from gateway.store.writes import (
    Appended,
    CurrentWrite,
    LogEntry,
    StoredState,
    VersionRow,
    WriteStore,
)

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
TODAY = date(2026, 11, 23)


@pytest.fixture
def write_store(database_url: str, open_store) -> Iterator[WriteStore]:
    open_store(database_url)  # creates the schema
    store = open_write_store(database_url)
    yield store
    store.close()


def staged(
    cert: Certificate | None,
    *,
    sender: str | None = None,
    message_id: str | None = None,
    envelope: bytes | None = None,
    early: Refusal | None = None,
    late: Refusal | None = None,
) -> Staged:
    body = envelope if envelope is not None else os.urandom(48)
    return Staged(
        envelope=body,
        envelope_sha256=hashlib.sha256(body).digest(),
        sender=sender or (cert.issuer if cert else "CN-JS"),
        message_id=message_id or hashlib.sha256(body).hexdigest()[:20],
        kind=1,
        record_key=cert.key if cert else "",
        record_version=cert.version if cert else 0,
        subject_issuer=cert.issuer if cert else "",
        received_at=NOW,
        record=cert if early is None and late is None else None,
        early_refusal=early,
        late_refusal=late,
    )


def certs(issuer: str = "CN-JS", count: int = 1, start: int = 1) -> list[Certificate]:
    return demo_certificates(issuer, count=count, start_serial=start, today=TODAY)


def append(store: WriteStore, items: list[Staged], ledger: Ledger | None = None) -> list[Accepted | Refusal]:
    with store.transaction() as tx:
        return (ledger or Ledger()).append(tx, items)


def entry(index: int, digest: bytes, *, outcome: int = 1, sender: str = "CN-JS", mid: str = "m") -> LogEntry:
    return LogEntry(
        log_index=index,
        received_at_us=1,
        sender=sender,
        message_id=mid,
        kind=1,
        record_key="certificate_status/CCC/1",
        record_version=1,
        subject_issuer=sender,
        outcome=outcome,
        reason="" if outcome == 1 else "STALE_MESSAGE",
        envelope_sha256=digest,
        envelope=b"env",
        receipt=b"receipt-%d" % index if outcome == 1 else None,
        leaf=b"leaf-%d" % index,
    )


# --- the WriteTx primitives ----------------------------------------------------------------


def test_an_empty_store(write_store):
    with write_store.transaction() as tx:
        assert tx.log_size() == 0
        assert tx.accepted_by_digest([b"x" * 32]) == {}
        assert tx.used_message_ids([("CN-JS", "m")]) == set()
        assert tx.current_states(["certificate_status/CCC/1"]) == {}
        assert tx.get_nodes([(0, 0)]) == {}


def test_appended_rows_are_read_back_in_and_after_the_transaction(write_store):
    d0, d1 = b"\x01" * 32, b"\x02" * 32
    cert = certs()[0]
    rows = Appended(
        entries=[entry(0, d0, mid="a"), entry(1, d1, outcome=2, mid="b")],
        nodes=[((0, 0), b"h" * 32), ((0, 1), b"i" * 32), ((1, 0), b"j" * 32)],
        versions=[VersionRow(cert.key, 1, int(CertState.VALID), 5, 0)],
        current=[CurrentWrite(cert, 0, False)],
    )
    with write_store.transaction() as tx:
        tx.append(rows)
        assert tx.log_size() == 2  # the transaction sees its own writes
    with write_store.transaction() as tx:
        assert tx.log_size() == 2
        # Only accepted entries count for replay; a refused one with a digest does not.
        assert tx.accepted_by_digest([d0, d1]) == {d0: (0, b"receipt-0")}
        assert tx.used_message_ids([("CN-JS", "a"), ("CN-JS", "b"), ("CN-SH", "a")]) == {("CN-JS", "a")}
        assert tx.current_states([cert.key, "nope"]) == {
            cert.key: StoredState("CN-JS", int(CertState.VALID), 1)
        }
        assert tx.get_nodes([(0, 1), (1, 0), (2, 0)]) == {(0, 1): b"i" * 32, (1, 0): b"j" * 32}


def test_an_error_inside_the_transaction_leaves_nothing(write_store):
    with pytest.raises(RuntimeError), write_store.transaction() as tx:
        tx.append(Appended(entries=[entry(0, b"\x01" * 32)], nodes=[], versions=[], current=[]))
        raise RuntimeError("boom")
    with write_store.transaction() as tx:
        assert tx.log_size() == 0
    # and the store is usable afterwards
    assert isinstance(append(write_store, [staged(certs()[0])])[0], Accepted)


def test_a_duplicate_log_index_fails_the_whole_transaction(write_store):
    append(write_store, [staged(certs()[0])])
    with pytest.raises(Exception), write_store.transaction() as tx:  # noqa: B017  (driver-specific class)
        tx.append(
            Appended(
                entries=[entry(1, b"\x05" * 32), entry(0, b"\x06" * 32)], nodes=[], versions=[], current=[]
            )
        )
    with write_store.transaction() as tx:
        assert tx.log_size() == 1


def test_committed_data_is_visible_to_a_new_connection_and_the_read_side(
    write_store, database_url, open_store
):
    cert = certs()[0]
    (outcome,) = append(write_store, [staged(cert)])
    assert isinstance(outcome, Accepted)
    other = open_write_store(database_url)
    try:
        with other.transaction() as tx:
            assert tx.log_size() == 1
    finally:
        other.close()
    engines = open_store(database_url)
    stored = ReadStore(engines).get_certificate(int(cert.scheme), cert.certificate_number)
    assert stored is not None and stored.log_index == 0 and stored.state == int(CertState.VALID)
    snap = RecordReads(engines).snapshot(cert.key)
    assert snap is not None and [v.version for v in snap.history] == [1]


def test_lookups_take_hundreds_of_keys(write_store):
    items = [staged(c) for c in certs(count=600)]
    append(write_store, items)
    with write_store.transaction() as tx:
        digests = [i.envelope_sha256 for i in items]
        assert len(tx.accepted_by_digest(digests)) == 600
        assert len(tx.used_message_ids([(i.sender, i.message_id) for i in items])) == 600
        assert len(tx.current_states([i.record_key for i in items])) == 600


# --- the ledger rules on every backend --------------------------------------------------------


def test_accepted_submissions_get_dense_indexes_and_receipts(write_store):
    items = [staged(c) for c in certs(count=5)]
    outcomes = append(write_store, items)
    assert [o.log_index for o in outcomes if isinstance(o, Accepted)] == [0, 1, 2, 3, 4]
    receipt = envelope_pb2.Receipt.FromString(outcomes[2].receipt_payload)  # type: ignore[union-attr]
    assert receipt.log_index == 2
    assert receipt.envelope_sha256 == items[2].envelope_sha256
    assert receipt.record_key == items[2].record_key
    assert receipt.received_at.ToDatetime(UTC) == NOW


def test_identical_bytes_get_the_original_receipt_and_no_new_entry(write_store):
    item = staged(certs()[0])
    (first,) = append(write_store, [item])
    again, other = append(write_store, [item, staged(certs(start=2)[0])])
    assert isinstance(again, Accepted) and again.duplicate
    assert again.receipt_payload == first.receipt_payload  # type: ignore[union-attr]
    assert isinstance(other, Accepted) and other.log_index == 1
    # within one batch too
    twin = staged(certs(start=3)[0])
    a, b = append(write_store, [twin, twin])
    assert (a.duplicate, b.duplicate, b.log_index) == (False, True, a.log_index)  # type: ignore[union-attr]


def test_a_reused_message_id_is_refused_and_logged(write_store):
    a, b = certs(count=2)
    append(write_store, [staged(a, message_id="same")])
    (refused,) = append(write_store, [staged(b, message_id="same")])
    assert isinstance(refused, Refusal)
    assert (refused.kind, refused.reason) == ("AlreadyExists", "MESSAGE_ID_REUSED")
    assert dict(refused.metadata)["log_index"] == "1"
    with write_store.transaction() as tx:
        assert tx.log_size() == 2
    # Another sender may use the same id.
    (ok,) = append(write_store, [staged(certs("CN-SH")[0], message_id="same")])
    assert isinstance(ok, Accepted)


def test_refused_submissions_do_not_consume_their_message_id(write_store):
    a = certs()[0]
    stale = Refusal.of(FailedPrecondition("old", reason="STALE_MESSAGE"))
    (refused,) = append(write_store, [staged(a, message_id="m1", early=stale)])
    assert isinstance(refused, Refusal) and refused.reason == "STALE_MESSAGE"
    (ok,) = append(write_store, [staged(a, message_id="m1")])
    assert isinstance(ok, Accepted) and ok.log_index == 1


def test_replay_is_checked_before_the_late_refusals(write_store):
    a, b = certs(count=2)
    append(write_store, [staged(a, message_id="m")])
    bad = Refusal.of(InvalidArgument("bad field"))
    (refused,) = append(write_store, [staged(b, message_id="m", late=bad)])
    assert refused.reason == "MESSAGE_ID_REUSED"  # type: ignore[union-attr]


def test_stored_issuer_version_and_transition_rules(write_store):
    cert = certs()[0]
    append(write_store, [staged(cert)])
    suspended = demo_status_change(cert, state=CertState.SUSPENDED, reason="抽查", effective_at=NOW)
    revoked = demo_status_change(suspended, state=CertState.REVOKED, reason="撤销", effective_at=NOW)
    back = demo_status_change(revoked, state=CertState.VALID, reason="恢复", effective_at=NOW)
    other_issuer = staged(
        demo_status_change(cert, state=CertState.SUSPENDED, reason="x", effective_at=NOW), sender="CN-SH"
    )
    outcomes = append(
        write_store, [staged(suspended), staged(cert), other_issuer, staged(revoked), staged(back)]
    )
    reasons = [o.reason if isinstance(o, Refusal) else "ok" for o in outcomes]
    # Two versions in one batch apply in order; the batch's own writes are stored state.
    assert reasons == ["ok", "STALE_VERSION", "NOT_ISSUER", "ok", "ILLEGAL_TRANSITION"]
    with write_store.transaction() as tx:
        assert tx.current_states([cert.key]) == {cert.key: StoredState("CN-JS", int(CertState.REVOKED), 3)}


def test_every_version_is_kept(write_store, database_url, open_store):
    cert = certs()[0]
    v2 = demo_status_change(cert, state=CertState.SUSPENDED, reason="抽查", effective_at=NOW)
    append(write_store, [staged(cert)])
    append(write_store, [staged(v2)])
    snap = RecordReads(open_store(database_url)).snapshot(cert.key)
    assert snap is not None
    assert [(v.version, v.state) for v in snap.history] == [
        (1, int(CertState.VALID)),
        (2, int(CertState.SUSPENDED)),
    ]


def test_leaves_and_nodes_make_the_rfc6962_tree(write_store, database_url, open_store):
    items = [staged(c) for c in certs(count=13)]
    items.insert(4, staged(None, early=Refusal.of(FailedPrecondition("old", reason="STALE_MESSAGE"))))
    ledger = Ledger()
    for part in (items[:1], items[1:6], items[6:7], items[7:]):  # several commits, odd sizes
        append(write_store, part, ledger)
    audit = AuditStore(open_store(database_url))
    with audit.snapshot() as reader:
        size = reader.log_size()
        leaves = [reader.entry(i).leaf for i in range(size)]  # type: ignore[union-attr]
    assert size == 14
    expected = CompactRange()
    for leaf in leaves:
        expected.append(leaf_hash(leaf))
    with write_store.transaction() as tx:
        assert root_hash(size, tx) == expected.root()
        proof = inclusion_proof(5, size, tx)
    assert verify_inclusion(leaf_hash(leaves[5]), 5, size, proof, expected.root())
    refused_leaf = audit_pb2.ExchangeLeaf.FromString(leaves[4])
    assert (refused_leaf.outcome, refused_leaf.reason) == (envelope_pb2.OUTCOME_REFUSED, "STALE_MESSAGE")


def test_two_writers_on_one_database_keep_one_linear_log(write_store, database_url):
    """Two replicas' writers (each with its own cached frontier) interleave commits."""
    other = open_write_store(database_url)
    try:
        a, b = Ledger(), Ledger()
        batches = [[staged(c)] for c in certs(count=12)]
        for n, batch in enumerate(batches):
            append(write_store if n % 3 else other, batch, a if n % 3 else b)
        errors: list[BaseException] = []

        def run(store: WriteStore, ledger: Ledger, start: int) -> None:
            try:
                for c in certs("CN-SH", count=20, start=start):
                    append(store, [staged(c)], ledger)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=(write_store, a, 1)),
            threading.Thread(target=run, args=(other, b, 100)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        with write_store.transaction() as tx:
            size = tx.log_size()
            leaves_root = root_hash(size, tx)
        assert size == 52
        # Whichever writer appended last, a fresh ledger computes the same root.
        fresh = Ledger()
        (extra,) = append(other, [staged(certs("CN-ZJ")[0])], fresh)
        assert isinstance(extra, Accepted) and extra.log_index == 52
        with other.transaction() as tx:
            assert root_hash(52, tx) == leaves_root
    finally:
        other.close()


def test_a_failed_commit_forgets_the_cached_frontier(write_store):
    ledger = Ledger()
    append(write_store, [staged(c) for c in certs(count=3)], ledger)
    with pytest.raises(RuntimeError), write_store.transaction() as tx:
        ledger.append(tx, [staged(certs(start=10)[0])])
        raise RuntimeError("the commit failed after the frontier advanced")
    ledger.forget()
    (ok,) = append(write_store, [staged(certs(start=11)[0])], ledger)
    assert isinstance(ok, Accepted) and ok.log_index == 3
    with write_store.transaction() as tx:
        root = root_hash(4, tx)
    fresh = CompactRange.from_store(4, _Nodes(write_store))
    assert fresh.root() == root


class _Nodes:
    def __init__(self, store: WriteStore):
        self._store = store

    def get_nodes(self, ids):
        with self._store.transaction() as tx:
            return tx.get_nodes(ids)


def test_refusal_values_round_trip_to_errors():
    err = InvalidArgument("bad", violations=[], reason="INVALID_FIELDS", metadata={"a": "b"})
    back = Refusal.of(err, log_index="7").error()
    assert isinstance(back, InvalidArgument)
    assert (back.reason, back.metadata, back.message) == (
        "INVALID_FIELDS",
        {"a": "b", "log_index": "7"},
        "bad",
    )
