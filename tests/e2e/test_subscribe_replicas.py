"""Subscribe across replicas: two real `mrx serve` processes on one PostgreSQL; a change
submitted to replica A reaches a subscriber on replica B (B learns of it by polling the
shared log, not from its own writer), and B's own changes interleave in log order."""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from gateway.client import Change, GatewayClient
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WAIT = 30.0  # a bound on waiting, not a latency assertion


class Replica:
    """A real `mrx serve` process (as in test_replicas.py; test modules cannot import each other)."""

    def __init__(self, federation_dir: Path, database: str, gw_key: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--address", "127.0.0.1:0",
             "--federation", str(federation_dir), "--database", database,
             "--gateway-key", str(gw_key), "--gateway-keyid", "MRX-GW/demo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        self._drain: threading.Thread | None = None

    def ready(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"serving on (\S+:\d+) ", line)
        if match is None:
            self.proc.kill()
            pytest.fail(f"mrx serve did not start: {line}{self.proc.stdout.read()}")
        self._drain = threading.Thread(target=lambda: [*self.proc.stdout], daemon=True)  # type: ignore[union-attr]
        self._drain.start()
        return match.group(1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_change_committed_by_replica_a_reaches_a_subscriber_on_replica_b(
    federation_dir, federation_paths, database_url
):
    js_key = PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
    sh_key = PrivateKey.load(federation_paths["CN-SH"], "CN-SH/demo")
    certs = demo_certificates("CN-JS", count=40, today=datetime.now(UTC).date())
    replicas = [Replica(federation_dir, database_url, federation_paths["MRX-GW"]) for _ in range(2)]
    try:
        a, b = [r.ready() for r in replicas]
        with (
            GatewayClient(a, sender="CN-JS", signer=js_key) as on_a,
            GatewayClient(b, sender="CN-JS", signer=js_key) as on_b,
            GatewayClient(b, sender="CN-SH", signer=sh_key) as follower,
        ):
            backfill = [on_a.publish(c).log_index for c in certs[:5]]
            got: queue.Queue[Change] = queue.Queue()
            caught_up = threading.Event()
            stream = follower.subscribe(on_caught_up=lambda n: caught_up.set())

            def follow() -> None:
                with contextlib.suppress(grpc.RpcError):  # CANCELLED when the channel closes
                    for change in stream:
                        got.put(change)

            threading.Thread(target=follow, daemon=True).start()
            assert caught_up.wait(WAIT)
            # Live: committed by A's writer (B's writer never sees it), then by B's, alternating.
            live = []
            for i, cert in enumerate(certs[5:25]):
                live.append((on_a if i % 2 == 0 else on_b).publish(cert).log_index)
            live += [o.receipt.log_index for o in on_a.publish_batch(certs[25:40])]
            received = [got.get(timeout=WAIT) for _ in range(len(backfill) + len(live))]
            assert [c.log_index for c in received] == backfill + live
            assert [c.record for c in received] == certs
            assert got.empty()
    finally:
        codes = [r.stop() for r in replicas]
    assert codes == [0, 0]
