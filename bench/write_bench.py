#!/usr/bin/env python
"""Write-path benchmark: the gateway under test against the landed code (757f7fd), same run.

    python bench/write_bench.py --quick                       # SQLite, ~2 min
    python bench/write_bench.py                               # SQLite, full (3 runs per scenario)
    python bench/write_bench.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test --no-sqlite
    python bench/write_bench.py --quick --code new            # only the working tree's gateway

Two gateways per backend, each in its own process (``write_bench.py _serve``, calling
``gateway.server.start_gateway``) on a fresh database (SQLite file in a temp dir, or a
fresh PostgreSQL schema, dropped afterwards), with one demo federation generated into the
temp dir:

* ``new``: a copy of the working tree's gateway/ taken at start (an edit during the run
  cannot change the code under test);
* ``landed``: ``git archive 757f7fd`` (``--landed REV``) extracted into the temp dir.

Each server runs with PYTHONPATH pointing at its own tree and reports ``gateway.__file__``;
the benchmark stops if it is not the tree meant. Both gateways of a backend are up at
once and the scenarios alternate between them, run by run, so both see the same machine.

Scenarios: unary Submit at ``--inflight`` (64) calls in flight; SubmitStream with one
envelope per message, 1 and 2 streams; SubmitBatch of ``--batch-size`` (500) envelopes
per call, 1 and 2 calls in flight (new code only: the landed code has no SubmitBatch).
Every envelope is signed before its run (2 processes, outside the timed window): a
distinct demo certificate of one of the 12 demo issuers, signed by that issuer's Ed25519
key, sent as pre-serialized bytes. Every answer is checked: a receipt for that envelope
(message id, SHA-256, ACCEPTED, a log index not seen before on that gateway), ``--sig-sample``
receipt signatures per run verified with the gateway key; anything else is counted by
gRPC code and reason. When a gateway stops, its exchange log must hold exactly the
records acknowledged (exit status 1 otherwise).

Per row: records/s (accepted, first send to last answer), p50/p99 per call (a call is
one envelope for unary and streams, one batch for SubmitBatch), and CPU from
/proc/<pid>/stat: gateway CPU µs per accepted record is the server process plus all its
descendants (the writer process, its forkserver) divided by accepted records; front
(server process) and writer separately; PostgreSQL's processes; this client; and the
rest of the machine ("other cores": the machine is shared).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import inspect
import json
import os
import platform
import random
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
LANDED = "757f7fd"
SUBMIT = "/mrx.v1.ExchangeService/Submit"
SUBMIT_STREAM = "/mrx.v1.ExchangeService/SubmitStream"
SUBMIT_BATCH = "/mrx.v1.ExchangeService/SubmitBatch"
ISSUERS = (
    "CN-SH", "CN-JS", "CN-ZJ", "CN-AH", "CN-BJ", "CN-TJ",
    "CN-HE", "CN-GD", "CN-HK", "CN-MO", "CN-FJ", "CN-SN",
)  # fmt: skip
TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------
# CPU accounting from /proc.
# --------------------------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, name, CPU seconds user+sys) for every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 :].rsplit(")", 1)
        f = rest.split()
        out[int(stat.parent.name)] = (int(f[1]), name, (int(f[11]) + int(f[12])) / TICK)
    return out


def descendants(table: dict[int, tuple[int, str, float]], root: int) -> set[int]:
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        kids[ppid].append(pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += kids.get(pid, [])
    return seen


def system_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, _steal = fields
    return (user + nice + system + irq + softirq) / TICK


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class CpuSnap:
    wall: float
    system: float
    client: float
    table: dict[int, tuple[int, str, float]]

    @classmethod
    def take(cls) -> CpuSnap:
        return cls(time.perf_counter(), system_busy(), _cpu(), proc_table())


def cpu_between(a: CpuSnap, b: CpuSnap, server_pid: int, writer_pid: int | None) -> dict[str, float]:
    """CPU seconds between two snapshots: front, writer, other descendants, postgres, client, rest."""

    def used(pid: int) -> float:
        after = b.table.get(pid)
        before = a.table.get(pid)
        if after is None:
            return 0.0
        return after[2] - (before[2] if before else 0.0)

    tree = descendants(b.table, server_pid)
    front = used(server_pid)
    writer = used(writer_pid) if writer_pid else 0.0
    rest_tree = sum(used(p) for p in tree if p not in (server_pid, writer_pid))
    pg = sum(used(p) for p, (_, name, _) in b.table.items() if name == "postgres")
    client = b.client - a.client
    total = b.system - a.system
    return {
        "front": front,
        "writer": writer,
        "gateway": front + writer + rest_tree,
        "postgres": pg,
        "client": client,
        "other": max(0.0, total - front - writer - rest_tree - pg - client),
    }


def wait_quiet(max_wait: float, limit: float = 0.3) -> float:
    """Wait up to max_wait s for 2 s in a row with less than ``limit`` cores busy; return busy cores."""
    deadline = time.monotonic() + max_wait
    calm = 0
    cores = 0.0
    while time.monotonic() < deadline:
        b0 = system_busy()
        time.sleep(1.0)
        cores = system_busy() - b0
        calm = calm + 1 if cores < limit else 0
        if calm >= 2:
            break
    return cores


# --------------------------------------------------------------------------------------
# Server side: `write_bench.py _serve`, driven by line commands on stdin.
# --------------------------------------------------------------------------------------


def serve_gateway(argv: list[str]) -> None:
    import logging

    import gateway
    from gateway.crypto.suites import PrivateKey
    from gateway.registry.federation import load_federation
    from gateway.server import start_gateway
    from gateway.store.engine import open_engines

    p = argparse.ArgumentParser()
    p.add_argument("--federation", required=True)
    p.add_argument("--gateway-key", required=True)
    p.add_argument("--gateway-keyid", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--workers", type=int)
    p.add_argument("--writer-delay", type=float)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    federation = load_federation(Path(a.federation))
    key = PrivateKey.load(Path(a.gateway_key), a.gateway_keyid)
    engines = open_engines(a.database)
    params = inspect.signature(start_gateway).parameters
    kwargs: dict[str, Any] = {}
    if a.workers:
        kwargs["workers"] = a.workers
    if a.writer_delay is not None and "writer_options" in params:
        from gateway.ledger.writer import WriterOptions

        kwargs["writer_options"] = WriterOptions(delay=a.writer_delay)
    gw = start_gateway(federation=federation, engines=engines, gateway_key=key, **kwargs)
    writer = getattr(gw, "writer", None)

    def stats() -> dict[str, Any]:
        if writer is not None:  # the rewrite: commits counted by the front's writer client
            return {"commits": writer.client.commits, "committed": writer.client.committed}
        return {"commits": gw.sequencer.batches, "committed": gw.sequencer.committed}

    info = {
        "port": gw.port,
        "pid": os.getpid(),
        "writer_pid": writer.pid if writer is not None else None,
        "gateway": gateway.__file__,
        "workers": kwargs.get("workers", params["workers"].default),
        "writer_delay": kwargs["writer_options"].delay if "writer_options" in kwargs else _default_delay(),
        "has_batch": hasattr(gw, "writer"),
    }
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "stats":
            print(json.dumps(stats()), flush=True)
        elif cmd == "quit":
            final = stats()
            gw.stop()
            engines.dispose()
            print(json.dumps(final), flush=True)
            return


def _default_delay() -> float | None:
    try:
        from gateway.ledger.writer import DEFAULT_DELAY
    except ImportError:  # the landed code has no separate writer
        return None
    return DEFAULT_DELAY


class Server:
    """A gateway subprocess running one code tree, and its stdin/stdout control channel."""

    def __init__(self, label: str, tree: Path, args: list[str], log_path: Path):
        self.label = label
        self.tree = tree
        self._log = log_path.open("ab")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(tree)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=tree,
            env=env,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.proc.wait()
            raise RuntimeError(
                f"{label} gateway failed to start; see {log_path}:\n{log_path.read_text()[-3000:]}"
            )
        info = json.loads(line)
        if not Path(info["gateway"]).resolve().is_relative_to(tree.resolve()):
            self.stop()
            raise RuntimeError(f"{label} gateway imported {info['gateway']}, not the tree in {tree}")
        self.info = info
        self.pid: int = info["pid"]
        self.writer_pid: int | None = info["writer_pid"]
        self.target = f"127.0.0.1:{info['port']}"
        self.acknowledged = 0
        self.log_indexes: set[int] = set()

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
            self.proc.wait(60)
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


def _init_signer(paths: dict[str, str], src: str) -> None:
    sys.path.insert(0, src)
    from gateway.registry.keygen import load_demo_signers

    _SIGNERS.update(load_demo_signers({k: Path(v) for k, v in paths.items()}))


def _sign_chunk(issuer: str, start: int, count: int, today: str) -> list[tuple[bytes, str, bytes]]:
    from gateway.client import make_submission
    from gateway.demo_fixtures import demo_certificates
    from gateway.pb import exchange_pb2

    out = []
    for cert in demo_certificates(issuer, count=count, start_serial=start, today=date.fromisoformat(today)):
        mid = f"wb-{uuid.uuid4()}"
        env = make_submission(cert, sender=issuer, signer=_SIGNERS[issuer], message_id=mid)
        digest = hashlib.sha256(env.SerializeToString(deterministic=True)).digest()
        out.append((exchange_pb2.SubmitRequest(envelope=env).SerializeToString(), mid, digest))
    return out


@dataclass
class Batch:
    requests: list[bytes]  # SubmitRequest bytes, one envelope each
    message_ids: list[str]
    digests: list[bytes]


class Signer:
    """Distinct demo certificates (per-issuer serial blocks), signed by their issuer, in 2 processes."""

    def __init__(self, key_paths: dict[str, Path], today: date, src: Path):
        import multiprocessing

        self.today = today.isoformat()
        self.next_serial = dict.fromkeys(ISSUERS, 1)
        self.pool = ProcessPoolExecutor(
            max_workers=2,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_signer,
            initargs=({k: str(v) for k, v in key_paths.items()}, str(src)),
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
                    raise RuntimeError(
                        f"serial block of {issuer} exhausted (80,000 per issuer); use fewer records"
                    )
                self.next_serial[issuer] += per
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
# Load generation. Each returns one answer per envelope and one latency per call.
# --------------------------------------------------------------------------------------


@dataclass
class RunResult:
    answers: list[Any]  # per envelope: a receipt Envelope, a refusal string, or None
    latencies_ms: list[float]  # per call
    wall: float


def _refusal_of_error(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        from gateway.client import Refusal

        ref = Refusal.from_rpc_error(exc)  # type: ignore[arg-type]
        return f"{ref.code.name}/{ref.reason or ref.message[:40]}"
    return f"client/{type(exc).__name__}"


def _refusal_of_status(status: Any) -> str:
    from gateway.client import Refusal

    ref = Refusal.from_status(status)
    return f"{ref.code.name}/{ref.reason}"


def calls_in_flight(
    channel: grpc.Channel, method: str, calls: list[bytes], inflight: int
) -> tuple[list[Any], list[float], float]:
    """``inflight`` unary calls outstanding at all times: each completion starts the next."""
    call = channel.unary_unary(method)
    n = len(calls)
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
        fut = call.future(calls[i], timeout=300)
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
    wall = time.perf_counter() - t0
    return results, [(e - s) / 1e6 for s, e in zip(start, end, strict=True)], wall


def run_unary(channel: grpc.Channel, batch: Batch, inflight: int) -> RunResult:
    from gateway.pb import exchange_pb2

    results, lat, wall = calls_in_flight(channel, SUBMIT, batch.requests, inflight)
    answers = [
        exchange_pb2.SubmitResponse.FromString(r).receipt if isinstance(r, bytes) else _refusal_of_error(r)
        for r in results
    ]
    return RunResult(answers, lat, wall)


def run_batches(channel: grpc.Channel, batch: Batch, size: int, inflight: int) -> RunResult:
    """SubmitBatch calls of ``size`` envelopes. A SubmitRequest and a SubmitBatchRequest both
    carry their envelopes as field 1, so a batch's bytes are its requests' bytes joined."""
    from gateway.pb import exchange_pb2

    groups = [list(range(i, min(i + size, len(batch.requests)))) for i in range(0, len(batch.requests), size)]
    calls = [b"".join(batch.requests[i] for i in g) for g in groups]
    results, lat, wall = calls_in_flight(channel, SUBMIT_BATCH, calls, inflight)
    answers: list[Any] = [None] * len(batch.requests)
    for g, r in zip(groups, results, strict=True):
        if not isinstance(r, bytes):
            for i in g:
                answers[i] = _refusal_of_error(r)
            continue
        out = exchange_pb2.SubmitBatchResponse.FromString(r).results
        if len(out) != len(g):
            for i in g:
                answers[i] = f"bad-batch-answer/{len(out)} results for {len(g)}"
            continue
        for pos, (i, res) in enumerate(zip(g, out, strict=True)):
            if res.sequence != pos:
                answers[i] = "out-of-order"
            elif res.HasField("receipt"):
                answers[i] = res.receipt
            else:
                answers[i] = _refusal_of_status(res.error)
    return RunResult(answers, lat, wall)


def run_streams(channel: grpc.Channel, batch: Batch, streams: int) -> RunResult:
    """``streams`` concurrent bidi streams, one envelope per message, request i on stream i % streams."""
    from gateway.pb import exchange_pb2

    call = channel.stream_stream(SUBMIT_STREAM)
    n = len(batch.requests)
    answers: list[Any] = [None] * n
    start = [0] * n
    end = [0] * n
    barrier = threading.Barrier(streams + 1)

    def one(k: int) -> None:
        idx = list(range(k, n, streams))

        def gen() -> Any:
            for i in idx:
                start[i] = time.perf_counter_ns()
                yield batch.requests[i]

        barrier.wait()
        got = 0
        try:
            for raw in call(gen(), timeout=600):
                i = idx[got]
                end[i] = time.perf_counter_ns()
                msg = exchange_pb2.SubmitStreamResponse.FromString(raw)
                if msg.sequence != got:
                    answers[i] = "out-of-order"
                elif msg.HasField("receipt"):
                    answers[i] = msg.receipt
                else:
                    answers[i] = _refusal_of_status(msg.error)
                got += 1
        except Exception as exc:  # the whole stream failed: every unanswered item is an error
            for i in idx[got:]:
                answers[i] = _refusal_of_error(exc)
                end[i] = end[i] or time.perf_counter_ns()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = [(e - s) / 1e6 for s, e in zip(start, end, strict=True) if s and e]
    return RunResult(answers, lat, wall)


# --------------------------------------------------------------------------------------
# Checking answers and measuring.
# --------------------------------------------------------------------------------------


@dataclass
class Check:
    ok: int = 0
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)
    sig_checked: int = 0


def check(rr: RunResult, batch: Batch, server: Server, gateway_keys: dict[str, Any], sample: int) -> Check:
    from gateway.client import ReceiptError, verify_receipt
    from gateway.pb import envelope_pb2

    c = Check()
    to_verify = set(random.sample(range(len(rr.answers)), min(sample, len(rr.answers))))
    for i, ans in enumerate(rr.answers):
        if ans is None:
            c.refusals["no-answer"] += 1
            continue
        if isinstance(ans, str):
            c.refusals[ans] += 1
            continue
        if i in to_verify:
            try:
                receipt = verify_receipt(ans, gateway_keys)
            except ReceiptError as exc:
                c.refusals[f"bad-signature/{exc}"[:60]] += 1
                continue
            c.sig_checked += 1
        else:
            receipt = envelope_pb2.Receipt.FromString(ans.payload)
        if (
            receipt.outcome != envelope_pb2.OUTCOME_ACCEPTED
            or receipt.message_id != batch.message_ids[i]
            or receipt.envelope_sha256 != batch.digests[i]
            or receipt.log_index in server.log_indexes
        ):
            c.refusals["bad-receipt"] += 1
            continue
        server.log_indexes.add(receipt.log_index)
        c.ok += 1
    server.acknowledged += c.ok
    return c


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


@dataclass
class Measured:
    rate: float  # accepted records per second
    p50: float
    p99: float
    accepted: int
    refusals: dict[str, int]
    cpu: dict[str, float]  # CPU seconds by part
    wall: float
    commits: int
    committed: int
    sig_checked: int

    def per_record(self, part: str) -> float:
        return self.cpu[part] * 1e6 / self.accepted if self.accepted else float("nan")

    def cores(self, part: str) -> float:
        return self.cpu[part] / self.wall


def measure(
    server: Server,
    channel: grpc.Channel,
    kind: str,
    level: int,
    batch: Batch,
    args: argparse.Namespace,
    gateway_keys: dict[str, Any],
) -> Measured:
    s0 = server.stats()
    a = CpuSnap.take()
    if kind == "unary":
        rr = run_unary(channel, batch, level)
    elif kind == "stream":
        rr = run_streams(channel, batch, level)
    else:
        rr = run_batches(channel, batch, args.batch_size, level)
    b = CpuSnap.take()
    s1 = server.stats()
    chk = check(rr, batch, server, gateway_keys, args.sig_sample)
    return Measured(
        rate=chk.ok / rr.wall,
        p50=pct(rr.latencies_ms, 0.50),
        p99=pct(rr.latencies_ms, 0.99),
        accepted=chk.ok,
        refusals=dict(chk.refusals),
        cpu=cpu_between(a, b, server.pid, server.writer_pid),
        wall=b.wall - a.wall,
        commits=s1["commits"] - s0["commits"],
        committed=s1["committed"] - s0["committed"],
        sig_checked=chk.sig_checked,
    )


@dataclass
class Row:
    backend: str
    code: str
    scenario: str
    load: str
    records: int
    runs: list[Measured]

    def summary(self) -> dict[str, Any]:
        med = sorted(self.runs, key=lambda m: m.rate)[len(self.runs) // 2]
        refusals: collections.Counter[str] = collections.Counter()
        for m in self.runs:
            refusals.update(m.refusals)
        return {
            "backend": self.backend,
            "code": self.code,
            "scenario": self.scenario,
            "load": self.load,
            "records": self.records,
            "runs": len(self.runs),
            "rate": statistics.median(m.rate for m in self.runs),
            "rate_min": min(m.rate for m in self.runs),
            "rate_max": max(m.rate for m in self.runs),
            "p50_ms": med.p50,
            "p99_ms": med.p99,
            # CPU per record: the median over runs of each part (steadier than the rate).
            "gw_us": statistics.median(m.per_record("gateway") for m in self.runs),
            "front_us": statistics.median(m.per_record("front") for m in self.runs),
            "writer_us": statistics.median(m.per_record("writer") for m in self.runs),
            "pg_us": statistics.median(m.per_record("postgres") for m in self.runs),
            "client_us": statistics.median(m.per_record("client") for m in self.runs),
            "gw_cores": med.cores("gateway"),
            "pg_cores": med.cores("postgres"),
            "client_cores": med.cores("client"),
            "other_cores": max(m.cores("other") for m in self.runs),
            "commit_batch": med.committed / med.commits if med.commits else 0.0,
            "refusals": sum(refusals.values()),
            "refusal_kinds": dict(refusals),
            "sig_checked": sum(m.sig_checked for m in self.runs),
            "run_rates": [round(m.rate) for m in self.runs],
            "run_gw_us": [round(m.per_record("gateway")) for m in self.runs],
        }


TABLE_HEAD = (
    "| backend | code | scenario | load | rec/run | rec/s (median) | min-max | p50 ms | p99 ms | "
    "gateway CPU µs/rec | front µs/rec | writer µs/rec | PG µs/rec | client µs/rec | gateway cores | "
    "other cores (max) | commit batch | refusals |\n|" + "---|" * 18
)


def fmt_row(s: dict[str, Any]) -> str:
    return (
        f"| {s['backend']} | {s['code']} | {s['scenario']} | {s['load']} | {s['records']:,} | "
        f"**{s['rate']:,.0f}** | "
        f"{s['rate_min']:,.0f}-{s['rate_max']:,.0f} | {s['p50_ms']:,.1f} | {s['p99_ms']:,.1f} | "
        f"**{s['gw_us']:,.0f}** | {s['front_us']:,.0f} | {s['writer_us']:,.0f} | {s['pg_us']:,.0f} | "
        f"{s['client_us']:,.0f} | {s['gw_cores']:.2f} | {s['other_cores']:.2f} | {s['commit_batch']:,.1f} | "
        f"{s['refusals']} |"
    )


# --------------------------------------------------------------------------------------
# Databases and code trees.
# --------------------------------------------------------------------------------------


class Database:
    """A fresh database per gateway; counts the exchange log afterwards; drops its schemas."""

    def __init__(self, base: str | None, workdir: Path):
        self.base = base
        self.workdir = workdir
        self.schemas: list[str] = []

    def fresh(self, label: str) -> str:
        if not self.base:
            return f"sqlite:///{self.workdir / f'mrx-{label}.db'}"
        import psycopg
        from sqlalchemy.engine import make_url

        schema = f"bench_wb_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._plain(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        url = make_url(self.base)
        opts = " ".join(o for o in (url.query.get("options", ""), f"-csearch_path={schema}") if o)
        return url.update_query_dict({"options": opts}).render_as_string(hide_password=False)

    def _plain(self) -> str:
        from sqlalchemy.engine import make_url

        assert self.base
        return make_url(self.base).set(drivername="postgresql").render_as_string(hide_password=False)

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
        self.schemas = []

    def version(self) -> str:
        if not self.base:
            return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL)"
        import psycopg

        with psycopg.connect(self._plain()) as conn:
            v = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            sc = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
        return f"PostgreSQL {v} (synchronous_commit={sc})"


def _digest(tree: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((tree / "gateway").rglob("*.py")):
        digest.update(path.relative_to(tree).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _archive(rev: str, dest: Path) -> str:
    """Extract gateway/ and keys/ (the federation template) of ``rev`` into ``dest``; its full hash."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", rev, "gateway", "keys"], cwd=REPO, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    full = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True)
    return full.stdout.strip()


def new_tree(workdir: Path, rev: str | None) -> tuple[Path, str]:
    """The code under test: a copy of the working tree's gateway/ and keys/, or ``rev``'s."""
    dest = workdir / "new"
    if rev:
        full = _archive(rev, dest)
        return dest, f"git archive {full[:12]}, sha256(gateway/**.py) {_digest(dest)}"
    for sub in ("gateway", "keys"):
        shutil.copytree(REPO / sub, dest / sub, ignore=shutil.ignore_patterns("__pycache__"))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "gateway"], cwd=REPO, capture_output=True, text=True
    )
    state = "with uncommitted changes" if dirty.stdout.strip() else "clean"
    return dest, f"working tree at HEAD {head.stdout.strip()} {state}, sha256(gateway/**.py) {_digest(dest)}"


def landed_tree(workdir: Path, rev: str) -> tuple[Path, str]:
    dest = workdir / "landed"
    full = _archive(rev, dest)
    return dest, f"git archive {full[:12]}, sha256(gateway/**.py) {_digest(dest)}"


_FEDERATION = (
    "import json, sys; from datetime import datetime; from pathlib import Path; "
    "from gateway.registry.keygen import write_demo_federation as w; "
    "p = w(template_dir=Path(sys.argv[1]), dest=Path(sys.argv[2]), now=datetime.fromisoformat(sys.argv[3])); "
    "print(json.dumps({k: str(v) for k, v in p.items()}))"
)


def demo_federation(tree: Path, dest: Path, now: datetime) -> dict[str, Path]:
    """The demo federation, written by ``tree``'s own keygen from its own template.

    With the landed code in the run, its keygen writes it, so both gateways can load it and
    every issuer has the Ed25519 key the landed code knows.
    """
    out = subprocess.run(
        [sys.executable, "-c", _FEDERATION, str(tree / "keys"), str(dest), now.isoformat()],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return {k: Path(v) for k, v in json.loads(out.stdout).items()}


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} vCPU {model}, {mem_kb / 2**20:.0f} GiB RAM, {platform.platform()}"


def versions() -> str:
    from importlib.metadata import version

    return (
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, protobuf {version('protobuf')}, "
        f"cryptography {version('cryptography')}, SQLAlchemy {version('sqlalchemy')}, "
        f"psycopg {version('psycopg')}"
    )


# --------------------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--postgres",
        "--database",
        dest="postgres",
        help="SQLAlchemy URL of a PostgreSQL database: also run there (fresh schemas, dropped)",
    )
    p.add_argument("--no-sqlite", action="store_true", help="skip SQLite (with --postgres)")
    p.add_argument("--code", default="new,landed", help="which gateways: new, landed or both (default)")
    p.add_argument("--landed", default=LANDED, help=f"the landed code's revision (default {LANDED})")
    p.add_argument("--new", help="measure this revision as the new code (default: the working tree)")
    p.add_argument(
        "--quick", action="store_true", help="1 run per scenario, smaller runs (~1-2 min per backend)"
    )
    p.add_argument("--runs", type=int, help="runs per scenario (default 3; --quick 1)")
    p.add_argument("--records", type=int, help="unary records per run (default 4000; --quick 2000)")
    p.add_argument("--stream-records", type=int, help="records per stream run (default 8000; --quick 3000)")
    p.add_argument(
        "--batch-records", type=int, help="records per SubmitBatch run (default 20000; --quick 6000)"
    )
    p.add_argument(
        "--landed-scale",
        type=float,
        default=0.5,
        help="the landed code gets this fraction of the records per run (it is ~3-5x slower)",
    )
    p.add_argument("--inflight", type=int, default=64, help="unary calls in flight (default 64)")
    p.add_argument("--streams", default="1,2", help="concurrent stream counts (default 1,2)")
    p.add_argument("--batch-size", type=int, default=500, help="envelopes per SubmitBatch call (default 500)")
    p.add_argument("--batch-inflight", default="1,2", help="SubmitBatch calls in flight (default 1,2)")
    p.add_argument("--scenarios", default="unary,stream,batch", help="which scenarios (default all)")
    p.add_argument("--workers", type=int, help="start_gateway workers (default: each code's own default)")
    p.add_argument(
        "--writer-delay", type=float, help="new code: WriterOptions(delay=...) (default: its default)"
    )
    p.add_argument("--sig-sample", type=int, default=200, help="receipt signatures verified per run (200)")
    p.add_argument("--quiet-wait", type=float, default=3.0,
                   help="before each run wait up to this many s for the machine to go idle (3)")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (databases, server logs)")
    args = p.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)
    args.records = args.records or (2000 if args.quick else 4000)
    args.stream_records = args.stream_records or (3000 if args.quick else 8000)
    args.batch_records = args.batch_records or (6000 if args.quick else 20000)
    codes = [c for c in args.code.split(",") if c]
    scenarios = [s for s in args.scenarios.split(",") if s]
    backends = ([] if args.no_sqlite else [None]) + ([args.postgres] if args.postgres else [])

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mrx-wbench-"))
    trees: dict[str, tuple[Path, str]] = {"new": new_tree(workdir, args.new)}
    if "landed" in codes:
        trees["landed"] = landed_tree(workdir, args.landed)
    # This process (client, signer pool) uses the same frozen copy as the new gateway.
    sys.path.insert(0, str(trees["new"][0]))
    import gateway
    from gateway.crypto.suites import PrivateKey
    from gateway.domain.records import CHINA
    from gateway.registry.keygen import demo_keyid

    assert Path(gateway.__file__).is_relative_to(trees["new"][0]), gateway.__file__
    now = datetime.now(UTC)
    fed_tree = trees["landed" if "landed" in trees else "new"][0]
    paths = demo_federation(fed_tree, workdir / "federation", now)
    gw_key = PrivateKey.load(paths["MRX-GW"], demo_keyid("MRX-GW"))
    gateway_keys = {gw_key.keyid: gw_key.public_key()}
    signer = Signer(
        {k: v for k, v in paths.items() if k in ISSUERS}, now.astimezone(CHINA).date(), trees["new"][0]
    )
    options = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    bad = False

    def out(line: str = "") -> None:
        print(line, flush=True)

    out(f"# mrx write-path benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    out(f"command: python bench/write_bench.py {' '.join(sys.argv[1:])}")
    out(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    out(f"versions: {versions()}")
    for code in codes:
        out(f"code {code}: {trees[code][1]}")
    out(
        f"load: unary {args.records:,}/run at {args.inflight} in flight; "
        f"streams {args.stream_records:,}/run; SubmitBatch {args.batch_records:,}/run in calls of "
        f"{args.batch_size}; landed code x{args.landed_scale}; "
        f"{args.runs} run(s) per scenario, codes alternating run by run"
    )
    out()

    def quiet() -> None:
        if args.quiet_wait > 0:
            wait_quiet(args.quiet_wait)

    plan: list[tuple[str, str, int, str]] = []  # (kind, scenario, level, load)
    if "unary" in scenarios:
        plan.append(("unary", "unary Submit", args.inflight, f"{args.inflight} in flight"))
    if "stream" in scenarios:
        for n in [int(x) for x in args.streams.split(",") if x]:
            plan.append(("stream", "SubmitStream", n, f"{n} stream{'s' if n > 1 else ''}"))
    if "batch" in scenarios:
        for n in [int(x) for x in args.batch_inflight.split(",") if x]:
            plan.append(
                ("batch", f"SubmitBatch x{args.batch_size}", n, f"{n} call{'s' if n > 1 else ''} in flight")
            )

    try:
        table_started = False
        for base in backends:
            db = Database(base, workdir)
            backend = "PostgreSQL" if base else "SQLite"
            out(f"## {backend}: {db.version()}")
            servers: dict[str, tuple[Server, str]] = {}
            try:
                for code in codes:
                    url = db.fresh(f"{code}-{backend.lower()}")
                    srv_args = [
                        "--federation", str(workdir / "federation"),
                        "--gateway-key", str(paths["MRX-GW"]),
                        "--gateway-keyid", demo_keyid("MRX-GW"),
                        "--database", url,
                        *(["--workers", str(args.workers)] if args.workers else []),
                        *(["--writer-delay", str(args.writer_delay)]
                          if args.writer_delay is not None else []),
                    ]  # fmt: skip
                    tree = trees[code][0]
                    server = Server(code, tree, srv_args, workdir / f"gateway-{code}-{backend}.log")
                    servers[code] = (server, url)
                    out(
                        f"{backend} {code}: server pid {server.pid} imports {server.info['gateway']}; "
                        f"writer pid {server.writer_pid}; workers {server.info['workers']}"
                        + (f"; writer delay {server.info['writer_delay']} s" if server.writer_pid else "")
                    )
                channels = {
                    code: grpc.insecure_channel(srv.target, options) for code, (srv, _) in servers.items()
                }
                for code, ch in channels.items():
                    grpc.channel_ready_future(ch).result(15)
                    srv = servers[code][0]
                    # Warm-up: connections, code paths, page cache.
                    w1, w2 = signer.batches([500, 1000])
                    measure(srv, ch, "unary", args.inflight, w1, args, gateway_keys)
                    measure(srv, ch, "stream", 2, w2, args, gateway_keys)
                if not table_started:
                    out()
                    out(TABLE_HEAD)
                    table_started = True
                for kind, name, level, load in plan:
                    runs: dict[str, list[Measured]] = {c: [] for c in codes}
                    sizes: dict[str, int] = {}
                    for code in codes:
                        if kind == "batch" and not servers[code][0].info["has_batch"]:
                            continue
                        size = {
                            "unary": args.records,
                            "stream": args.stream_records,
                            "batch": args.batch_records,
                        }[kind]
                        if code == "landed":
                            size = max(level, int(size * args.landed_scale))
                        sizes[code] = size
                    for _ in range(args.runs):
                        for code, size in sizes.items():
                            (b,) = signer.batches([size])
                            quiet()
                            runs[code].append(
                                measure(servers[code][0], channels[code], kind, level, b, args, gateway_keys)
                            )
                    for code, size in sizes.items():
                        row = Row(backend, code, name, load, size, runs[code]).summary()
                        rows.append(row)
                        out(fmt_row(row))
                        if row["refusals"]:
                            bad = True
                            out(f"  !! refusals: {row['refusal_kinds']}")
                for ch in channels.values():
                    ch.close()
            finally:
                for code, (server, url) in servers.items():
                    final = server.stop()
                    try:
                        counts = db.count(url)
                    except Exception as exc:
                        counts = {}
                        notes.append(f"!! {backend} {code}: could not count the exchange log: {exc}")
                    note = (
                        f"{backend} {code}: exchange log {sum(counts.values()):,} entries "
                        f"({counts.get(1, 0):,} accepted, {counts.get(2, 0):,} refused); "
                        f"acknowledged {server.acknowledged:,} "
                        f"(distinct log indexes {len(server.log_indexes):,}); "
                        f"{final.get('committed', 0):,} submissions in {final.get('commits', 0):,} commits"
                    )
                    if counts.get(1, 0) != server.acknowledged or sum(counts.values()) != server.acknowledged:
                        note = "!! MISMATCH " + note
                        bad = True
                    notes.append(note)
                db.cleanup()
    finally:
        signer.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    out()
    for note in notes:
        out(note)
    out(model_lines(rows))
    out(
        f"pre-signed {signer.signed:,} envelopes in {signer.seconds:.1f} s (outside the timed windows); "
        f"load average at end {os.getloadavg()[0]:.2f}; total {time.perf_counter() - started:.0f} s"
        + (f"; kept {workdir}" if args.keep else "")
    )
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv, "rows": rows, "notes": notes}, indent=1))
    return 1 if bad else 0


def model_lines(rows: list[dict[str, Any]]) -> str:
    """The N-front model: front and writer CPU per record, measured here, to records/s per core count."""
    lines = [
        "",
        "N-front model (front CPU F and writer CPU W per record, measured above; client and DB elsewhere;",
        "the writer ceiling 1e6/W is an upper bound: on PostgreSQL add the time the writer waits for",
        "each commit, ~40-50 us/record at 500 per commit by pg_growth.py):",
    ]
    for r in rows:
        if r["code"] != "new" or not r["writer_us"] or r["writer_us"] != r["writer_us"]:
            continue
        f, w = r["front_us"], r["writer_us"]
        ceiling = 1e6 / w
        per_front = 1e6 / f
        cells = ", ".join(f"N={n}: {min(n * per_front, ceiling):,.0f}/s" for n in (1, 2, 4, 8, 16))
        lines.append(
            f"  {r['backend']} {r['scenario']} {r['load']}: F {f:,.0f} µs, W {w:,.0f} µs -> one front core "
            f"{per_front:,.0f}/s, writer CPU ceiling {ceiling:,.0f}/s; {cells}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve_gateway(sys.argv[2:])
    else:
        sys.exit(main())
