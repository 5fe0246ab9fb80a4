"""``mrx subscribe`` run as a participant runs it, against a live gateway (SQLite)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.client import GatewayClient
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_assessors, demo_certificates
from gateway.registry.federation import Federation
from gateway.server import CHINA, Gateway, start_gateway
from gateway.store.engine import open_engines

pytestmark = pytest.mark.e2e

MRX = [sys.executable, "-m", "gateway.cli"]


@pytest.fixture
def live(tmp_path: Path, base_federation: Federation, signers: dict[str, PrivateKey]) -> Iterator[Gateway]:
    engines = open_engines(f"sqlite:///{tmp_path / 'gateway.db'}")
    gw = start_gateway(
        federation=base_federation, engines=engines, gateway_key=signers["MRX-GW"], checkpoint_interval=3600
    )
    yield gw
    gw.stop()
    engines.dispose()


def _who(federation_paths: dict[str, Path], code: str) -> list[str]:
    return ["--principal", code, "--key", str(federation_paths[code]), "--keyid", f"{code}/demo"]


def mrx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MRX, *args], capture_output=True, text=True, timeout=120, check=False)


def test_once_prints_one_verified_json_line_per_change_and_resumes(live, federation_paths, federation_dir):
    today = datetime.now(CHINA).date()
    with GatewayClient(
        live.address, sender="CN-JS", signer=PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
    ) as js:
        receipts = [js.publish(c) for c in demo_certificates("CN-JS", count=3, today=today)]
        assessor = demo_assessors("CN-JS", count=1, today=today)[0]
        js.publish(assessor)
    who = _who(federation_paths, "CN-SH")
    done = mrx("subscribe", "--address", live.address, *who, "--once")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [x["log_index"] for x in lines] == [r.log_index for r in receipts] + [3]
    assert all(x["verified"] and x["issuer"] == "CN-JS" and x["state"] == "VALID" for x in lines)
    assert lines[-1]["key"] == f"assessor/CN-JS/{assessor.registration_number}"
    # Filtered, resumed, with the issuer keys pinned from the federation directory.
    done = mrx(
        "subscribe", "--address", live.address, *who, "--once", "--from", "1", "--kind", "certificate_status",
        "--federation", str(federation_dir),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["log_index"] for line in done.stdout.splitlines()] == [1, 2]
    # Outside the subscriber's scope: refused, saying why.
    done = mrx(
        "subscribe",
        "--address",
        live.address,
        *_who(federation_paths, "CN-GD"),
        "--issuer",
        "CN-JS",
        "--once",
    )
    assert done.returncode == 2 and "OUTSIDE_SCOPE" in done.stderr, done.stderr
    done = mrx("subscribe", "--address", live.address, *who, "--from", "99", "--once")
    assert done.returncode == 2 and "START_BEYOND_LOG" in done.stderr, done.stderr


def test_follow_prints_live_changes_until_interrupted(live, federation_paths):
    proc = subprocess.Popen(
        [*MRX, "subscribe", "--address", live.address, *_who(federation_paths, "CN-JS"), "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        note: list[str] = []
        reader = threading.Thread(target=lambda: note.append(proc.stderr.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(60)
        assert note and "caught up at log index 0" in note[0], note
        today = datetime.now(CHINA).date()
        signer = PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
        with GatewayClient(live.address, sender="CN-JS", signer=signer) as js:
            published = [js.publish(c).log_index for c in demo_certificates("CN-JS", count=2, today=today)]
        got: list[Any] = []
        reader = threading.Thread(
            target=lambda: got.extend(json.loads(proc.stdout.readline()) for _ in range(2)),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(60)
        assert [x["log_index"] for x in got] == published
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # The CLI leaving (SIGINT) cancelled its call: the gateway released the subscription.
    assert live.feed is not None
    deadline = time.monotonic() + 20
    while live.feed.subscriptions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.feed.subscriptions == 0
