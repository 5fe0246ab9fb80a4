#!/usr/bin/env python
"""The nightly self-audit (gateway/jobs/selfaudit.py) over a large log: time, CPU, memory.

    python bench/selfaudit_bench.py --entries 1000000
    python bench/selfaudit_bench.py --entries 1000000 --no-sqlite \\
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

For each backend (SQLite in a temp dir; PostgreSQL in a fresh schema, dropped afterwards) a
child process creates the schema through the migrations and fills the log directly at the
storage level: ``--entries`` exchange rows with random 160-byte leaves, their Merkle nodes
(``CompactRange.append``, as the writer computes them) and a checkpoint signed with a
throw-away Ed25519 gateway key every ``--checkpoint-every`` entries and at the end. Then
this process runs ``run_self_audit`` with the key, and reports wall time, this process's
CPU per entry, PostgreSQL's CPU (its backends, from /proc) and this process's peak RSS
(``ru_maxrss`` before and after the audit: the interpreter, imports and engines are the
"before"; the fill ran in another process).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.audit.checkpoints import sign_checkpoint  # noqa: E402
from gateway.audit.merkle import CompactRange, leaf_hash  # noqa: E402
from gateway.crypto.suites import PrivateKey, Suite  # noqa: E402
from gateway.jobs.selfaudit import run_self_audit  # noqa: E402
from gateway.store.engine import open_engines  # noqa: E402
from gateway.store.schema import checkpoints, exchanges, merkle_nodes  # noqa: E402

ORIGIN = "bench/exchange-log"
KEYID = "BENCH-GW/1"


def fill(url: str, entries: int, every: int, key_path: Path) -> None:
    key = PrivateKey.load(key_path, keyid=KEYID)
    engines = open_engines(url)
    tree = CompactRange()
    now_us = int(time.time() * 1e6)
    batch = 10_000
    try:
        for start in range(0, entries, batch):
            rows, nodes, signed = [], [], []
            for i in range(start, min(start + batch, entries)):
                leaf = os.urandom(160)
                rows.append(
                    {
                        "log_index": i,
                        "received_at_us": now_us,
                        "sender": "CN-JS",
                        "message_id": f"m{i}",
                        "kind": 1,
                        "record_key": f"certificate_status/CCC/{i}",
                        "record_version": 1,
                        "subject_issuer": "CN-JS",
                        "outcome": 1,
                        "reason": "",
                        "envelope_sha256": hashlib.sha256(leaf).digest(),
                        "envelope": leaf[:64],
                        "receipt": None,
                        "leaf": leaf,
                    }
                )
                nodes += [{"level": lv, "idx": ix, "hash": h} for (lv, ix), h in tree.append(leaf_hash(leaf))]
                size = i + 1
                if size % every == 0 or size == entries:
                    root = tree.root()
                    env = sign_checkpoint(
                        origin=ORIGIN, tree_size=size, root_hash=root, at=datetime.now(UTC), key=key
                    )
                    signed.append(
                        {
                            "tree_size": size,
                            "root_hash": root,
                            "created_at_us": now_us,
                            "envelope": env.SerializeToString(deterministic=True),
                        }
                    )
            with engines.writer.begin() as conn:
                conn.execute(insert(exchanges), rows)
                conn.execute(insert(merkle_nodes), nodes)
                if signed:
                    conn.execute(insert(checkpoints), signed)
    finally:
        engines.dispose()


def pg_cpu_seconds() -> float:
    """CPU (user + system) of every postgres process on this machine so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)
            if "postgres" not in fields[0]:
                continue
            parts = fields[1].split()
            total += int(parts[11]) + int(parts[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def run(name: str, url: str, args: argparse.Namespace, key: PrivateKey, key_path: Path) -> None:
    began = time.monotonic()
    subprocess.run(
        [sys.executable, __file__, "--fill", url, "--entries", str(args.entries),
         "--checkpoint-every", str(args.checkpoint_every), "--key", str(key_path)],
        check=True,
    )  # fmt: skip
    filled = time.monotonic() - began
    engines = open_engines(url)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        cpu0, pg0, t0 = time.process_time(), pg_cpu_seconds(), time.monotonic()
        result = run_self_audit(engines, gateway_keys={KEYID: key.public_key()}, origin=ORIGIN)
        wall, cpu, pg = time.monotonic() - t0, time.process_time() - cpu0, pg_cpu_seconds() - pg0
    finally:
        engines.dispose()
    assert result.ok, result.problems[:5]
    assert result.tree_size == args.entries
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0]
    print(
        f"| {name} | {args.entries:,} | {result.checkpoints_checked} | {wall:.1f} s | "
        f"{args.entries / wall:,.0f} | {cpu / args.entries * 1e6:.1f} | "
        f"{(pg / args.entries * 1e6) if name == 'PostgreSQL' else 0:.1f} | "
        f"{rss_before:.0f} → {rss:.0f} MiB | {load:.2f} | "
        f"(fill {filled:.0f} s) |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--postgres", help="PostgreSQL URL (a schema is created and dropped)")
    parser.add_argument("--fill", help=argparse.SUPPRESS)
    parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        fill(args.fill, args.entries, args.checkpoint_every, args.key)
        return
    tmp = Path(tempfile.mkdtemp(prefix="mrx-selfaudit-bench-"))
    try:
        key = PrivateKey.generate(Suite.ED25519, KEYID)
        key_path = tmp / "gateway.key.pem"
        key.save(key_path)
        print(
            "| backend | entries | checkpoints | audit wall | entries/s | audit CPU µs/entry "
            "| PostgreSQL CPU µs/entry | peak RSS before → after | load (1 min) | |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        if not args.no_sqlite:
            run("SQLite", f"sqlite:///{tmp / 'mrx.db'}", args, key, key_path)
        if args.postgres:
            schema = f"mrx_bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(args.postgres)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = make_url(args.postgres).update_query_dict({"options": f"-csearch_path={schema}"})
            try:
                run("PostgreSQL", url.render_as_string(hide_password=False), args, key, key_path)
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
