"""The inbound direction: N other-province changes followed into a local SQL table.

    python bench/inbound_bench.py --rows 20000

Publishes N Jiangsu rows (the adapter_bench CSV, through ``mrx adapter run --once``,
not timed), then times ``mrx adapter run SHANGHAI --once`` whose config has a ``[sink]``
(a SQLite table in the local system's own database) and whose source is empty: the
whole pass is the change feed (Subscribe, signed) followed until caught up, every
issuer signature verified twice (SDK, then the province's own federation copy), changes
upserted in batches (one local transaction each) and the inbound cursor saved (fsync)
after each batch. ``--profile PATH`` runs the timed runner under cProfile. Reports changes/s, the
runner's peak RSS and CPU per change, and the gateway's CPU per change sent; checks
that every row arrived.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.registry.keygen import write_demo_federation  # noqa: E402


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _config(work: Path, name: str, participant: str, mapping: str, address: str, body: str) -> Path:
    paths = {"CN-JS": work / "federation/private", "CN-SH": work / "federation/private"}
    key = next(paths[participant].glob(f"{participant}_*"))
    config = work / f"{name}.toml"
    config.write_text(
        f'participant = "{participant}"\nmapping = "{ROOT / "adapters/mappings" / mapping}"\n'
        f'state_dir = "{work / name}"\nbatch_size = 1000\n\n'
        f'[gateway]\naddress = "{address}"\nkey = "{key}"\nkeyid = "{participant}/demo"\n'
        f'federation = "{work / "federation"}"\ntimeout = 120\n\n{body}',
        "utf-8",
    )
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument(
        "--profile", type=Path, help="run the timed runner under cProfile, writing its stats here"
    )
    args = parser.parse_args()
    bench = _load("adapter_bench", ROOT / "bench/adapter_bench.py")
    fixtures = bench._fixtures()
    work = Path(tempfile.mkdtemp(prefix="mrx-inbound-bench-"))
    paths = write_demo_federation(template_dir=ROOT / "keys", dest=work / "federation", now=datetime.now(UTC))
    csv_path = work / "jiangsu.csv"
    with csv_path.open("w", encoding="gbk", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(fixtures.JIANGSU_HEADER)
        writer.writerows(fixtures.jiangsu_rows(args.rows))
    local = work / "shanghai_local.db"
    ddl = (ROOT / "tests/fixtures/adapters/shanghai_certs.sql").read_text("utf-8").split(";\n")[0]
    systems = _load("adapter_systems", ROOT / "tests/fixtures/adapters/systems.py")
    with sqlite3.connect(local) as conn:
        conn.execute(ddl)  # the local source, empty: only the inbound direction runs
        conn.execute(systems.INBOUND_DDL.format(auto=""))
    address = f"127.0.0.1:{bench._port()}"
    js = _config(
        work,
        "js",
        "CN-JS",
        "jiangsu_ccc_csv.toml",
        address,
        f'[reader]\ntype = "csv"\npath = "{csv_path}"\nencoding = "gbk"\n',
    )
    sh = _config(
        work,
        "sh",
        "CN-SH",
        "shanghai_certs_sql.toml",
        address,
        f'[reader]\ntype = "sql"\nurl = "sqlite:///{local}"\ntable = "sh_cert_status"\n\n'
        f'[sink]\ntype = "sql"\nurl = "sqlite:///{local}"\ntable = "sh_inbound_cert"\n'
        f'mapping = "{ROOT / "adapters/mappings/shanghai_inbound_sql.toml"}"\n',
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
        while time.monotonic() < deadline and serve.poll() is None:
            import socket

            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) == 0:
                    break
            time.sleep(0.2)
        load = subprocess.run([*mrx, "adapter", "run", str(js), "--once"], capture_output=True, text=True)
        if load.returncode != 0:
            print(load.stdout + load.stderr[-2000:], file=sys.stderr)
            return 1
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        gw_cpu0 = bench._cpu(gw)
        load0 = os.getloadavg()
        start = time.perf_counter()
        profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
        runner = [sys.executable, *profile, "-m", "gateway.cli", "adapter", "run", str(sh), "--once"]
        run = subprocess.run(runner, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        gw_cpu = bench._cpu(gw) - gw_cpu0
    finally:
        serve.terminate()
        serve.wait(timeout=60)
    print(run.stdout.strip())
    with sqlite3.connect(local) as conn:
        arrived = conn.execute("SELECT count(*) FROM sh_inbound_cert").fetchone()[0]
    if run.returncode != 0 or arrived != args.rows:
        print(f"{arrived} of {args.rows} arrived\n{run.stderr[-2000:]}", file=sys.stderr)
        return 1
    cpu = (usage.ru_utime + usage.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"date           {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine        {os.cpu_count()} CPU {platform.processor() or platform.machine()}, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
    print(f"load average   {load0[0]:.2f} at start")
    print(f"inbound        {args.rows:,} changes in {elapsed:.1f} s = {args.rows / elapsed:,.0f} changes/s")
    rss = usage.ru_maxrss / 1024
    print(f"runner         peak RSS {rss:.0f} MiB, CPU {cpu * 1e6 / args.rows:,.0f} µs/change")
    print(f"gateway        CPU {gw_cpu * 1e6 / args.rows:,.0f} µs/change sent (Subscribe)")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
