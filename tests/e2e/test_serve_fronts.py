"""`mrx serve --fronts N`: several front processes on one port sharing one writer.

Real processes: the fronts share the port through SO_REUSEPORT, every receipt from any of
them lands in one dense log, and when a front is killed the gateway stops and says why
(nothing acknowledged is lost).
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from gateway.client import make_submission
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates
from gateway.pb import envelope_pb2, exchange_pb2, exchange_pb2_grpc
from gateway.store.schema import exchanges

pytestmark = pytest.mark.e2e


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite: several fronts on one writer do not depend on the backend."""
    return f"sqlite:///{tmp_path / 'mrx.db'}"


def _serve(
    federation_dir: Path, database: str, gw_key: Path, fronts: int
) -> tuple[subprocess.Popen[str], str, list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--address", "127.0.0.1:0",
         "--federation", str(federation_dir), "--database", database,
         "--gateway-key", str(gw_key), "--gateway-keyid", "MRX-GW/demo", "--fronts", str(fronts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"serving on (\S+:\d+) .*\(more: pids ([\d, ]+)\)", line)
    if match is None:
        proc.kill()
        pytest.fail(f"mrx serve did not start: {line}{proc.stdout.read()}")
    return proc, match.group(1), [int(p) for p in match.group(2).split(",")]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _envelopes(federation_paths, count):
    js = PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
    certs = demo_certificates("CN-JS", count=count, today=datetime.now(UTC).date())
    return [make_submission(c, sender="CN-JS", signer=js) for c in certs]


def _log(open_store, database_url):
    e = exchanges.c
    with open_store(database_url).reader.connect() as conn:
        return {
            r.log_index: (r.envelope_sha256, r.receipt)
            for r in conn.execute(select(e.log_index, e.envelope_sha256, e.receipt))
        }


def test_two_fronts_share_the_port_and_one_linear_log(
    federation_dir, federation_paths, database_url, open_store
):
    open_store(database_url)
    envelopes = _envelopes(federation_paths, 240)
    proc, address, (other,) = _serve(federation_dir, database_url, federation_paths["MRX-GW"], 2)
    receipts = []
    try:
        time.sleep(1.5)  # the second front starts and binds the port
        before = _cpu_ticks(other)
        # New connections are spread over the fronts by the kernel (SO_REUSEPORT).
        for i in range(0, len(envelopes), 6):
            with grpc.insecure_channel(address) as channel:
                stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
                for env in envelopes[i : i + 6]:
                    receipts.append(stub.Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=20).receipt)
        served_by_other = _cpu_ticks(other) - before
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert served_by_other > 5, "the second front served none of 40 connections"
    log = _log(open_store, database_url)
    assert sorted(log) == list(range(len(envelopes)))
    for env, receipt_env in zip(envelopes, receipts, strict=True):
        receipt = envelope_pb2.Receipt.FromString(receipt_env.payload)
        digest = hashlib.sha256(env.SerializeToString(deterministic=True)).digest()
        assert log[receipt.log_index] == (digest, receipt_env.payload)


def test_a_killed_front_stops_the_gateway_and_loses_nothing(
    federation_dir, federation_paths, database_url, open_store
):
    open_store(database_url)
    envelopes = _envelopes(federation_paths, 200)
    proc, address, (other,) = _serve(federation_dir, database_url, federation_paths["MRX-GW"], 2)
    acked: dict[bytes, envelope_pb2.Envelope] = {}
    lock = threading.Lock()

    def load(part):
        for i in range(0, len(part), 5):
            try:
                with grpc.insecure_channel(address) as channel:
                    stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
                    for env in part[i : i + 5]:
                        receipt = stub.Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=10).receipt
                        with lock:
                            acked[hashlib.sha256(env.SerializeToString(deterministic=True)).digest()] = (
                                receipt
                            )
            except grpc.RpcError:
                continue

    time.sleep(1.5)
    threads = [threading.Thread(target=load, args=(envelopes[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    subprocess.run(["kill", "-9", str(other)], check=True)
    out, _ = proc.communicate(timeout=60)
    for t in threads:
        t.join(60)
    assert proc.returncode == 1, out
    assert f"front process {other} exited with code -9" in out
    log = _log(open_store, database_url)
    assert sorted(log) == list(range(len(log)))
    for digest, receipt_env in acked.items():
        receipt = envelope_pb2.Receipt.FromString(receipt_env.payload)
        assert log[receipt.log_index] == (digest, receipt_env.payload)


def test_a_second_sigterm_while_draining_does_not_hang(
    federation_dir, federation_paths, database_url, open_store
):
    open_store(database_url)
    proc, _, _ = _serve(federation_dir, database_url, federation_paths["MRX-GW"], 2)
    time.sleep(1.0)
    for _ in range(3):  # systemd's SIGTERM to the group, an impatient Ctrl-C, ...
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert out.count("stopping: draining") == 1
