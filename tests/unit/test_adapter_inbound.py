"""adapters.inbound: other provinces' changes, verified with the issuer's key, applied
through a real sink (SQLite in tmp), the cursor persisted only after applying."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.inbound import (
    CURSOR_NAME,
    BatchApplier,
    InboundRefused,
    apply_changes,
    federation_keys,
    start_index,
)
from adapters.mapping import load_mapping
from adapters.sinks import SinkError, SqlSink
from adapters.state import State
from gateway.client import make_submission
from gateway.crypto.suites import PrivateKey, Suite
from gateway.domain.certificates import Certificate, CertState, build_certificate
from gateway.domain.identifiers import make_credit_code
from gateway.pb import envelope_pb2

ROOT = Path(__file__).resolve().parents[2]
DDL = """CREATE TABLE sh_inbound_cert (
  id INTEGER PRIMARY KEY, source_province VARCHAR(20), cert_no VARCHAR(64), scheme_name VARCHAR(40),
  body_code VARCHAR(64), holder_name VARCHAR(200), holder_uscc VARCHAR(18), product_scope VARCHAR(2000),
  status_code VARCHAR(4), status_reason VARCHAR(1000), status_time VARCHAR(40), issue_date VARCHAR(8),
  expire_date VARCHAR(8), version BIGINT)"""


@dataclasses.dataclass(frozen=True)
class Change:
    log_index: int
    record_key: str
    envelope: envelope_pb2.Envelope
    record: Certificate


def _cert(serial: int, *, state: int = CertState.VALID, reason: str = "", version: int = 1) -> Certificate:
    cert, _ = build_certificate(
        certificate_number=f"2025010901{80000 + serial:06d}",
        scheme=1,
        issuing_body="CNCA-R-2002-001",
        issuer="CN-JS",
        holder_name="苏州明德电子科技有限公司",
        holder_credit_code=make_credit_code(division="320505", org_code8="MA1MXP4D"),
        scope="微型计算机",
        state=state,
        reason=reason,
        effective_at=datetime(2026, 3, 1, 1, 30, tzinfo=UTC),
        issue_date="2025-03-01",
        expiry_date="2030-02-28",
        version=version,
    )
    return cert


@pytest.fixture
def key() -> PrivateKey:
    return PrivateKey.generate(Suite.ED25519, "CN-JS/test")


@pytest.fixture
def sink(tmp_path: Path) -> SqlSink:
    db = tmp_path / "local.db"
    with sqlite3.connect(db) as conn:
        conn.execute(DDL)
    mapping = load_mapping(ROOT / "adapters/mappings/shanghai_inbound_sql.toml")
    return SqlSink(
        f"sqlite:///{db}", table="sh_inbound_cert", mapping=mapping, lock_timeout=0.1, backoff=0.01
    )


def _change(index: int, cert: Certificate, key: PrivateKey) -> Change:
    return Change(index, cert.key, make_submission(cert, sender="CN-JS", signer=key), cert)


def _rows(sink: SqlSink) -> list[tuple[str, str, int]]:
    with sink.engine.connect() as conn:
        result = conn.execute(
            sa.text("SELECT cert_no, status_code, version FROM sh_inbound_cert ORDER BY id")
        )
        return [(r[0], r[1], int(r[2])) for r in result]


def test_changes_are_verified_applied_and_the_cursor_follows(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    changes = [
        _change(7, _cert(1), key),
        _change(9, _cert(2), key),
        _change(12, _cert(1, state=CertState.SUSPENDED, reason="监督抽查不合格", version=2), key),
    ]
    summary = apply_changes(changes, sink, state, keys_of=keys)
    assert (summary.received, summary.applied) == (3, 3)
    assert start_index(state) == 13
    assert _rows(sink) == [("2025010901080001", "2", 2), ("2025010901080002", "1", 1)]
    # A restart that replays the feed changes nothing: the sink never goes backwards.
    again = apply_changes(changes, sink, state, keys_of=keys)
    assert (again.applied, again.unchanged) == (0, 3)


def test_a_change_signed_by_another_key_is_refused_and_the_cursor_stays_before_it(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    forger = PrivateKey.generate(Suite.ED25519, "CN-JS/test")  # same key id, other key
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    changes = [_change(3, _cert(1), key), _change(4, _cert(2), forger), _change(5, _cert(3), key)]
    with pytest.raises(InboundRefused, match="log index 4: issuer CN-JS's signature"):
        apply_changes(changes, sink, state, keys_of=keys)
    assert state.cursor(CURSOR_NAME) == "4"
    assert [r[0] for r in _rows(sink)] == ["2025010901080001"]


def test_a_feed_record_other_than_the_signed_one_is_refused(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    signed = _change(1, _cert(1), key)
    lying = dataclasses.replace(signed, record=_cert(1, version=5))
    with pytest.raises(InboundRefused, match="is not the one the issuer signed"):
        apply_changes([lying], sink, State(tmp_path / "s"), keys_of={"CN-JS": {key.keyid: key.public_key()}})
    assert _rows(sink) == []


def test_a_locked_sink_applies_nothing_and_keeps_the_cursor(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    db = str(sink.engine.url.database)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO sh_inbound_cert (cert_no) VALUES ('held by the local system')")
        with pytest.raises(SinkError, match="locked by another writer"):
            apply_changes(
                [_change(1, _cert(1), key)], sink, state, keys_of={"CN-JS": {key.keyid: key.public_key()}}
            )
        assert start_index(state) == 0
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_kinds_the_sink_does_not_take_are_skipped_and_passed(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    summary = apply_changes([_change(1, _cert(1), key)], sink, state, keys_of={}, kinds=["test_report"])
    assert summary.skipped_kinds == {"certificate_status": 1} and _rows(sink) == []
    assert start_index(state) == 2


def test_federation_keys_verify_a_change_signed_with_a_federation_key(
    base_federation: Any, signers: dict[str, PrivateKey], sink: SqlSink, tmp_path: Path
) -> None:
    keys = federation_keys(base_federation)
    assert set(keys["CN-JS"]) == {k.keyid for k in base_federation.keys_of("CN-JS")}
    change = _change(1, _cert(1), signers["CN-JS"])
    assert apply_changes([change], sink, State(tmp_path / "s"), keys_of=keys).applied == 1
    forged = _change(2, _cert(2), signers["CN-ZJ"])  # CN-ZJ's key on a CN-JS record
    with pytest.raises(InboundRefused, match="issuer CN-JS's signature"):
        apply_changes([forged], sink, State(tmp_path / "s"), keys_of=keys)


def test_the_participants_own_records_are_passed_without_being_applied(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    changes = [_change(1, _cert(1), key), _change(2, _cert(2), key)]
    summary = apply_changes(changes, sink, state, keys_of=keys, skip_issuers=("CN-JS",))
    assert (summary.received, summary.own, summary.applied) == (2, 2, 0)
    assert _rows(sink) == [] and start_index(state) == 3
    assert summary.line() == "inbound: received 2, applied 0, unchanged 0, own 2, other kinds 0"


class _Crash(Exception):
    """Stands for the process dying at that point (kill -9 between two statements)."""


class RecordingState(State):
    """A real state directory that also notes each inbound cursor save, and can die on one."""

    def __init__(self, directory: Path, *, crash_on_save: int | None = None):
        super().__init__(directory)
        self.saves: list[str | None] = []
        self.crash_on_save = crash_on_save

    def save_cursor(self, cursor: str | None, name: str = "cursor") -> None:
        if name == CURSOR_NAME and self.crash_on_save == len(self.saves) + 1:
            raise _Crash(cursor)
        super().save_cursor(cursor, name)
        if name == CURSOR_NAME:
            self.saves.append(cursor)


class BatchRecordingSink:
    """The real SqlSink, noting the size of each transaction it is handed."""

    def __init__(self, inner: SqlSink):
        self.inner = inner
        self.batches: list[int] = []

    def apply(self, record: Any) -> bool:
        raise AssertionError("a batch-capable sink is given batches")

    def apply_batch(self, records: Any) -> list[bool]:
        self.batches.append(len(records))
        return self.inner.apply_batch(records)


def test_batches_close_at_the_size_and_the_cursor_is_saved_once_per_batch(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = RecordingState(tmp_path / "state")
    recording = BatchRecordingSink(sink)
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    changes = [_change(10 + i, _cert(i), key) for i in range(1, 6)]
    summary = apply_changes(changes, recording, state, keys_of=keys, batch_size=2, batch_seconds=60)
    assert recording.batches == [2, 2, 1]
    assert state.saves == ["13", "15", "16"]  # after the last change of each batch, never before
    assert summary.applied == 5 and len(_rows(sink)) == 5
    # With no time at all per batch, every change is its own batch (the time limit closes it).
    again = RecordingState(tmp_path / "again")
    apply_changes(changes, recording, again, keys_of=keys, batch_size=500, batch_seconds=0)
    assert recording.batches[3:] == [1, 1, 1, 1, 1] and again.saves == ["12", "13", "14", "15", "16"]


def test_the_default_batch_takes_a_whole_short_feed_in_one_transaction(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = RecordingState(tmp_path / "state")
    recording = BatchRecordingSink(sink)
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    # The same certificate twice in one batch: v2 then v1 (out of order) leaves v2.
    changes = [
        _change(1, _cert(1, state=CertState.SUSPENDED, reason="监督抽查不合格", version=2), key),
        _change(2, _cert(1), key),
        _change(3, _cert(2), key),
    ]
    summary = apply_changes(changes, recording, state, keys_of=keys)
    assert recording.batches == [3] and state.saves == ["4"]
    assert (summary.applied, summary.unchanged) == (2, 1)
    assert _rows(sink) == [("2025010901080001", "2", 2), ("2025010901080002", "1", 1)]


def test_a_tampered_change_mid_batch_applies_the_batch_before_it_and_stops_the_cursor_there(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = RecordingState(tmp_path / "state")
    recording = BatchRecordingSink(sink)
    forger = PrivateKey.generate(Suite.ED25519, "CN-JS/test")
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    changes = [
        _change(1, _cert(1), key),
        _change(2, _cert(2), key),
        _change(3, _cert(3), forger),
        _change(4, _cert(4), key),
    ]
    with pytest.raises(InboundRefused, match="log index 3: issuer CN-JS's signature"):
        apply_changes(changes, recording, state, keys_of=keys)
    # The same outcome as one change at a time: before it applied, it and after it not.
    assert recording.batches == [2] and state.saves == ["3"]
    assert [r[0] for r in _rows(sink)] == ["2025010901080001", "2025010901080002"]


def test_a_locked_sink_rolls_the_whole_batch_back_and_keeps_the_cursor_before_it(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    apply_changes([_change(1, _cert(1), key)], sink, state, keys_of=keys)
    other = sqlite3.connect(str(sink.engine.url.database), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO sh_inbound_cert (cert_no) VALUES ('held by the local system')")
        with pytest.raises(SinkError, match=r"a batch of 3 records from .* not applied"):
            apply_changes([_change(i, _cert(i), key) for i in (2, 3, 4)], sink, state, keys_of=keys)
        assert start_index(state) == 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [r[0] for r in _rows(sink)] == ["2025010901080001"]


@pytest.mark.parametrize("crash_on_save", [1, 2])
def test_a_crash_between_apply_and_cursor_save_reapplies_the_batch_idempotently(
    sink: SqlSink, key: PrivateKey, tmp_path: Path, crash_on_save: int
) -> None:
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    changes = [_change(i, _cert(i), key) for i in range(6)]
    dying = RecordingState(tmp_path / "state", crash_on_save=crash_on_save)
    with pytest.raises(_Crash):
        apply_changes(changes, sink, dying, keys_of=keys, batch_size=2, batch_seconds=60)
    # The batch that died was committed locally, but its cursor was not saved.
    committed = 2 * crash_on_save
    assert len(_rows(sink)) == committed
    restart = State(tmp_path / "state")
    assert start_index(restart) == committed - 2
    # The restart replays from the saved cursor: the dead batch again (unchanged), then the rest.
    replay = [c for c in changes if c.log_index >= start_index(restart)]
    summary = apply_changes(replay, sink, restart, keys_of=keys, batch_size=2, batch_seconds=60)
    assert (summary.unchanged, summary.applied) == (2, len(changes) - committed)
    assert [r[0] for r in _rows(sink)] == [c.record.certificate_number for c in changes]
    assert start_index(restart) == 6


def test_a_certificate_changed_twice_in_one_batch_ends_at_its_newest_version(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    suspended = _cert(1, state=CertState.SUSPENDED, reason="监督抽查不合格", version=2)
    restored = _cert(1, version=3)
    # New to the table: v1 and v2 in one batch insert v2 once.
    first = apply_changes([_change(1, _cert(1), key), _change(2, suspended, key)], sink, state, keys_of=keys)
    assert (first.applied, first.unchanged) == (2, 0)
    assert _rows(sink) == [("2025010901080001", "2", 2)]
    # Already in the table: a replay of v2, then v3, in one batch update it to v3.
    second = apply_changes([_change(2, suspended, key), _change(3, restored, key)], sink, state, keys_of=keys)
    assert (second.applied, second.unchanged) == (1, 1)
    assert _rows(sink) == [("2025010901080001", "1", 3)]


def test_once_live_each_change_is_applied_as_it_arrives(
    sink: SqlSink, key: PrivateKey, tmp_path: Path
) -> None:
    state = RecordingState(tmp_path / "state")
    recording = BatchRecordingSink(sink)
    keys = {"CN-JS": {key.keyid: key.public_key()}}
    applier = BatchApplier(recording, state, keys_of=keys, batch_seconds=60)
    applier.add(_change(1, _cert(1), key))
    assert recording.batches == [] and state.saves == []  # a backfill batch waits for more
    applier.flush()  # what follow does when the feed's caught-up mark arrives
    applier.live = True
    applier.add(_change(2, _cert(2), key))
    # Nothing says another change will come soon: applied and the cursor saved at once.
    assert recording.batches == [1, 1] and state.saves == ["2", "3"]
