"""kill -9 of a real `mrx serve` (the front end) under load: nothing acknowledged is lost.

The front end is the process clients talk to; its writer is a child process that owns
the database. Killing the front must take the writer down with it (no orphan holding the
database) and leave every receipt a client received in the log; a new `mrx serve` on
the same database then answers a retry of each unanswered envelope, and the original
receipt for each answered one.
"""

from __future__ import annotations

import hashlib
import os
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


def _serve(federation_dir: Path, database: str, gw_key: Path) -> tuple[subprocess.Popen[str], str, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--address", "127.0.0.1:0",
         "--federation", str(federation_dir), "--database", database,
         "--gateway-key", str(gw_key), "--gateway-keyid", "MRX-GW/demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"serving on (\S+:\d+) .*writer pid (\d+)", line)
    if match is None:
        proc.kill()
        pytest.fail(f"mrx serve did not start: {line}{proc.stdout.read()}")
    return proc, match.group(1), int(match.group(2))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_kill_9_of_the_front_end_under_load_loses_nothing_acknowledged(
    federation_dir, federation_paths, database_url, open_store
):
    open_store(database_url)
    js = PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
    certs = demo_certificates("CN-JS", count=300, today=datetime.now(UTC).date())
    envelopes = [make_submission(c, sender="CN-JS", signer=js) for c in certs]
    digest = {id(e): hashlib.sha256(e.SerializeToString(deterministic=True)).digest() for e in envelopes}

    proc, address, writer_pid = _serve(federation_dir, database_url, federation_paths["MRX-GW"])
    acked: dict[bytes, envelope_pb2.Envelope] = {}
    lock = threading.Lock()
    channel = grpc.insecure_channel(address)
    stub = exchange_pb2_grpc.ExchangeServiceStub(channel)

    def load(part: list[envelope_pb2.Envelope]) -> None:
        for env in part:
            try:
                receipt = stub.Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=10).receipt
            except grpc.RpcError:
                continue
            with lock:
                acked[digest[id(env)]] = receipt

    threads = [threading.Thread(target=load, args=(envelopes[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()  # SIGKILL: no drain, no final checkpoint
    proc.wait(10)
    for t in threads:
        t.join(60)
    channel.close()
    assert proc.returncode == -signal.SIGKILL
    assert 40 <= len(acked) < len(envelopes), "the kill must land mid-load"

    # The writer notices its front end is gone and exits: nothing is left holding the database.
    deadline = time.monotonic() + 10
    while _alive(writer_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(writer_pid)

    e = exchanges.c
    with open_store(database_url).reader.connect() as conn:
        log = {
            r.log_index: (r.envelope_sha256, r.receipt)
            for r in conn.execute(select(e.log_index, e.envelope_sha256, e.receipt))
        }
    for d, receipt_env in acked.items():
        receipt = envelope_pb2.Receipt.FromString(receipt_env.payload)
        assert log[receipt.log_index] == (d, receipt_env.payload)
    assert sorted(log) == list(range(len(log)))

    # Restart and retry everything in one SubmitBatch: committed ones keep their receipts.
    proc, address, _ = _serve(federation_dir, database_url, federation_paths["MRX-GW"])
    try:
        with grpc.insecure_channel(address) as channel:
            stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
            results = stub.SubmitBatch(
                exchange_pb2.SubmitBatchRequest(envelopes=envelopes), timeout=60
            ).results
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert all(r.HasField("receipt") for r in results)
    for env, result in zip(envelopes, results, strict=True):
        if digest[id(env)] in acked:
            assert result.receipt == acked[digest[id(env)]]
    with open_store(database_url).reader.connect() as conn:
        assert conn.execute(select(e.log_index).order_by(e.log_index)).scalars().all() == list(
            range(len(envelopes))
        )
