#!/usr/bin/env python
"""Audit-log proof benchmark for the mrx gateway (RFC 6962 tree in ``merkle_nodes``).

    python bench/proof_bench.py                          # 1,000,000 leaves; SQLite, then PostgreSQL
    python bench/proof_bench.py --leaves 100000 --no-postgres
    python bench/proof_bench.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

Target (the issue): < 5 ms per inclusion proof served at 1,000,000 leaves, and appending
O(log n) per leaf.

Setup, per backend (not timed as part of any figure): a fresh database (a SQLite file in a
temp dir, or a fresh PostgreSQL schema dropped afterwards) created by ``open_engines``; leaf
``i`` is the bytes ``mrx-bench-leaf:<i>``, its level-0 node ``leaf_hash(leaf)``; every
perfect node ``CompactRange.append`` returns is bulk-loaded (SQLite executemany with
synchronous=OFF on a separate connection, PostgreSQL COPY, then ANALYZE). ``exchanges``
rows (700-byte placeholder envelope) exist only for the sampled indexes and the last one
(so the log's size is the tree's); one checkpoint at the full size, signed with the demo
MRX-GW key, makes ``tree_size=0`` requests work.

Figures (each scenario runs ``--samples`` / ``--requests`` items or ``--budget`` seconds,
whichever ends first, after a short warm-up; uniform random indexes, fixed seed):

(a) store level: ``AuditStore.inclusion_proof(i, n)`` and ``consistency_proof(old, n)``,
    every proof verified afterwards against the root computed while building
    (``verify_inclusion`` / ``verify_consistency``, old roots recorded during the build);
    plus the in-process ``AuditServicer.GetInclusionProof`` (read auth + its 4 queries)
    with pre-signed metadata, and what-if node readers (bench-only) showing the cost of
    the SQL shape;
(b) served: the gateway in its own process (``start_gateway``, 16 workers), ``AuditClient``
    as MRX-GW calling GetInclusionProof(log_index=i, tree_size=0) with 1 and 8 calls in
    flight (8 threads on one channel); every answer verified (leaf, index, proof against
    the root, checkpoint signature and root). On SQLite also a what-if server whose
    ``SqlNodeReader.get_nodes`` is monkeypatched to the OR form (never the shipped code);
(c) append: at sizes 1,000, 100,000 and n, ``CompactRange.from_store``; pure
    ``CompactRange.append`` per leaf (by number of nodes completed); append + ``insert_nodes``
    with one transaction per leaf and with 256 leaves per transaction; the store's root is
    re-checked afterwards.

Client and server share the machine's cores; the load average is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import json
import math
import os
import platform
import pstats
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    and_,
    column,
    create_engine,
    event,
    insert,
    or_,
    select,
    text,
    tuple_,
    values,
)
from sqlalchemy.engine import make_url

from gateway.audit import merkle
from gateway.audit.checkpoints import sign_checkpoint
from gateway.audit.merkle import CompactRange, leaf_hash
from gateway.crypto.dsse import verify_envelope_signature
from gateway.crypto.suites import PrivateKey
from gateway.pb import audit_pb2
from gateway.store.audit_reads import AuditStore
from gateway.store.engine import Engines, open_engines
from gateway.store.merkle import SqlNodeReader, insert_nodes
from gateway.store.schema import checkpoints, exchanges, merkle_nodes

REPO = Path(__file__).resolve().parent.parent
SEED = 6962
ISSUERS = ("CN-SH", "CN-JS", "CN-ZJ", "CN-AH", "CN-BJ", "CN-TJ", "CN-HE", "CN-GD", "CN-HK", "CN-MO")
PRINCIPAL = "MRX-GW"
METHOD = "/mrx.v1.AuditService/GetInclusionProof"
CHUNK = 1 << 16  # leaves per bulk-load chunk
ENVELOPE_BYTES = 700


def leaf_bytes(i: int) -> bytes:
    return b"mrx-bench-leaf:%d" % i


# --------------------------------------------------------------------------------------
# Statistics and output.
# --------------------------------------------------------------------------------------


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


@dataclass
class Stats:
    name: str
    latencies: list[float]  # seconds
    wall: float = 0.0
    inflight: int = 1
    note: str = ""

    def summary(self) -> dict[str, Any]:
        s = sorted(self.latencies)
        return {
            "name": self.name,
            "n": len(s),
            "p50_ms": pct(s, 0.50) * 1e3,
            "p99_ms": pct(s, 0.99) * 1e3,
            "mean_ms": statistics.fmean(s) * 1e3 if s else math.nan,
            "max_ms": s[-1] * 1e3 if s else math.nan,
            "rps": len(s) / self.wall if self.wall else math.nan,
            "inflight": self.inflight,
            "note": self.note,
        }


def fmt_ms(v: float) -> str:
    if math.isnan(v):
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


STATS_HEAD = (
    "| scenario | in flight | n | p50 ms | p99 ms | mean ms | max ms | req/s |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|"
)


def stats_row(s: dict[str, Any]) -> str:
    rps = "-" if math.isnan(s["rps"]) else f"{s['rps']:.0f}" if s["rps"] >= 10 else f"{s['rps']:.1f}"
    name = s["name"] + (f" ({s['note']})" if s["note"] else "")
    return (
        f"| {name} | {s['inflight']} | {s['n']} | {fmt_ms(s['p50_ms'])} | {fmt_ms(s['p99_ms'])} | "
        f"{fmt_ms(s['mean_ms'])} | {fmt_ms(s['max_ms'])} | {rps} |"
    )


class Report:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def out(self, line: str = "") -> None:
        print(line, flush=True)

    def put(self, path: str, value: Any) -> None:
        node = self.data
        *parents, last = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value


# --------------------------------------------------------------------------------------
# Timed runs.
# --------------------------------------------------------------------------------------


def warm(fn: Callable[[Any], Any], items: Sequence[Any], seconds: float = 1.0, most: int = 50) -> None:
    deadline = time.perf_counter() + seconds
    for x in items[:most]:
        fn(x)
        if time.perf_counter() > deadline:
            return


def run(
    name: str,
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    budget: float,
    inflight: int = 1,
    keep: bool = False,
    note: str = "",
) -> tuple[Stats, list[tuple[Any, Any]]]:
    """Call ``fn`` on ``items`` from ``inflight`` threads until done or ``budget`` seconds pass."""
    lock = threading.Lock()
    it = iter(items)
    latencies: list[float] = []
    results: list[tuple[Any, Any]] = []
    errors: list[BaseException] = []
    start = time.perf_counter()
    deadline = start + budget

    def worker() -> None:
        while True:
            with lock:
                if time.perf_counter() > deadline:
                    return
                x = next(it, None)
            if x is None:
                return
            t0 = time.perf_counter()
            try:
                r = fn(x)
            except BaseException as err:  # surfaced below, after the other threads stop
                errors.append(err)
                return
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if keep:
                    results.append((x, r))

    if inflight == 1:
        worker()
    else:
        threads = [threading.Thread(target=worker) for _ in range(inflight)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return Stats(name, latencies, wall, inflight, note), results


# --------------------------------------------------------------------------------------
# Building a tree of n leaves in a fresh store.
# --------------------------------------------------------------------------------------


@dataclass
class Built:
    size: int
    root: bytes
    nodes: int
    append_s: float  # leaf hashing + CompactRange.append, whole build
    load_s: float  # bulk insert of the nodes, whole build
    roots: dict[int, bytes] = field(default_factory=dict)


class NodeLoader:
    """Bulk-loads (level, idx, hash) rows: SQLite executemany, PostgreSQL COPY; one transaction."""

    def __init__(self, engines: Engines):
        self.dialect = engines.dialect
        if self.dialect == "sqlite":
            self._sqlite = sqlite3.connect(make_url(engines.url).database or "", isolation_level=None)
            # Only this loading connection skips fsync; the gateway's own connections keep FULL.
            self._sqlite.execute("PRAGMA synchronous=OFF")
            self._sqlite.execute("BEGIN")
        else:
            self._raw = engines.writer.raw_connection()
            self._cur = self._raw.cursor()

    def add(self, rows: list[tuple[int, int, bytes]]) -> None:
        if self.dialect == "sqlite":
            self._sqlite.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", rows)
        else:
            with self._cur.copy("COPY merkle_nodes (level, idx, hash) FROM STDIN") as cp:  # type: ignore[attr-defined]
                for row in rows:
                    cp.write_row(row)

    def finish(self) -> None:
        if self.dialect == "sqlite":
            self._sqlite.execute("COMMIT")
            self._sqlite.close()
        else:
            self._raw.commit()
            self._cur.close()
            self._raw.close()


def exchange_row(i: int, now_us: int, envelope: bytes) -> dict[str, Any]:
    issuer = ISSUERS[i % len(ISSUERS)]
    return {
        "log_index": i,
        "received_at_us": now_us,
        "sender": issuer,
        "message_id": f"bench-{i}",
        "kind": 1,
        "record_key": f"bench/{i}",
        "record_version": 1,
        "subject_issuer": issuer,
        "outcome": 1,
        "reason": "",
        "envelope_sha256": hashlib.sha256(b"bench-envelope:%d" % i).digest(),
        "envelope": envelope,
        "receipt": None,
        "leaf": leaf_bytes(i),
    }


def build_store(
    engines: Engines,
    n: int,
    *,
    exchange_indexes: Iterable[int] = (),
    root_sizes: frozenset[int] = frozenset(),
    key: PrivateKey | None = None,
    origin: str = "",
) -> Built:
    loader = NodeLoader(engines)
    cr = CompactRange()
    roots: dict[int, bytes] = {}
    append_s = load_s = 0.0
    nodes = 0
    try:
        for start in range(0, n, CHUNK):
            t0 = time.perf_counter()
            rows: list[tuple[int, int, bytes]] = []
            for i in range(start, min(n, start + CHUNK)):
                for (level, idx), h in cr.append(leaf_hash(leaf_bytes(i))):
                    rows.append((level, idx, h))
                if cr.size in root_sizes:
                    roots[cr.size] = cr.root()
            t1 = time.perf_counter()
            loader.add(rows)
            append_s += t1 - t0
            load_s += time.perf_counter() - t1
            nodes += len(rows)
        t1 = time.perf_counter()
    finally:
        loader.finish()
    load_s += time.perf_counter() - t1
    root = cr.root()
    now = datetime.now(UTC)
    now_us = int(now.timestamp() * 1_000_000)
    wanted = sorted(set(exchange_indexes))
    if wanted:
        envelope = os.urandom(ENVELOPE_BYTES)
        if wanted[-1] != n - 1:
            wanted.append(n - 1)
        with engines.writer.begin() as conn:
            for k in range(0, len(wanted), 5000):
                conn.execute(
                    insert(exchanges), [exchange_row(i, now_us, envelope) for i in wanted[k : k + 5000]]
                )
    if key is not None:
        env = sign_checkpoint(origin=origin, tree_size=n, root_hash=root, at=now, key=key)
        with engines.writer.begin() as conn:
            conn.execute(
                insert(checkpoints).values(
                    tree_size=n,
                    root_hash=root,
                    created_at_us=now_us,
                    envelope=env.SerializeToString(deterministic=True),
                )
            )
    if engines.dialect == "postgresql":
        with engines.writer.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
    return Built(n, root, nodes, append_s, load_s, roots)


# --------------------------------------------------------------------------------------
# What-if node readers (bench only): the same mapping as SqlNodeReader, other SQL shapes.
# --------------------------------------------------------------------------------------


def get_nodes_or(self: Any, ids: Sequence[merkle.NodeId]) -> Mapping[merkle.NodeId, bytes]:
    """``WHERE (level = ? AND idx = ?) OR ...``: one primary-key probe per node on both backends."""
    if not ids:
        return {}
    c = merkle_nodes.c
    cond = or_(*(and_(c.level == level, c.idx == idx) for level, idx in ids))
    rows = self._conn.execute(select(c.level, c.idx, c.hash).where(cond))
    return {(row.level, row.idx): row.hash for row in rows}


def get_nodes_cte_join(self: Any, ids: Sequence[merkle.NodeId]) -> Mapping[merkle.NodeId, bytes]:
    """``WITH v(l, i) AS (VALUES ...) SELECT ... FROM v JOIN merkle_nodes ON level = v.l AND idx = v.i``."""
    if not ids:
        return {}
    c = merkle_nodes.c
    v = values(column("l", Integer), column("i", BigInteger), name="v").data(list(ids)).cte("v")
    stmt = select(c.level, c.idx, c.hash).select_from(
        v.join(merkle_nodes, and_(c.level == v.c.l, c.idx == v.c.i))
    )
    return {(row.level, row.idx): row.hash for row in self._conn.execute(stmt)}


WHATIF_READERS: dict[str, Callable[[Any, Sequence[merkle.NodeId]], Mapping[merkle.NodeId, bytes]]] = {
    "or": get_nodes_or,
    "cte-join": get_nodes_cte_join,
}


class PatchedReader(SqlNodeReader):
    def __init__(self, conn: Connection, how: str):
        super().__init__(conn)
        self._how = WHATIF_READERS[how]

    def get_nodes(self, ids: Sequence[merkle.NodeId]) -> Mapping[merkle.NodeId, bytes]:
        return self._how(self, ids)


def query_plan(engines: Engines, n: int) -> list[str]:
    ids = merkle.inclusion_node_ids(n // 3, n)
    c = merkle_nodes.c
    stmt = select(c.level, c.idx, c.hash).where(tuple_(c.level, c.idx).in_(ids))
    with engines.reader.connect() as conn:
        compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        prefix = "EXPLAIN QUERY PLAN " if engines.dialect == "sqlite" else "EXPLAIN (ANALYZE, COSTS OFF) "
        rows = conn.execute(text(prefix + str(compiled))).all()
    lines = [str(r[-1]) for r in rows]
    return lines


# --------------------------------------------------------------------------------------
# In-process handler (no gRPC): pre-signed metadata, a minimal servicer context.
# --------------------------------------------------------------------------------------


class _Md(NamedTuple):
    key: str
    value: str | bytes


class _Context:
    def __init__(self, md: list[_Md]):
        self._md = md

    def invocation_metadata(self) -> list[_Md]:
        return self._md


def make_servicer(engines: Engines, federation: Any) -> Any:
    from gateway.services.audit import AuditServicer
    from gateway.services.auth import ReadAuthenticator

    return AuditServicer(
        store=AuditStore(engines),
        auth=ReadAuthenticator(federation, clock=lambda: datetime.now(UTC)),
        federation=federation,
    )


def presigned(key: PrivateKey, indexes: Sequence[int]) -> list[tuple[Any, _Context, int]]:
    from gateway.crypto.reads import sign_read

    out = []
    for i in indexes:
        req = audit_pb2.GetInclusionProofRequest(log_index=i, tree_size=0)
        md = sign_read(signer=key, principal=PRINCIPAL, method=METHOD, request=req)
        out.append((req, _Context([_Md(k, v) for k, v in md]), i))
    return out


def count_per_call(engines: Engines, fn: Callable[[], Any]) -> tuple[int, int]:
    """Reader pool checkouts and SQL statements one call of ``fn`` makes."""
    counts = {"checkout": 0, "statement": 0}

    def on_checkout(*_: Any) -> None:
        counts["checkout"] += 1

    def on_statement(*_: Any) -> None:
        counts["statement"] += 1

    event.listen(engines.reader.pool, "checkout", on_checkout)
    event.listen(engines.reader, "before_cursor_execute", on_statement)
    try:
        fn()
    finally:
        event.remove(engines.reader.pool, "checkout", on_checkout)
        event.remove(engines.reader, "before_cursor_execute", on_statement)
    return counts["checkout"], counts["statement"]


def profile_top(fn: Callable[[], None], top: int = 12) -> list[str]:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    st = pstats.Stats(prof)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{Path(file).name}:{line}({func})"))
    rows.sort(reverse=True)
    out = [f"total {total:.3f} s"]
    for tt, ct, nc, where in rows[:top]:
        out.append(f"{tt / total * 100:5.1f}% self {tt:7.3f} s  cum {ct:7.3f} s  calls {nc:7d}  {where}")
    return out


# --------------------------------------------------------------------------------------
# The gateway in its own process: `proof_bench.py _serve ...`, stopped by "quit" on stdin.
# --------------------------------------------------------------------------------------


def serve(argv: list[str]) -> None:
    import logging

    from gateway.registry.federation import load_federation
    from gateway.server import start_gateway

    p = argparse.ArgumentParser()
    p.add_argument("--federation", required=True)
    p.add_argument("--gateway-key", required=True)
    p.add_argument("--gateway-keyid", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--whatif-reader", choices=sorted(WHATIF_READERS))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if a.whatif_reader:
        # Bench-only what-if: every SqlNodeReader in this process uses another SQL shape.
        SqlNodeReader.get_nodes = WHATIF_READERS[a.whatif_reader]  # type: ignore[method-assign]
    federation = load_federation(Path(a.federation))
    key = PrivateKey.load(Path(a.gateway_key), a.gateway_keyid)
    engines = open_engines(a.database)
    # A long checkpoint interval: nothing is appended while serving, keep the thread quiet.
    gw = start_gateway(
        federation=federation, engines=engines, gateway_key=key, workers=a.workers, checkpoint_interval=3600
    )
    print(json.dumps({"port": gw.port, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    gw.stop(1)
    engines.dispose()


class Server:
    def __init__(self, args: list[str], log_path: Path):
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=REPO,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.proc.wait()
            raise RuntimeError(f"gateway failed to start; see {log_path}:\n{log_path.read_text()[-3000:]}")
        self.target = f"127.0.0.1:{json.loads(line)['port']}"

    def stop(self) -> None:
        try:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            self.proc.wait(30)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------------------------
# Backends: a fresh SQLite file or PostgreSQL schema per store.
# --------------------------------------------------------------------------------------


class Backend:
    def __init__(self, base: str | None, workdir: Path):
        self.base = base
        self.workdir = workdir
        self.schemas: list[str] = []
        self.kind = "postgresql" if base else "sqlite"

    def fresh(self, label: str) -> str:
        if not self.base:
            return f"sqlite:///{self.workdir / f'proofs-{label}.db'}"
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._plain(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options=-csearch_path%3D{schema}"

    def _plain(self) -> str:
        assert self.base
        return self.base.replace("postgresql+psycopg://", "postgresql://").split("?")[0]

    def cleanup(self) -> None:
        if not self.schemas:
            return
        import psycopg

        with psycopg.connect(self._plain(), autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self.schemas.clear()

    def version(self) -> str:
        if not self.base:
            return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL)"
        engine = create_engine(self.base)
        try:
            with engine.connect() as conn:
                v = conn.execute(text("SHOW server_version")).scalar_one()
                sc = conn.execute(text("SHOW synchronous_commit")).scalar_one()
        finally:
            engine.dispose()
        return f"PostgreSQL {v} (synchronous_commit={sc})"


# --------------------------------------------------------------------------------------
# The scenarios.
# --------------------------------------------------------------------------------------


@dataclass
class Setup:
    n: int
    samples: int
    requests: int
    budget: float
    federation_dir: Path
    federation: Any
    key: PrivateKey
    key_path: Path
    workdir: Path
    whatif: bool
    sizes: list[int]


def check_inclusion(results: list[tuple[int, list[bytes]]], n: int, root: bytes) -> int:
    bad = 0
    for i, proof in results:
        if not merkle.verify_inclusion(leaf_hash(leaf_bytes(i)), i, n, proof, root):
            bad += 1
    return bad


def store_level(
    rep: Report, s: Setup, engines: Engines, built: Built, pool: list[int], olds: list[int]
) -> None:
    n, root = s.n, built.root
    store = AuditStore(engines)
    rows: list[dict[str, Any]] = []
    prefix = engines.dialect

    def inclusion(i: int) -> list[bytes]:
        with store.snapshot() as reader:  # one connection per proof, as the servicer does
            return reader.inclusion_proof(i, n)

    def consistency(o: int) -> list[bytes]:
        with store.snapshot() as reader:
            return reader.consistency_proof(o, n)

    plan, _ = run(
        "inclusion_node_ids (plan only)", lambda i: merkle.inclusion_node_ids(i, n), pool, budget=s.budget
    )
    rows.append(plan.summary())

    warm(inclusion, pool)
    st, res = run("AuditReader.inclusion_proof", inclusion, pool, budget=s.budget, keep=True)
    bad = check_inclusion(res, n, root)
    rows.append(st.summary())
    rep.put(f"{prefix}/store/inclusion_verified", {"checked": len(res), "bad": bad})

    warm(consistency, olds)
    st, cres = run(
        "AuditReader.consistency_proof",
        consistency,
        olds,
        budget=s.budget,
        keep=True,
    )
    cbad = sum(1 for o, proof in cres if not merkle.verify_consistency(o, n, built.roots[o], root, proof))
    rows.append(st.summary())
    rep.put(f"{prefix}/store/consistency_verified", {"checked": len(cres), "bad": cbad})

    # What-if SQL shapes for the node read (bench-only readers; proofs must be identical).
    for how in WHATIF_READERS:

        def whatif(i: int, how: str = how) -> list[bytes]:
            with engines.reader.connect() as conn:
                return merkle.inclusion_proof(i, n, PatchedReader(conn, how))

        warm(whatif, pool)
        st, wres = run(f"inclusion_proof, what-if reader `{how}`", whatif, pool, budget=s.budget, keep=True)
        wbad = check_inclusion(wres, n, root)
        rows.append(st.summary())
        rep.put(f"{prefix}/store/whatif_{how}_verified", {"checked": len(wres), "bad": wbad})

    # The in-process handler: read auth (Ed25519 verify) + latest_checkpoint, entry, proof,
    # checkpoint_at, each on its own pooled connection; no gRPC.
    servicer = make_servicer(engines, s.federation)
    calls = presigned(s.key, pool[: s.samples])

    def handler(call: tuple[Any, _Context, int]) -> Any:
        return servicer.GetInclusionProof(call[0], call[1])

    warm(handler, calls)
    st, hres = run("AuditServicer.GetInclusionProof in-process", handler, calls, budget=s.budget, keep=True)
    hbad = sum(
        1
        for call, r in hres
        if not merkle.verify_inclusion(leaf_hash(r.leaf), call[2], r.tree_size, list(r.hashes), root)
    )
    rows.append(st.summary())
    rep.put(f"{prefix}/store/handler_verified", {"checked": len(hres), "bad": hbad})
    checkouts, statements = count_per_call(engines, lambda: handler(calls[0]))
    rep.put(f"{prefix}/store/handler_per_call", {"checkouts": checkouts, "statements": statements})

    if engines.dialect == "postgresql":
        # What-if: the reader pool without pre-ping (one round trip less per checkout).
        no_ping = Engines(
            url=engines.url,
            dialect=engines.dialect,
            writer=engines.writer,
            reader=create_engine(engines.url, pool_size=8, max_overflow=8, pool_pre_ping=False),
        )
        try:
            servicer2 = make_servicer(no_ping, s.federation)

            def handler2(call: tuple[Any, _Context, int]) -> Any:
                return servicer2.GetInclusionProof(call[0], call[1])

            warm(handler2, calls)
            st, _ = run(
                "AuditServicer.GetInclusionProof in-process, what-if reader pool_pre_ping=False",
                handler2,
                calls,
                budget=s.budget,
            )
            rows.append(st.summary())
        finally:
            no_ping.reader.dispose()

    rep.out(f"Store level and in-process, {n:,} leaves ({engines.dialect}); every proof verified:")
    rep.out()
    rep.out(STATS_HEAD)
    for r in rows:
        rep.out(stats_row(r))
    rep.out()
    rep.out(
        f"verified: inclusion {len(res) - bad}/{len(res)}, consistency {len(cres) - cbad}/{len(cres)}, "
        f"handler {len(hres) - hbad}/{len(hres)}"
    )
    rep.out(
        f"one GetInclusionProof (tree_size=0) = {checkouts} reader pool checkouts, {statements} SQL "
        "statements through SQLAlchemy (incl. SQLite's BEGIN; pre-pings not counted)"
    )
    rep.put(f"{prefix}/store/rows", rows)

    plan_lines = query_plan(engines, n)
    rep.out()
    n_ids = len(merkle.inclusion_node_ids(n // 3, n))
    rep.out(f"Query plan of SqlNodeReader's `(level, idx) IN (...)` ({n_ids} ids):")
    rep.out("```")
    for line in plan_lines[:12]:
        rep.out(line)
    if len(plan_lines) > 12:
        rep.out(f"... ({len(plan_lines) - 12} more lines)")
    rep.out("```")
    rep.put(f"{prefix}/query_plan", plan_lines)

    # Where the in-process handler's time goes (cProfile inflates Python-heavy frames).
    def profiled() -> None:
        deadline = time.perf_counter() + min(3.0, s.budget)
        for call in calls[:300]:
            handler(call)
            if time.perf_counter() > deadline:
                break

    top = profile_top(profiled)
    rep.out()
    rep.out("cProfile of the in-process handler (self time, top functions):")
    rep.out("```")
    for line in top:
        rep.out(line)
    rep.out("```")
    rep.put(f"{prefix}/handler_profile", top)


def served(rep: Report, s: Setup, url: str, built: Built, pool: list[int], label: str) -> None:
    from gateway.client import AuditClient
    from gateway.registry.keygen import demo_keyid

    whatifs: list[str | None] = [None]
    if s.whatif and url.startswith("sqlite"):
        whatifs.append("or")
    rows = []
    gw_pub = s.key.public_key()
    for whatif in whatifs:
        args = [
            "--federation",
            str(s.federation_dir),
            "--gateway-key",
            str(s.key_path),
            "--gateway-keyid",
            demo_keyid(PRINCIPAL),
            "--database",
            url,
        ]
        if whatif:
            args += ["--whatif-reader", whatif]
        server = Server(args, s.workdir / f"gateway-{label}.log")
        try:
            with AuditClient(server.target, principal=PRINCIPAL, signer=s.key) as client:

                def call(i: int, client: AuditClient = client) -> Any:
                    return client.inclusion_proof(log_index=i, tree_size=0)

                warm(call, pool)
                for inflight in (1, 8):
                    name = "served GetInclusionProof" + (f", what-if reader `{whatif}`" if whatif else "")
                    st, res = run(
                        name, call, pool[: s.requests], budget=s.budget, inflight=inflight, keep=True
                    )
                    bad = 0
                    for i, r in res:
                        ok = (
                            r.log_index == i
                            and r.tree_size == s.n
                            and r.leaf == leaf_bytes(i)
                            and merkle.verify_inclusion(leaf_hash(r.leaf), i, s.n, list(r.hashes), built.root)
                            and verify_envelope_signature(r.checkpoint, gw_pub)
                            and audit_pb2.Checkpoint.FromString(r.checkpoint.payload).root_hash == built.root
                        )
                        bad += not ok
                    summary = st.summary()
                    summary["verified"] = f"{len(res) - bad}/{len(res)}"
                    rows.append(summary)
        finally:
            server.stop()
    rep.out()
    rep.out(f"Served through gRPC (gateway process, 16 workers; AuditClient as {PRINCIPAL}, tree_size=0):")
    rep.out()
    rep.out(STATS_HEAD)
    for r in rows:
        rep.out(stats_row(r))
    rep.out()
    rep.out("verified (leaf, index, proof vs root, checkpoint signature and root): " + ", ".join(
        f"{r['name'].split(', ')[-1]} x{r['inflight']}: {r['verified']}" for r in rows
    ))  # fmt: skip
    rep.put(f"{label}/served", rows)


def append_cost(rep: Report, s: Setup, backend: Backend, main_url: str, main_engines: Engines) -> None:
    rows: list[dict[str, Any]] = []
    by_nodes_all: dict[int, dict[int, list[float]]] = {}
    for size in s.sizes:
        if size == s.n:
            engines, own = main_engines, False
        else:
            engines, own = open_engines(backend.fresh(f"append-{size}")), True
        try:
            if own:
                build_store(engines, size)
            rows.append(append_at(s, engines, size, by_nodes_all))
        finally:
            if own:
                engines.dispose()
    rep.out()
    rep.out(f"Append cost ({backend.kind}); nodes per leaf amortise to 2 - popcount(n)/n:")
    rep.out()
    rep.out(
        "| tree size | from_store ms (p50) | pure append µs/leaf | nodes/leaf (mean, max) | "
        "1 leaf/txn ms p50 | p99 | 256 leaves/txn µs/leaf | root re-checked |"
    )
    rep.out("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        rep.out(
            f"| {r['size']:,} | {fmt_ms(r['from_store_ms'])} | {r['append_us']:.2f} | "
            f"{r['nodes_mean']:.2f}, {r['nodes_max']} | {fmt_ms(r['txn1_p50_ms'])} | "
            f"{fmt_ms(r['txn1_p99_ms'])} | {r['batch_us_per_leaf']:.0f} | {r['root_ok']} |"
        )
    rep.out()
    rep.out("Pure CompactRange.append by number of nodes it completes (all sizes pooled), µs:")
    rep.out()
    pooled: dict[int, list[float]] = defaultdict(list)
    for per in by_nodes_all.values():
        for k, v in per.items():
            pooled[k].extend(v)
    rep.out("| nodes completed | " + " | ".join(str(k) for k in sorted(pooled)) + " |")
    rep.out("|---|" + "---:|" * len(pooled))
    rep.out("| appends | " + " | ".join(str(len(pooled[k])) for k in sorted(pooled)) + " |")
    rep.out(
        "| median µs | "
        + " | ".join(f"{statistics.median(pooled[k]) * 1e6:.1f}" for k in sorted(pooled))
        + " |"
    )
    rep.put(f"{backend.kind}/append", rows)
    rep.put(
        f"{backend.kind}/append_by_nodes",
        {k: {"n": len(v), "median_us": statistics.median(v) * 1e6} for k, v in pooled.items()},
    )


def append_at(
    s: Setup, engines: Engines, size: int, by_nodes_all: dict[int, dict[int, list[float]]]
) -> dict[str, Any]:
    # from_store: the sequencer's frontier reload and every checkpoint's root.
    def load(_: int) -> CompactRange:
        with engines.reader.connect() as conn:
            return CompactRange.from_store(size, SqlNodeReader(conn))

    warm(load, [0])
    fs, _ = run("from_store", load, list(range(50)), budget=min(s.budget, 5.0))
    cr = load(0)

    # Pure append, timed one call at a time, on a copy of the frontier.
    k_pure = 8192
    copy = CompactRange(cr.size, [h for _, h in cr.frontier])
    hashes = [leaf_hash(leaf_bytes(cr.size + j)) for j in range(k_pure + 4096 + 256)]
    by_nodes: dict[int, list[float]] = defaultdict(list)
    counts = []
    total = 0.0
    pc = time.perf_counter
    for h in hashes[:k_pure]:
        t0 = pc()
        done = copy.append(h)
        dt = pc() - t0
        total += dt
        by_nodes[len(done)].append(dt)
        counts.append(len(done))
    by_nodes_all[size] = by_nodes

    # Append + insert, one transaction per leaf (a lone submission's commit, fsync included).
    k_txn = 100
    lat = []
    for h in hashes[:k_txn]:
        t0 = pc()
        with engines.writer.begin() as conn:
            insert_nodes(conn, cr.append(h))
        lat.append(pc() - t0)
    lat.sort()

    # Group commit: 256 leaves per transaction, like a sequencer batch.
    batch, k_batch = 256, 4096
    t0 = pc()
    pos = k_txn
    while pos < k_txn + k_batch:
        nodes: list[tuple[merkle.NodeId, bytes]] = []
        for h in hashes[pos : pos + batch]:
            nodes += cr.append(h)
        with engines.writer.begin() as conn:
            insert_nodes(conn, nodes)
        pos += batch
    batch_s = pc() - t0

    with engines.reader.connect() as conn:
        root_ok = CompactRange.from_store(cr.size, SqlNodeReader(conn)).root() == cr.root()
    fss = sorted(fs.latencies)
    return {
        "size": size,
        "from_store_ms": pct(fss, 0.5) * 1e3,
        "from_store_n": len(fss),
        "append_us": total / k_pure * 1e6,
        "nodes_mean": statistics.fmean(counts),
        "nodes_max": max(counts),
        "txn1_p50_ms": pct(lat, 0.5) * 1e3,
        "txn1_p99_ms": pct(lat, 0.99) * 1e3,
        "batch_us_per_leaf": batch_s / k_batch * 1e6,
        "root_ok": "yes" if root_ok else "NO",
    }


def run_backend(rep: Report, s: Setup, backend: Backend) -> None:
    rng = random.Random(SEED)
    n = s.n
    pool = [rng.randrange(n) for _ in range(max(s.samples, s.requests))]
    olds = [rng.randrange(1, n + 1) for _ in range(s.samples)]
    url = backend.fresh("main")
    engines = open_engines(url)
    try:
        t0 = time.perf_counter()
        built = build_store(
            engines,
            n,
            exchange_indexes=pool,
            root_sizes=frozenset(olds),
            key=s.key,
            origin=f"{s.federation.name}/exchange-log",
        )
        setup_s = time.perf_counter() - t0
        rep.out()
        rep.out(f"## {backend.version()}")
        rep.out()
        rep.out(
            f"Built {n:,} leaves: {built.nodes:,} perfect nodes ({built.nodes / n:.4f} per leaf); "
            f"leaf hash + CompactRange.append {built.append_s / n * 1e6:.2f} µs/leaf, bulk load "
            f"{built.load_s / built.nodes * 1e6:.2f} µs/node; setup {setup_s:.1f} s "
            f"(+ {len(set(pool)) + 1:,} exchanges rows, 1 checkpoint)."
        )
        rep.out(f"root {built.root.hex()}")
        rep.out()
        rep.put(
            f"{engines.dialect}/build",
            {"nodes": built.nodes, "append_s": built.append_s, "load_s": built.load_s, "setup_s": setup_s},
        )
        store_level(rep, s, engines, built, pool, olds)
        served(rep, s, url, built, pool, engines.dialect)
        append_cost(rep, s, backend, url, engines)
    finally:
        engines.dispose()


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
    return f"{os.cpu_count()} cores ({model}), {mem_kb / 2**20:.0f} GiB RAM, {platform.platform()}"


def versions() -> str:
    from importlib.metadata import version

    import grpc

    return (
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, SQLAlchemy "
        f"{version('sqlalchemy')}, grpcio {grpc.__version__}, psycopg {version('psycopg')}"
    )


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--leaves", type=int, default=1_000_000, help="tree size (default 1,000,000)")
    p.add_argument("--samples", type=int, default=2000, help="store-level proofs per scenario (default 2000)")
    p.add_argument("--requests", type=int, default=2000, help="served requests per scenario (default 2000)")
    p.add_argument("--budget", type=float, default=8.0, help="seconds per scenario at most (default 8)")
    p.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="PostgreSQL URL (a fresh schema is created and dropped)",
    )
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    p.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    p.add_argument("--no-whatif", action="store_true", help="skip the what-if served run")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (databases, gateway logs)")
    args = p.parse_args()
    if args.leaves < 2:
        p.error("--leaves must be at least 2")

    from gateway.registry.federation import load_federation
    from gateway.registry.keygen import demo_keyid, write_demo_federation

    rep = Report()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mrx-proof-bench-"))
    rep.out(f"# mrx proof benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    rep.out()
    rep.out("command: " + " ".join(["python", "bench/proof_bench.py", *sys.argv[1:]]))
    rep.out(f"machine: {machine()}; load average at start {loadavg()}")
    rep.out(f"versions: {versions()}")
    rep.put(
        "meta", {"argv": sys.argv[1:], "machine": machine(), "versions": versions(), "load_start": loadavg()}
    )

    fed_dir = workdir / "federation"
    paths = write_demo_federation(template_dir=REPO / "keys", dest=fed_dir, now=datetime.now(UTC))
    federation = load_federation(fed_dir)
    key = PrivateKey.load(paths[PRINCIPAL], demo_keyid(PRINCIPAL))
    sizes = sorted({x for x in (1_000, 100_000) if x < args.leaves} | {args.leaves})
    setup = Setup(
        n=args.leaves,
        samples=args.samples,
        requests=args.requests,
        budget=args.budget,
        federation_dir=fed_dir,
        federation=federation,
        key=key,
        key_path=paths[PRINCIPAL],
        workdir=workdir,
        whatif=not args.no_whatif,
        sizes=sizes,
    )
    backends = []
    if not args.no_sqlite:
        backends.append(Backend(None, workdir))
    if not args.no_postgres:
        backends.append(Backend(args.postgres, workdir))
    try:
        for backend in backends:
            try:
                run_backend(rep, setup, backend)
            finally:
                backend.cleanup()
    finally:
        if args.keep:
            rep.out(f"\nkept {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    rep.out()
    rep.out(f"total {elapsed:.0f} s; load average at end {loadavg()}")
    rep.put("meta/elapsed_s", elapsed)
    rep.put("meta/load_end", loadavg())
    if args.json:
        args.json.write_text(json.dumps(rep.data, indent=1, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2:])
    else:
        with contextlib.suppress(KeyboardInterrupt):
            sys.exit(main())
