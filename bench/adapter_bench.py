"""First load of N rows through one adapter into a real gateway (SQLite).

    python bench/adapter_bench.py --rows 100000

Generates a Jiangsu-style CSV export in GBK on the fly (tests/fixtures/adapters/
make_fixtures.py, jiangsu_rows), starts ``mrx serve`` on a fresh SQLite database with
throw-away demo keys, and runs ``mrx adapter run CONFIG --once`` as its own process.
Reports rows/s of the whole pass (read, map, sign, submit, verify receipts, save
cursor), the runner's peak RSS (getrusage of the waited child), the runner's CPU per
row, and the gateway's CPU per record (server process plus its writer, from /proc via
psutil, over the run). Checks that every row was accepted and the cursor saved.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.registry.keygen import write_demo_federation  # noqa: E402


def _fixtures() -> object:
    spec = importlib.util.spec_from_file_location(
        "make_fixtures", ROOT / "tests/fixtures/adapters/make_fixtures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not 1 <= args.rows <= 480_000:
        parser.error("--rows must be 1..480000 (Jiangsu's serial block times six product categories)")
    work = Path(tempfile.mkdtemp(prefix="mrx-adapter-bench-"))
    fixtures = _fixtures()
    paths = write_demo_federation(template_dir=ROOT / "keys", dest=work / "federation", now=datetime.now(UTC))
    csv_path = work / "jiangsu.csv"
    t0 = time.perf_counter()
    with csv_path.open("w", encoding="gbk", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(fixtures.JIANGSU_HEADER)  # type: ignore[attr-defined]
        writer.writerows(fixtures.jiangsu_rows(args.rows))  # type: ignore[attr-defined]
    generated = time.perf_counter() - t0
    address = f"127.0.0.1:{_port()}"
    config = work / "adapter.toml"
    config.write_text(
        'participant = "CN-JS"\n'
        f'mapping = "{ROOT / "adapters/mappings/jiangsu_ccc_csv.toml"}"\n'
        f'state_dir = "{work / "state"}"\n'
        f"batch_size = {args.batch_size}\n\n"
        f'[gateway]\naddress = "{address}"\nkey = "{paths["CN-JS"]}"\nkeyid = "CN-JS/demo"\n'
        f'federation = "{work / "federation"}"\ntimeout = 120\n\n'
        f'[reader]\ntype = "csv"\npath = "{csv_path}"\nencoding = "gbk"\n',
        "utf-8",
    )
    mrx = [sys.executable, "-m", "gateway.cli"]
    serve = subprocess.Popen(
        [
            *mrx,
            "serve",
            "--address",
            address,
            "--federation",
            str(work / "federation"),
            "--database",
            f"sqlite:///{work / 'mrx.db'}",
            "--gateway-key",
            str(paths["MRX-GW"]),
            "--gateway-keyid",
            "MRX-GW/demo",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "serve.log").open("w"),
    )
    try:
        gw = psutil.Process(serve.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) == 0:
                    break
            time.sleep(0.2)
        time.sleep(1.0)
        gw_cpu0 = _cpu(gw)
        load0 = os.getloadavg()
        start = time.perf_counter()
        run = subprocess.run([*mrx, "adapter", "run", str(config), "--once"], capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the runner: the only child waited so far
        gw_cpu = _cpu(gw) - gw_cpu0
    finally:
        serve.terminate()
        serve.wait(timeout=60)
    print(run.stdout.strip())
    if run.returncode != 0:
        print(run.stderr[-2000:], file=sys.stderr)
        return 1
    accepted = int(run.stdout.split("accepted ")[1].split(",")[0])
    if accepted != args.rows:
        print(f"only {accepted} of {args.rows} rows accepted", file=sys.stderr)
        return 1
    runner_cpu = usage.ru_utime + usage.ru_stime
    print(f"date           {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine        {os.cpu_count()} CPU {platform.processor() or platform.machine()}, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
    print(f"load average   {load0[0]:.2f} at start")
    size = csv_path.stat().st_size / 2**20
    print(f"rows           {args.rows:,} (CSV {size:.1f} MiB GBK, made in {generated:.1f} s)")
    print(f"first load     {elapsed:.1f} s = {args.rows / elapsed:,.0f} rows/s (batch {args.batch_size})")
    rss = usage.ru_maxrss / 1024
    print(f"runner         peak RSS {rss:.0f} MiB, CPU {runner_cpu * 1e6 / args.rows:,.0f} µs/row")
    print(f"gateway        CPU {gw_cpu * 1e6 / args.rows:,.0f} µs/record (server + writer)")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept           {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
