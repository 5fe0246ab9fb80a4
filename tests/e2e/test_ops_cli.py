"""Operating `mrx serve` as an operator does: a settings file, `mrx config check`, JSON logs
and Prometheus metrics from several front processes, all through the real command line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.client import make_submission
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates
from gateway.pb import exchange_pb2, exchange_pb2_grpc
from gateway.tls.issue import init_ca, issue_server, write_pair

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MRX = [sys.executable, "-m", "gateway.cli"]


def mrx(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MRX, *args], capture_output=True, text=True, timeout=120, check=False, env=env)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRX_")}
    return {**env, **extra}


@pytest.fixture
def deployment(tmp_path: Path, federation_dir: Path, federation_paths: dict[str, Path]) -> Path:
    """A directory laid out as docs/mrx.example.toml expects, the sample copied into it."""
    shutil.copytree(federation_dir, tmp_path / "federation")
    (tmp_path / "keys").mkdir()
    shutil.copy(federation_paths["MRX-GW"], tmp_path / "keys" / "MRX-GW.pem")
    ca = init_ca(name="ops e2e CA", organization=None, days=30)
    write_pair(ca, tmp_path / "tls" / "ca.crt", tmp_path / "ca.key", force=False)
    server = issue_server(ca, hosts=["127.0.0.1"], days=30)
    write_pair(server, tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key", force=False)
    shutil.copy(ROOT / "docs" / "mrx.example.toml", tmp_path / "mrx.toml")
    return tmp_path


def test_the_sample_configuration_checks_and_masks_the_password(deployment: Path) -> None:
    url = "postgresql+psycopg://mrx:hunter2-secret@db.internal:5432/mrx"
    result = mrx("config", "check", str(deployment / "mrx.toml"), env=_env(MRX_SERVE_DATABASE=url))
    assert result.returncode == 0, result.stderr
    assert "hunter2-secret" not in result.stdout + result.stderr
    assert (
        'database = "postgresql+psycopg://mrx:***@db.internal:5432/mrx"  # MRX_SERVE_DATABASE'
        in result.stdout
    )
    assert f"port = 9464  # {deployment / 'mrx.toml'}:serve.metrics.port" in result.stdout
    assert 'format = "json"' in result.stdout


def test_config_check_names_the_bad_key_and_exits_1(deployment: Path) -> None:
    path = deployment / "mrx.toml"
    path.write_text(path.read_text().replace("workers = 8", "wokers = 8"))
    result = mrx("config", "check", str(path), env=_env())
    assert result.returncode == 1
    assert "unknown setting serve.wokers (did you mean serve.workers?)" in result.stderr
    path.write_text(path.read_text().replace("wokers = 8", "workers = 8"))
    result = mrx("config", "check", str(path), env=_env(MRX_SERVE_GATEWAY_KEYID="CN-JS/demo"))
    assert result.returncode == 1
    assert result.stderr.startswith("mrx config check: ") and "CN-JS/demo" in result.stderr


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_two_fronts_from_a_config_file_one_metrics_endpoint_and_json_logs(
    tmp_path: Path, federation_dir: Path, federation_paths: dict[str, Path]
) -> None:
    config = tmp_path / "mrx.toml"
    config.write_text(
        f"""
[serve]
address = "127.0.0.1:0"
database = "sqlite:///{tmp_path / "mrx.db"}"
federation = "{federation_dir}"
gateway_key = "{federation_paths["MRX-GW"]}"
gateway_keyid = "MRX-GW/demo"
fronts = 2

[serve.metrics]
port = 0

[serve.log]
format = "text"
level = "debug"
"""
    )
    assert mrx("db", "upgrade", "--database", f"sqlite:///{tmp_path / 'mrx.db'}").returncode == 0
    # The variable overrides the file: JSON lines although the file says text.
    proc = subprocess.Popen(
        [*MRX, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(MRX_SERVE_LOG_FORMAT="json"),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"serving on (\S+:\d+) .*metrics on (http://\S+/metrics)", line)
    if match is None:
        proc.kill()
        pytest.fail(f"mrx serve did not start: {line}{proc.stdout.read()}")
    address, metrics_url = match.groups()
    js = PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
    certs = demo_certificates("CN-JS", count=60, today=datetime.now(UTC).date())
    returned: dict[str, str] = {}
    try:
        time.sleep(1.5)  # the second front starts and binds the port
        # New connections are spread over the fronts by the kernel (SO_REUSEPORT).
        for i in range(0, 60, 4):
            with grpc.insecure_channel(address) as channel:
                stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
                for j, cert in enumerate(certs[i : i + 4], start=i):
                    env = make_submission(cert, sender="CN-JS", signer=js)
                    _, call = stub.Submit.with_call(
                        exchange_pb2.SubmitRequest(envelope=env),
                        metadata=[("x-request-id", f"e2e-{j}")],
                        timeout=20,
                    )
                    returned[f"e2e-{j}"] = dict(call.initial_metadata())["x-request-id"]
        samples = _scrape(metrics_url)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert all(k == v for k, v in returned.items()) and len(returned) == 60

    lines = [json.loads(raw) for raw in out.splitlines() if raw.startswith("{")]
    assert lines, out
    for entry in lines:
        assert {"time", "level", "logger", "message", "request_id"} <= set(entry)
        assert datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).tzinfo is not None
    access = [e for e in lines if "/mrx.v1.ExchangeService/Submit OK" in e["message"]]
    assert {e["request_id"] for e in access} == set(returned)
    served_by_front = [e for e in access if e.get("process") == "mrx-front"]
    assert served_by_front, "the second front served none of 15 connections"

    # One endpoint, every front's counts: the second front's calls are in the totals.
    def get(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert get("mrx_submissions_total", outcome="accepted", reason="") == 60
    assert get("mrx_rpc_requests_total", method="/mrx.v1.ExchangeService/Submit", code="OK") == 60
    assert get("mrx_group_commit_records_sum") == 60
    assert get("mrx_store_up") == 1
    assert get("mrx_writer_up") == 1
