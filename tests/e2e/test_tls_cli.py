"""``mrx tls ...`` and ``mrx serve`` / ``mrx audit`` over mutual TLS, run as an operator runs them."""

from __future__ import annotations

import re
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
from gateway.pb import registry_pb2
from gateway.tls import ClientTls

pytestmark = pytest.mark.e2e

MRX = [sys.executable, "-m", "gateway.cli"]


def mrx(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MRX, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


@pytest.fixture
def pki(tmp_path: Path, federation_dir: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1, client certificates for CN-JS and YRD-SEC."""
    ca, tls = tmp_path / "ca", tmp_path / "tls"
    steps = [
        ("init-ca", "--dir", str(ca), "--name", "e2e CA"),
        (
            "issue-server",
            "--ca-dir",
            str(ca),
            "--out-dir",
            str(tls),
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
        ),
        ("issue-client", "--ca-dir", str(ca), "--out-dir", str(tls), "--participant", "CN-JS"),
        (
            "issue-client",
            "--ca-dir",
            str(ca),
            "--out-dir",
            str(tls),
            "--participant",
            "YRD-SEC",
            "--federation",
            str(federation_dir),
        ),
    ]
    for step in steps:
        result = mrx("tls", *step)
        assert result.returncode == 0, result.stderr
        assert "never commit it" in result.stdout
    for key in (ca / "ca.key", tls / "server.key", tls / "CN-JS.key", tls / "YRD-SEC.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    return {
        "ca": ca / "ca.crt",
        "server.crt": tls / "server.crt",
        "server.key": tls / "server.key",
        **{f"{code}.{ext}": tls / f"{code}.{ext}" for code in ("CN-JS", "YRD-SEC") for ext in ("crt", "key")},
    }


def test_tls_show_names_the_participant(pki: dict[str, Path]) -> None:
    result = mrx("tls", "show", str(pki["CN-JS.crt"]), str(pki["server.crt"]))
    assert result.returncode == 0, result.stderr
    assert "URI:urn:mrx:participant:CN-JS" in result.stdout
    assert "participant: CN-JS" in result.stdout
    assert "DNS:localhost, IP:127.0.0.1" in result.stdout


def test_tls_refuses_an_unknown_participant_and_overwriting(pki: dict[str, Path]) -> None:
    ca_dir, out = str(pki["ca"].parent), str(pki["CN-JS.crt"].parent)
    unknown = mrx("tls", "issue-client", "--ca-dir", ca_dir, "--out-dir", out, "--participant", "CN-XX")
    assert unknown.returncode == 2 and "CN-XX is not a participant" in unknown.stderr
    again = mrx("tls", "issue-client", "--ca-dir", ca_dir, "--out-dir", out, "--participant", "CN-JS")
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert "Traceback" not in unknown.stderr + again.stderr


def test_tls_refuses_to_write_private_keys_into_a_git_work_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    result = mrx("tls", "init-ca", "--dir", str(repo / "ca"))
    assert result.returncode == 2
    assert "inside a git work tree" in result.stderr
    assert not (repo / "ca").exists()
    (repo / ".gitignore").write_text("private/\n")
    assert mrx("tls", "init-ca", "--dir", str(repo / "private" / "ca")).returncode == 0


class Served:
    def __init__(self, proc: subprocess.Popen[str], address: str, first_line: str):
        self.proc = proc
        self.address = address
        self.first_line = first_line

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        # Not communicate(timeout=...): it reads the raw pipe and would drop what the
        # first readline() already buffered (the lines right after the address line).
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout=30)
        return out


@pytest.fixture
def serve() -> Iterator[list[Served]]:
    """The gateways a test started (stopped at teardown if still running)."""
    running: list[Served] = []
    yield running
    for served in running:
        if served.proc.poll() is None:
            served.stop()


def _serve(
    running: list[Served], federation_dir: Path, federation_paths: dict[str, Path], tmp_path: Path, *tls: str
) -> Served:
    proc = subprocess.Popen(
        [
            *MRX,
            "serve",
            "--address",
            "127.0.0.1:0",
            "--federation",
            str(federation_dir),
            "--database",
            str(tmp_path / "gateway.db"),
            "--gateway-key",
            str(federation_paths["MRX-GW"]),
            "--gateway-keyid",
            "MRX-GW/demo",
            "--checkpoint-interval",
            "0.2",
            *tls,
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
    served = Served(proc, match.group(1), line)
    running.append(served)
    return served


def test_serve_over_mutual_tls_and_export_with_a_participant_certificate(
    serve: list[Served],
    federation_dir: Path,
    federation_paths: dict[str, Path],
    signers: dict[str, PrivateKey],
    pki: dict[str, Path],
    tmp_path: Path,
) -> None:
    served = _serve(
        serve,
        federation_dir,
        federation_paths,
        tmp_path,
        "--tls-cert",
        str(pki["server.crt"]),
        "--tls-key",
        str(pki["server.key"]),
        "--tls-client-ca",
        str(pki["ca"]),
    )
    assert "mutual TLS" in served.first_line

    tls = ClientTls(ca=pki["ca"], cert=pki["CN-JS.crt"], key=pki["CN-JS.key"])
    cert = demo_certificates("CN-JS", count=1, today=datetime.now(UTC).date())[0]
    with GatewayClient(served.address, sender="CN-JS", signer=signers["CN-JS"], tls=tls) as js:
        listed = js.registry.ListParticipants(registry_pb2.ListParticipantsRequest(), timeout=10)
        assert "CN-JS" in [p.code for p in listed.participants]
        assert js.publish(cert).log_index == 0

    reader = [
        "--address",
        served.address,
        "--principal",
        "YRD-SEC",
        "--key",
        str(federation_paths["YRD-SEC"]),
        "--keyid",
        "YRD-SEC/demo",
        "--tls-ca",
        str(pki["ca"]),
    ]
    with_cert = [*reader, "--tls-cert", str(pki["YRD-SEC.crt"]), "--tls-key", str(pki["YRD-SEC.key"])]
    bundle = tmp_path / "yrd.json"
    export = None
    for _ in range(50):  # until the first checkpoint (every 0.2 s while the log grows)
        export = mrx("audit", "export", *with_cert, "--alliance", "YRD", "-o", str(bundle), "--force")
        if export.returncode == 0 or "no checkpoint" not in export.stderr:
            break
    assert export is not None and export.returncode == 0, export.stdout + export.stderr

    watch = mrx("audit", "watch", *with_cert, "--state", str(tmp_path / "watch.json"), "--once")
    assert watch.returncode == 0, watch.stdout + watch.stderr

    refused = mrx("audit", "export", *reader, "--alliance", "YRD", "-o", str(tmp_path / "no.json"))
    assert refused.returncode == 2
    assert "cannot reach the gateway" in refused.stderr
    assert not (tmp_path / "no.json").exists()

    plaintext = mrx("audit", "watch", *reader[:8], "--state", str(tmp_path / "w2.json"), "--once")
    assert plaintext.returncode == 2, plaintext.stdout + plaintext.stderr

    out = served.stop()
    assert served.proc.returncode == 0, out


def test_serve_plaintext_on_loopback_warns_after_the_address_line(
    serve: list[Served], federation_dir: Path, federation_paths: dict[str, Path], tmp_path: Path
) -> None:
    served = _serve(serve, federation_dir, federation_paths, tmp_path)
    assert "plaintext" in served.first_line
    out = served.stop()  # at once: the address line means SIGTERM is handled
    assert served.proc.returncode == 0, out
    assert "WARNING gateway.server: serving PLAINTEXT on 127.0.0.1:0" in out


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0"])
def test_serve_refuses_plaintext_on_a_network_address(
    address: str, federation_dir: Path, federation_paths: dict[str, Path], tmp_path: Path
) -> None:
    result = mrx(
        "serve",
        "--address",
        address,
        "--federation",
        str(federation_dir),
        "--database",
        str(tmp_path / "x.db"),
        "--gateway-key",
        str(federation_paths["MRX-GW"]),
        "--gateway-keyid",
        "MRX-GW/demo",
    )
    assert result.returncode == 2
    assert "refusing to serve plaintext" in result.stderr
    assert "--tls-cert and --tls-key" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_needs_both_halves_of_the_server_certificate(
    federation_dir: Path, federation_paths: dict[str, Path], pki: dict[str, Path], tmp_path: Path
) -> None:
    base = [
        "serve",
        "--federation",
        str(federation_dir),
        "--database",
        str(tmp_path / "x.db"),
        "--gateway-key",
        str(federation_paths["MRX-GW"]),
        "--gateway-keyid",
        "MRX-GW/demo",
    ]
    only_ca = mrx(*base, "--tls-client-ca", str(pki["ca"]))
    assert only_ca.returncode == 2 and "--tls-client-ca needs --tls-cert and --tls-key" in only_ca.stderr
    mismatched = mrx(*base, "--tls-cert", str(pki["server.crt"]), "--tls-key", str(pki["CN-JS.key"]))
    assert mismatched.returncode == 2 and "does not belong" in mismatched.stderr
    assert "Traceback" not in only_ca.stderr + mismatched.stderr
