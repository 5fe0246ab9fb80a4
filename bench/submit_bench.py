#!/usr/bin/env python
"""Submit throughput benchmark for the mrx gateway.

    python bench/submit_bench.py                      # SQLite in a temp dir, workers 8 and 16
    python bench/submit_bench.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/submit_bench.py --profile           # + instrumented gateway and py-spy

The gateway runs in its own process (``submit_bench.py _serve``), started on a fresh
database (a SQLite file in a temp dir, or a fresh PostgreSQL schema that is dropped
afterwards) with a demo federation generated into the same temp dir. The load
generator is this process; it never signs while a measurement runs:

* every envelope is signed before its scenario starts (in a 2-process pool, while the
  gateway is idle), each a distinct certificate of one of the 12 demo issuers, signed
  by that issuer's fresh Ed25519 demo key; requests are pre-serialized and sent as raw
  bytes so the client spends as little CPU as possible;
* every answer is checked after the timed window: it must be a receipt for the
  envelope sent (message id, envelope SHA-256, outcome ACCEPTED, distinct log index),
  a sample of receipt signatures is verified with the gateway's public key, anything
  else is counted as a refusal by gRPC code and reason; after the gateway stops, the
  exchange log is counted and must hold exactly the records sent, all accepted.

Scenarios, after a warm-up: unary Submit at ``--inflight`` (64, ``--runs`` times, median
and min-max reported) and once at each ``--curve`` level (8, 16); SubmitStream with 1, 2
and 4 concurrent streams sharing ``--stream-records`` (``--runs`` times each). All of it
for each ``--workers`` value (8 and 16), each on a fresh database. Each row also reports
the CPU used by the gateway, PostgreSQL, this client and every other process on the
machine (a shared machine is noisy: read the "other cores" column before the rate), and
the gateway's context switches per record.

Reference points: Ed25519 sign/verify per second (cryptography, this process); the
gateway's own steps timed in one thread without gRPC (``component:`` lines); and a bare
gRPC echo server (same grpcio and worker count, raw bytes of the same size) under the
same clients.

The code under test is a copy of gateway/ taken at start (``gateway code:`` line), so a
working tree edited during the run cannot change it halfway.

``--profile`` then starts one more gateway with probes (time spent in each group commit,
on and off CPU; a thread that measures how late its 2 ms sleeps wake up) and py-spy
(``--gil`` and all threads) under the unary and the stream load, and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parent.parent
SUBMIT = "/mrx.v1.ExchangeService/Submit"
SUBMIT_STREAM = "/mrx.v1.ExchangeService/SubmitStream"
ECHO_UNARY = "/bench.Echo/Unary"
ECHO_STREAM = "/bench.Echo/Stream"
ISSUERS = (
    "CN-SH", "CN-JS", "CN-ZJ", "CN-AH", "CN-BJ", "CN-TJ",
    "CN-HE", "CN-GD", "CN-HK", "CN-MO", "CN-FJ", "CN-SN",
)  # fmt: skip
SIG_SAMPLE = 200  # receipt signatures verified per run
# A copy of gateway/ taken when the benchmark starts; every process imports it, so a
# working tree edited during the run cannot change the code under test halfway.
SNAPSHOT = ""


# --------------------------------------------------------------------------------------
# Server side: `submit_bench.py _serve` / `_echo`, driven by line commands on stdin.
# --------------------------------------------------------------------------------------


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def system_busy() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def postgres_cpu() -> dict[int, float]:
    """CPU seconds used so far by each process named postgres (the database under test)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 :].split(")", 1)
        if name == "postgres":
            fields = rest.split()
            out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two postgres_cpu() samples by processes alive at the second."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def wait_quiet(max_wait: float, limit: float = 0.25) -> float:
    """Wait (up to max_wait s) until the machine is idle for 2 s in a row; return busy cores seen."""
    deadline = time.monotonic() + max_wait
    calm = 0
    cores = 0.0
    while True:
        b0 = system_busy()[0]
        time.sleep(1.0)
        cores = system_busy()[0] - b0
        calm = calm + 1 if cores < limit else 0
        if calm >= 2 or time.monotonic() >= deadline:
            return cores


def _serve_loop(stats: Any, stop: Any) -> None:
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "stats":
            print(json.dumps(stats()), flush=True)
        elif cmd == "quit":
            break
    stop()
    print(json.dumps({"stopped": True, **stats()}), flush=True)


class Instruments:
    """Opt-in probes inside the gateway process (``_serve --instrument``), for the analysis.

    Wraps Sequencer._commit and the SQL driver's COMMIT (sequencer thread only) to time
    each group commit in wall-clock and thread-CPU time, and runs a probe thread that
    sleeps 2 ms at a time and records how late it wakes: the wake-up needs the GIL, so
    the lateness is a direct reading of GIL contention. No gateway file is modified.
    """

    def __init__(self) -> None:
        import gateway.store.sequencer as seq_mod
        from sqlalchemy.engine import default

        self.acc = {"commits": 0, "commit_wall": 0.0, "commit_cpu": 0.0, "db_commit_wall": 0.0,
                    "probe_n": 0, "probe_late": 0.0, "probe_late_max": 0.0, "probe_over_1ms": 0}  # fmt: skip
        acc = self.acc
        orig_commit = seq_mod.Sequencer._commit

        def timed_commit(sequencer: Any, batch: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return orig_commit(sequencer, batch)
            finally:
                acc["commits"] += 1
                acc["commit_wall"] += time.perf_counter() - t0
                acc["commit_cpu"] += time.thread_time() - c0

        seq_mod.Sequencer._commit = timed_commit  # type: ignore[method-assign,assignment]
        orig_do_commit = default.DefaultDialect.do_commit

        def timed_do_commit(dialect: Any, dbapi_connection: Any) -> None:
            if threading.current_thread().name != "mrx-sequencer":
                orig_do_commit(dialect, dbapi_connection)  # type: ignore[no-untyped-call]
                return
            t0 = time.perf_counter()
            try:
                orig_do_commit(dialect, dbapi_connection)  # type: ignore[no-untyped-call]
            finally:
                acc["db_commit_wall"] += time.perf_counter() - t0

        default.DefaultDialect.do_commit = timed_do_commit  # type: ignore[method-assign]
        threading.Thread(target=self._probe, name="bench-gil-probe", daemon=True).start()

    def _probe(self) -> None:
        acc = self.acc
        while True:
            t0 = time.perf_counter()
            time.sleep(0.002)
            late = time.perf_counter() - t0 - 0.002
            acc["probe_n"] += 1
            acc["probe_late"] += late
            acc["probe_over_1ms"] += late > 0.001
            acc["probe_late_max"] = max(acc["probe_late_max"], late)


def serve_gateway(argv: list[str]) -> None:
    import logging

    from gateway.crypto.suites import PrivateKey
    from gateway.registry.federation import load_federation
    from gateway.server import start_gateway
    from gateway.store.engine import open_engines

    p = argparse.ArgumentParser()
    p.add_argument("--federation", required=True)
    p.add_argument("--gateway-key", required=True)
    p.add_argument("--gateway-keyid", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--instrument", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    instruments = Instruments() if a.instrument else None
    federation = load_federation(Path(a.federation))
    key = PrivateKey.load(Path(a.gateway_key), a.gateway_keyid)
    engines = open_engines(a.database)
    gw = start_gateway(federation=federation, engines=engines, gateway_key=key, workers=a.workers)

    def stats() -> dict[str, Any]:
        out = {
            "batches": gw.sequencer.batches,
            "committed": gw.sequencer.committed,
            "unlogged": dict(gw.pipeline.unlogged_refusals),
            "cpu": _cpu(),
            "threads": threading.active_count(),
        }
        if instruments is not None:
            out["instruments"] = dict(instruments.acc)
        return out

    def stop() -> None:
        gw.stop()
        engines.dispose()

    import gateway

    print(json.dumps({"port": gw.port, "pid": os.getpid(), "gateway": gateway.__file__}), flush=True)
    _serve_loop(stats, stop)


def serve_echo(argv: list[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, required=True)
    a = p.parse_args(argv)
    server = grpc.server(ThreadPoolExecutor(max_workers=a.workers))

    def stream(it: Any, _ctx: Any) -> Any:
        yield from it

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(lambda request, _ctx: request),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    _serve_loop(lambda: {"cpu": _cpu(), "batches": 0, "committed": 0, "unlogged": {}}, lambda: server.stop(1))


class Server:
    """A server subprocess (gateway or echo) and its stdin/stdout control channel."""

    def __init__(self, mode: str, args: list[str], log_path: Path):
        self.log_path = log_path
        self._log = log_path.open("ab")
        env = dict(os.environ)
        if SNAPSHOT:  # the server runs the same frozen copy of gateway/ as every other server
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [SNAPSHOT, env.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), mode, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=REPO,
            env=env,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.proc.wait()
            raise RuntimeError(f"{mode} failed to start; see {log_path}:\n{log_path.read_text()[-3000:]}")
        info = json.loads(line)
        if SNAPSHOT and not info.get("gateway", SNAPSHOT).startswith(SNAPSHOT):
            raise RuntimeError(f"server imported {info['gateway']}, not the snapshot in {SNAPSHOT}")
        self.port: int = info["port"]
        self.pid: int = info["pid"]
        self.target = f"127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        self.proc.stdin.write("stats\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]
        return answer

    def stop(self) -> dict[str, Any]:
        try:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            final: dict[str, Any] = json.loads(self.proc.stdout.readline() or "{}")  # type: ignore[union-attr]
            self.proc.wait(30)
        except Exception:
            self.proc.kill()
            self.proc.wait()
            final = {}
        self._log.close()
        return final


# --------------------------------------------------------------------------------------
# Pre-signing (in worker processes, before the timed window).
# --------------------------------------------------------------------------------------

_SIGNERS: dict[str, Any] = {}


def _init_signer(paths: dict[str, str]) -> None:
    from gateway.registry.keygen import load_demo_signers

    _SIGNERS.update(load_demo_signers({k: Path(v) for k, v in paths.items()}))


def _sign_chunk(issuer: str, start: int, count: int, today: str) -> list[tuple[bytes, str, bytes]]:
    from gateway.client import make_submission
    from gateway.demo_fixtures import demo_certificates
    from gateway.pb import exchange_pb2

    out = []
    for cert in demo_certificates(issuer, count=count, start_serial=start, today=date.fromisoformat(today)):
        mid = f"bench-{uuid.uuid4()}"
        env = make_submission(cert, sender=issuer, signer=_SIGNERS[issuer], message_id=mid)
        digest = hashlib.sha256(env.SerializeToString(deterministic=True)).digest()
        out.append((exchange_pb2.SubmitRequest(envelope=env).SerializeToString(), mid, digest))
    return out


@dataclass
class Batch:
    requests: list[bytes]
    message_ids: list[str]
    digests: list[bytes]


class Signer:
    """Hands out distinct demo certificates (per-issuer serial blocks) signed by their issuer."""

    def __init__(self, key_paths: dict[str, Path], today: date):
        self.today = today.isoformat()
        self.next_serial = dict.fromkeys(ISSUERS, 1)
        self.pool = ProcessPoolExecutor(
            max_workers=2,
            mp_context=__import__("multiprocessing").get_context("spawn"),
            initializer=_init_signer,
            initargs=({k: str(v) for k, v in key_paths.items()},),
        )
        self.signed = 0
        self.seconds = 0.0

    def batches(self, sizes: list[int]) -> list[Batch]:
        """One batch per size; issuers interleaved so every commit mixes senders."""
        started = time.perf_counter()
        jobs = []
        for size in sizes:
            per = -(-size // len(ISSUERS))
            chunks = []
            for issuer in ISSUERS:
                start = self.next_serial[issuer]
                if start + per - 1 > 80_000:
                    raise RuntimeError(f"serial block of {issuer} exhausted; use fewer records")
                self.next_serial[issuer] += per
                # Split each issuer's share in two so both pool processes work.
                half = per // 2
                chunks.append(
                    [
                        self.pool.submit(_sign_chunk, issuer, start, half, self.today),
                        self.pool.submit(_sign_chunk, issuer, start + half, per - half, self.today),
                    ]
                )
            jobs.append((size, chunks))
        out = []
        for size, chunks in jobs:
            per_issuer = [[*a.result(), *b.result()] for a, b in chunks]
            mixed = [item for group in zip(*per_issuer, strict=True) for item in group][:size]
            out.append(Batch([m[0] for m in mixed], [m[1] for m in mixed], [m[2] for m in mixed]))
            self.signed += len(mixed)
        self.seconds += time.perf_counter() - started
        return out

    def close(self) -> None:
        self.pool.shutdown()


# --------------------------------------------------------------------------------------
# Load generation.
# --------------------------------------------------------------------------------------


@dataclass
class RunResult:
    results: list[Any]  # bytes (response) or grpc.RpcError / Exception, by request index
    start_ns: list[int]
    end_ns: list[int]
    wall: float


def unary_futures(channel: grpc.Channel, method: str, requests: list[bytes], inflight: int) -> RunResult:
    """`inflight` calls outstanding at all times: each completion starts the next call."""
    call = channel.unary_unary(method)
    n = len(requests)
    results: list[Any] = [None] * n
    start = [0] * n
    end = [0] * n
    lock = threading.Lock()
    done = threading.Event()
    state = {"next": 0, "left": n}

    def launch() -> None:
        with lock:
            i = state["next"]
            if i >= n:
                return
            state["next"] = i + 1
        start[i] = time.perf_counter_ns()
        fut = call.future(requests[i], timeout=120)
        fut.add_done_callback(lambda f, i=i: finish(i, f))

    def finish(i: int, fut: Any) -> None:
        end[i] = time.perf_counter_ns()
        try:
            results[i] = fut.result()
        except Exception as exc:
            results[i] = exc
        with lock:
            state["left"] -= 1
            last = state["left"] == 0
        if last:
            done.set()
        else:
            launch()

    t0 = time.perf_counter()
    for _ in range(min(inflight, n)):
        launch()
    done.wait()
    return RunResult(results, start, end, time.perf_counter() - t0)


def unary_aio(target: str, method: str, requests: list[bytes], inflight: int) -> RunResult:
    n = len(requests)
    results: list[Any] = [None] * n
    start = [0] * n
    end = [0] * n

    async def main() -> float:
        async with grpc.aio.insecure_channel(target) as channel:
            await channel.channel_ready()
            call = channel.unary_unary(method)
            it = iter(range(n))

            async def worker() -> None:
                for i in it:
                    start[i] = time.perf_counter_ns()
                    try:
                        results[i] = await call(requests[i], timeout=120)
                    except Exception as exc:
                        results[i] = exc
                    end[i] = time.perf_counter_ns()

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(min(inflight, n))))
            return time.perf_counter() - t0

    wall = asyncio.run(main())
    return RunResult(results, start, end, wall)


def streams_sync(channel: grpc.Channel, method: str, requests: list[bytes], streams: int) -> RunResult:
    """`streams` concurrent bidi streams, request i on stream i % streams."""
    call = channel.stream_stream(method)
    n = len(requests)
    results: list[Any] = [None] * n
    start = [0] * n
    end = [0] * n
    barrier = threading.Barrier(streams + 1)
    errors: list[BaseException] = []

    def one(k: int) -> None:
        idx = list(range(k, n, streams))

        def gen() -> Any:
            for i in idx:
                start[i] = time.perf_counter_ns()
                yield requests[i]

        barrier.wait()
        got = 0
        try:
            for response in call(gen(), timeout=600):
                i = idx[got]
                end[i] = time.perf_counter_ns()
                results[i] = response
                got += 1
        except Exception as exc:  # the whole stream failed: every unanswered item is an error
            errors.append(exc)
            for i in idx[got:]:
                results[i] = exc
                end[i] = end[i] or time.perf_counter_ns()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    first = min(s for s in start if s)
    last = max(end)
    return RunResult(results, start, end, max(wall, (last - first) / 1e9) if first else wall)


# --------------------------------------------------------------------------------------
# Checking answers.
# --------------------------------------------------------------------------------------


@dataclass
class Check:
    ok: int = 0
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)
    sig_checked: int = 0
    log_indexes: set[int] = field(default_factory=set)


def check_gateway(
    rr: RunResult, batch: Batch, *, stream: bool, streams: int, gateway_keys: dict[str, Any]
) -> Check:
    from gateway.client import Refusal, verify_receipt
    from gateway.pb import envelope_pb2, exchange_pb2

    c = Check()
    sample = set(random.sample(range(len(rr.results)), min(SIG_SAMPLE, len(rr.results))))
    for i, res in enumerate(rr.results):
        if isinstance(res, grpc.RpcError):
            ref = Refusal.from_rpc_error(res)
            c.refusals[f"{ref.code.name}/{ref.reason or ref.message[:40]}"] += 1
            continue
        if isinstance(res, BaseException) or res is None:
            c.refusals[f"client/{type(res).__name__}"] += 1
            continue
        if stream:
            msg = res
            if msg.sequence != i // streams:  # answers come in order, numbered per stream
                c.refusals["out-of-order"] += 1
                continue
            if not msg.HasField("receipt"):
                ref = Refusal.from_status(msg.error)
                c.refusals[f"{ref.code.name}/{ref.reason}"] += 1
                continue
            env = msg.receipt
        else:
            env = exchange_pb2.SubmitResponse.FromString(res).receipt
        if i in sample:
            receipt = verify_receipt(env, gateway_keys)  # raises ReceiptError on a bad signature
            c.sig_checked += 1
        else:
            receipt = envelope_pb2.Receipt.FromString(env.payload)
        if (
            receipt.outcome != envelope_pb2.OUTCOME_ACCEPTED
            or receipt.message_id != batch.message_ids[i]
            or receipt.envelope_sha256 != batch.digests[i]
            or receipt.log_index in c.log_indexes
        ):
            c.refusals["bad-receipt"] += 1
            continue
        c.log_indexes.add(receipt.log_index)
        c.ok += 1
    return c


def check_echo(rr: RunResult, batch: Batch) -> Check:
    c = Check()
    for i, res in enumerate(rr.results):
        if isinstance(res, bytes) and res == batch.requests[i]:
            c.ok += 1
        else:
            c.refusals[type(res).__name__] += 1
    return c


# --------------------------------------------------------------------------------------
# Scenarios.
# --------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


@dataclass
class Measured:
    rate: float
    p50: float
    p99: float
    refusals: int
    refusal_kinds: dict[str, int]
    srv_cpu: float  # cores busy in the server process during the run
    cli_cpu: float  # cores busy in this process during the run
    other_cpu: float  # cores busy in every other process on the machine (noise)
    ctx_per_record: float  # context switches of the server's threads per record
    db_cpu: float  # cores busy in PostgreSQL processes
    batch: float  # mean group-commit size
    sig_checked: int


@dataclass
class Row:
    scenario: str
    server: str
    workers: int
    load: str
    records: int
    runs: list[Measured]

    def summary(self) -> dict[str, Any]:
        rates = [m.rate for m in self.runs]
        med = sorted(self.runs, key=lambda m: m.rate)[len(self.runs) // 2]
        kinds: collections.Counter[str] = collections.Counter()
        for m in self.runs:
            kinds.update(m.refusal_kinds)
        return {
            "scenario": self.scenario,
            "server": self.server,
            "workers": self.workers,
            "load": self.load,
            "records": self.records,
            "rate_median": statistics.median(rates),
            "rate_min": min(rates),
            "rate_max": max(rates),
            "p50_ms": med.p50,
            "p99_ms": med.p99,
            "refusals": sum(m.refusals for m in self.runs),
            "refusal_kinds": dict(kinds),
            "srv_cpu": med.srv_cpu,
            "cli_cpu": med.cli_cpu,
            "other_cpu": max(m.other_cpu for m in self.runs),
            "ctx_per_record": med.ctx_per_record,
            "db_cpu": med.db_cpu,
            "batch": med.batch,
            "sig_checked": sum(m.sig_checked for m in self.runs),
        }


def measure(
    server: Server,
    kind: str,
    level: int,
    batch: Batch,
    *,
    client: str,
    channel: grpc.Channel,
    gateway_keys: dict[str, Any] | None,
) -> Measured:
    echo = gateway_keys is None
    before = server.stats()
    cs0 = ctx_switches(server.pid)
    cpu0 = _cpu()
    db0 = postgres_cpu()
    sys0 = system_busy()[0]
    if kind == "unary":
        method = ECHO_UNARY if echo else SUBMIT
        if client == "aio":
            rr = unary_aio(server.target, method, batch.requests, level)
        else:
            rr = unary_futures(channel, method, batch.requests, level)
    else:
        method = ECHO_STREAM if echo else SUBMIT_STREAM
        rr = streams_sync(channel, method, batch.requests, level)
    cpu1 = _cpu()
    sys1 = system_busy()[0]
    db1 = postgres_cpu()
    cs1 = ctx_switches(server.pid)
    after = server.stats()
    if echo:
        chk = check_echo(rr, batch)
    else:
        if kind == "stream":
            from gateway.pb import exchange_pb2

            rr.results = [
                exchange_pb2.SubmitStreamResponse.FromString(r) if isinstance(r, bytes) else r
                for r in rr.results
            ]
        assert gateway_keys is not None
        chk = check_gateway(rr, batch, stream=kind == "stream", streams=level, gateway_keys=gateway_keys)
    lat = [(e - s) / 1e6 for s, e in zip(rr.start_ns, rr.end_ns, strict=True) if s and e]
    batches = after["batches"] - before["batches"]
    unlogged = sum(after["unlogged"].values()) - sum(before["unlogged"].values())
    kinds = dict(chk.refusals)
    if unlogged:
        kinds["unlogged(server count)"] = unlogged
    return Measured(
        rate=len(batch.requests) / rr.wall,
        p50=pct(lat, 0.50),
        p99=pct(lat, 0.99),
        refusals=len(batch.requests) - chk.ok,
        refusal_kinds=kinds,
        srv_cpu=(after["cpu"] - before["cpu"]) / rr.wall,
        cli_cpu=(cpu1 - cpu0) / rr.wall,
        ctx_per_record=(cs1 - cs0) / len(batch.requests),
        db_cpu=cpu_delta(db0, db1) / rr.wall,
        other_cpu=max(
            0.0, (sys1 - sys0) - (after["cpu"] - before["cpu"]) - (cpu1 - cpu0) - cpu_delta(db0, db1)
        )
        / rr.wall,
        batch=(after["committed"] - before["committed"]) / batches if batches else 0.0,
        sig_checked=chk.sig_checked,
    )


def fmt_row(s: dict[str, Any]) -> str:
    spread = f"{s['rate_min']:,.0f}-{s['rate_max']:,.0f}"
    batch = f"{s['batch']:.0f}" if s["batch"] else "-"
    return (
        f"| {s['scenario']} | {s['server']} | {s['workers']} | {s['load']} | {s['records']:,} | "
        f"**{s['rate_median']:,.0f}** | {spread} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
        f"{s['refusals']} | {s['srv_cpu']:.2f} | {s['db_cpu']:.2f} | {s['cli_cpu']:.2f} | "
        f"{s['other_cpu']:.2f} | "
        f"{s['ctx_per_record']:.0f} | {batch} |"
    )


TABLE_HEAD = (
    "| scenario | server | workers | load | records/run | rate/s (median) | min-max | p50 ms | p99 ms "
    "| refusals | gateway cores | PG cores | client cores | other cores (max) | gateway ctx switches/record "
    "| mean commit batch |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


# --------------------------------------------------------------------------------------
# Reference points.
# --------------------------------------------------------------------------------------


def crypto_reference(seconds: float = 1.0) -> dict[str, float]:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key()
    msg = os.urandom(420)
    sig = key.sign(msg)

    def rate(fn: Any, threads: int) -> float:
        count = [0] * threads
        stop = time.perf_counter() + seconds

        def loop(k: int) -> None:
            n = 0
            while time.perf_counter() < stop:
                for _ in range(100):
                    fn()
                n += 100
            count[k] = n

        ts = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(count) / (time.perf_counter() - t0)

    return {
        "verify_1": rate(lambda: pub.verify(sig, msg), 1),
        "verify_2": rate(lambda: pub.verify(sig, msg), 2),
        "sign_1": rate(lambda: key.sign(msg), 1),
    }


def component_reference(paths: dict[str, Path], workdir: Path, today: date) -> list[str]:
    """The gateway's own steps in one thread, no gRPC, on a scratch SQLite file.

    What one record costs when nothing else competes for the interpreter: verification
    (Pipeline.verify), the group commit (Sequencer._commit, a private method, at several
    batch sizes) and the receipt signature; then the same commit while one other Python
    thread is busy, which is what the sequencer faces inside the server.
    """
    from gateway.pipeline import Pipeline
    from gateway.store.sequencer import Sequencer

    from gateway.client import make_submission
    from gateway.demo_fixtures import demo_certificates
    from gateway.registry.federation import load_federation
    from gateway.registry.keygen import load_demo_signers
    from gateway.store.engine import open_engines

    issuer = "CN-SN"
    signers = load_demo_signers({k: v for k, v in paths.items() if k in (issuer, "MRX-GW")})
    envelopes = [
        make_submission(c, sender=issuer, signer=signers[issuer])
        for c in demo_certificates(issuer, count=3000, today=today)
    ]
    engines = open_engines(f"sqlite:///{workdir / 'components.db'}")
    sequencer = Sequencer(engines, clock=lambda: datetime.now(UTC))  # never started: driven here
    pipeline = Pipeline(
        federation=load_federation(workdir / "federation"), sequencer=sequencer, gateway_key=signers["MRX-GW"]
    )
    lines = []
    try:
        t0, c0 = time.perf_counter(), time.thread_time()
        items = [pipeline.verify(e) for e in envelopes]
        n = len(items)
        lines.append(
            f"Pipeline.verify: {(time.perf_counter() - t0) / n * 1e6:.0f} us per record "
            f"({(time.thread_time() - c0) / n * 1e6:.0f} us CPU; Ed25519 itself is "
            f"~{1e6 / crypto_reference(0.3)['verify_1']:.0f} us of it)"
        )
        sequencer._commit(items[:50])  # compile caches, first pages
        del items[:50]
        accepted = None
        for size, reps in ((1, 20), (8, 20), (64, 8), (256, 4)):
            wall = cpu = 0.0
            for _ in range(reps):
                chunk, items[:size] = items[:size], []
                t0, c0 = time.perf_counter(), time.thread_time()
                outcomes = sequencer._commit(chunk)
                wall += time.perf_counter() - t0
                cpu += time.thread_time() - c0
                bad = [o for o in outcomes if not hasattr(o, "receipt_payload")]
                if bad:
                    raise RuntimeError(f"component commit refused: {bad[0]}")
                accepted = outcomes[0]
            lines.append(
                f"Sequencer._commit of {size:>3}: {wall / reps * 1e3:6.2f} ms wall, "
                f"{cpu / reps * 1e3:6.2f} ms CPU "
                f"= {wall / reps / size * 1e6:5.0f} us per record"
            )
        t0 = time.perf_counter()
        for _ in range(500):
            pipeline.sign_receipt(accepted)  # type: ignore[arg-type]
        lines.append(f"Pipeline.sign_receipt: {(time.perf_counter() - t0) / 500 * 1e6:.0f} us")
        stop = threading.Event()

        def busy() -> None:
            x = 0
            while not stop.is_set():
                for i in range(1000):
                    x += i

        for size in (8, 64):
            spinner = threading.Thread(target=busy, daemon=True)
            spinner.start()
            try:
                reps = 3
                t0, c0 = time.perf_counter(), time.thread_time()
                for _ in range(reps):
                    chunk, items[:size] = items[:size], []
                    sequencer._commit(chunk)
                wall, cpu = (time.perf_counter() - t0) / reps, (time.thread_time() - c0) / reps
            finally:
                stop.set()
                spinner.join()
                stop.clear()
            lines.append(
                f"Sequencer._commit of {size:>3} while one other Python thread computes: "
                f"{wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU (the GIL is handed back after every "
                "SQLite call)"
            )
    except Exception as exc:  # private APIs may move; the benchmark itself does not depend on them
        lines.append(f"component reference skipped: {type(exc).__name__}: {exc}")
    finally:
        engines.dispose()
    return lines


# --------------------------------------------------------------------------------------
# Profiling (py-spy).
# --------------------------------------------------------------------------------------


def _thread_group(label: str) -> str:
    # "thread (11622): mrx-verify_3" -> "mrx-verify"
    name = label.split("): ", 1)[-1]
    return re.sub(r"_\d+$", "", name)


def pyspy_summary(raw_path: Path, ticks: int, top: int = 15) -> list[str]:
    """Aggregate py-spy --format raw output: by thread group, by leaf frame, inclusive."""
    by_thread: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        n = int(count_s)
        frames = stack.split(";")
        total += n
        by_thread[_thread_group(frames[0])] += n
        if len(frames) > 1:
            leaf[_short(frames[-1])] += n
        for f in {_short(f) for f in frames[1:]}:
            if "threading.py" not in f and "thread.py" not in f:
                incl[f] += n
    if not total:
        return ["(no samples)"]
    out = [f"samples {total} = {total / ticks:.2f} thread-seconds per second of wall time"]
    out.append("by thread (share of all samples):")
    out += [f"  {n / total:6.1%}  {t}" for t, n in by_thread.most_common(12)]
    out.append("leaf frame (self):")
    out += [f"  {n / total:6.1%}  {f}" for f, n in leaf.most_common(top)]
    out.append("inclusive:")
    out += [f"  {n / total:6.1%}  {f}" for f, n in incl.most_common(top + 10)]
    return out


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py:123)"
    if "(" in frame and frame.endswith(")"):
        name, _, loc = frame.partition(" (")
        loc = loc.rstrip(")")
        parts = loc.split("/")
        tail = "/".join(parts[-2:]) if "gateway" in loc or "grpc" in loc else parts[-1]
        return f"{name} ({tail})"
    return frame


def ctx_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid`` so far."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[-1])
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    return total


def pyspy_record(pid: int, raw: Path, seconds: int, extra: list[str]) -> subprocess.Popen[bytes]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [pyspy, "record", "--pid", str(pid), "--rate", str(PYSPY_RATE), "--duration", str(seconds),
         "--nonblocking", "--threads", "--format", "raw", "-o", str(raw), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


PYSPY_RATE = 200


def profile_gateway(
    server: Server,
    signer: Signer,
    channel: grpc.Channel,
    args: argparse.Namespace,
    gateway_keys: dict[str, Any],
    out_dir: Path,
) -> list[str]:
    """Instrumented runs (sequencer timing, GIL probe), then py-spy under the same loads."""
    lines: list[str] = []
    loads = [("unary", args.inflight, args.records), ("stream", args.profile_streams, args.stream_records)]
    rates: dict[str, float] = {}
    for kind, level, size in loads:
        (batch,) = signer.batches([size])
        i0 = server.stats()["instruments"]
        cs0 = ctx_switches(server.pid)
        t0 = time.perf_counter()
        m = measure(
            server, kind, level, batch, client=args.client, channel=channel, gateway_keys=gateway_keys
        )
        wall = time.perf_counter() - t0
        cs1 = ctx_switches(server.pid)
        i1 = server.stats()["instruments"]
        d = {k: i1[k] - i0[k] for k in i0 if k != "probe_late_max"}
        n = max(d["commits"], 1)
        rates[kind] = m.rate
        lines.append(
            f"{kind} x{level}: {m.rate:,.0f} records/s, {m.refusals} refusals, server {m.srv_cpu:.2f} cores, "
            f"client {m.cli_cpu:.2f}, other {m.other_cpu:.2f}; server threads switched context "
            f"{(cs1 - cs0) / wall:,.0f} times/s = {(cs1 - cs0) / size:.0f} per record"
        )
        lines.append(
            f"  sequencer: {d['commits']} commits of {size / n:.1f} records; "
            f"busy {d['commit_wall'] / wall:.0%} "
            f"of wall time; per commit {d['commit_wall'] / n * 1e3:.2f} ms wall = "
            f"{d['commit_cpu'] / n * 1e3:.2f} ms on-CPU + {d['db_commit_wall'] / n * 1e3:.2f} ms in COMMIT "
            f"+ {(d['commit_wall'] - d['commit_cpu'] - d['db_commit_wall']) / n * 1e3:.2f} ms waiting "
            f"(GIL, locks); {d['commit_wall'] / size * 1e6:.0f} us wall, "
            f"{d['commit_cpu'] / size * 1e6:.0f} us CPU "
            "per record"
        )
        pn = max(d["probe_n"], 1)
        lines.append(
            f"  GIL probe (2 ms sleeps): woke {d['probe_late'] / pn * 1e3:.2f} ms late on average, "
            f"{d['probe_over_1ms'] / pn:.0%} of wake-ups more than 1 ms late"
        )
    seconds = 3
    for kind, level, _ in loads:
        for label, extra in (("GIL holder", ["--gil"]), ("all threads, on-CPU or runnable", [])):
            size = max(1000, int(rates[kind] * (seconds + 1.5)))
            (batch,) = signer.batches([size])
            raw = out_dir / f"pyspy-{kind}-{'gil' if extra else 'all'}.txt"
            spy = pyspy_record(server.pid, raw, seconds, extra)
            time.sleep(0.4)
            m = measure(
                server, kind, level, batch, client=args.client, channel=channel, gateway_keys=gateway_keys
            )
            spy.wait(60)
            lines.append("")
            lines.append(
                f"py-spy {label}, {kind} x{level} "
                f"({m.rate:,.0f} records/s while sampled, {m.refusals} refusals)"
            )
            if spy.returncode != 0 or not raw.exists():
                err = spy.stderr.read().decode()[-300:] if spy.stderr else ""
                lines.append(f"  py-spy failed: {err}")
                continue
            lines += ["  " + x for x in pyspy_summary(raw, seconds * PYSPY_RATE)]
    return lines


# --------------------------------------------------------------------------------------
# Databases.
# --------------------------------------------------------------------------------------


class Database:
    """A fresh database per gateway start; counts the exchange log afterwards."""

    def __init__(self, base: str | None, workdir: Path):
        self.base = base
        self.workdir = workdir
        self.schemas: list[str] = []

    def fresh(self, label: str) -> str:
        if not self.base:
            return f"sqlite:///{self.workdir / f'mrx-{label}.db'}"
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._plain(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options=-csearch_path%3D{schema}"

    def _plain(self) -> str:
        return self.base.replace("postgresql+psycopg://", "postgresql://").split("?")[0]  # type: ignore[union-attr]

    def count(self, url: str) -> dict[int, int]:
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT outcome, count(*) FROM exchanges GROUP BY outcome")).all()
        finally:
            engine.dispose()
        return {int(o): int(n) for o, n in rows}

    def cleanup(self) -> None:
        if not self.schemas:
            return
        import psycopg

        with psycopg.connect(self._plain(), autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    def version(self) -> str:
        if not self.base:
            return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL)"
        import psycopg

        with psycopg.connect(self._plain()) as conn:
            v = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            sc = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
        return f"PostgreSQL {v} (synchronous_commit={sc})"


# --------------------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------------------


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} cores {model}, {mem_kb / 2**20:.0f} GiB RAM, {platform.platform()}"


def versions() -> str:
    from importlib.metadata import version

    return (
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, protobuf {version('protobuf')}, "
        f"cryptography {version('cryptography')}, SQLAlchemy {version('sqlalchemy')}"
    )


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--database", help="SQLAlchemy URL of a PostgreSQL database (default: SQLite in a temp dir)"
    )
    p.add_argument("--records", type=int, default=2000, help="unary records per run (default 2000)")
    p.add_argument("--stream-records", type=int, default=4000,
                   help="records per stream run, split evenly over the streams (default 4000)")  # fmt: skip
    p.add_argument("--inflight", type=int, default=64, help="unary calls in flight (default 64)")
    p.add_argument("--curve", type=ints, default=[8, 16], help="extra unary in-flight levels (default 8,16)")
    p.add_argument("--streams", type=ints, default=[1, 2, 4], help="concurrent stream counts (default 1,2,4)")
    p.add_argument(
        "--workers", type=ints, default=[8, 16], help="gateway worker threads to try (default 8,16)"
    )
    p.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3; median reported)")
    p.add_argument("--curve-runs", type=int, default=1, help="runs per --curve point (default 1)")
    p.add_argument("--client", choices=("futures", "aio"), default="futures", help="unary client stack")
    p.add_argument("--no-echo", action="store_true", help="skip the bare gRPC echo reference")
    p.add_argument("--no-components", action="store_true", help="skip the in-process component timings")
    p.add_argument("--profile", action="store_true",
                   help="then profile an instrumented gateway (sequencer timing, py-spy)")  # fmt: skip
    p.add_argument("--profile-streams", type=int, default=2, help="streams in the profiled stream load")
    p.add_argument("--quiet-wait", type=float, default=3.0,
                   help="before each run wait up to this many s for other processes to go idle")  # fmt: skip
    p.add_argument("--quiet-budget", type=float, default=30.0,
                   help="total seconds the benchmark may spend waiting for idle (default 30)")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (databases, logs, profiles)")
    p.add_argument("--server-process", action="store_true", default=True,
                   help="accepted for compatibility: the gateway always runs in its own process")  # fmt: skip
    args = p.parse_args()

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mrx-bench-"))
    global SNAPSHOT
    snapshot = workdir / "src"
    shutil.copytree(REPO / "gateway", snapshot / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    SNAPSHOT = str(snapshot)
    sys.path.insert(0, SNAPSHOT)
    tree = tree_state(snapshot / "gateway")
    db = Database(args.database, workdir)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    profile_lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)

    from gateway.crypto.suites import PrivateKey
    from gateway.registry.keygen import demo_keyid, write_demo_federation
    from gateway.server import CHINA

    now = datetime.now(UTC)
    paths = write_demo_federation(template_dir=REPO / "keys", dest=workdir / "federation", now=now)
    gw_entry = "MRX-GW"
    gw_key = PrivateKey.load(paths[gw_entry], demo_keyid(gw_entry))
    gateway_keys = {gw_key.keyid: gw_key.public_key()}
    signer = Signer({k: v for k, v in paths.items() if k in ISSUERS}, now.astimezone(CHINA).date())
    options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]

    out(f"# mrx submit benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    out(f"command: python {' '.join(sys.argv)}")
    out(f"machine: {machine()}")
    out(f"versions: {versions()}")
    out(f"database: {db.version()}")
    out(f"gateway code: {tree}")
    out(f"unary client: {args.client}; runs per scenario: {args.runs}; answers checked after each run")
    wait_quiet(args.quiet_wait)
    ref = crypto_reference()
    out(
        f"reference: Ed25519 verify {ref['verify_1']:,.0f}/s on 1 thread, "
        f"{ref['verify_2']:,.0f}/s on 2 threads, "
        f"sign {ref['sign_1']:,.0f}/s (cryptography, in this process)"
    )
    if not args.no_components:
        for line in component_reference(paths, workdir, now.astimezone(CHINA).date()):
            out(f"component: {line}")
    out()
    out(TABLE_HEAD)

    waited = [0.0]

    def quiet() -> None:
        budget = min(args.quiet_wait, args.quiet_budget - waited[0])
        if budget > 0:
            t0 = time.monotonic()
            wait_quiet(budget)
            waited[0] += time.monotonic() - t0

    def scenario(server: Server, name: str, kind: str, level: int, size: int, workers: int,
                 channel: grpc.Channel, echo: bool, runs_wanted: int | None = None) -> None:  # fmt: skip
        batches = signer.batches([size] * (runs_wanted or args.runs))
        runs = []
        for b in batches:
            quiet()
            runs.append(
                measure(server, kind, level, b, client=args.client, channel=channel,
                        gateway_keys=None if echo else gateway_keys)
            )  # fmt: skip
        load = f"{level} in flight" if kind == "unary" else f"{level} stream{'s' if level > 1 else ''}"
        row = Row(name, "echo" if echo else "gateway", workers, load, size, runs).summary()
        rows.append(row)
        out(fmt_row(row))
        if row["refusals"]:
            out(f"  !! refusals: {row['refusal_kinds']}")

    def start(workers: int, *, instrument: bool = False) -> tuple[Server, str]:
        label = f"w{workers}{'-instrumented' if instrument else ''}"
        url = db.fresh(label)
        server = Server(
            "_serve",
            [
                "--federation", str(workdir / "federation"),
                "--gateway-key", str(paths[gw_entry]),
                "--gateway-keyid", demo_keyid(gw_entry),
                "--database", url,
                "--workers", str(workers),
                *(["--instrument"] if instrument else []),
            ],
            workdir / f"gateway-{label}.log",
        )  # fmt: skip
        return server, url

    def warm_up(server: Server, ch: grpc.Channel) -> int:
        """Connections, code paths, page cache, thread pools; returns records sent."""
        w1, w2 = signer.batches([500, 2000])
        measure(server, "unary", args.inflight, w1, client=args.client, channel=ch, gateway_keys=gateway_keys)
        measure(server, "stream", 2, w2, client=args.client, channel=ch, gateway_keys=gateway_keys)
        return 2500

    def finish(server: Server, url: str, sent: int, label: str) -> None:
        final = server.stop()
        counts = db.count(url)
        note = (
            f"{label}: exchange log holds {sum(counts.values()):,} entries ({counts.get(1, 0):,} accepted, "
            f"{counts.get(2, 0):,} refused) for {sent:,} records sent; {final.get('committed', 0):,} "
            f"submissions in {final.get('batches', 0):,} commits"
        )
        if counts.get(1, 0) != sent or sum(counts.values()) != sent:
            note = "!! MISMATCH " + note
        notes.append(note)

    try:
        for workers in args.workers:
            if not args.no_echo:
                echo = Server("_echo", ["--workers", str(workers)], workdir / f"echo-{workers}.log")
                try:
                    with grpc.insecure_channel(echo.target, options) as ch:
                        grpc.channel_ready_future(ch).result(10)
                        (warm,) = signer.batches([1000])
                        measure(
                            echo,
                            "unary",
                            args.inflight,
                            warm,
                            client=args.client,
                            channel=ch,
                            gateway_keys=None,
                        )
                        scenario(echo, "echo unary", "unary", args.inflight, args.records, workers, ch, True)
                        for n in sorted({1, max(args.streams)}):
                            scenario(echo, "echo stream", "stream", n, args.stream_records, workers, ch, True)
                finally:
                    echo.stop()

            server, url = start(workers)
            sent = 0
            try:
                with grpc.insecure_channel(server.target, options) as ch:
                    grpc.channel_ready_future(ch).result(10)
                    sent += warm_up(server, ch)
                    scenario(server, "unary Submit", "unary", args.inflight, args.records, workers, ch, False)
                    sent += args.records * args.runs
                    for level in args.curve:
                        scenario(server, "unary Submit", "unary", level, args.records, workers, ch, False,
                                 args.curve_runs)  # fmt: skip
                        sent += args.records * args.curve_runs
                    for n in args.streams:
                        scenario(server, "SubmitStream", "stream", n, args.stream_records, workers, ch, False)
                        sent += args.stream_records * args.runs
            finally:
                finish(server, url, sent, f"workers={workers}")

        if args.profile:
            workers = args.workers[-1]
            server, url = start(workers, instrument=True)
            try:
                with grpc.insecure_channel(server.target, options) as ch:
                    grpc.channel_ready_future(ch).result(10)
                    warm_up(server, ch)
                    quiet()
                    profile_lines = profile_gateway(server, signer, ch, args, gateway_keys, workdir)
            finally:
                server.stop()
    finally:
        signer.close()
        db.cleanup()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    out()
    for note in notes:
        out(note)
    out(
        f"pre-signed {signer.signed:,} envelopes in {signer.seconds:.1f} s "
        "(2 processes, outside the timed windows)"
    )
    if profile_lines:
        out()
        out(f"## profile: instrumented gateway, workers={args.workers[-1]} (fresh database)")
        for line in profile_lines:
            out(line)
    out(
        f"\ntotal benchmark time {time.perf_counter() - started:.0f} s "
        f"({waited[0]:.0f} s of it waiting for other processes to go idle)"
    )
    if args.json:
        args.json.write_text(json.dumps({"reference": ref, "rows": rows, "notes": notes}, indent=1))
    bad = any(r["refusals"] for r in rows) or any(n.startswith("!!") for n in notes)
    return 1 if bad else 0


def tree_state(src: Path) -> str:
    """Which gateway code was measured: git HEAD plus a digest of the snapshot's *.py files."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    digest = hashlib.sha256()
    for path in sorted(src.rglob("*.py")):
        digest.update(path.relative_to(src.parent).as_posix().encode() + b"\0" + path.read_bytes())
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "gateway"], cwd=REPO, capture_output=True, text=True
    )
    state = "uncommitted changes" if dirty.stdout.strip() else "clean"
    return f"HEAD {head.stdout.strip() or '?'} ({state}), sha256(gateway/**.py) {digest.hexdigest()[:12]}"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve_gateway(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_echo":
        serve_echo(sys.argv[2:])
    else:
        sys.exit(main())
