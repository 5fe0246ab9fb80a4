#!/usr/bin/env python
"""Per-record commit cost as the exchange log grows, at the storage seam (no gRPC, no signatures).

    python bench/pg_growth.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/pg_growth.py --no-sqlite --postgres URL --sizes 10000,100000   # quicker

For each backend (SQLite in a temp dir; PostgreSQL in a fresh schema, dropped afterwards):
``gateway.store.engine.open_engines(url)`` creates the schema, then the writer's own
objects append: ``gateway.store.sql.open_write_store(url)`` and
``gateway.ledger.rules.Ledger().append(tx, batch)`` inside ``with store.transaction() as
tx``, with synthetic ``gateway.ledger.values.Staged`` items (random envelope bytes and
their SHA-256, a unique message id, a distinct demo certificate as the record, so the
certificates table grows with the log).

The log is filled in commits of ``--fill-batch`` (1,000) up to each of ``--sizes``; at
each size, timed commits of each of ``--batches`` (1, 64, 500) items, two mixes:

* ``new``: every item a new certificate (the common case);
* ``replay``: a quarter identical resubmissions of envelopes accepted earlier anywhere in
  the log (digest lookup hits, no new entry), a quarter reused message ids with other bytes
  (id lookup hits, a refused entry), a quarter status changes of stored certificates
  (state lookup hits, UPDATE), a quarter new.

Per size and batch: median and p90 wall time per commit and per record, this process's
CPU per record (for SQLite that is all of it), PostgreSQL's CPU per record, and the
other load on the machine. At the largest size on PostgreSQL, EXPLAIN (ANALYZE, BUFFERS)
of the writer's lookups (``_BY_DIGEST``, ``_USED_IDS``, ``_STATES`` in
gateway/store/sql/postgres.py) and of the landed code's replay lookup
(``outcome = 1 AND envelope_sha256 IN (...)``) for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ISSUERS = (
    "CN-SH", "CN-JS", "CN-ZJ", "CN-AH", "CN-BJ", "CN-TJ",
    "CN-HE", "CN-GD", "CN-HK", "CN-MO", "CN-FJ", "CN-SN",
)  # fmt: skip
ENVELOPE_BYTES = 700  # about the size of a signed certificate-status envelope


def system_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, _steal = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 :].split(")", 1)
        if name == "postgres":
            f = rest.split()
            out[int(stat.parent.name)] = (int(f[11]) + int(f[12])) / tick
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


class Items:
    """Synthetic staged submissions: distinct certificates, and a sample of the log kept for replays."""

    def __init__(self, today: date, sample_every: int = 16, sample_all_below: int = 20_000):
        from gateway.demo_fixtures import demo_certificates

        self.templates = {i: demo_certificates(i, count=1, today=today)[0] for i in ISSUERS}
        self.n = 0
        self.sample_every = sample_every
        self.sample_all_below = sample_all_below
        self.sample: list[Any] = []  # Staged items accepted earlier, spread over the whole log
        self.mixed = 0  # position in the replay mix, carried across commits (batch 1 rotates too)

    def new(self, count: int) -> list[Any]:
        from gateway.ledger.values import Staged

        out = []
        for _ in range(count):
            n = self.n
            self.n += 1
            issuer = ISSUERS[n % len(ISSUERS)]
            t = self.templates[issuer]
            cert = dataclasses.replace(t, certificate_number=f"{t.certificate_number[:-9]}G{n:08d}")
            env = os.urandom(ENVELOPE_BYTES)
            item = Staged(
                envelope=env,
                envelope_sha256=hashlib.sha256(env).digest(),
                sender=issuer,
                message_id=f"growth-{n}-{uuid.uuid4().hex[:8]}",
                kind=1,
                record_key=cert.key,
                record_version=cert.version,
                subject_issuer=issuer,
                record=cert,
            )
            out.append(item)
            if n < self.sample_all_below or n % self.sample_every == 0:
                self.sample.append(item)
        return out

    def replay_mix(self, count: int) -> list[Any]:
        """A quarter each: identical resubmission, reused id, status change, new."""
        from gateway.demo_fixtures import demo_status_change
        from gateway.domain.certificates import CertState
        from gateway.ledger.values import Staged

        out: list[Any] = []
        for _ in range(count):
            kind = self.mixed % 4
            self.mixed += 1
            if kind == 3 or len(self.sample) < 8:
                out += self.new(1)
                continue
            old = self.sample.pop(random.randrange(len(self.sample)))
            if kind == 0:  # identical bytes: the original receipt, no new entry
                out.append(dataclasses.replace(old, received_at=datetime.now(UTC)))
            elif kind == 1:  # same sender and message id, other bytes: refused MESSAGE_ID_REUSED
                env = os.urandom(ENVELOPE_BYTES)
                out.append(
                    dataclasses.replace(
                        old,
                        envelope=env,
                        envelope_sha256=hashlib.sha256(env).digest(),
                        received_at=datetime.now(UTC),
                    )
                )
            else:  # the next version of a stored certificate: state lookup hit, UPDATE
                cert = demo_status_change(
                    old.record,
                    state=CertState.SUSPENDED,
                    reason="growth bench",
                    effective_at=datetime.now(UTC),
                )
                env = os.urandom(ENVELOPE_BYTES)
                out.append(
                    Staged(
                        envelope=env,
                        envelope_sha256=hashlib.sha256(env).digest(),
                        sender=old.sender,
                        message_id=f"growth-upd-{uuid.uuid4().hex}",
                        kind=1,
                        record_key=cert.key,
                        record_version=cert.version,
                        subject_issuer=old.sender,
                        record=cert,
                    )
                )
        return out


@dataclasses.dataclass
class Timed:
    backend: str
    size: int
    batch: int
    mix: str
    commits: int
    wall_us_per_commit_p50: float
    wall_us_per_commit_p90: float
    wall_us_per_record: float  # median commit wall / batch
    client_cpu_us_per_record: float
    db_cpu_us_per_record: float
    other_cores: float
    outcomes: dict[str, int]


def commit(store: Any, ledger: Any, items: list[Any]) -> tuple[float, float, list[Any]]:
    c0 = time.process_time()
    t0 = time.perf_counter()
    try:
        with store.transaction() as tx:
            outcomes = ledger.append(tx, items)
    except BaseException:
        ledger.forget()
        raise
    return time.perf_counter() - t0, time.process_time() - c0, outcomes


def outcome_counts(outcomes: list[Any]) -> dict[str, int]:
    from gateway.ledger.values import Accepted

    counts: dict[str, int] = {}
    for o in outcomes:
        key = (
            ("duplicate" if o.duplicate else "accepted") if isinstance(o, Accepted) else f"refused/{o.reason}"
        )
        counts[key] = counts.get(key, 0) + 1
    return counts


def time_commits(
    backend: str,
    store: Any,
    ledger: Any,
    items: Items,
    size: int,
    batch: int,
    mix: str,
    commits: int,
    pg: bool,
) -> Timed:
    batches = [items.new(batch) if mix.startswith("new") else items.replay_mix(batch) for _ in range(commits)]
    walls, cpus, counts = [], [], {}
    db0 = postgres_cpu() if pg else {}
    sys0 = system_busy()
    t0 = time.perf_counter()
    for b in batches:
        wall, cpu, outs = commit(store, ledger, b)
        walls.append(wall)
        cpus.append(cpu)
        for k, v in outcome_counts(outs).items():
            counts[k] = counts.get(k, 0) + v
    elapsed = time.perf_counter() - t0
    db = cpu_delta(db0, postgres_cpu()) if pg else 0.0
    other = max(0.0, system_busy() - sys0 - sum(cpus) - db) / elapsed
    records = batch * commits
    return Timed(
        backend=backend,
        size=size,
        batch=batch,
        mix=mix,
        commits=commits,
        wall_us_per_commit_p50=statistics.median(walls) * 1e6,
        wall_us_per_commit_p90=pct(walls, 0.9) * 1e6,
        wall_us_per_record=statistics.median(walls) * 1e6 / batch,
        client_cpu_us_per_record=sum(cpus) * 1e6 / records,
        db_cpu_us_per_record=db * 1e6 / records,
        other_cores=other,
        outcomes=counts,
    )


def commits_for(batch: int, scale: float) -> int:
    return max(3, round({1: 60, 64: 15, 500: 5}.get(batch, max(3, 3000 // batch)) * scale))


def explain_postgres(url: str, items: Items, out: list[str]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the writer's lookups and the landed code's replay lookup."""
    import psycopg

    from gateway.store.sql import postgres as pgsql

    sample = random.sample(items.sample, min(500, len(items.sample)))
    fresh = [hashlib.sha256(os.urandom(16)).digest() for _ in range(500)]
    with psycopg.connect(pgsql.conninfo(url), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        stats = conn.execute(
            "SELECT n_live_tup, last_autoanalyze, last_analyze FROM pg_stat_user_tables "
            "WHERE relname = 'exchanges' AND schemaname = current_schema()"
        ).fetchone()
        live, analyzed = (stats[0], stats[1]) if stats else ("?", "?")
        out.append(f"exchanges: n_live_tup={live}, last autoanalyze {analyzed}")

        def plan(label: str, sql: str, params: tuple[Any, ...], generic: bool = False) -> None:
            if generic:
                # What a prepared statement may run once PostgreSQL's plan cache switches
                # to the generic plan (psycopg prepares a query after 5 executions): the
                # plan is made without the parameter values.
                numbered = sql
                for k in range(1, len(params) + 1):
                    numbered = numbered.replace("%s", f"${k}", 1)
                conn.execute("SET plan_cache_mode = force_generic_plan")
                conn.execute(f"PREPARE growth_q AS {numbered}")
                try:
                    marks = ",".join(["%s"] * len(params))
                    rows = conn.execute(
                        f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE growth_q({marks})", params
                    ).fetchall()
                finally:
                    conn.execute("DEALLOCATE growth_q")
                    conn.execute("RESET plan_cache_mode")
            else:
                rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
            out.append(f"-- {label}" + (" [generic plan]" if generic else " [custom plan]"))
            # Literal arrays are long: keep the plan's shape, not its parameters.
            out.extend("   " + (r[0] if len(r[0]) < 160 else r[0][:150] + " ...") for r in rows)

        for n in (8, 64, 500):
            digests = [i.envelope_sha256 for i in sample[: n // 2]] + fresh[: n - n // 2]
            plan(f"new _BY_DIGEST, {n} digests (half stored)", pgsql._BY_DIGEST, (digests,))
            plan(f"new _BY_DIGEST, {n} digests (half stored)", pgsql._BY_DIGEST, (digests,), True)
            pairs = [(i.sender, i.message_id) for i in sample[: n // 2]] + [
                (ISSUERS[k % 12], f"nope-{k}") for k in range(n - n // 2)
            ]
            plan(
                f"new _USED_IDS, {n} pairs (half used)",
                pgsql._USED_IDS,
                ([s for s, _ in pairs], [m for _, m in pairs]),
            )
            plan(
                f"new _USED_IDS, {n} pairs (half used)",
                pgsql._USED_IDS,
                ([s for s, _ in pairs], [m for _, m in pairs]),
                True,
            )
            keys = [i.record_key for i in sample[: n // 2]] + [
                f"certificate_status/CCC/none{k}" for k in range(n - n // 2)
            ]
            plan(f"new _STATES, {n} keys (half stored)", pgsql._STATES, (keys,))
            plan(f"new _STATES, {n} keys (half stored)", pgsql._STATES, (keys,), True)
            marks = ",".join(["%s"] * len(digests))
            plan(
                f"LANDED replay lookup (757f7fd), {n} digests (half stored)",
                f"SELECT envelope_sha256, log_index, receipt FROM exchanges WHERE outcome = 1 "
                f"AND envelope_sha256 IN ({marks})",
                tuple(digests),
            )


def run_backend(
    backend: str, url: str, args: argparse.Namespace, results: list[Timed], notes: list[str]
) -> None:
    from gateway.ledger.rules import Ledger
    from gateway.store.engine import open_engines
    from gateway.store.sql import open_write_store

    pg = backend == "postgresql"
    open_engines(url).dispose()  # creates the schema
    store = open_write_store(url)
    ledger = Ledger()
    items = Items(date.today())
    log_size = 0
    try:
        for size in args.sizes:
            fill_wall = fill_cpu = 0.0
            db0 = postgres_cpu() if pg else {}
            filled = 0
            while log_size < size:
                n = min(args.fill_batch, size - log_size)
                batch = items.new(n)
                wall, cpu, outs = commit(store, ledger, batch)
                fill_wall += wall
                fill_cpu += cpu
                log_size += len(outs)
                filled += n
            if filled:
                db = cpu_delta(db0, postgres_cpu()) if pg else 0.0
                line = (
                    f"{backend}: filled to {size:,} entries (+{filled:,} in commits of {args.fill_batch}): "
                    f"{fill_wall * 1e6 / filled:.0f} µs/record wall, "
                    f"client CPU {fill_cpu * 1e6 / filled:.0f}, db CPU {db * 1e6 / filled:.0f} µs/record"
                )
                print(line, flush=True)
                notes.append(line)
            for batch in args.batches:
                for mix in ("new", "replay"):
                    r = time_commits(
                        backend, store, ledger, items, size, batch, mix, commits_for(batch, args.scale), pg
                    )
                    with store.transaction() as tx:
                        log_size = tx.log_size()
                    results.append(r)
                    print(fmt(r), flush=True)
        if pg and args.explain:
            lines: list[str] = []
            explain_postgres(url, items, lines)
            notes.append(f"EXPLAIN at {log_size:,} entries (PostgreSQL, statistics as autovacuum left them):")
            notes.extend(lines)
            for line in lines:
                print(line, flush=True)
        if pg and args.analyze:
            # With autovacuum off (as on the bench machine) the tables are never analyzed and
            # the planner works from defaults; production runs autovacuum. Same again after
            # ANALYZE.
            import psycopg

            from gateway.store.sql.postgres import conninfo

            with psycopg.connect(conninfo(url), autocommit=True) as conn:
                conn.execute("ANALYZE")
            print(f"-- {backend}: ANALYZE done at {log_size:,} entries", flush=True)
            for batch in args.batches:
                for mix in ("new", "replay"):
                    r = time_commits(
                        backend, store, ledger, items, log_size, batch, mix + " (analyzed)",
                        commits_for(batch, args.scale), pg,
                    )  # fmt: skip
                    results.append(r)
                    print(fmt(r), flush=True)
            if args.explain:
                lines = []
                explain_postgres(url, items, lines)
                notes.append(f"EXPLAIN at {log_size:,} entries (PostgreSQL, after ANALYZE):")
                notes.extend(lines)
                for line in lines:
                    print(line, flush=True)
    finally:
        store.close()


HEAD = (
    "| backend | log entries | batch | mix | commits | wall µs/commit p50 | p90 | wall µs/record | "
    "client CPU µs/rec | PG CPU µs/rec | other cores | outcomes |"
)


def fmt(r: Timed) -> str:
    outs = ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items()))
    return (
        f"| {r.backend} | {r.size:,} | {r.batch} | {r.mix} | {r.commits} | {r.wall_us_per_commit_p50:,.0f} | "
        f"{r.wall_us_per_commit_p90:,.0f} | {r.wall_us_per_record:,.0f} | "
        f"{r.client_cpu_us_per_record:,.0f} | {r.db_cpu_us_per_record:,.0f} | {r.other_cores:.2f} | {outs} |"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--postgres", help="SQLAlchemy URL of a PostgreSQL database (a schema is created and dropped)"
    )
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--batches", default="1,64,500")
    p.add_argument("--fill-batch", type=int, default=1000)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the number of timed commits")
    p.add_argument("--no-explain", dest="explain", action="store_false")
    p.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="PostgreSQL: skip the second pass at the largest size after ANALYZE",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    args.batches = [int(x) for x in args.batches.split(",") if x]
    random.seed(7)
    import gateway

    print(
        f"# pg_growth.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, gateway from {gateway.__file__}", flush=True
    )
    print(HEAD, flush=True)
    results: list[Timed] = []
    notes: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="mrx-growth-"))
    started = time.perf_counter()
    try:
        if not args.no_sqlite:
            run_backend("sqlite", f"sqlite:///{workdir / 'growth.db'}", args, results, notes)
        if args.postgres:
            import psycopg
            from sqlalchemy.engine import make_url

            from gateway.store.sql.postgres import conninfo

            schema = f"bench_growth_{uuid.uuid4().hex[:10]}"
            admin = conninfo(args.postgres)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            try:
                url = make_url(args.postgres)
                opts = " ".join(o for o in (url.query.get("options", ""), f"-csearch_path={schema}") if o)
                run_backend(
                    "postgresql",
                    url.update_query_dict({"options": opts}).render_as_string(hide_password=False),
                    args,
                    results,
                    notes,
                )
            finally:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"rows": [dataclasses.asdict(r) for r in results], "notes": notes}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
