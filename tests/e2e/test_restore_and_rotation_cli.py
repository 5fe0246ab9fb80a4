"""Backup and restore as an operator does it: a watcher's saved checkpoint, a copy of the
database, and `mrx audit verify-restore` against a gateway serving the restored copy."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.client import GatewayClient
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates
from gateway.domain.records import CHINA
from gateway.registry.federation import Federation
from gateway.server import Gateway, start_gateway
from gateway.store.engine import open_engines

pytestmark = pytest.mark.e2e

MRX = [sys.executable, "-m", "gateway.cli"]


def mrx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MRX, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def serve(base_federation: Federation, signers: dict[str, PrivateKey]) -> Iterator[Callable[[Path], Gateway]]:
    running: list[tuple[Gateway, object]] = []

    def _serve(database: Path) -> Gateway:
        engines = open_engines(f"sqlite:///{database}")
        gw = start_gateway(
            federation=base_federation,
            engines=engines,
            gateway_key=signers["MRX-GW"],
            checkpoint_interval=3600,
        )
        running.append((gw, engines))
        return gw

    yield _serve
    for gw, engines in running:
        gw.stop()
        engines.dispose()  # type: ignore[attr-defined]


def _publish(gw: Gateway, signers: dict[str, PrivateKey], count: int, start_serial: int) -> None:
    today = datetime.now(UTC).astimezone(CHINA).date()
    with GatewayClient(gw.address, sender="CN-ZJ", signer=signers["CN-ZJ"]) as client:
        for cert in demo_certificates("CN-ZJ", count=count, start_serial=start_serial, today=today):
            client.publish(cert)


def _backup(database: Path, to: Path) -> None:
    # SQLite's online backup: a consistent copy while the gateway writes (WAL included).
    with sqlite3.connect(database) as source, sqlite3.connect(to) as dest:
        source.backup(dest)


def test_verify_restore_accepts_a_complete_backup_and_names_what_an_old_one_lost(
    serve, signers, federation_paths, federation_dir, tmp_path
):
    live_db, early, full = tmp_path / "live.db", tmp_path / "early.db", tmp_path / "full.db"
    gw = serve(live_db)
    _publish(gw, signers, 4, 1)
    gw.checkpointer.checkpoint_now()
    _backup(live_db, early)  # last night's backup: 4 entries
    _publish(gw, signers, 3, 10)
    gw.checkpointer.checkpoint_now()
    state = tmp_path / "watch.json"
    auditor = ["--principal", "YRD-SEC", "--key", str(federation_paths["YRD-SEC"]), "--keyid", "YRD-SEC/demo"]
    watched = mrx(
        "audit", "watch", "--address", gw.address, *auditor, "--state", str(state), "--once",
        "--federation", str(federation_dir),
    )  # fmt: skip
    assert watched.returncode == 0, watched.stdout + watched.stderr
    _backup(live_db, full)  # a backup taken after the watcher saved size 7
    gw.stop()

    restored_full = serve(full)
    ok = mrx("audit", "verify-restore", "--address", restored_full.address, *auditor, "--state", str(state))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK the restored log contains the published one (7 entries)" in ok.stdout
    # The restored gateway goes on growing the same log: still consistent.
    _publish(restored_full, signers, 2, 20)
    restored_full.checkpointer.checkpoint_now()
    grown = mrx(
        "audit", "verify-restore", "--address", restored_full.address, *auditor, "--state", str(state)
    )
    assert grown.returncode == 0 and "and 2 more, consistency proof verified" in grown.stdout, grown.stdout
    restored_full.stop()

    restored_early = serve(early)
    lost = mrx(
        "audit", "verify-restore", "--address", restored_early.address, *auditor, "--state", str(state)
    )
    assert lost.returncode == 1, lost.stdout + lost.stderr
    assert "log indices 4..6 (3 acknowledged exchanges) are not in the restored database" in lost.stdout
    # Read only: the saved checkpoint is still the reference.
    assert '"tree_size": 7' in state.read_text()


def test_verify_restore_needs_a_saved_checkpoint(serve, federation_paths, tmp_path):
    gw = serve(tmp_path / "db.db")
    result = mrx(
        "audit", "verify-restore", "--address", gw.address, "--principal", "YRD-SEC",
        "--key", str(federation_paths["YRD-SEC"]), "--keyid", "YRD-SEC/demo",
        "--state", str(tmp_path / "none.json"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "no saved checkpoint to compare the restored log with" in result.stderr


def test_after_a_gateway_key_rotation_what_the_old_key_signed_still_verifies(
    signers, federation_paths, federation_dir, tmp_path
):
    from gateway.client import verify_receipt
    from gateway.pb import exchange_pb2
    from gateway.registry.federation import load_federation

    fed_dir = tmp_path / "federation"
    shutil.copytree(federation_dir, fed_dir)
    made = mrx(
        "keys", "generate", "--participant", "MRX-GW", "--keyid", "MRX-GW/next",
        "--federation", str(fed_dir), "--private-dir", str(tmp_path / "private"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    new_key = PrivateKey.load(Path(made.stdout.split("private key: ")[1].split(" (")[0]), keyid="MRX-GW/next")
    federation = load_federation(fed_dir)
    database = tmp_path / "gw.db"
    state = tmp_path / "watch.json"
    auditor = ["--principal", "YRD-SEC", "--key", str(federation_paths["YRD-SEC"]), "--keyid", "YRD-SEC/demo"]

    def serve(key: PrivateKey) -> tuple[Gateway, object]:
        engines = open_engines(f"sqlite:///{database}")
        gw = start_gateway(federation=federation, engines=engines, gateway_key=key, checkpoint_interval=3600)
        return gw, engines

    today = datetime.now(UTC).astimezone(CHINA).date()
    certs = demo_certificates("CN-ZJ", count=5, today=today)
    old, engines = serve(signers["MRX-GW"])
    with GatewayClient(old.address, sender="CN-ZJ", signer=signers["CN-ZJ"]) as client:
        sent = [client.sign(c) for c in certs[:3]]
        old_receipts = [
            client.exchange.Submit(exchange_pb2.SubmitRequest(envelope=e), timeout=10).receipt for e in sent
        ]
    assert {r.signatures[0].keyid for r in old_receipts} == {"MRX-GW/demo"}
    old.checkpointer.checkpoint_now()
    first = mrx(
        "audit", "watch", "--address", old.address, *auditor, "--state", str(state), "--once",
        "--federation", str(federation_dir),
    )  # fmt: skip
    # Pinned before the rotation: the old key only (a watcher that started last year).
    assert first.returncode == 0 and "MRX-GW/next" not in first.stdout, first.stdout + first.stderr
    old.stop()
    engines.dispose()  # type: ignore[attr-defined]

    new, engines = serve(new_key)
    try:
        with GatewayClient(new.address, sender="CN-ZJ", signer=signers["CN-ZJ"]) as client:
            for c in certs[3:]:
                client.publish(c)
            # Receipts the retired key signed verify with the keys the registry lists.
            for env, receipt in zip(sent, old_receipts, strict=True):
                verify_receipt(receipt, client.gateway_keys, env)
        assert new.checkpointer.checkpoint_now() == 5
        watch = ["audit", "watch", "--address", new.address, *auditor, "--state", str(state), "--once"]
        rejected = mrx(*watch)
        assert rejected.returncode == 4 and "CHECKPOINT REJECTED" in rejected.stderr, rejected.stderr
        grew = mrx(*watch, "--federation", str(fed_dir))
        assert grew.returncode == 0, grew.stdout + grew.stderr
        assert "pinned new gateway key(s) from the federation file: MRX-GW/next" in grew.stdout
        assert "consistent: grew from 3 to 5 entries" in grew.stdout
        # Pinned for good: the next round needs no federation.
        assert mrx(*watch).returncode == 0
        bundle = tmp_path / "yrd.json"
        exported = mrx(
            "audit", "export", "--address", new.address, *auditor, "--alliance", "YRD", "-o", str(bundle)
        )
        assert exported.returncode == 0, exported.stdout + exported.stderr
        verified = mrx("audit", "verify", str(bundle), "--federation", str(fed_dir))
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        new.stop()
        engines.dispose()  # type: ignore[attr-defined]
