"""Subscribe across replicas: two real `mrx serve` processes on one PostgreSQL; a change
submitted to replica A reaches a subscriber on replica B (B learns of it by polling the
shared log, not from its own writer), and B's own changes interleave in log order."""

from __future__ import annotations

import contextlib
import queue
import threading
from datetime import UTC, datetime

import grpc
import pytest

from gateway.client import Change, GatewayClient
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WAIT = 30.0  # a bound on waiting, not a latency assertion


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_change_committed_by_replica_a_reaches_a_subscriber_on_replica_b(
    federation_dir, federation_paths, database_url, serve_process
):
    js_key = PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
    sh_key = PrivateKey.load(federation_paths["CN-SH"], "CN-SH/demo")
    certs = demo_certificates("CN-JS", count=40, today=datetime.now(UTC).date())
    replicas = [serve_process(federation_dir, database_url, federation_paths["MRX-GW"]) for _ in range(2)]
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
