"""Backup and restore as an operator does it: a watcher's saved checkpoint, a copy of the
database, and `mrx audit verify-restore` against a gateway serving the restored copy."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.client import GatewayClient
from gateway.crypto.suites import PrivateKey
from gateway.domain.demo_data import demo_certificates
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
