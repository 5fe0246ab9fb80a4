"""`mrx adapter check` and `mrx adapter run`, run as a provincial IT department runs them."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.crypto.suites import PrivateKey

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MRX = [sys.executable, "-m", "gateway.cli"]
_spec = importlib.util.spec_from_file_location("adapter_systems", ROOT / "tests/fixtures/adapters/systems.py")
assert _spec is not None and _spec.loader is not None
systems = sys.modules.setdefault("adapter_systems", importlib.util.module_from_spec(_spec))
if not hasattr(systems, "start"):
    _spec.loader.exec_module(systems)


def mrx(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MRX, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def jiangsu(tmp_path: Path) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:
        yield systems.start("jiangsu_ccc", tmp_path, stack)


def _point_at(system: Any, address: str, key: PrivateKey, federation_dir: Path, tmp_path: Path) -> None:
    key_path = tmp_path / "private" / f"{system.participant}.key.pem"
    key_path.parent.mkdir(mode=0o700, parents=True)
    key.save(key_path)
    text = system.config.read_text("utf-8").replace(
        '[gateway]\naddress = "127.0.0.1:1"',
        f'[gateway]\naddress = "{address}"\nkey = "{key_path}"\nkeyid = "{key.keyid}"\n'
        f'federation = "{federation_dir}"',
    )
    system.config.write_text(text, "utf-8")


def test_check_lists_every_unmappable_row_without_a_gateway(jiangsu: Any) -> None:
    result = mrx("adapter", "check", str(jiangsu.config))
    assert result.returncode == 1, result.stderr
    assert (
        "cannot map line 296: 统一社会信用代码: check character (position 18) does not match" in result.stdout
    )
    assert "cannot map line 297: 证书状态: unknown word '待定'" in result.stdout
    assert "warning line 295: 统一社会信用代码: credit code 91350100M000" in result.stdout
    assert result.stdout.strip().endswith("303 rows, 295 mapped, 8 cannot be mapped")


def test_run_once_publishes_reports_and_then_has_nothing_left(
    jiangsu: Any, gateway: Any, signers: dict[str, PrivateKey], federation_dir: Path, tmp_path: Path
) -> None:
    _point_at(jiangsu, gateway.address, signers["CN-JS"], federation_dir, tmp_path)
    dry = mrx("adapter", "run", str(jiangsu.config), "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert dry.stdout.count("would send certificate_status/CCC/") == 295
    assert "dry run (nothing sent): read 303, mapped 295, unmappable 8, sent 0" in dry.stdout
    first = mrx("adapter", "run", str(jiangsu.config), "--once")
    assert first.returncode == 1, first.stderr
    assert "read 303, mapped 295, unmappable 8, sent 295, accepted 294, refused 1" in first.stdout
    assert "refused ILLEGAL_TRANSITION: 1" in first.stdout
    assert f"details: {jiangsu.dir / 'state' / 'rejects.jsonl'}" in first.stdout
    again = mrx("adapter", "run", str(jiangsu.config), "--once")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "read 0, mapped 0, unmappable 0, sent 0, accepted 0, refused 0" in again.stdout


def test_run_against_an_unreachable_gateway_exits_3_and_keeps_the_batch(
    jiangsu: Any, signers: dict[str, PrivateKey], federation_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _point_at(jiangsu, f"127.0.0.1:{port}", signers["CN-JS"], federation_dir, tmp_path)
    jiangsu.config.write_text(
        jiangsu.config.read_text("utf-8").replace("retry_seconds = 5", "retry_seconds = 1")
    )
    result = mrx("adapter", "run", str(jiangsu.config), "--once")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "stayed unreachable" in result.stderr and "resent unchanged on the next run" in result.stderr
    assert (jiangsu.dir / "state" / "outbox.json").exists()


def test_a_wrong_encoding_stops_before_anything_is_sent(
    jiangsu: Any, signers: dict[str, PrivateKey], federation_dir: Path, tmp_path: Path
) -> None:
    _point_at(jiangsu, "127.0.0.1:1", signers["CN-JS"], federation_dir, tmp_path)
    data = jiangsu.dir / "jiangsu_ccc.csv"
    data.write_bytes(data.read_bytes().decode("gbk").encode("utf-8"))
    result = mrx("adapter", "run", str(jiangsu.config), "--once")
    assert result.returncode == 2
    assert "is declared gbk but is UTF-8" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (jiangsu.dir / "state" / "cursor.json").exists()


# --- a real `mrx serve` killed mid-run and restarted ----------------------------------------------


def _serve(federation: Path, paths: dict[str, Path], database: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            *MRX,
            "serve",
            "--address",
            f"127.0.0.1:{port}",
            "--federation",
            str(federation),
            "--database",
            str(database),
            "--gateway-key",
            str(paths["MRX-GW"]),
            "--gateway-keyid",
            "MRX-GW/demo",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill takes the writer too
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving on" in line, line + proc.stdout.read()
    return proc


def test_a_gateway_killed_mid_run_and_restarted_loses_nothing_and_takes_nothing_twice(tmp_path: Path) -> None:
    import csv
    import os
    import signal
    import time
    from datetime import UTC, datetime

    from gateway.client import GatewayClient
    from gateway.registry.keygen import write_demo_federation

    spec = importlib.util.spec_from_file_location(
        "make_fixtures", ROOT / "tests/fixtures/adapters/make_fixtures.py"
    )
    assert spec is not None and spec.loader is not None
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    paths = write_demo_federation(template_dir=ROOT / "keys", dest=tmp_path / "fed", now=datetime.now(UTC))
    rows = 3000
    data = tmp_path / "jiangsu.csv"
    with data.open("w", encoding="gbk", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(fixtures.JIANGSU_HEADER)
        writer.writerows(fixtures.jiangsu_rows(rows))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "adapter.toml"
    config.write_text(
        f'participant = "CN-JS"\nmapping = "{ROOT / "adapters/mappings/jiangsu_ccc_csv.toml"}"\n'
        f'state_dir = "state"\nbatch_size = 50\n\n[gateway]\naddress = "127.0.0.1:{port}"\n'
        f'key = "{paths["CN-JS"]}"\nkeyid = "CN-JS/demo"\nfederation = "{tmp_path / "fed"}"\n'
        f'retry_seconds = 90\n\n[reader]\ntype = "csv"\npath = "{data}"\nencoding = "gbk"\n',
        "utf-8",
    )
    database = tmp_path / "mrx.db"
    gw = _serve(tmp_path / "fed", paths, database, port)
    runner = subprocess.Popen(
        [*MRX, "adapter", "run", str(config), "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        receipts = tmp_path / "state" / "receipts.jsonl"
        deadline = time.monotonic() + 60
        while not (receipts.exists() and receipts.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(gw.pid, signal.SIGKILL)  # no drain, no goodbye: a power cut
        gw.wait(timeout=30)
        time.sleep(1.5)
        gw = _serve(tmp_path / "fed", paths, database, port)
        out, err = runner.communicate(timeout=300)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, out + err
    assert "gateway unreachable" in err, "the gateway was not killed while the run was under way"
    assert f"read {rows}, mapped {rows}, unmappable 0, sent {rows}, accepted {rows}, refused 0" in out
    lines = (tmp_path / "state" / "receipts.jsonl").read_text("utf-8").splitlines()
    ids = [line.split('"message_id": "')[1].split('"')[0] for line in lines]
    assert len(ids) == len(set(ids)) == rows  # each change once, under its own id
    signer = PrivateKey.load(paths["CN-SH"], "CN-SH/demo")
    with GatewayClient(f"127.0.0.1:{port}", sender="CN-SH", signer=signer) as reader:
        stored = list(reader.query_certificates(issuer="CN-JS", page_size=500))
    assert len(stored) == rows
    os.killpg(gw.pid, signal.SIGTERM)
    gw.communicate(timeout=60)


def test_run_polls_picks_up_new_rows_and_stops_cleanly_on_ctrl_c(
    jiangsu: Any, gateway: Any, signers: dict[str, PrivateKey], federation_dir: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import threading
    import time

    _point_at(jiangsu, gateway.address, signers["CN-JS"], federation_dir, tmp_path)
    receipts = jiangsu.dir / "state" / "receipts.jsonl"

    def accepted() -> int:
        return len(receipts.read_text("utf-8").splitlines()) if receipts.exists() else 0

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 60
        while accepted() < count and time.monotonic() < deadline:
            time.sleep(0.05)

    proc = subprocess.Popen(
        [*MRX, "adapter", "run", str(jiangsu.config), "--interval", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_for(294)
        data = jiangsu.dir / "jiangsu_ccc.csv"
        row = "999,2026011001150999,强制性产品认证,CNCA-R-2002-001,南京新增电器有限公司,"
        text = data.read_bytes().decode("gbk")
        code = text.splitlines()[1].split(",")[5]
        text += f"{row}{code},家用电冰箱,有效,,2026-11-21 09:00:00,2026年11月01日,2031年10月31日\r\n"
        # As docs/adapters.md asks of exports: a new file renamed into place, never half-written.
        tmp = data.with_name("export.tmp")
        tmp.write_bytes(text.encode("gbk"))
        os.replace(tmp, data)
        wait_for(295)
        # The pass's summary follows its receipts; wait for it before stopping the runner.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(line.startswith("read 1,") for line in lines):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    assert proc.stderr is not None
    err = proc.stderr.read()
    out = "".join(lines)
    assert accepted() == 295, out + err
    assert proc.returncode == 0, err
    assert "read 1, mapped 1, unmappable 0, sent 1, accepted 1, refused 0\n" in lines
    assert "Traceback" not in err


def test_run_once_with_a_sink_also_applies_other_provinces_changes(
    jiangsu: Any,
    gateway: Any,
    signers: dict[str, PrivateKey],
    federation_dir: Path,
    tmp_path: Path,
) -> None:
    import sqlalchemy as sa

    _point_at(jiangsu, gateway.address, signers["CN-JS"], federation_dir, tmp_path / "js")
    assert mrx("adapter", "run", str(jiangsu.config), "--once").returncode == 1  # its 8 bad rows
    with contextlib.ExitStack() as stack:
        shanghai = systems.start("shanghai_certs", tmp_path, stack)
        _point_at(shanghai, gateway.address, signers["CN-SH"], federation_dir, tmp_path / "sh")
        first = mrx("adapter", "run", str(shanghai.config), "--once")
        assert first.returncode == 1, first.stderr  # Shanghai's own 3 bad rows
        # Outbound first (Shanghai's 251 changes), then the feed until caught up: Jiangsu's
        # 294 accepted changes applied, Shanghai's own not written back.
        assert "read 254, mapped 251, unmappable 3, sent 251, accepted 251" in first.stdout
        assert "inbound: received 545, applied 294, unchanged 0, own 251, other kinds 0" in first.stdout
        engine = sa.create_engine(shanghai.db_url)
        with engine.connect() as conn:
            provinces = conn.exec_driver_sql(
                "SELECT source_province, count(*) FROM sh_inbound_cert GROUP BY source_province"
            ).all()
        engine.dispose()
        assert provinces == [("CN-JS", 290)]
        again = mrx("adapter", "run", str(shanghai.config), "--once")
        assert "inbound: received 0, applied 0" in again.stdout, again.stdout + again.stderr


def test_run_without_once_follows_the_feed_live_into_the_sink(
    jiangsu: Any,
    gateway: Any,
    signers: dict[str, PrivateKey],
    federation_dir: Path,
    tmp_path: Path,
) -> None:
    import signal
    import time

    import sqlalchemy as sa

    _point_at(jiangsu, gateway.address, signers["CN-JS"], federation_dir, tmp_path / "js")
    with contextlib.ExitStack() as stack:
        shanghai = systems.start("shanghai_certs", tmp_path, stack)
        _point_at(shanghai, gateway.address, signers["CN-SH"], federation_dir, tmp_path / "sh")
        engine = sa.create_engine(shanghai.db_url)
        stack.callback(engine.dispose)

        def jiangsu_rows() -> int:
            with engine.connect() as conn:
                return int(
                    conn.exec_driver_sql(
                        "SELECT count(*) FROM sh_inbound_cert WHERE source_province = 'CN-JS'"
                    ).scalar_one()
                )

        proc = subprocess.Popen(
            [*MRX, "adapter", "run", str(shanghai.config), "--interval", "0.5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Shanghai's adapter is already following when Jiangsu publishes.
            assert mrx("adapter", "run", str(jiangsu.config), "--once").returncode == 1
            deadline = time.monotonic() + 60
            while jiangsu_rows() < 290 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        assert jiangsu_rows() == 290, out + err
        assert proc.returncode == 0, err
