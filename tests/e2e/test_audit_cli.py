"""``mrx audit export / verify / watch`` run as a secretariat runs them, against a live gateway.

The gateway runs in-process (so tests can checkpoint on demand and tamper with its
database); the command line runs as a separate process, as a user would run it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.audit import merkle
from gateway.client import GatewayClient, SubmissionRefused
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates
from gateway.pb import audit_pb2, envelope_pb2
from gateway.registry.federation import Federation
from gateway.registry.keygen import write_demo_federation
from gateway.server import CHINA, Gateway, start_gateway
from gateway.store.engine import Engines, open_engines

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MRX = [sys.executable, "-m", "gateway.cli"]


def mrx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MRX, *args], capture_output=True, text=True, timeout=120, check=False)


@dataclass
class Live:
    gateway: Gateway
    engines: Engines
    database: Path

    @property
    def address(self) -> str:
        return self.gateway.address

    def checkpoint(self) -> int | None:
        return self.gateway.checkpointer.checkpoint_now()

    def stop(self) -> None:
        self.gateway.stop()
        self.engines.dispose()


@pytest.fixture
def start(
    tmp_path: Path, base_federation: Federation, signers: dict[str, PrivateKey]
) -> Iterator[Callable[[], Live]]:
    """``start()``: a gateway on the real clock and a SQLite file (the same file on every call)."""
    running: list[Live] = []
    database = tmp_path / "gateway.db"

    def _start() -> Live:
        engines = open_engines(f"sqlite:///{database}")
        gw = start_gateway(
            federation=base_federation,
            engines=engines,
            gateway_key=signers["MRX-GW"],
            checkpoint_interval=3600,
        )
        live = Live(gw, engines, database)
        running.append(live)
        return live

    yield _start
    for live in running:
        live.stop()


def publish(
    live: Live, signers: dict[str, PrivateKey], code: str, count: int, start_serial: int = 1
) -> list[int]:
    today = datetime.now(UTC).astimezone(CHINA).date()
    with GatewayClient(live.address, sender=code, signer=signers[code]) as client:
        return [
            client.publish(cert).log_index
            for cert in demo_certificates(code, count=count, start_serial=start_serial, today=today)
        ]


def principal_args(live: Live, federation_paths: dict[str, Path], code: str) -> list[str]:
    return [
        "--address",
        live.address,
        "--principal",
        code,
        "--key",
        str(federation_paths[code]),
        "--keyid",
        f"{code}/demo",
    ]


# --- export and verify ------------------------------------------------------------------------


@pytest.fixture
def exported(start, signers, federation_paths, tmp_path):
    """A YRD bundle of a log with YRD and BTH exchanges and a logged refusal."""
    live = start()
    yrd = publish(live, signers, "CN-JS", 3) + publish(live, signers, "CN-SH", 2)
    publish(live, signers, "CN-BJ", 2)
    with GatewayClient(live.address, sender="CN-BJ", signer=signers["CN-BJ"]) as client:
        foreign = demo_certificates("CN-JS", count=1, start_serial=30, today=datetime.now(CHINA).date())[0]
        with pytest.raises(SubmissionRefused) as info:
            client.publish(foreign)
    assert info.value.refusal.reason == "NOT_ISSUER"
    yrd.append(int(info.value.refusal.metadata["log_index"]))
    assert live.checkpoint() == 8
    bundle = tmp_path / "yrd.json"
    result = mrx(
        "audit",
        "export",
        *principal_args(live, federation_paths, "YRD-SEC"),
        "--alliance",
        "YRD",
        "-o",
        str(bundle),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return live, bundle, sorted(yrd)


def test_export_writes_a_bundle_that_verifies_offline(exported, federation_dir):
    live, bundle, yrd = exported
    doc = json.loads(bundle.read_text())
    assert [e["log_index"] for e in doc["entries"]] == yrd
    assert doc["export"]["exported_by"] == "YRD-SEC" and doc["export"]["filters"]["alliance"] == "YRD"
    assert {k["keyid"] for k in doc["signer_keys"]} == {"CN-JS/demo", "CN-SH/demo", "CN-BJ/demo"}
    live.stop()  # no server from here on

    result = mrx("audit", "verify", str(bundle), "--federation", str(federation_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result: PASS" in result.stdout
    assert f"entries: {len(yrd)} (accepted 5, refused 1); {len(yrd)} verified" in result.stdout
    assert f"root {doc['checkpoint']['root_hash']}" in result.stdout and "tree size 8" in result.stdout
    assert "refusal reasons: NOT_ISSUER 1" in result.stdout
    assert "warning" not in result.stderr


def test_verify_warns_when_the_gateway_key_is_not_pinned(exported, federation_dir):
    _, bundle, _ = exported
    result = mrx("audit", "verify", str(bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: the gateway key was taken from the bundle itself" in result.stderr
    pem = federation_dir / "public" / "MRX-GW_demo.pem"
    result = mrx("audit", "verify", str(bundle), "--gateway-key", str(pem))
    assert result.returncode == 0 and "warning" not in result.stderr, result.stdout + result.stderr


def test_verify_fails_against_another_federation(exported, tmp_path):
    _, bundle, _ = exported
    other = tmp_path / "other"
    write_demo_federation(template_dir=ROOT / "keys", dest=other, now=datetime.now(UTC))
    result = mrx("audit", "verify", str(bundle), "--federation", str(other))
    assert result.returncode == 1
    assert (
        "FAIL checkpoint.envelope: signature by MRX-GW/demo does not verify with pinned gateway key"
        in result.stdout
    )
    assert "FAIL gateway_keys[0] (MRX-GW/demo): differs from the pinned federation's key" in result.stdout
    assert "result: FAIL" in result.stdout


def test_verify_names_a_changed_entry(exported):
    _, bundle, yrd = exported
    doc = json.loads(bundle.read_text())
    envelope = doc["entries"][1]["envelope"]
    at = bundle.read_bytes().index(envelope.encode()) + 40
    data = bytearray(bundle.read_bytes())
    data[at] = ord("A") if data[at] != ord("A") else ord("B")
    bundle.write_bytes(bytes(data))
    result = mrx("audit", "verify", str(bundle))
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert f"FAIL entries[1].envelope (log index {yrd[1]}): SHA-256 of the envelope bytes" in result.stdout
    assert "FAIL entries: content does not match its digest sha256.entries" in result.stdout
    assert all("entries" in line for line in failures), failures
    assert "Traceback" not in result.stderr


def test_export_filters_by_time_and_refuses_what_the_principal_may_not_see(
    start, signers, federation_paths, tmp_path
):
    live = start()
    first = publish(live, signers, "CN-JS", 2)
    time.sleep(0.01)
    boundary = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    second = publish(live, signers, "CN-JS", 2, start_serial=10)
    live.checkpoint()
    js = principal_args(live, federation_paths, "CN-JS")
    early, late = tmp_path / "early.json", tmp_path / "late.json"
    assert mrx("audit", "export", *js, "--to", boundary, "-o", str(early)).returncode == 0
    assert mrx("audit", "export", *js, "--from", boundary, "-o", str(late)).returncode == 0
    assert [e["log_index"] for e in json.loads(early.read_text())["entries"]] == first
    assert [e["log_index"] for e in json.loads(late.read_text())["entries"]] == second

    denied = mrx("audit", "export", *js, "--alliance", "YRD", "-o", str(tmp_path / "x.json"))
    assert denied.returncode == 2
    assert "PERMISSION_DENIED OUTSIDE_SCOPE" in denied.stderr and "Traceback" not in denied.stderr
    assert not (tmp_path / "x.json").exists()
    again = mrx("audit", "export", *js, "-o", str(early))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    naive = mrx("audit", "export", *js, "--from", "2026-03-01T08:00:00", "-o", str(tmp_path / "y.json"))
    assert naive.returncode == 2 and "has no UTC offset" in naive.stderr


def test_verify_reports_a_missing_file_without_a_traceback(tmp_path):
    result = mrx("audit", "verify", str(tmp_path / "nope.json"))
    assert result.returncode == 2 and "nope.json" in result.stderr and "Traceback" not in result.stderr


# --- watch ------------------------------------------------------------------------------------


def test_watch_accepts_plain_growth(start, signers, federation_paths, federation_dir, tmp_path):
    live = start()
    publish(live, signers, "CN-ZJ", 3)
    live.checkpoint()
    state = tmp_path / "watch.json"
    args = [
        "audit",
        "watch",
        *principal_args(live, federation_paths, "YRD-SEC"),
        "--state",
        str(state),
        "--once",
    ]
    first = mrx(*args, "--federation", str(federation_dir))
    assert first.returncode == 0, first.stdout + first.stderr
    assert (
        "first checkpoint recorded: tree size 3" in first.stdout
        and "pinned gateway key(s) from the federation" in first.stdout
    )
    unchanged = mrx(*args)
    assert unchanged.returncode == 0 and "unchanged: tree size 3" in unchanged.stdout
    publish(live, signers, "CN-AH", 4)
    live.checkpoint()
    grew = mrx(*args)
    assert grew.returncode == 0, grew.stdout + grew.stderr
    assert "consistent: grew from 3 to 7 entries" in grew.stdout
    assert json.loads(state.read_text())["checkpoint"]["tree_size"] == 7


def _rewrite_leaf(database: Path, index: int) -> tuple[bytes, bytes]:
    """Rewrite one leaf and every Merkle node above it, consistently, as a careful attacker
    with database access would; returns (old root, new root) of the whole log."""
    with sqlite3.connect(database) as db:
        (raw,) = db.execute("SELECT leaf FROM exchanges WHERE log_index = ?", (index,)).fetchone()
        leaf = audit_pb2.ExchangeLeaf.FromString(raw)
        assert leaf.outcome == envelope_pb2.OUTCOME_ACCEPTED
        leaf.outcome = envelope_pb2.OUTCOME_REFUSED
        leaf.reason = "NOT_ISSUER"
        leaf.receipt_sha256 = b""
        db.execute(
            "UPDATE exchanges SET leaf = ?, outcome = ?, reason = ?, receipt = NULL WHERE log_index = ?",
            (leaf.SerializeToString(deterministic=True), envelope_pb2.OUTCOME_REFUSED, "NOT_ISSUER", index),
        )
        leaves = [row[0] for row in db.execute("SELECT leaf FROM exchanges ORDER BY log_index")]
        stored = {(lv, ix): h for lv, ix, h in db.execute("SELECT level, idx, hash FROM merkle_nodes")}
        old_root = merkle.root_hash(len(leaves), merkle.MemoryNodeStore(stored.items()))
        tree = merkle.CompactRange()
        nodes = [node for data in leaves for node in tree.append(merkle.leaf_hash(data))]
        assert {node_id for node_id, _ in nodes} == set(stored)
        changed = [(h, lv, ix) for (lv, ix), h in nodes if stored[(lv, ix)] != h]
        db.executemany("UPDATE merkle_nodes SET hash = ? WHERE level = ? AND idx = ?", changed)
    # Exactly the leaf and its complete ancestors: the path from the leaf up.
    assert sorted((lv, ix) for _, lv, ix in changed) == [(lv, index >> lv) for lv in range(len(changed))]
    return old_root, tree.root()


def test_watch_raises_the_alarm_when_history_is_rewritten(start, signers, federation_paths, tmp_path):
    live = start()
    js = publish(live, signers, "CN-JS", 4)
    publish(live, signers, "CN-SH", 2)
    assert live.checkpoint() == 6
    state = tmp_path / "watch.json"
    watch = [
        "audit",
        "watch",
        "--principal",
        "YRD-SEC",
        "--key",
        str(federation_paths["YRD-SEC"]),
        "--keyid",
        "YRD-SEC/demo",
    ]
    first = mrx(*watch, "--address", live.address, "--state", str(state), "--once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "trust on first use" in first.stdout
    saved = state.read_bytes()

    live.stop()
    old_root, rewritten_root = _rewrite_leaf(live.database, js[1])
    assert old_root != rewritten_root
    live = start()  # a fresh process: its Merkle frontier reloads from the rewritten nodes
    publish(live, signers, "CN-ZJ", 3)
    assert live.checkpoint() == 9

    alarm = mrx(*watch, "--address", live.address, "--state", str(state), "--once")
    assert alarm.returncode == 3, alarm.stdout + alarm.stderr
    err = alarm.stderr
    assert "HISTORY REWRITTEN: the consistency proof from size 6 to 9" in err
    assert f"old root:     {old_root.hex()} (size 6)" in err
    new_root = re.search(r"new root:\s+([0-9a-f]{64}) \(size 9\)", err)
    assert new_root is not None
    assert state.read_bytes() == saved  # the last good checkpoint is kept
    evidence = re.search(r"evidence:\s+(\S+)", err)
    assert evidence is not None
    proof = json.loads(Path(evidence.group(1)).read_text())
    assert proof["seen_before"]["root_hash"] == old_root.hex() and proof["now_served"]["tree_size"] == 9

    again = mrx(*watch, "--address", live.address, "--state", str(state), "--once")
    assert again.returncode == 3 and "HISTORY REWRITTEN" in again.stderr
