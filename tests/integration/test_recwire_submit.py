"""One message id for the adapter runner and reconciliation (adapters/nightly.py): a
record one path sent is never sent again by the other, it keeps its original receipt
and the gateway's log gets no second entry. Real gateway, real local system (CSV)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters import load_adapter
from adapters.nightly import send_missing
from adapters.runner import Runner
from adapters.state import RECONCILED, State
from gateway.client import GatewayClient
from gateway.crypto.suites import PrivateKey
from gateway.reconcile.digests import message_id
from gateway.store.schema import exchanges

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("adapter_systems", ROOT / "tests/fixtures/adapters/systems.py")
assert _spec is not None and _spec.loader is not None
systems = sys.modules.setdefault("adapter_systems", importlib.util.module_from_spec(_spec))
if not hasattr(systems, "start"):
    _spec.loader.exec_module(systems)


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as s:
        yield s


@pytest.fixture
def jiangsu(
    gateway: Any, signers: dict[str, PrivateKey], stack: contextlib.ExitStack, tmp_path: Path
) -> Callable[[], tuple[Runner, State, Any]]:
    system = systems.start("jiangsu_ccc", tmp_path, stack)

    def _make() -> tuple[Runner, State, Any]:
        adapter = load_adapter(system.config)
        client = GatewayClient(gateway.address, sender="CN-JS", signer=signers["CN-JS"])
        assert adapter.config is not None
        state = State(adapter.config.state_dir)
        runner = Runner(adapter, client, state, signer=signers["CN-JS"], batch_size=100, out=io.StringIO())
        stack.callback(runner.close)
        return runner, state, adapter

    return _make


def log_entries(gateway: Any, record: Any = None) -> int:
    query = select(func.count()).select_from(exchanges)
    if record is not None:
        query = query.where(
            exchanges.c.record_key == record.key, exchanges.c.record_version == record.version
        )
    with gateway.engines.reader.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_reconciliation_does_not_resend_what_the_runner_sent(gateway: Any, jiangsu: Any) -> None:
    runner, state, adapter = jiangsu()
    summary = runner.run_once()
    assert summary.accepted > 0
    receipts = {r["message_id"]: r["log_index"] for r in state.lines("receipts.jsonl")}
    records = [m.record for m in adapter.snapshot() if m.record is not None][:3]
    assert all(message_id(r) in receipts for r in records)
    before = log_entries(gateway)

    done = send_missing(runner, records)

    assert done.sent == {} and done.refused == {}
    assert done.already == {r.key: receipts[message_id(r)] for r in records}
    assert log_entries(gateway) == before  # no second entry, not even a refused one


def test_the_runner_does_not_resend_what_reconciliation_sent(gateway: Any, jiangsu: Any) -> None:
    runner, state, adapter = jiangsu()
    records = [m.record for m in adapter.snapshot() if m.record is not None][:2]
    done = send_missing(runner, records)
    assert set(done.sent) == {r.key for r in records} and not done.refused
    assert state.pending() is None and state.cursor() is None  # the runner's cursor is untouched
    assert [e["message_id"] for e in state.lines(RECONCILED)] == [message_id(r) for r in records]

    summary = runner.run_once()  # reads every row, the two above included

    assert "MESSAGE_ID_REUSED" not in summary.refused
    for record in records:
        assert log_entries(gateway, record) == 1
    receipts = state.lines("receipts.jsonl")
    assert len({r["message_id"] for r in receipts}) == len(receipts)  # every id receipted once
    # ... and a second reconciliation finds their original receipts.
    again = send_missing(runner, records)
    assert again.already == done.sent and not again.sent
