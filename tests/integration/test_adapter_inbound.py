"""The inbound direction against a real gateway: another province's change, published by
its own adapter, arrives in the Shanghai local table through the Shanghai adapter's sink;
a feed interrupted by a gateway restart resumes with no loss and no duplicate; a tampered
envelope is refused and not applied.

Jiangsu and Shanghai are both in the YRD alliance, whose agreement covers CCC certificate
statuses (keys/federation.toml): the gateway sends Shanghai Jiangsu's changes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters import load_adapter
from adapters.inbound import (
    CURSOR_NAME,
    InboundRefused,
    apply_changes,
    federation_keys,
    follow,
    start_index,
)
from adapters.runner import Runner
from adapters.state import State
from gateway.client import GatewayClient
from gateway.crypto.suites import PrivateKey
from gateway.pb import envelope_pb2
from gateway.registry.federation import Federation
from gateway.server import start_gateway

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


def _publish(system: Any, address: str, signer: PrivateKey, stack: contextlib.ExitStack) -> dict[str, int]:
    """Run the system's adapter once; returns record key -> newest accepted version."""
    adapter = load_adapter(system.config)
    assert adapter.config is not None
    client = GatewayClient(address, sender=system.participant, signer=signer)
    runner = Runner(
        adapter, client, State(adapter.config.state_dir), signer=signer, batch_size=100, out=io.StringIO()
    )
    stack.callback(runner.close)
    summary = runner.run_once()
    assert summary.accepted > 0
    accepted: dict[str, int] = {}
    for m in adapter.snapshot():
        if m.record is not None:
            accepted[m.record.key] = max(accepted.get(m.record.key, 0), m.record.version)
    # The one change the gateway refused (a suspension after a withdrawal) is not in the log.
    state = State(adapter.config.state_dir)
    refused = {r["message_id"] for r in state.lines("rejects.jsonl") if "message_id" in r}
    from adapters.mapping import message_id

    for m in adapter.snapshot():
        if m.record is not None and message_id(m.record) in refused:
            older = [
                x.record.version
                for x in adapter.snapshot()
                if x.record is not None
                and x.record.key == m.record.key
                and x.record.version < m.record.version
            ]
            accepted[m.record.key] = max(older)
    return accepted


def _inbound_rows(url: str) -> dict[str, tuple[str, int]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT scheme_name, cert_no, source_province, version FROM sh_inbound_cert"
            ).all()
    finally:
        engine.dispose()
    return {f"certificate_status/{r[0]}/{r[1]}": (r[2], int(r[3])) for r in rows}


def _shanghai(tmp_path: Path, stack: contextlib.ExitStack) -> tuple[Any, Any, State]:
    system = systems.start("shanghai_certs", tmp_path, stack)
    adapter = load_adapter(system.config)
    assert adapter.config is not None and adapter.sink is not None
    return system, adapter, State(adapter.config.state_dir)


def test_a_jiangsu_change_arrives_in_the_shanghai_table_verified(
    gateway: Any,
    signers: dict[str, PrivateKey],
    federation: Federation,
    tmp_path: Path,
    stack: contextlib.ExitStack,
) -> None:
    js = systems.start("jiangsu_ccc", tmp_path, stack)
    sent = _publish(js, gateway.address, signers["CN-JS"], stack)
    sh, adapter, state = _shanghai(tmp_path, stack)
    _publish(sh, gateway.address, signers["CN-SH"], stack)  # Shanghai's own: never written back
    client = GatewayClient(gateway.address, sender="CN-SH", signer=signers["CN-SH"])
    stack.callback(client.close)
    summary = follow(
        client,
        adapter.sink,
        state,
        participant="CN-SH",
        keys_of=federation_keys(federation),
        kinds=["certificate_status"],
        until_caught_up=True,
    )
    rows = _inbound_rows(sh.db_url)
    assert rows == {key: ("CN-JS", version) for key, version in sent.items()}
    # Every change Jiangsu's adapter got a receipt for was applied, in log order.
    assert summary.applied == len(State(js.dir / "state").lines("receipts.jsonl"))
    assert summary.own > 0
    # The cursor is past everything seen; a second run finds nothing new and changes nothing.
    assert start_index(state) > 0
    again = follow(
        client,
        adapter.sink,
        state,
        participant="CN-SH",
        keys_of=federation_keys(federation),
        kinds=["certificate_status"],
        until_caught_up=True,
    )
    assert (again.received, again.applied) == (0, 0)
    # A new Jiangsu change (a suspension) reaches the table in Shanghai's words (status code 2).
    data = js.dir / "jiangsu_ccc.csv"
    lines = data.read_bytes().decode("gbk").strip().splitlines()
    first = lines[1].split(",")
    first[0] = str(int(lines[-1].split(",")[0]) + 1)
    first[7], first[8], first[9] = "暂停", "监督抽查不合格，暂停证书", "2026-11-20 10:00:00"
    data.write_bytes((data.read_bytes().decode("gbk") + ",".join(first) + "\r\n").encode("gbk"))
    _publish(js, gateway.address, signers["CN-JS"], stack)
    later = follow(
        client,
        adapter.sink,
        state,
        participant="CN-SH",
        keys_of=federation_keys(federation),
        kinds=["certificate_status"],
        until_caught_up=True,
    )
    assert later.applied == 1
    engine = sa.create_engine(sh.db_url)
    with engine.connect() as conn:
        status, reason, version = conn.exec_driver_sql(
            "SELECT status_code, status_reason, version FROM sh_inbound_cert WHERE cert_no = ?", (first[1],)
        ).one()
    engine.dispose()
    assert (status, reason, int(version)) == ("2", "监督抽查不合格，暂停证书", int(first[0]))


def test_a_tampered_envelope_is_refused_and_not_applied(
    gateway: Any,
    signers: dict[str, PrivateKey],
    federation: Federation,
    tmp_path: Path,
    stack: contextlib.ExitStack,
) -> None:
    js = systems.start("jiangsu_ccc", tmp_path, stack)
    _publish(js, gateway.address, signers["CN-JS"], stack)
    sh, adapter, state = _shanghai(tmp_path, stack)
    with GatewayClient(gateway.address, sender="CN-SH", signer=signers["CN-SH"]) as client:
        changes = list(client.subscribe(kinds=["certificate_status"], until_caught_up=True))[:3]
    assert len(changes) == 3
    # The third change's payload altered after the issuer signed it (one byte of the holder).
    third = changes[2]
    payload = bytearray(third.envelope.payload)
    at = payload.find(third.record.holder.name.encode())
    payload[at] ^= 0x01
    forged = envelope_pb2.Envelope()
    forged.CopyFrom(third.envelope)
    forged.payload = bytes(payload)
    tampered = type(third)(third.log_index, third.record_key, forged, third.record)
    with pytest.raises(InboundRefused, match=f"log index {third.log_index}: issuer CN-JS's signature"):
        apply_changes(
            [changes[0], changes[1], tampered],
            adapter.sink,
            state,
            keys_of=federation_keys(federation),
            skip_issuers=("CN-SH",),
        )
    rows = _inbound_rows(sh.db_url)
    assert set(rows) == {changes[0].record_key, changes[1].record_key}
    # The cursor stays at the refused change: the next run starts there, not after it.
    assert state.cursor(CURSOR_NAME) == str(third.log_index)


def test_a_feed_cut_by_a_gateway_restart_resumes_with_no_loss_and_no_duplicate(
    database_url: str,
    federation: Federation,
    signers: dict[str, PrivateKey],
    open_store: Callable[[str], Any],
    tmp_path: Path,
    stack: contextlib.ExitStack,
) -> None:
    engines = open_store(database_url)

    def start(address: str = "127.0.0.1:0") -> Any:
        return start_gateway(
            federation=federation,
            engines=engines,
            gateway_key=signers[federation.gateway_code],
            address=address,
            writer_mode="thread",
        )

    gw = start()
    address = gw.address
    js = systems.start("jiangsu_ccc", tmp_path, stack)
    sent = _publish(js, address, signers["CN-JS"], stack)
    sh, adapter, state = _shanghai(tmp_path, stack)
    applied: list[str] = []
    inner = adapter.sink

    class CountingSink:
        mapping = inner.mapping

        def apply(self, record: Any) -> bool:
            applied.append(f"{record.key}@{record.version}")
            return inner.apply(record)

    stop = threading.Event()
    result: dict[str, Any] = {}
    client = GatewayClient(address, sender="CN-SH", signer=signers["CN-SH"], timeout=5)

    def run() -> None:
        try:
            result["summary"] = follow(
                client,
                CountingSink(),
                state,
                participant="CN-SH",
                keys_of=federation_keys(federation),
                kinds=["certificate_status"],
                until_caught_up=False,  # live, as `mrx adapter run` without --once
                retry_seconds=5,
                retry_wait=0.1,
                stop=stop,
            )
        except BaseException as err:  # reported to the test thread
            result["error"] = err

    def wait_for(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: len(applied) == len(State(js.dir / "state").lines("receipts.jsonl")))
    # A quiet feed for longer than the retry budget: the budget counts from the first
    # failure, so the drop below is still retried.
    time.sleep(5.5)
    # The gateway goes away under a live subscription and comes back on the same port.
    gw.stop()
    gw = start(address)
    stack.callback(gw.stop)
    # A change published after the restart reaches the table through the resumed feed.
    data = js.dir / "jiangsu_ccc.csv"
    text = data.read_bytes().decode("gbk")
    lines = text.strip().splitlines()
    row = lines[1].split(",")
    row[0] = str(int(lines[-1].split(",")[0]) + 1)
    row[7], row[8], row[9] = "暂停", "监督抽查不合格，暂停证书", "2026-11-20 10:00:00"
    data.write_bytes((text + ",".join(row) + "\r\n").encode("gbk"))
    sent.update(_publish(js, address, signers["CN-JS"], stack))
    key = f"certificate_status/CCC/{row[1]}"
    wait_for(lambda: _inbound_rows(sh.db_url).get(key) == ("CN-JS", int(row[0])))
    stop.set()
    client.close()  # ends the live call; follow returns what it did
    thread.join(30)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary.reconnects >= 1
    # Every Jiangsu change exactly once: one applied twice would appear twice here.
    assert len(applied) == len(set(applied)) == len(State(js.dir / "state").lines("receipts.jsonl"))
    assert _inbound_rows(sh.db_url) == {k: ("CN-JS", v) for k, v in sent.items()}


def test_a_refused_subscription_is_reported_with_the_gateways_reason_and_nothing_applied(
    gateway: Any, federation: Federation, tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    from gateway.crypto.suites import Suite

    sh, adapter, state = _shanghai(tmp_path, stack)
    unknown = PrivateKey.generate(Suite.ED25519, "CN-SH/not-registered")
    client = GatewayClient(gateway.address, sender="CN-SH", signer=unknown)
    stack.callback(client.close)
    with pytest.raises(
        InboundRefused, match=r"the gateway refused the subscription: UNAUTHENTICATED UNKNOWN_KEY"
    ):
        follow(
            client,
            adapter.sink,
            state,
            participant="CN-SH",
            keys_of=federation_keys(federation),
            kinds=["certificate_status"],
            until_caught_up=True,
            retry_wait=0.01,
        )
    assert _inbound_rows(sh.db_url) == {} and state.cursor(CURSOR_NAME) is None


def test_a_runner_dying_between_a_batch_commit_and_its_cursor_resumes_with_no_loss(
    gateway: Any,
    signers: dict[str, PrivateKey],
    federation: Federation,
    tmp_path: Path,
    stack: contextlib.ExitStack,
) -> None:
    js = systems.start("jiangsu_ccc", tmp_path, stack)
    sent = _publish(js, gateway.address, signers["CN-JS"], stack)
    sh, adapter, state = _shanghai(tmp_path, stack)

    class Crash(Exception):
        pass

    class DyingState(State):
        """Dies on the second inbound cursor save: after its batch was committed locally."""

        saves = 0

        def save_cursor(self, cursor: str | None, name: str = "cursor") -> None:
            if name == CURSOR_NAME:
                DyingState.saves += 1
                if DyingState.saves == 2:
                    raise Crash(cursor)
            super().save_cursor(cursor, name)

    batches: list[list[str]] = []
    inner = adapter.sink

    class RecordingSink:
        def apply(self, record: Any) -> bool:
            raise AssertionError("the SQL sink is given batches")

        def apply_batch(self, records: Any) -> list[bool]:
            batches.append([f"{r.key}@{r.version}" for r in records])
            result: list[bool] = inner.apply_batch(records)
            return result

    client = GatewayClient(gateway.address, sender="CN-SH", signer=signers["CN-SH"])
    stack.callback(client.close)
    kwargs: dict[str, Any] = dict(
        participant="CN-SH",
        keys_of=federation_keys(federation),
        kinds=["certificate_status"],
        until_caught_up=True,
        batch_size=3,
    )
    with pytest.raises(Crash):
        follow(client, RecordingSink(), DyingState(state.dir), **kwargs)
    assert len(batches) == 2 and all(len(b) == 3 for b in batches)
    assert len(_inbound_rows(sh.db_url)) > 0  # the second batch is in the table, its cursor is not saved
    died_in = batches[1]
    summary = follow(client, RecordingSink(), state, **kwargs)
    # The restart begins with the batch that died: re-applied, changing nothing; nothing lost.
    assert batches[2][: len(died_in)] == died_in
    assert summary.unchanged == len(died_in)
    assert _inbound_rows(sh.db_url) == {key: ("CN-JS", version) for key, version in sent.items()}
