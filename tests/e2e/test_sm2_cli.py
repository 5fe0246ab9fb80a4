"""SM2 from the command line: ``mrx keys generate --suite sm2-sm3``, rotation, ``mrx audit verify``."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.client import AuditClient, GatewayClient
from gateway.crypto.suites import PrivateKey, PublicKey, Suite
from gateway.demo_fixtures import demo_certificates
from gateway.pb import envelope_pb2
from gateway.registry.federation import load_federation
from gateway.server import CHINA, start_gateway
from gateway.store.engine import open_engines

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MRX = [sys.executable, "-m", "gateway.cli"]


def mrx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MRX, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    """A copy of the committed pilot federation (public keys only) to add keys to."""
    dest = tmp_path / "federation"
    dest.mkdir()
    shutil.copy(ROOT / "keys" / "federation.toml", dest / "federation.toml")
    shutil.copytree(ROOT / "keys" / "public", dest / "public")
    return dest


def generate(
    federation: Path, private_dir: Path, owner: str, suite: str, keyid: str, not_before: str
) -> Path:
    result = mrx(
        "keys", "generate", "--participant", owner, "--suite", suite, "--keyid", keyid,
        "--federation", str(federation), "--private-dir", str(private_dir),
        "--not-before", not_before, "--valid-days", "730",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return private_dir / f"{keyid.replace('/', '_')}.key.pem"


def test_keys_generate_sm2_rotates_cn_tj_from_its_ed25519_key(federation: Path, tmp_path: Path) -> None:
    # The pilot CN-TJ/2026-01 is Ed25519, valid until 2028-01-01; the SM2 key starts 2027-10-01.
    private = generate(
        federation, tmp_path / "private", "CN-TJ", "sm2-sm3", "CN-TJ/2027-10", "2027-10-01T00:00:00Z"
    )
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    text = (federation / "federation.toml").read_text()
    assert (
        'keyid = "CN-TJ/2027-10"\nowner = "CN-TJ"\nsuite = "sm2-sm3"\npublic_key = "public/CN-TJ_2027-10.pem"'
        in text
    )
    fed = load_federation(federation)
    assert [(k.keyid, k.suite) for k in fed.keys_of("CN-TJ")] == [
        ("CN-TJ/2026-01", Suite.ED25519),
        ("CN-TJ/2027-10", Suite.SM2_SM3),
    ]
    signer = PrivateKey.load(private, "CN-TJ/2027-10")
    public_pem = (federation / "public" / "CN-TJ_2027-10.pem").read_bytes()
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert (
        PublicKey.from_pem(public_pem, Suite.SM2_SM3)
        == signer.public_key()
        == fed.keys["CN-TJ/2027-10"].public_key
    )
    # Before the overlap the Ed25519 key signs; in it both are usable and the SM2 key is
    # current; after 2028-01-01 only the SM2 key is.
    at = datetime(2027, 9, 1, tzinfo=UTC)
    assert fed.current_key("CN-TJ", at=at).keyid == "CN-TJ/2026-01"
    at = datetime(2027, 11, 1, tzinfo=UTC)
    assert {k.keyid for k in fed.keys_of("CN-TJ") if k.usable_at(at)} == {"CN-TJ/2026-01", "CN-TJ/2027-10"}
    assert fed.current_key("CN-TJ", at=at).keyid == "CN-TJ/2027-10"
    at = datetime(2028, 1, 1, tzinfo=UTC)
    assert [k.keyid for k in fed.keys_of("CN-TJ") if k.usable_at(at)] == ["CN-TJ/2027-10"]
    openssl = shutil.which("openssl")
    if openssl:  # the public file is what `openssl genpkey -algorithm SM2 | openssl pkey -pubout` writes
        done = subprocess.run(
            [openssl, "pkey", "-in", str(private), "-pubout"], capture_output=True, check=True
        )
        assert done.stdout == public_pem


def test_audit_verify_checks_sm2_envelopes_receipts_and_checkpoints(federation: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    since = (now - timedelta(days=1)).isoformat()
    private_dir = tmp_path / "private"
    made = {
        "MRX-GW": ("sm2-sm3", "MRX-GW/e2e-sm2"),
        "CN-TJ": ("sm2-sm3", "CN-TJ/e2e-sm2"),
        "BTH-SEC": ("ed25519", "BTH-SEC/e2e"),
    }
    keys = {
        code: generate(federation, private_dir, code, suite, keyid, since)
        for code, (suite, keyid) in made.items()
    }
    signers = {code: PrivateKey.load(keys[code], keyid) for code, (_, keyid) in made.items()}
    assert signers["MRX-GW"].suite is Suite.SM2_SM3
    fed = load_federation(federation)
    engines = open_engines(f"sqlite:///{tmp_path / 'gw.db'}")
    gw = start_gateway(
        federation=fed, engines=engines, gateway_key=signers["MRX-GW"], checkpoint_interval=3600
    )
    try:
        today = datetime.now(UTC).astimezone(CHINA).date()
        with GatewayClient(gw.address, sender="CN-TJ", signer=signers["CN-TJ"]) as tj:
            receipts = [tj.publish(c) for c in demo_certificates("CN-TJ", count=3, today=today)]
        assert [r.log_index for r in receipts] == [0, 1, 2]
        assert gw.checkpointer.checkpoint_now() == 3
        with AuditClient(gw.address, principal="BTH-SEC", signer=signers["BTH-SEC"]) as audit:
            assert audit.checkpoint().signatures[0].suite == envelope_pb2.SIGNATURE_SUITE_SM2_SM3
        bundle = tmp_path / "bth.json"
        result = mrx(
            "audit", "export", "--address", gw.address, "--principal", "BTH-SEC",
            "--key", str(keys["BTH-SEC"]), "--keyid", "BTH-SEC/e2e", "--alliance", "BTH", "-o", str(bundle),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        gw.stop()
        engines.dispose()
    result = mrx("audit", "verify", str(bundle), "--federation", str(federation))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checkpoint signature: verified (with the pinned gateway key)" in result.stdout
    assert "entries: 3 (accepted 3); 3 verified, 0 with problems" in result.stdout
    assert "result: PASS" in result.stdout
    # Pinned by the gateway's SM2 public key file alone, as an auditor without the federation would.
    result = mrx(
        "audit", "verify", str(bundle), "--gateway-key", str(federation / "public" / "MRX-GW_e2e-sm2.pem")
    )
    assert result.returncode == 0 and "result: PASS" in result.stdout, result.stdout + result.stderr
    assert "checkpoint signature: verified (with the pinned gateway key)" in result.stdout
    # Pinned to the pilot federation, whose MRX-GW key is Ed25519, the SM2 checkpoint fails.
    result = mrx("audit", "verify", str(bundle), "--federation", str(ROOT / "keys"))
    assert result.returncode == 1 and "result: FAIL" in result.stdout
