"""The adapter runner against a real gateway (port 0, real database): first loads,
only-new changes, receipts before cursors, refusals reported, a gateway that goes away
and comes back, a crash between sending and saving the cursor."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import load_adapter
from adapters.mapping import message_id
from adapters.runner import GatewayUnavailable, Runner
from adapters.state import State
from gateway.client import GatewayClient
from gateway.crypto.suites import PrivateKey
from gateway.domain.certificates import CertState, Scheme
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


@pytest.fixture
def runner_for(
    signers: dict[str, PrivateKey], stack: contextlib.ExitStack
) -> Callable[..., tuple[Runner, State]]:
    def _make(system: Any, address: str, **kwargs: Any) -> tuple[Runner, State]:
        adapter = load_adapter(system.config)
        client = GatewayClient(address, sender=system.participant, signer=signers[system.participant])
        stack.callback(client.close)
        assert adapter.config is not None
        state = State(adapter.config.state_dir)
        kwargs.setdefault("out", io.StringIO())
        kwargs.setdefault("retry_wait", 0.05)
        runner = Runner(adapter, client, state, signer=signers[system.participant], batch_size=100, **kwargs)
        return runner, state

    return _make


@pytest.mark.parametrize("name", systems.NAMES)
def test_first_load_sends_every_good_row_once_and_reports_the_bad(
    name: str, gateway: Any, runner_for: Callable[..., Any], tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    system = systems.start(name, tmp_path, stack)
    runner, state = runner_for(system, gateway.address)
    summary = runner.run_once()
    good, bad = system.expected["good"], system.expected["bad"]
    assert (summary.mapped, summary.unmappable) == (good, len(bad))
    assert summary.sent == good
    assert summary.accepted + sum(summary.refused.values()) == good
    assert dict(summary.refused) == system.expected.get("refused", {})
    rejects = state.lines("rejects.jsonl")
    unmapped = {r["where"]: r["field"] for r in rejects if "field" in r}
    assert unmapped == {where: cols[0] for where, cols in bad.items()}
    receipts = state.lines("receipts.jsonl")
    assert len(receipts) == summary.accepted
    assert len({r["log_index"] for r in receipts}) == len(receipts)
    assert state.cursor() is not None and state.pending() is None
    # Nothing new: a second pass reads nothing and sends nothing.
    again = runner.run_once()
    assert (again.read, again.sent) == (0, 0)


def test_only_rows_after_the_cursor_are_sent(
    gateway: Any, runner_for: Callable[..., Any], tmp_path: Path, signers: dict[str, PrivateKey]
) -> None:
    with contextlib.ExitStack() as stack:
        system = systems.start("jiangsu_ccc", tmp_path, stack)
        runner, state = runner_for(system, gateway.address)
        first = runner.run_once()
        data = system.dir / "jiangsu_ccc.csv"
        last = data.read_bytes().decode("gbk").strip().splitlines()[-1].split(",")
        new = [
            str(int(last[0]) + 1),
            "2026011001999001",
            "强制性产品认证",
            "CNCA-R-2002-001",
            "苏州新增电子有限公司",
            last[5],
            "微型计算机",
            "有效",
            "",
            "2026-11-20 10:00:00",
            "2026年11月01日",
            "2031年10月31日",
        ]
        with data.open("ab") as f:
            f.write((",".join(new) + "\r\n").encode("gbk"))
        second = runner.run_once()
        assert (second.read, second.sent, second.accepted) == (1, 1, 1)
        assert state.cursor() == new[0]
        assert first.accepted + 1 == len(state.lines("receipts.jsonl"))
        with GatewayClient(gateway.address, sender="CN-SH", signer=signers["CN-SH"]) as reader:
            view = reader.get_certificate(Scheme.CCC, "2026011001999001")
            assert view.certificate.holder.name == "苏州新增电子有限公司"
            assert view.certificate.version == int(new[0])
            # The 过期 row went out as VALID with its past expiry: the gateway derives EXPIRED.
            expired = reader.get_certificate(Scheme.CCC, "2024010701080003")
            assert expired.effective_state == CertState.EXPIRED
            assert expired.certificate.state == CertState.VALID


def test_gateway_refusals_are_reported_not_retried(
    gateway: Any, runner_for: Callable[..., Any], tmp_path: Path, signers: dict[str, PrivateKey]
) -> None:
    with contextlib.ExitStack() as stack:
        system = systems.start("jiangsu_ccc", tmp_path, stack)
        adapter = load_adapter(system.config)
        first = next(m.record for m in adapter.changes(None) if m.record is not None)
        # Someone else already published a much newer version of the first certificate.
        import dataclasses

        with GatewayClient(gateway.address, sender="CN-JS", signer=signers["CN-JS"]) as client:
            client.publish(dataclasses.replace(first, version=10_000))
        runner, state = runner_for(system, gateway.address)
        summary = runner.run_once()
        assert summary.refused["STALE_VERSION"] == 3  # v1, and the suspension and reinstatement after it
        refused = [r for r in state.lines("rejects.jsonl") if r.get("reason") == "STALE_VERSION"]
        assert [r["where"] for r in refused] == ["line 2", "line 292", "line 293"]
        assert runner.run_once().sent == 0  # reported once, not retried forever


def test_a_crash_after_sending_resends_the_same_envelopes_and_gets_the_original_receipts(
    gateway: Any, runner_for: Callable[..., Any], tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        system = systems.start("guangdong_reports", tmp_path, stack)

        def crash() -> None:
            raise KeyboardInterrupt("power cut")

        runner, state = runner_for(system, gateway.address, after_send=crash)
        with pytest.raises(KeyboardInterrupt):
            runner.run_once()
        pending = state.pending()
        assert pending is not None and state.cursor() is None  # sent, committed, not yet acknowledged here
        runner, state = runner_for(system, gateway.address)
        summary = runner.run_once()
        assert state.pending() is None
        receipts = state.lines("receipts.jsonl")
        first_batch = receipts[: len(pending.envelopes)]
        # Same message ids as the envelopes in the outbox, and each accepted exactly once.
        from gateway.pb import records_pb2

        sent_ids = [records_pb2.Submission.FromString(e.payload).header.message_id for e in pending.envelopes]
        assert [r["message_id"] for r in first_batch] == sent_ids
        assert len({r["log_index"] for r in receipts}) == len(receipts) == summary.accepted


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_gateway_that_goes_away_mid_run_and_comes_back_loses_nothing_and_sends_nothing_twice(
    database_url: str,
    federation: Federation,
    signers: dict[str, PrivateKey],
    open_store: Callable[[str], Any],
    runner_for: Callable[..., Any],
    tmp_path: Path,
) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"

    def start() -> Any:
        return start_gateway(
            federation=federation,
            engines=open_store(database_url),
            gateway_key=signers[federation.gateway_code],
            address=address,
            writer_mode="thread",
        )

    running = [start()]
    batches = [0]
    restarted = threading.Event()

    def after_send() -> None:
        batches[0] += 1
        if batches[0] == 1:
            running[0].stop()  # the gateway goes away after the first batch was answered

            def come_back() -> None:
                running.append(start())
                restarted.set()

            threading.Timer(1.0, come_back).start()

    with contextlib.ExitStack() as stack:
        system = systems.start("jiangsu_ccc", tmp_path, stack)
        try:
            runner, state = runner_for(system, address, after_send=after_send, retry_seconds=60)
            summary = runner.run_once()
            assert restarted.is_set()
            good = system.expected["good"]
            assert (summary.sent, dict(summary.refused)) == (good, system.expected["refused"])
            assert summary.accepted == good - 1
            answered = state.lines("receipts.jsonl") + state.lines("rejects.jsonl")
            ids = [r["message_id"] for r in answered if "message_id" in r]
            assert len(ids) == len(set(ids)) == good
            adapter = load_adapter(system.config)
            assert set(ids) == {message_id(m.record) for m in adapter.snapshot() if m.record is not None}
            # A second pass after the outage sends nothing again.
            assert runner.run_once().sent == 0
        finally:
            for gw in running:
                gw.stop()


def test_an_unreachable_gateway_keeps_the_batch_in_the_outbox(
    runner_for: Callable[..., Any], tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        system = systems.start("guangdong_reports", tmp_path, stack)
        runner, state = runner_for(system, f"127.0.0.1:{_free_port()}", retry_seconds=0.5)
        with pytest.raises(GatewayUnavailable, match="outbox"):
            runner.run_once()
        assert state.pending() is not None and state.cursor() is None


def test_dry_run_sends_nothing_and_keeps_the_cursor(
    gateway: Any, runner_for: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.ExitStack() as stack:
        system = systems.start("jiangsu_ccc", tmp_path, stack)
        out = io.StringIO()
        runner, state = runner_for(system, gateway.address, out=out, progress=True)
        summary = runner.run_once(dry_run=True)
        assert "reading: " in capsys.readouterr().err  # the progress bar
        assert summary.sent == 0 and summary.mapped == system.expected["good"]
        text = out.getvalue()
        assert text.count("would send certificate_status/CCC/") == system.expected["good"]
        assert "cannot map line 296: 统一社会信用代码: check character" in text
        assert state.cursor() is None and state.pending() is None
        assert runner.run_once().accepted == system.expected["good"] - 1  # one ILLEGAL_TRANSITION


def test_a_lost_cursor_resends_nothing_under_a_new_id(
    gateway: Any, runner_for: Callable[..., Any], tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        system = systems.start("guangdong_reports", tmp_path, stack)
        runner, _ = runner_for(system, gateway.address)
        first = runner.run_once()
        (system.dir / "state" / "cursor.json").unlink()  # the state directory was lost
        again = runner.run_once()
        # Every change re-read has its original message id: the gateway refuses each as a
        # reused id (new signing time, so other bytes) and records nothing twice.
        assert again.accepted == 0 and again.sent == first.sent
        assert again.refused["MESSAGE_ID_REUSED"] == first.accepted


def test_envelopes_found_too_old_are_signed_again_under_the_same_ids(
    gateway: Any, runner_for: Callable[..., Any], tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    calls = [0]

    def clock() -> datetime:
        # The first batch is signed by a clock two hours slow (as after a long outage,
        # when the outbox's envelopes have aged); everything after by the right one.
        calls[0] += 1
        return datetime.now(UTC) - (timedelta(hours=2) if calls[0] <= 100 else timedelta(0))

    with contextlib.ExitStack() as stack:
        system = systems.start("guangdong_reports", tmp_path, stack)
        runner, state = runner_for(system, gateway.address, clock=clock)
        summary = runner.run_once()
        assert "STALE_MESSAGE" not in summary.refused
        assert calls[0] == system.expected["good"] + 100  # the first batch was signed twice
        assert summary.accepted == system.expected["good"] - 1
        adapter = load_adapter(system.config)
        derived = {message_id(m.record) for m in adapter.snapshot() if m.record is not None}
        assert {r["message_id"] for r in state.lines("receipts.jsonl")} <= derived


def test_an_api_failing_mid_pass_keeps_what_was_sent_and_the_next_pass_sends_the_rest(
    gateway: Any, runner_for: Callable[..., Any], tmp_path: Path
) -> None:
    from adapters import SourceError

    with contextlib.ExitStack() as stack:
        system = systems.start("zhejiang_ms", tmp_path, stack)
        system.api.fail_after = 2  # pages 1 and 2 (100 rows) answer, page 3 never does
        runner, state = runner_for(system, gateway.address)
        with pytest.raises(SourceError, match="page 3: HTTP 500 after 3 attempt"):
            runner.run_once()
        assert state.cursor() == "1099" and state.pending() is None  # the 100 rows of pages 1-2
        first = len(state.lines("receipts.jsonl"))
        assert first == 100
        system.api.fail_after = None
        rest = runner.run_once()
        assert rest.read == system.expected["good"] + len(system.expected["bad"]) - 100
        ids = [r["message_id"] for r in state.lines("receipts.jsonl")]
        assert len(ids) == len(set(ids)) == system.expected["good"]
