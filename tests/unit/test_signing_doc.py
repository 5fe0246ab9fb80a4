"""docs/signing.md cannot go stale: its figures are regenerated and re-verified here."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gateway.crypto import SUBMISSION_PAYLOAD_TYPE, PublicKey, Suite, pae, sha256, verify_envelope_signature
from gateway.pb import envelope_pb2, records_pb2

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "signing.md"
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")

EXAMPLE = re.compile(r"<!-- example:(?P<name>[a-z0-9-]+) -->\n```text\n(?P<body>.*?)\n```", re.DOTALL)
SNIPPET = re.compile(r"<!-- snippet:(?P<lang>[a-z-]+) -->\n```[a-z]+\n(?P<body>.*?)\n```", re.DOTALL)


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_signing_example", REPO / "docs" / "make_signing_example.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def blocks() -> dict[str, str]:
    return {m["name"]: m["body"] for m in EXAMPLE.finditer(doc_text())}


def hex_block(name: str) -> bytes:
    return bytes.fromhex("".join(blocks()[name].split()))


def test_doc_has_every_block() -> None:
    assert set(blocks()) >= {"public-key", "payload", "pae", "signature", "envelope", "envelope-sha256"}


def test_signature_in_doc_verifies_with_rfc8032_key() -> None:
    assert hex_block("public-key") == RFC8032_PUBLIC
    key = PublicKey.from_raw_ed25519(RFC8032_PUBLIC)
    payload = hex_block("payload")
    assert hex_block("pae") == pae(SUBMISSION_PAYLOAD_TYPE, payload)
    assert key.verify(hex_block("pae"), hex_block("signature"))

    envelope = envelope_pb2.Envelope.FromString(hex_block("envelope"))
    assert envelope.payload_type == SUBMISSION_PAYLOAD_TYPE
    assert envelope.payload == payload
    assert envelope.signatures[0].sig == hex_block("signature")
    assert envelope.signatures[0].suite == Suite.ED25519.proto
    assert verify_envelope_signature(envelope, key)
    assert sha256(hex_block("envelope")) == hex_block("envelope-sha256")


def test_payload_in_doc_is_the_specified_submission() -> None:
    submission = records_pb2.Submission.FromString(hex_block("payload"))
    assert submission.header.message_id == "demo-0001"
    assert submission.header.sender == "CN-JS"
    assert submission.header.created_at.ToJsonString() == "2026-11-01T08:00:00Z"
    assert submission.header.nonce == bytes(range(16))
    cert = submission.certificate_status
    assert cert.certificate_number == "2024010901000123"
    assert cert.issuing_body == "CNCA-R-2002-001"
    assert cert.issuer == "CN-JS"
    assert cert.holder.name == "苏州明德电子科技有限公司"
    assert cert.state == records_pb2.CERTIFICATE_STATE_VALID
    assert (cert.version, cert.issue_date, cert.expiry_date) == (1, "2024-03-15", "2029-03-14")
    assert cert.effective_at.ToJsonString() == "2024-03-15T00:00:00Z"
    assert cert.holder.credit_code in doc_text()


def test_credit_code_check_characters() -> None:
    # Published codes (Tencent, Huawei, the python-stdnum example) pin the algorithms.
    assert generator.org_code_check("71526726") == "X"
    assert generator.uscc_check("9144030071526726X") == "G"
    assert generator.uscc_check("91440300192203821") == "6"
    assert generator.uscc_check("91110000600037341") == "L"
    code = generator.holder_credit_code()
    assert len(code) == 18 and code.startswith("91320500")
    assert code[16] == generator.org_code_check(code[8:16])
    assert code[17] == generator.uscc_check(code[:17])


def test_regenerating_gives_identical_doc() -> None:
    current = doc_text()
    assert generator.update_doc(current) == current, "run: python docs/make_signing_example.py --write"
    assert generator.build_example()["signature"] == hex_block("signature")


def _snippet_args() -> list[str]:
    return ["".join(blocks()[name].split()) for name in ("payload", "signature", "public-key")]


def _tamper(args: list[str]) -> list[str]:
    sig = args[1]
    return [args[0], ("01" if sig[:2] == "00" else "00") + sig[2:], args[2]]


def _snippet(lang: str) -> str:
    found = {m["lang"]: m["body"] for m in SNIPPET.finditer(doc_text())}
    return found[lang]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_node_snippet_verifies(tmp_path: Path) -> None:
    (tmp_path / "verify.js").write_text(_snippet("node"))
    ok = subprocess.run(["node", "verify.js", *_snippet_args()], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0 and "signature OK" in ok.stdout, ok.stderr
    bad = subprocess.run(["node", "verify.js", *_tamper(_snippet_args())], cwd=tmp_path, capture_output=True)
    assert bad.returncode == 1


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java")
def test_java_snippet_verifies(tmp_path: Path) -> None:
    (tmp_path / "Verify.java").write_text(_snippet("java"))
    ok = subprocess.run(
        ["java", "Verify.java", *_snippet_args()], cwd=tmp_path, capture_output=True, text=True
    )
    assert ok.returncode == 0 and "signature OK" in ok.stdout, ok.stderr


@pytest.mark.skipif(shutil.which("go") is None, reason="needs go")
def test_go_snippet_verifies(tmp_path: Path) -> None:
    (tmp_path / "verify.go").write_text(_snippet("go"))
    env = {"GOCACHE": str(tmp_path / "cache"), "GOPATH": str(tmp_path / "gopath"), "GO111MODULE": "off"}
    ok = subprocess.run(
        ["go", "run", "verify.go", *_snippet_args()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert ok.returncode == 0 and "signature OK" in ok.stdout, ok.stderr


# --- section 11: SM2 with SM3 ----------------------------------------------------------------

GMT_SECRET = bytes.fromhex("3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8")


def test_sm2_example_in_doc_is_the_gmt_0003_key_and_verifies() -> None:
    from gateway.crypto import PrivateKey, sm2

    key = PrivateKey.from_raw_sm2(GMT_SECRET, "CN-TJ/gmt0003-example").public_key()
    assert hex_block("sm2-public-key") == key.raw()
    assert PublicKey.from_pem(blocks()["sm2-public-key-pem"], Suite.SM2_SM3) == key
    assert hex_block("sm2-z") == sm2.z_value(key.raw())

    payload = hex_block("sm2-payload")
    signed = pae(SUBMISSION_PAYLOAD_TYPE, payload)
    assert hex_block("sm2-pae") == signed
    assert hex_block("sm2-e") == sm2.message_digest(key.raw(), signed)
    sig = hex_block("sm2-signature")
    r, s = sm2.decode_signature(sig)
    assert (r.to_bytes(32, "big"), s.to_bytes(32, "big")) == (hex_block("sm2-r"), hex_block("sm2-s"))
    assert key.verify(signed, sig)  # the gateway's implementation (tongsuopy) ...
    assert generator.sm2_reference.verify(key.raw(), signed, r, s)  # ... and the textbook one
    assert not key.verify(signed[:-1] + b"\x00", sig)

    envelope = envelope_pb2.Envelope.FromString(hex_block("sm2-envelope"))
    assert envelope.payload == payload and envelope.signatures[0].sig == sig
    assert envelope.signatures[0].suite == Suite.SM2_SM3.proto == 3
    assert envelope.signatures[0].keyid == "CN-TJ/gmt0003-example"
    assert verify_envelope_signature(envelope, key)
    assert sha256(hex_block("sm2-envelope")) == hex_block("sm2-envelope-sha256")

    submission = records_pb2.Submission.FromString(payload)
    assert (submission.header.message_id, submission.header.sender) == ("demo-0002", "CN-TJ")
    cert = submission.certificate_status
    assert (cert.issuer, cert.certificate_number) == ("CN-TJ", "2024010902000456")
    code = cert.holder.credit_code
    assert code.startswith("91120116") and code[17] == generator.uscc_check(code[:17])
    assert code[16] == generator.org_code_check(code[8:16])


@pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("xxd") is None, reason="needs openssl and xxd"
)
def test_openssl_snippet_verifies_the_sm2_example(tmp_path: Path) -> None:
    (tmp_path / "verify-sm2.sh").write_text(_snippet("openssl"))
    (tmp_path / "pub.pem").write_text(blocks()["sm2-public-key-pem"] + "\n")
    pae_hex, sig_hex = ("".join(blocks()[name].split()) for name in ("sm2-pae", "sm2-signature"))
    ok = subprocess.run(
        ["sh", "verify-sm2.sh", pae_hex, sig_hex, "pub.pem"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout, ok.stdout + ok.stderr
    tampered = sig_hex[:-2] + ("00" if sig_hex[-2:] != "00" else "01")
    bad = subprocess.run(
        ["sh", "verify-sm2.sh", pae_hex, tampered, "pub.pem"], cwd=tmp_path, capture_output=True
    )
    assert bad.returncode != 0


def test_sm2_curve_in_doc_is_the_one_the_gateway_uses() -> None:
    from gateway.crypto import sm2

    body = re.search(r"<!-- sm2-curve -->\n```text\n(.*?)\n```", doc_text(), re.DOTALL)
    assert body is not None
    values = dict(line.replace(" ", "").split("=") for line in body.group(1).splitlines())
    expected = {"p": sm2.P, "a": sm2.A, "b": sm2.B, "n": sm2.N, "xG": sm2.GX, "yG": sm2.GY}
    assert {k: int(v, 16) for k, v in values.items()} == expected
    # G is on the curve and has order n (n*G is the point at infinity; (n-1)*G is -G).
    assert (sm2.GY**2 - sm2.GX**3 - sm2.A * sm2.GX - sm2.B) % sm2.P == 0
    minus_g = generator.sm2_reference.public_point(sm2.N - 1)
    assert int.from_bytes(minus_g[1:33], "big") == sm2.GX
    assert int.from_bytes(minus_g[33:], "big") == sm2.P - sm2.GY


# --- section 12: signing a read -------------------------------------------------------------


def _block(name: str) -> bytes:
    return bytes.fromhex("".join(_blocks()[name].split()))


def _blocks() -> dict[str, str]:
    return {m["name"]: m["body"] for m in EXAMPLE.finditer(DOC.read_text(encoding="utf-8"))}


def test_read_example_is_re_derived_and_verifies_as_the_gateway_checks_it() -> None:
    from gateway.crypto.reads import READ_REQUEST_PAYLOAD_TYPE, verify_read
    from gateway.pb import exchange_pb2

    request = _block("read-request")
    parsed = exchange_pb2.GetCertificateRequest.FromString(request)
    assert (parsed.scheme, parsed.certificate_number) == (1, "2026011001080001")
    assert _block("read-request-sha256") == sha256(request)
    head = "/mrx.v1.ExchangeService/GetCertificate\n2026-11-23T08:00:00Z\n3f1c0a9e5b7d42c8a6e1f0b2d4c6e8a0\n"
    assert _blocks()["read-body-head"] == json.dumps(head)
    assert _block("read-pae") == pae(READ_REQUEST_PAYLOAD_TYPE, head.encode() + sha256(request))
    assert verify_read(
        PublicKey.from_raw_ed25519(RFC8032_PUBLIC),
        method="/mrx.v1.ExchangeService/GetCertificate",
        signed_at="2026-11-23T08:00:00Z",
        nonce="3f1c0a9e5b7d42c8a6e1f0b2d4c6e8a0",
        request_bytes=request,
        signature=_block("read-signature"),
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_node_read_snippet_makes_the_documented_signature(tmp_path: Path) -> None:
    (tmp_path / "sign-read.js").write_text(_snippet("node-read"))
    args = [
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",  # RFC 8032 TEST 1 seed
        _block("read-request").hex(),
        "/mrx.v1.ExchangeService/GetCertificate",
        "2026-11-23T08:00:00Z",
        "3f1c0a9e5b7d42c8a6e1f0b2d4c6e8a0",
    ]
    out = subprocess.run(["node", "sign-read.js", *args], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert bytes.fromhex(out.stdout.strip()) == _block("read-signature")
