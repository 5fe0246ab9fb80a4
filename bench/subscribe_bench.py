"""Subscribe: delivery latency (commit -> event) and events/s, 1 and 10 subscribers.

Starts a real `mrx serve` (SQLite file, or PostgreSQL with --postgres URL: a fresh
schema, dropped afterwards) on a throw-away demo federation, then:

1. latency: subscribers live; 200 unary Submits one after another, 20 ms apart; for each
   change, the time from the receipt's arrival at the publisher (the commit acknowledged)
   to the event's arrival at each subscriber (negative when the event beat the receipt);
2. live throughput: subscribers live; 5,000 records in SubmitBatch calls of 500; events/s
   = events delivered / time from the first batch sent to the last event received by the
   last subscriber;
3. backfill: the same 5,000+ records read from the start by fresh subscribers.

Subscribers are raw gRPC streams in threads of this process (no signature check on the
subscriber side: the SDK's Ed25519 check would measure the client). Gateway CPU is the
server process and its children (front + writer) from /proc, per event delivered.

    python bench/subscribe_bench.py [--postgres URL] [--subscribers 1 10]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.client import GatewayClient  # noqa: E402
from gateway.crypto.reads import sign_read  # noqa: E402
from gateway.crypto.suites import PrivateKey  # noqa: E402
from gateway.demo_fixtures import demo_certificates  # noqa: E402
from gateway.pb import exchange_pb2, exchange_pb2_grpc  # noqa: E402
from gateway.registry.keygen import write_demo_federation  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
METHOD = "/mrx.v1.ExchangeService/Subscribe"
# Principals that see CN-JS's certificates (the YRD agreement); two subscriptions each at
# ten subscribers (the gateway allows 8 per principal).
READERS = ("CN-SH", "CN-ZJ", "CN-AH", "YRD-SEC", "CN-JS")


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its descendants."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        rest = text.rsplit(")", 1)[1].split()
        table[int(stat.parent.name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / TICK)
    total, todo, seen = 0.0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo += [p for p, (ppid, _) in table.items() if ppid == pid]
    return total


class Subscriber(threading.Thread):
    def __init__(self, address: str, key: PrivateKey, start: int = 0):
        principal = key.keyid.split("/")[0]
        super().__init__(daemon=True)
        self.arrivals: dict[int, float] = {}
        self.caught_up = threading.Event()
        self._channel = grpc.insecure_channel(address)
        request = exchange_pb2.SubscribeRequest(start_index=start)
        md = sign_read(signer=key, principal=principal, method=METHOD, request=request)
        self._call = exchange_pb2_grpc.ExchangeServiceStub(self._channel).Subscribe(request, metadata=md)

    def run(self) -> None:
        try:
            for event in self._call:
                if event.HasField("change"):
                    self.arrivals[event.change.log_index] = time.perf_counter()
                elif event.HasField("caught_up"):
                    self.caught_up.set()
        except grpc.RpcError as err:
            if err.code() is not grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                print(f"subscriber ended: {err.code()} {err.details()}", file=sys.stderr)  # type: ignore[attr-defined]

    def stop(self) -> None:
        self._call.cancel()
        self._channel.close()


def wait_for(subs: list[Subscriber], indexes: set[int], timeout: float = 30) -> float:
    deadline = time.perf_counter() + timeout
    while any(not indexes <= s.arrivals.keys() for s in subs):
        if time.perf_counter() > deadline:
            got = [(s.caught_up.is_set(), len(s.arrivals), max(s.arrivals, default=None)) for s in subs]
            raise RuntimeError(f"events did not arrive: wanted {sorted(indexes)[:3]}..., subscribers {got}")
        time.sleep(0.002)
    return max(max(s.arrivals[i] for i in indexes) for s in subs)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(
    address: str, server_pid: int, keys: dict[str, PrivateKey], n_subs: int, serial: int
) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    out: dict[str, Any] = {"subscribers": n_subs}
    with GatewayClient(address, sender="CN-JS", signer=keys["CN-JS"]) as js:
        subs = [
            Subscriber(address, keys[READERS[i % len(READERS)]], start=_log_size(js)) for i in range(n_subs)
        ]
        for s in subs:
            s.start()
        for s in subs:
            s.caught_up.wait(30)
        # 1. latency
        lat: list[float] = []
        for cert in demo_certificates("CN-JS", count=200, start_serial=serial, today=today):
            receipt = js.publish(cert)
            at = time.perf_counter()
            wait_for(subs, {receipt.log_index})
            lat += [(s.arrivals[receipt.log_index] - at) * 1000 for s in subs]
            time.sleep(0.02)
        out["latency_p50_ms"], out["latency_p99_ms"], out["latency_max_ms"] = (
            statistics.median(lat),
            pct(lat, 0.99),
            max(lat),
        )
        # 2. live throughput
        certs = demo_certificates("CN-JS", count=5000, start_serial=serial + 200, today=today)
        envelopes = [js.sign(c) for c in certs]
        cpu0, t0 = tree_cpu(server_pid), time.perf_counter()
        indexes: set[int] = set()
        for i in range(0, len(envelopes), 500):
            indexes |= {o.receipt.log_index for o in js.submit_batch(envelopes[i : i + 500])}
        done = wait_for(subs, indexes)
        cpu = tree_cpu(server_pid) - cpu0
        events = len(indexes) * n_subs
        out["live_events_per_s"] = events / (done - t0)
        out["live_gateway_cpu_us_per_event"] = cpu * 1e6 / events
        out["live_note"] = "includes committing the 5,000 records"
        for s in subs:
            s.stop()
        # 3. backfill from the start of the log
        size = _log_size(js)
        cpu0, t0 = tree_cpu(server_pid), time.perf_counter()
        subs = [Subscriber(address, keys[READERS[i % len(READERS)]], start=0) for i in range(n_subs)]
        for s in subs:
            s.start()
        for s in subs:
            s.caught_up.wait(300)
        done = time.perf_counter()
        cpu = tree_cpu(server_pid) - cpu0
        events = sum(len(s.arrivals) for s in subs)
        out["backfill_log_size"] = size
        out["backfill_events_per_s"] = events / (done - t0)
        out["backfill_gateway_cpu_us_per_event"] = cpu * 1e6 / events
        for s in subs:
            s.stop()
    return out


def _log_size(client: GatewayClient) -> int:
    """The next log index: where a subscription starts live."""
    request = exchange_pb2.SubscribeRequest(kinds=["pt_result"])
    md = sign_read(signer=client.signer, principal="CN-JS", method=METHOD, request=request)  # type: ignore[arg-type]
    call = client.exchange.Subscribe(request, metadata=md)
    for event in call:
        if event.HasField("caught_up"):
            call.cancel()
            return int(event.caught_up.next_index)
    raise RuntimeError("no caught_up event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--postgres", help="PostgreSQL URL (default: a SQLite file)")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_demo_federation(
            template_dir=ROOT / "keys", dest=Path(tmp) / "fed", now=datetime.now(UTC)
        )
        federation_dir = next(iter(paths.values())).parent.parent
        keys = {code: PrivateKey.load(paths[code], f"{code}/demo") for code in {"CN-JS", *READERS}}
        schema = None
        if args.postgres:
            from sqlalchemy import create_engine, text

            schema = f"mrx_sub_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.postgres)
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            url = f"{args.postgres}?options=-csearch_path%3D{schema}"
        else:
            url = f"sqlite:///{tmp}/bench.db"
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--address", "127.0.0.1:0", "--federation",
             str(federation_dir), "--database", url, "--gateway-key", str(paths["MRX-GW"]),
             "--gateway-keyid", "MRX-GW/demo"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"serving on (\S+:\d+) ", line)
            if match is None:
                raise RuntimeError(line + proc.stdout.read())
            threading.Thread(target=lambda: [*proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            load = os.getloadavg()[0]
            backend = "PostgreSQL" if schema else "SQLite"
            print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {load:.2f}, {backend}")
            serial = 1
            for n in args.subscribers:
                result = run(match.group(1), proc.pid, keys, n, serial)
                serial += 5200
                print(result, flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
            if schema is not None:
                with admin.begin() as conn:
                    conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


if __name__ == "__main__":
    main()
