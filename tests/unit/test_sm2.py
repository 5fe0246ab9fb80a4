"""The sm2-sm3 suite: published vectors, an independent implementation, OpenSSL, bad input."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gateway.crypto import PrivateKey, PublicKey, Suite, pae, sign_envelope, sm2, verify_envelope_signature
from gateway.crypto.sm2 import N, SignatureEncodingError, decode_signature, encode_signature

REPO = Path(__file__).resolve().parents[2]


def _load_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sm2_reference", REPO / "docs" / "sm2_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

# GM/T 0003.5-2012 (GB/T 32918.5-2017), the signature example on the recommended curve.
GMT_D = int("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8", 16)
GMT_X = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
GMT_Y = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
GMT_POINT = bytes.fromhex("04" + GMT_X + GMT_Y)
GMT_MESSAGE = b"message digest"
GMT_Z = bytes.fromhex("B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3")
GMT_E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
GMT_K = int("59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21", 16)
GMT_R = int("F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3", 16)
GMT_S = int("B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA", 16)

PAE = pae("application/vnd.mrx.submission.v1+protobuf", b"\x0a\x03abc" * 20)


def gmt_key() -> PrivateKey:
    return PrivateKey.from_raw_sm2(GMT_D.to_bytes(32, "big"), "CN-TJ/gmt0003-example")


# --- published vectors --------------------------------------------------------------------


def test_sm3_known_answers() -> None:
    # GB/T 32905-2016 Appendix A, examples 1 and 2.
    assert sm2.sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert sm2.sm3(b"abcd" * 16).hex() == "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"


def test_gmt_0003_example_key_z_and_e() -> None:
    key = gmt_key()
    assert key.suite is Suite.SM2_SM3
    assert key.public_key().raw() == GMT_POINT
    assert ref.public_point(GMT_D) == GMT_POINT
    assert sm2.z_value(GMT_POINT) == GMT_Z
    assert sm2.message_digest(GMT_POINT, GMT_MESSAGE) == GMT_E


def test_gmt_0003_example_signature() -> None:
    # The reference implementation reproduces the published (r, s) from the published k ...
    assert ref.sign(GMT_D, GMT_MESSAGE, GMT_K) == (GMT_R, GMT_S)
    # ... and the gateway's implementation accepts it, and nothing else.
    public = PublicKey.from_sm2_point(GMT_POINT)
    sig = encode_signature(GMT_R, GMT_S)
    assert public.verify(GMT_MESSAGE, sig)
    assert not public.verify(GMT_MESSAGE + b".", sig)
    assert not public.verify(GMT_MESSAGE, encode_signature(GMT_R, GMT_S - 1))


def test_signatures_cross_between_the_library_and_the_reference() -> None:
    key = PrivateKey.generate(Suite.SM2_SM3, "CN-TJ/x")
    point = key.public_key().raw()
    for _ in range(3):
        r, s = decode_signature(key.sign(PAE))
        assert ref.verify(point, PAE, r, s)
    d = 0x1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF
    r, s = ref.sign(d, PAE, k=0x42424242 << 200)
    assert PublicKey.from_sm2_point(ref.public_point(d)).verify(PAE, encode_signature(r, s))


def test_signing_is_randomised_and_der() -> None:
    key = gmt_key()
    a, b = key.sign(PAE), key.sign(PAE)
    assert a != b  # a fresh k each time: never compare signatures, verify them
    for sig in (a, b):
        assert sig[0] == 0x30 and sig[1] == len(sig) - 2 and len(sig) <= 72
        assert encode_signature(*decode_signature(sig)) == sig


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("ident", [b"ALICE123@YAHOO.COM", b"", b"1234567812345679", b"CN-TJ"])
def test_wrong_signer_identity_is_refused(ident: bytes) -> None:
    r, s = ref.sign(GMT_D, PAE, k=GMT_K, ident=ident)
    assert ref.verify(GMT_POINT, PAE, r, s, ident=ident)  # a good signature, under another ID
    assert not PublicKey.from_sm2_point(GMT_POINT).verify(PAE, encode_signature(r, s))


def _int(value: int, pad: bool = False) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    if pad:
        body = b"\x00" + body
    return b"\x02" + bytes([len(body)]) + body


def _seq(body: bytes) -> bytes:
    return b"\x30" + bytes([len(body)]) + body


def _valid() -> tuple[int, int]:
    return ref.sign(GMT_D, PAE, k=GMT_K)


@pytest.mark.parametrize(
    ("case", "make", "message"),
    [
        ("r = 0", lambda r, s: _seq(_int(0) + _int(s)), "r out of range"),
        ("r = n", lambda r, s: _seq(_int(N) + _int(s)), "r out of range"),
        ("r + n", lambda r, s: _seq(_int(r + N) + _int(s)), "r out of range"),
        ("s = 0", lambda r, s: _seq(_int(r) + _int(0)), "s out of range"),
        # s + n gives the same point s*G, so a verifier that reduces s would accept it.
        ("s + n", lambda r, s: _seq(_int(r) + _int(s + N)), "s out of range"),
        ("padded r", lambda r, s: _seq(_int(r, pad=True) + _int(s)), "superfluous leading zero"),
        (
            "long-form length",
            lambda r, s: b"\x30\x81" + bytes([len(_int(r) + _int(s))]) + _int(r) + _int(s),
            "shortest form",
        ),
        ("indefinite length", lambda r, s: b"\x30\x80" + _int(r) + _int(s) + b"\x00\x00", "indefinite"),
        ("trailing byte", lambda r, s: _seq(_int(r) + _int(s)) + b"\x00", "trailing"),
        ("extra element", lambda r, s: _seq(_int(r) + _int(s) + _int(1)), "after s"),
        (
            "negative r",
            lambda r, s: _seq(b"\x02\x20" + (r | 1 << 255).to_bytes(32, "big") + _int(s)),
            "negative",
        ),
        ("raw r || s", lambda r, s: r.to_bytes(32, "big") + s.to_bytes(32, "big"), "not a DER SEQUENCE"),
        ("s missing", lambda r, s: _seq(_int(r)), "expected an INTEGER"),
    ],
)
def test_non_canonical_or_out_of_range_signatures_are_refused(case: str, make: object, message: str) -> None:
    r, s = _valid()
    public = PublicKey.from_sm2_point(GMT_POINT)
    assert public.verify(PAE, encode_signature(r, s))
    sig = make(r, s)  # type: ignore[operator]
    with pytest.raises(SignatureEncodingError, match=message):
        decode_signature(sig)
    assert public.verify(PAE, sig) is False


def test_library_errors_on_malformed_der_become_false() -> None:
    # Defence in depth: tongsuopy raises InternalError (not InvalidSignature) on bytes that
    # are not DER. decode_signature stops them first; the wrapper maps any that get through.
    inner = PublicKey.from_sm2_point(GMT_POINT)._key
    for sig in (b"garbage!", b"\x30\x03\x02\x01", b"\x30\x07\x02\x01\x01\x02\x02\x00\x01"):
        assert inner._verify_bytes(PAE, sig) is False  # type: ignore[union-attr]


def test_suites_do_not_cross() -> None:
    sm2_key = PrivateKey.generate(Suite.SM2_SM3, "CN-TJ/sm2")
    ed_key = PrivateKey.generate(Suite.ED25519, "CN-TJ/ed")
    p256_key = PrivateKey.generate(Suite.ECDSA_P256_SHA256, "CN-TJ/p256")
    sm2_sig, ed_sig, p256_sig = sm2_key.sign(PAE), ed_key.sign(PAE), p256_key.sign(PAE)
    assert not ed_key.public_key().verify(PAE, sm2_sig)
    assert not p256_key.public_key().verify(PAE, sm2_sig)
    assert not sm2_key.public_key().verify(PAE, ed_sig)
    assert not sm2_key.public_key().verify(PAE, p256_sig)
    # Declared suite must match the key's: an SM2 signature labelled Ed25519 is never tried.
    env = sign_envelope(payload_type="t", payload=b"p", signer=sm2_key)
    assert verify_envelope_signature(env, sm2_key.public_key())
    env.signatures[0].suite = Suite.ED25519.proto
    assert not verify_envelope_signature(env, sm2_key.public_key())


def test_key_loading_refuses_wrong_suite_and_bad_points() -> None:
    public_pem = gmt_key().public_key().pem()
    with pytest.raises(ValueError, match="key is sm2-sm3, not ed25519"):
        PublicKey.from_pem(public_pem, Suite.ED25519)
    with pytest.raises(ValueError, match="key is sm2-sm3, not ecdsa-p256-sha256"):
        PublicKey.from_pem(public_pem, Suite.ECDSA_P256_SHA256)
    ed_pem = PrivateKey.generate(Suite.ED25519, "k").public_key().pem()
    with pytest.raises(ValueError, match="key is ed25519, not sm2-sm3"):
        PublicKey.from_pem(ed_pem, Suite.SM2_SM3)
    off_curve = GMT_POINT[:-1] + bytes([GMT_POINT[-1] ^ 1])
    with pytest.raises(ValueError, match="not on the SM2 curve"):
        PublicKey.from_sm2_point(off_curve)
    with pytest.raises(ValueError):
        PrivateKey.from_raw_sm2(N.to_bytes(32, "big"), "k")


def test_pem_layout_is_spki_and_pkcs8_on_the_sm2_curve() -> None:
    key = gmt_key()
    der = key.public_key().der()
    # SEQUENCE { SEQUENCE { id-ecPublicKey, sm2 (1.2.156.10197.1.301) }, BIT STRING 04 || x || y }
    assert der == bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d03420004") + GMT_POINT[1:]
    assert key.pem().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert PrivateKey.from_pem(key.pem(), "k").public_key().raw() == GMT_POINT


# --- OpenSSL 3, an independent implementation on this machine -----------------------------

OPENSSL = shutil.which("openssl")


def _openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], capture_output=True, check=check, timeout=60)


def _openssl_has_sm2() -> bool:
    if OPENSSL is None:
        return False
    done = _openssl("list", "-public-key-algorithms", check=False)
    return done.returncode == 0 and b"SM2" in done.stdout.upper()


needs_openssl = pytest.mark.skipif(not _openssl_has_sm2(), reason="no openssl with SM2 on PATH")


def _openssl_sign(key: Path, data: Path, out: Path, distid: str) -> None:
    _openssl(
        "pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-pkeyopt", f"distid:{distid}",
        "-inkey", str(key), "-in", str(data), "-out", str(out),
    )  # fmt: skip


def _openssl_verifies(pub: Path, data: Path, sig: Path, distid: str | None) -> bool:
    opts = ["-pkeyopt", f"distid:{distid}"] if distid is not None else []
    done = _openssl(
        "pkeyutl", "-verify", "-rawin", "-digest", "sm3", *opts,
        "-pubin", "-inkey", str(pub), "-in", str(data), "-sigfile", str(sig),
        check=False,
    )  # fmt: skip
    return done.returncode == 0 and b"Signature Verified Successfully" in done.stdout


@needs_openssl
def test_openssl_signatures_verify_in_mrx(tmp_path: Path) -> None:
    key_pem, data, sig = tmp_path / "k.pem", tmp_path / "pae.bin", tmp_path / "sig.der"
    _openssl("genpkey", "-algorithm", "SM2", "-out", str(key_pem))
    key = PrivateKey.from_pem(key_pem.read_bytes(), "CN-TJ/openssl")  # OpenSSL's PEM loads as is
    assert key.suite is Suite.SM2_SM3
    data.write_bytes(PAE)
    _openssl_sign(key_pem, data, sig, "1234567812345678")
    assert key.public_key().verify(PAE, sig.read_bytes())
    # Same key, same bytes, another identifier: refused.
    _openssl_sign(key_pem, data, sig, "ALICE123@YAHOO.COM")
    assert not key.public_key().verify(PAE, sig.read_bytes())


@needs_openssl
def test_mrx_signatures_verify_in_openssl(tmp_path: Path) -> None:
    key = PrivateKey.generate(Suite.SM2_SM3, "CN-TJ/mrx")
    pub, data, sig = tmp_path / "pub.pem", tmp_path / "pae.bin", tmp_path / "sig.der"
    pub.write_text(key.public_key().pem())
    data.write_bytes(PAE)
    sig.write_bytes(key.sign(PAE))
    assert _openssl_verifies(pub, data, sig, "1234567812345678")
    # The pitfall docs/signing.md warns about: OpenSSL 3 without distid uses an empty ID.
    assert not _openssl_verifies(pub, data, sig, None)
    # OpenSSL reads mrx's private key PEM too.
    (tmp_path / "k.pem").write_bytes(key.pem())
    derived = _openssl("pkey", "-in", str(tmp_path / "k.pem"), "-pubout").stdout
    assert key.public_key().pem().encode() == derived


@needs_openssl
def test_openssl_accepts_the_gmt_0003_example(tmp_path: Path) -> None:
    pub, data, sig = tmp_path / "pub.pem", tmp_path / "m.bin", tmp_path / "sig.der"
    pub.write_text(PublicKey.from_sm2_point(GMT_POINT).pem())
    data.write_bytes(GMT_MESSAGE)
    sig.write_bytes(encode_signature(GMT_R, GMT_S))
    assert _openssl_verifies(pub, data, sig, "1234567812345678")
