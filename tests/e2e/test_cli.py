"""The mrx command line, run as a user runs it: a real process, real files, real ports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.client import GatewayClient
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates
from gateway.domain.certificates import Scheme
from gateway.registry.federation import load_federation

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MRX = [sys.executable, "-m", "gateway.cli"]


def mrx(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MRX, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    """A copy of the committed federation to which tests may add keys."""
    dest = tmp_path / "federation"
    dest.mkdir()
    shutil.copy(ROOT / "keys" / "federation.toml", dest / "federation.toml")
    shutil.copytree(ROOT / "keys" / "public", dest / "public")
    return dest


def test_demo_runs_and_shows_every_refusal() -> None:
    result = mrx("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for expected in (
        "UNAUTHENTICATED BAD_SIGNATURE",
        "UNAUTHENTICATED UNKNOWN_KEY",
        "PERMISSION_DENIED NOT_ISSUER",
        "ALREADY_EXISTS MESSAGE_ID_REUSED",
        "original receipt returned",
        "identical: True",
        "FAILED_PRECONDITION ILLEGAL_TRANSITION",
        "FAILED_PRECONDITION STALE_MESSAGE",
        "INVALID_ARGUMENT INVALID_FIELDS",
        "issuer signature (CN-JS/demo, ed25519): verified",
        "issuer signature (CN-TJ/demo, sm2-sm3): verified",
        "CN-TJ 天津市市场监督管理委员会",
        # A Hong Kong lab without a CMA number: published, and judged by its accreditation.
        "CN-HK HOKLAS accreditations      2 sent,   2 receipts",
        "a Hong Kong report (HOKLAS 058)  -> RECOGNISED (GBA-2026-CEPA)",
        "-> NOT_RECOGNISED (LAB_NOT_ACCREDITED: the lab's accreditation HOKLAS 212 was SUSPENDED",
        "Demo finished",
    ):
        assert expected in out, f"{expected!r} missing from demo output:\n{out}"
    workdir = re.search(r"demo keys\s+(\S+)/federation", out)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists(), "the demo must not leave private keys behind"


def test_keys_generate_registers_public_key_and_keeps_private_key_private(
    federation: Path, tmp_path: Path
) -> None:
    private_dir = tmp_path / "private"
    result = mrx(
        "keys",
        "generate",
        "--participant",
        "CN-SH",
        "--federation",
        str(federation),
        "--private-dir",
        str(private_dir),
        "--not-before",
        "2026-06-01T00:00:00+00:00",
    )
    assert result.returncode == 0, result.stderr
    keys = load_federation(federation).keys_of("CN-SH")
    new = [k for k in keys if k.keyid.startswith("CN-SH/2026-06")]
    assert len(new) == 1
    (private,) = private_dir.iterdir()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert PrivateKey.load(private, new[0].keyid).public_key() == new[0].public_key


def test_keys_generate_refuses_unknown_participant(federation: Path, tmp_path: Path) -> None:
    result = mrx(
        "keys",
        "generate",
        "--participant",
        "CN-XX",
        "--federation",
        str(federation),
        "--private-dir",
        str(tmp_path / "p"),
    )
    assert result.returncode == 2
    assert "CN-XX" in result.stderr
    assert "Traceback" not in result.stderr


class Served:
    def __init__(self, proc: subprocess.Popen[str], address: str):
        self.proc = proc
        self.address = address

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return out


def _serve(federation: Path, database: Path, gateway_key: Path, keyid: str) -> Served:
    proc = subprocess.Popen(
        [
            *MRX,
            "serve",
            "--address",
            "127.0.0.1:0",
            "--federation",
            str(federation),
            "--database",
            str(database),
            "--gateway-key",
            str(gateway_key),
            "--gateway-keyid",
            keyid,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"serving on (\S+:\d+)", line)
    if match is None:
        proc.kill()
        pytest.fail(f"mrx serve did not start: {line}{proc.stdout.read()}")
    return Served(proc, match.group(1))


@pytest.fixture
def keys(federation: Path, tmp_path: Path) -> Iterator[dict[str, tuple[Path, str]]]:
    private_dir = tmp_path / "private"
    made = {}
    for owner in ("MRX-GW", "CN-ZJ"):
        result = mrx(
            "keys",
            "generate",
            "--participant",
            owner,
            "--federation",
            str(federation),
            "--private-dir",
            str(private_dir),
            "--keyid",
            f"{owner}/e2e",
            "--not-before",
            "2026-01-01T00:00:00Z",
            "--valid-days",
            "3650",
        )
        assert result.returncode == 0, result.stderr
        made[owner] = (private_dir / f"{owner}_e2e.key.pem", f"{owner}/e2e")
    yield made


def test_serve_accepts_signed_submission_and_keeps_it_across_restart(
    federation: Path, tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    database = tmp_path / "gateway.db"
    gw_path, gw_keyid = keys["MRX-GW"]
    zj_path, zj_keyid = keys["CN-ZJ"]
    cert = demo_certificates("CN-ZJ", count=1, today=datetime.now(UTC).date())[0]

    served = _serve(federation, database, gw_path, gw_keyid)
    try:
        with GatewayClient(
            served.address, sender="CN-ZJ", signer=PrivateKey.load(zj_path, zj_keyid)
        ) as client:
            envelope = client.sign(cert)
            receipt = client.submit(envelope)
    finally:
        out = served.stop()
    assert served.proc.returncode == 0, out
    assert "draining" in out
    assert receipt.log_index == 0

    served = _serve(federation, database, gw_path, gw_keyid)
    try:
        with GatewayClient(
            served.address, sender="CN-ZJ", signer=PrivateKey.load(zj_path, zj_keyid)
        ) as client:
            view = client.get_certificate(Scheme(cert.scheme), cert.certificate_number)
            again = client.submit(envelope)
    finally:
        served.stop()
    assert view.certificate.holder.name == cert.holder.name
    assert again == receipt  # the original receipt, after a restart


def test_serve_refuses_a_gateway_key_that_is_not_registered(
    federation: Path, tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    zj_path, zj_keyid = keys["CN-ZJ"]
    result = mrx(
        "serve",
        "--address",
        "127.0.0.1:0",
        "--federation",
        str(federation),
        "--database",
        str(tmp_path / "x.db"),
        "--gateway-key",
        str(zj_path),
        "--gateway-keyid",
        zj_keyid,
    )
    assert result.returncode == 2
    assert "not to the gateway principal" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reports_a_missing_private_key_file(federation: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MRX_DATABASE_URL": str(tmp_path / "y.db")}
    result = mrx(
        "serve",
        "--federation",
        str(federation),
        "--gateway-key",
        str(tmp_path / "nope.pem"),
        "--gateway-keyid",
        "MRX-GW/2026-01",
        env=env,
    )
    assert result.returncode == 2
    assert "nope.pem" in result.stderr
    assert "Traceback" not in result.stderr
