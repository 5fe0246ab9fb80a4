"""Reconciliation at scale: 1,000,000 records of one participant, 0.1% differing.

    python bench/reconcile_bench.py                                    # SQLite, 1M
    python bench/reconcile_bench.py --no-sqlite --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/reconcile_bench.py --records 100000                  # a quicker look

What it does, per backend:

1. Loads the ledger at the storage seam (not through the RPCs): N CCC certificates of
   CN-JS, each a real signed submission envelope (the gateway digests the stored
   envelopes), written as `exchanges` and `certificates` rows. The audit-tree columns
   (leaf, Merkle nodes) are not built: reconciliation does not read them.
2. Starts `mrx serve` on that database (its own process, so its CPU is its own).
3. Run 1, the first night: the gateway digests every stored record (a one-off per
   accepted version), then the comparison.
4. Between the nights 1,000 certificates get a new version at the gateway (the
   participant's snapshot has them too: not discrepancies, but the gateway re-digests
   them).
5. Run 2, a normal night: the figures that matter.

The participant's snapshot differs in 0.1% of the records: 40% state differs, 20% a
newer local version, 20% missing at the gateway (local only), 20% missing locally.
Bytes are the serialized requests and responses of every reconciliation call, compared
with two ways of "sending every record": every record's digest entry (key, version,
state, content digest) and every record's signed envelope.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import insert, text, update

from gateway.client import ReconcileClient, make_submission
from gateway.crypto.dsse import sha256
from gateway.crypto.suites import PrivateKey
from gateway.domain.certificates import Certificate, CertState, Holder, Scheme
from gateway.pb import reconcile_pb2
from gateway.reconcile.participant import Row, reconcile
from gateway.registry.keygen import write_demo_federation
from gateway.store.engine import open_engines
from gateway.store.schema import certificates, exchanges

ROOT = Path(__file__).resolve().parent.parent
HOLDER = Holder(name="苏州华锐精密电器有限公司", credit_code="913205057344096226")
CHANGED_AT_GATEWAY = 1_000


def cert(i: int, *, version: int = 1, state: CertState = CertState.VALID) -> Certificate:
    return Certificate(
        certificate_number=f"2026{i:012d}",
        scheme=Scheme.CCC,
        issuing_body="CNCA-R-2002-001",
        issuer="CN-JS",
        holder=HOLDER,
        scope="便携式计算机",
        state=state,
        reason="" if state is CertState.VALID else "监督抽查不合格",
        effective_at=datetime(2026, 7, 19, tzinfo=UTC),
        issue_date=date(2026, 7, 19),
        expiry_date=date(2031, 7, 19),
        version=version,
    )


@dataclass
class Plan:
    n: int
    state_differs: range
    version_differs: range
    missing_locally: range
    missing_at_gateway: range  # indexes beyond n: local only
    changed_at_gateway: range

    @classmethod
    def of(cls, n: int, differ: float) -> Plan:
        d = max(5, int(n * differ))
        a, b, c = int(d * 0.4), int(d * 0.2), int(d * 0.2)
        e = d - a - b - c
        step = n // 2
        return cls(
            n=n,
            state_differs=range(0, a),
            version_differs=range(a, a + b),
            missing_locally=range(a + b, a + b + c),
            missing_at_gateway=range(n, n + e),
            changed_at_gateway=range(step, step + min(CHANGED_AT_GATEWAY, n // 4)),
        )

    @property
    def differing(self) -> int:
        return (
            len(self.state_differs) + len(self.version_differs) + len(self.missing_locally)
            + len(self.missing_at_gateway)
        )  # fmt: skip


def load(url: str, plan: Plan, signer: PrivateKey) -> dict[str, int]:
    """Write the ledger rows; returns the 'send everything' baselines in bytes."""
    engines = open_engines(url)
    envelope_bytes = 0
    digest_entries = 0
    chunk_ex: list[dict[str, object]] = []
    chunk_cert: list[dict[str, object]] = []
    t0 = time.monotonic()

    def flush() -> None:
        with engines.writer.begin() as conn:
            conn.execute(insert(exchanges), chunk_ex)
            conn.execute(insert(certificates), chunk_cert)
        chunk_ex.clear()
        chunk_cert.clear()

    for i in range(plan.n):
        c = cert(i)
        row_ex, row_cert, size = _rows(c, i, signer)
        envelope_bytes += size
        digest_entries += (
            reconcile_pb2.RecordDigest(
                record_key=c.key, version=1, state=1, content_sha256=bytes(32)
            ).ByteSize()
            + 3
        )
        chunk_ex.append(row_ex)
        chunk_cert.append(row_cert)
        if len(chunk_ex) >= 5_000:
            flush()
        if i and i % 200_000 == 0:
            print(f"  loaded {i:,} ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    if chunk_ex:
        flush()
    engines.dispose()
    return {"envelopes": envelope_bytes, "digest_entries": digest_entries}


def _rows(
    c: Certificate, log_index: int, signer: PrivateKey
) -> tuple[dict[str, object], dict[str, object], int]:
    env = make_submission(c, sender="CN-JS", signer=signer, message_id=f"bench-{log_index}-{c.version}")
    raw = env.SerializeToString(deterministic=True)
    row_ex = {
        "log_index": log_index,
        "received_at_us": 1_795_000_000_000_000 + log_index,
        "sender": "CN-JS",
        "message_id": f"bench-{log_index}-{c.version}",
        "kind": 1,
        "record_key": c.key,
        "record_version": c.version,
        "subject_issuer": "CN-JS",
        "outcome": 1,
        "reason": "",
        "envelope_sha256": sha256(raw),
        "envelope": raw,
        "receipt": None,
        "leaf": b"",
    }
    row_cert = {
        "scheme": int(c.scheme),
        "certificate_number": c.certificate_number,
        "issuer": "CN-JS",
        "issuing_body": c.issuing_body,
        "holder_credit_code": c.holder.credit_code,
        "holder_name": c.holder.name,
        "state": int(c.state),
        "version": c.version,
        "effective_at_us": 0,
        "issue_date": c.issue_date,
        "expiry_date": c.expiry_date,
        "log_index": log_index,
        "record_key": c.key,
    }
    return row_ex, row_cert, len(raw)


def change_at_gateway(url: str, plan: Plan, signer: PrivateKey) -> None:
    engines = open_engines(url)
    with engines.writer.begin() as conn:
        next_index = plan.n + 10
        for k, i in enumerate(plan.changed_at_gateway):
            c = cert(i, version=2, state=CertState.SUSPENDED)
            row_ex, _, _ = _rows(c, next_index + k, signer)
            conn.execute(insert(exchanges), [row_ex])
            conn.execute(
                update(certificates)
                .where(certificates.c.record_key == c.key)
                .values(version=2, state=int(CertState.SUSPENDED), log_index=next_index + k)
            )
    engines.dispose()


def snapshot(plan: Plan, *, night: int) -> Iterator[Row]:
    changed = set(plan.changed_at_gateway) if night == 2 else set()
    for i in range(plan.n):
        if i in plan.missing_locally:
            continue
        if i in plan.state_differs:
            c = cert(i, state=CertState.REVOKED)
        elif i in plan.version_differs:
            c = cert(i, version=3)
        elif i in changed:
            c = cert(i, version=2, state=CertState.SUSPENDED)
        else:
            c = cert(i)
        yield Row(f"row {i}", c)
    for i in plan.missing_at_gateway:
        yield Row(f"row {i}", cert(i))


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(url: str, fed: dict[str, Path]) -> tuple[subprocess.Popen[str], str]:
    federation_dir = next(iter(fed.values())).parent.parent
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gateway.cli", "serve", "--address", "127.0.0.1:0", "--database", url,
            "--federation", str(federation_dir), "--gateway-key", str(fed["MRX-GW"]), "--gateway-keyid",
            "MRX-GW/demo", "--checkpoint-interval", "3600",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"serving on (\S+):(\d+) ", line)
    if not found:
        proc.kill()
        raise SystemExit(f"mrx serve did not start: {line!r}")
    return proc, f"127.0.0.1:{found.group(2)}"


def night(address: str, pid: int, plan: Plan, signer: PrivateKey, number: int) -> dict[str, object]:
    cpu0, t0 = proc_cpu(pid), time.monotonic()
    with ReconcileClient(address, sender="CN-JS", signer=signer, timeout=600) as client:
        result = reconcile(
            client, participant="CN-JS", rows=snapshot(plan, night=number), recognised_keyids=["CN-JS/demo"]
        )
        elapsed = time.monotonic() - t0
        cpu = proc_cpu(pid) - cpu0
        exchanged = client.bytes_sent + client.bytes_received
    counts = {reconcile_pb2.DiscrepancyClass.Name(c.category): c.count for c in result.report.summary}  # type: ignore[arg-type]
    return {
        "night": number,
        "seconds": round(elapsed, 1),
        "gateway_cpu_s": round(cpu, 1),
        "gateway_cpu_us_per_record": round(cpu / plan.n * 1e6, 1),
        "bytes_sent": client.bytes_sent,
        "bytes_received": client.bytes_received,
        "bytes": exchanged,
        "found": sum(counts.values()),
        "summary": counts,
    }


def run_backend(
    name: str, url: str, plan: Plan, fed: dict[str, Path], signer: PrivateKey
) -> dict[str, object]:
    print(f"{name}: loading {plan.n:,} records", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    baselines = load(url, plan, signer)
    load_s = time.monotonic() - t0
    proc, address = serve(url, fed)
    try:
        print(f"{name}: night 1 (the gateway digests every stored record)", file=sys.stderr, flush=True)
        first = night(address, proc.pid, plan, signer, 1)
        change_at_gateway(url, plan, signer)
        print(f"{name}: night 2", file=sys.stderr, flush=True)
        second = night(address, proc.pid, plan, signer, 2)
    finally:
        # Killed, not stopped: its shutdown checkpoint would need the audit tree, which
        # the seam-loaded ledger does not have (and the database is thrown away).
        proc.kill()
        proc.wait(60)
    out: dict[str, object] = {
        "backend": name,
        "records": plan.n,
        "differing": plan.differing,
        "load_s": round(load_s, 1),
        "baseline_digest_entries_bytes": baselines["digest_entries"],
        "baseline_envelopes_bytes": baselines["envelopes"],
        "nights": [first, second],
    }
    for n in (first, second):
        n["pct_of_digest_entries"] = round(100 * int(n["bytes"]) / baselines["digest_entries"], 2)  # type: ignore[call-overload]
        n["pct_of_envelopes"] = round(100 * int(n["bytes"]) / baselines["envelopes"], 2)  # type: ignore[call-overload]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--differ", type=float, default=0.001)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument(
        "--postgres", help="a PostgreSQL URL; the bench works in a schema of its own, dropped after"
    )
    args = parser.parse_args()
    plan = Plan.of(args.records, args.differ)
    with tempfile.TemporaryDirectory(prefix="mrx-reconcile-bench-") as tmp:
        fed = write_demo_federation(template_dir=ROOT / "keys", dest=Path(tmp) / "fed", now=datetime.now(UTC))
        signer = PrivateKey.load(fed["CN-JS"], keyid="CN-JS/demo")
        results = []
        if not args.no_sqlite:
            results.append(run_backend("sqlite", f"sqlite:///{tmp}/bench.db", plan, fed, signer))
        if args.postgres:
            from sqlalchemy import create_engine
            from sqlalchemy.engine import make_url

            schema = f"mrx_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.postgres)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                url = make_url(args.postgres).update_query_dict({"options": f"-csearch_path={schema}"})
                results.append(
                    run_backend("postgresql", url.render_as_string(hide_password=False), plan, fed, signer)
                )
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    machine = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_1m": os.getloadavg()[0],
    }
    print(json.dumps({"machine": machine, "results": results}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
