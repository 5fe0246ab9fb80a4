"""`mrx reconcile run --participant CN-JS --adapter CONFIG` as a province runs it, against a
real `mrx serve` process and the Jiangsu CSV system of the adapter tests; and a gateway
killed with SIGKILL in the middle of a participant's run."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters import load_adapter
from gateway.client import GatewayClient, ReconcileClient
from gateway.crypto.suites import PrivateKey
from gateway.pb import reconcile_pb2
from gateway.reconcile.digests import message_id
from gateway.registry.keygen import write_demo_federation

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MRX = [sys.executable, "-m", "gateway.cli"]
_spec = importlib.util.spec_from_file_location("adapter_systems", ROOT / "tests/fixtures/adapters/systems.py")
assert _spec is not None and _spec.loader is not None
systems = sys.modules.setdefault("adapter_systems", importlib.util.module_from_spec(_spec))
if not hasattr(systems, "start"):
    _spec.loader.exec_module(systems)


def mrx(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MRX, *args], capture_output=True, text=True, timeout=timeout, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(fed: Path, paths: dict[str, Path], database: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*MRX, "serve", "--address", f"127.0.0.1:{port}", "--federation", str(fed),
         "--database", str(database), "--gateway-key", str(paths["MRX-GW"]),
         "--gateway-keyid", "MRX-GW/demo", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a kill takes the writer too
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving on" in line, line + proc.stdout.read()
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)


@pytest.fixture
def province(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A federation, a real `mrx serve` on SQLite, and Jiangsu's CSV adapter pointed at it."""
    paths = write_demo_federation(template_dir=ROOT / "keys", dest=tmp_path / "fed", now=datetime.now(UTC))
    port = free_port()
    database = tmp_path / "mrx.db"
    with contextlib.ExitStack() as stack:
        system = systems.start("jiangsu_ccc", tmp_path, stack)
        text = system.config.read_text("utf-8").replace(
            '[gateway]\naddress = "127.0.0.1:1"',
            f'[gateway]\naddress = "127.0.0.1:{port}"\nkey = "{paths["CN-JS"]}"\nkeyid = "CN-JS/demo"\n'
            f'federation = "{tmp_path / "fed"}"',
        )
        system.config.write_text(text, "utf-8")
        gw = serve(tmp_path / "fed", paths, database, port)
        out = {"paths": paths, "port": port, "database": database, "system": system, "fed": tmp_path / "fed"}
        out["gw"] = gw
        try:
            yield out
        finally:
            stop(out["gw"])


def reconcile_args(p: dict[str, Any]) -> list[str]:
    return [
        "reconcile", "run", "--participant", "CN-JS", "--adapter", str(p["system"].config),
        "--address", f"127.0.0.1:{p['port']}", "--key", str(p["paths"]["CN-JS"]), "--keyid", "CN-JS/demo",
        "--federation", str(p["fed"]), "--no-progress", "--json",
    ]  # fmt: skip


def test_reconcile_run_with_an_adapter_reports_bad_rows_sends_what_is_missing_once(
    province: dict[str, Any],
) -> None:
    system, port = province["system"], province["port"]
    adapter = load_adapter(system.config)
    records = [m.record for m in adapter.snapshot() if m.record is not None]
    latest = {r.key: r for r in records}  # the snapshot's view of each record
    # The gateway already holds all but the last five (sent by some earlier means).
    held, missing = list(latest.values())[:-5], list(latest.values())[-5:]
    signer = PrivateKey.load(province["paths"]["CN-JS"], "CN-JS/demo")
    with GatewayClient(f"127.0.0.1:{port}", sender="CN-JS", signer=signer) as js:
        outcomes = js.submit_batch([js.sign(r, message_id=message_id(r)) for r in held])
        assert all(o.receipt is not None for o in outcomes)

    # Without --yes and no terminal: shown, not sent.
    first = mrx(*reconcile_args(province))
    assert first.returncode == 1, first.stderr
    report = json.loads(first.stdout)
    assert report["summary"]["MISSING_AT_GATEWAY"] == 5
    assert {d["record_key"] for d in report["discrepancies"] if d["class"] == "MISSING_AT_GATEWAY"} == {
        r.key for r in missing
    }
    # The fixture's malformed rows are in the report, and the run went on past them.
    bad = system.expected["bad"]
    assert {p["where"] for p in report["problems"]} >= set(bad) - {"line 304"}
    assert "not sent: no terminal to confirm on" in first.stderr

    sent = mrx(*reconcile_args(province), "--yes")
    assert sent.returncode == 1, sent.stderr
    assert "sent 5, already sent earlier 0, refused 0" in sent.stderr
    # Through the runner's path: the receipts are in the adapter's state directory.
    state = system.config.parent / "state"
    reconciled = [json.loads(line) for line in (state / "reconciled.jsonl").read_text("utf-8").splitlines()]
    assert {e["record_key"] for e in reconciled} == {r.key for r in missing}

    again = mrx(*reconcile_args(province), "--yes")
    after = json.loads(again.stdout)
    assert after["summary"]["MISSING_AT_GATEWAY"] == 0, again.stderr
    assert "missing at the gateway" not in again.stderr

    # A record already sent is not sent again: the receipt on record answers for it.
    assert len((state / "receipts.jsonl").read_text("utf-8").splitlines()) == 5


def test_a_gateway_killed_mid_run_abandons_it_at_the_next_start_and_the_next_run_has_one_report(
    province: dict[str, Any],
) -> None:
    port = province["port"]
    signer = PrivateKey.load(province["paths"]["CN-JS"], "CN-JS/demo")
    with ReconcileClient(f"127.0.0.1:{port}", sender="CN-JS", signer=signer) as js:
        started = js.call("StartRun", reconcile_pb2.StartRunRequest(participant="CN-JS"))
    os.killpg(province["gw"].pid, signal.SIGKILL)  # mid-run: no drain, no goodbye
    province["gw"].wait(timeout=30)
    # A lease of 1 s, lapsed by the time the gateway is back: its start abandons the run.
    time.sleep(1.5)
    province["gw"] = serve(
        province["fed"], province["paths"], province["database"], port, "--reconcile-lease", "1"
    )
    done = mrx(*reconcile_args(province), "--no-submit")
    assert done.returncode in (0, 1), done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    sec = PrivateKey.load(province["paths"]["YRD-SEC"], "YRD-SEC/demo")
    with ReconcileClient(f"127.0.0.1:{port}", sender="YRD-SEC", signer=sec) as reader:
        runs = {
            i.run.run_id: i.run
            for i in reader.list_runs(participant="CN-JS")
            if i.WhichOneof("item") == "run"
        }
        assert runs[started.run_id].status == reconcile_pb2.RUN_STATUS_ABANDONED
        assert runs[run_id].status == reconcile_pb2.RUN_STATUS_COMPLETE
        assert set(runs) == {started.run_id, run_id}
        reader.get_report(run_id)  # verified against the gateway key
        with pytest.raises(grpc.RpcError) as refused:
            reader.get_report(started.run_id)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_adapter_config_without_a_key_sends_nothing_and_says_why(province: dict[str, Any]) -> None:
    config = province["system"].config
    text = config.read_text("utf-8")
    config.write_text("\n".join(line for line in text.splitlines() if not line.startswith("key =")), "utf-8")
    done = mrx(*reconcile_args(province), "--yes")
    assert done.returncode == 2, done.stderr
    assert "not sent" in done.stderr and "[gateway] key" in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout)["summary"]["MISSING_AT_GATEWAY"] > 0  # the report is still printed
