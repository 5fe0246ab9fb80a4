"""Signature suites, PAE and DSSE envelopes, against published test vectors."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from gateway.crypto import (
    RECEIPT_PAYLOAD_TYPE,
    SUBMISSION_PAYLOAD_TYPE,
    PrivateKey,
    PublicKey,
    Suite,
    pae,
    sha256,
    sign_envelope,
    verify_envelope_signature,
)
from gateway.pb import envelope_pb2

# RFC 8032 section 7.1, TEST 1.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

# Every suite: the generic tests below run for SM2 too (tests/unit/test_sm2.py has the rest).
BOTH = list(Suite)


def test_pae_dsse_spec_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_lengths_are_bytes_not_characters() -> None:
    assert pae("类型", b"") == b"DSSEv1 6 \xe7\xb1\xbb\xe5\x9e\x8b 0 "
    assert pae("", b"\x00" * 10) == b"DSSEv1 0  10 " + b"\x00" * 10


def test_suite_proto_numbers_match_the_contract() -> None:
    assert Suite.ED25519.proto == envelope_pb2.SIGNATURE_SUITE_ED25519
    assert Suite.ECDSA_P256_SHA256.proto == envelope_pb2.SIGNATURE_SUITE_ECDSA_P256_SHA256
    assert Suite.SM2_SM3.proto == envelope_pb2.SIGNATURE_SUITE_SM2_SM3
    for suite in Suite:
        assert Suite.from_proto(suite.proto) is suite
    for bad in (envelope_pb2.SIGNATURE_SUITE_UNSPECIFIED, 4, -1):
        with pytest.raises(ValueError):
            Suite.from_proto(bad)
    assert Suite("ecdsa-p256-sha256") is Suite.ECDSA_P256_SHA256


def test_rfc8032_test1_known_answer() -> None:
    key = PrivateKey.from_raw_ed25519(RFC8032_SECRET, "test/1")
    assert key.public_key().raw() == RFC8032_PUBLIC
    assert key.sign(b"") == RFC8032_SIG_EMPTY
    assert PublicKey.from_raw_ed25519(RFC8032_PUBLIC).verify(b"", RFC8032_SIG_EMPTY)


@pytest.mark.parametrize("suite", BOTH)
def test_sign_verify_round_trip(suite: Suite) -> None:
    key = PrivateKey.generate(suite, "CN-SH/2026-01")
    assert key.suite is suite
    sig = key.sign(b"data")
    public = key.public_key()
    assert public.suite is suite
    assert public.verify(b"data", sig)
    assert not public.verify(b"datA", sig)
    assert not PrivateKey.generate(suite, "other").public_key().verify(b"data", sig)


@pytest.mark.parametrize("suite", BOTH)
@pytest.mark.parametrize(
    "garbage", [b"", b"\x00" * 64, b"\x30\x06\x02\x01\x01\x02\x01\x01", b"\xff" * 200, "not bytes"]
)
def test_verify_never_raises_on_garbage(suite: Suite, garbage: object) -> None:
    public = PrivateKey.generate(suite, "k").public_key()
    assert public.verify(b"data", garbage) is False  # type: ignore[arg-type]


def test_ecdsa_signature_is_der() -> None:
    sig = PrivateKey.generate(Suite.ECDSA_P256_SHA256, "k").sign(b"data")
    assert sig[0] == 0x30 and sig[1] == len(sig) - 2


@pytest.mark.parametrize("suite", BOTH)
def test_pem_round_trips(suite: Suite) -> None:
    key = PrivateKey.generate(suite, "CN-GD/2026-01")
    again = PrivateKey.from_pem(key.pem(), "CN-GD/2026-01")
    assert again.suite is suite
    assert again.public_key() == key.public_key()
    assert key.pem().startswith(b"-----BEGIN PRIVATE KEY-----")
    public = PublicKey.from_pem(key.public_key().pem(), suite)
    assert public == key.public_key()
    assert public.pem().startswith("-----BEGIN PUBLIC KEY-----")
    assert len(public.fingerprint()) == 64
    assert public.fingerprint() == PublicKey.from_pem(public.pem().encode(), suite).fingerprint()


def test_public_from_pem_refuses_suite_mismatch_and_junk() -> None:
    ed = PrivateKey.generate(Suite.ED25519, "k").public_key().pem()
    ec = PrivateKey.generate(Suite.ECDSA_P256_SHA256, "k").public_key().pem()
    with pytest.raises(ValueError, match="not ecdsa-p256-sha256"):
        PublicKey.from_pem(ed, Suite.ECDSA_P256_SHA256)
    with pytest.raises(ValueError, match="not ed25519"):
        PublicKey.from_pem(ec, Suite.ED25519)
    with pytest.raises(ValueError):
        PublicKey.from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", Suite.ED25519)


def test_other_curves_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = ec.generate_private_key(ec.SECP384R1())
    spki = p384.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="P-256"):
        PublicKey.from_pem(spki, Suite.ECDSA_P256_SHA256)
    pkcs8 = p384.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="P-256"):
        PrivateKey.from_pem(pkcs8, "k")


def test_private_key_repr_hides_material() -> None:
    key = PrivateKey.from_raw_ed25519(RFC8032_SECRET, "CN-JS/test")
    assert "9d61" not in repr(key) and "CN-JS/test" in repr(key)


@pytest.mark.parametrize("suite", BOTH)
def test_save_is_0600_and_refuses_overwrite(tmp_path: Path, suite: Suite) -> None:
    old_umask = os.umask(0)  # the mode must not depend on a permissive umask
    try:
        key = PrivateKey.generate(suite, "CN-SH/2026-01")
        path = tmp_path / "k.key.pem"
        key.save(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key.pem"]  # no temp file left
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        PrivateKey.generate(suite, "x").save(path)
    assert path.read_bytes() == before
    loaded = PrivateKey.load(path, "CN-SH/2026-01")
    assert loaded.keyid == "CN-SH/2026-01" and loaded.public_key() == key.public_key()


def test_load_warns_on_readable_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "k.key.pem"
    PrivateKey.generate(Suite.ED25519, "k").save(path)
    with caplog.at_level(logging.WARNING, logger="gateway.crypto.suites"):
        PrivateKey.load(path, "k")
    assert not caplog.records
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="gateway.crypto.suites"):
        PrivateKey.load(path, "k")
    assert "644" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize("suite", BOTH)
def test_envelope_sign_and_verify(suite: Suite) -> None:
    key = PrivateKey.generate(suite, "CN-ZJ/2026-01")
    env = sign_envelope(payload_type=SUBMISSION_PAYLOAD_TYPE, payload=b"\x0a\x01x", signer=key)
    assert env.payload_type == SUBMISSION_PAYLOAD_TYPE
    assert len(env.signatures) == 1
    assert env.signatures[0].keyid == "CN-ZJ/2026-01"
    assert env.signatures[0].suite == suite.proto
    public = key.public_key()
    assert public.verify(pae(SUBMISSION_PAYLOAD_TYPE, b"\x0a\x01x"), env.signatures[0].sig)
    assert verify_envelope_signature(env, public)

    # Survives the wire: verification uses the received bytes.
    received = envelope_pb2.Envelope.FromString(env.SerializeToString())
    assert verify_envelope_signature(received, public)


@pytest.mark.parametrize("suite", BOTH)
def test_envelope_tampering_fails(suite: Suite) -> None:
    key = PrivateKey.generate(suite, "CN-ZJ/2026-01")
    public = key.public_key()

    def fresh() -> envelope_pb2.Envelope:
        return sign_envelope(payload_type=SUBMISSION_PAYLOAD_TYPE, payload=b"payload", signer=key)

    env = fresh()
    env.payload = b"payloaD"
    assert not verify_envelope_signature(env, public)

    env = fresh()
    env.payload_type = RECEIPT_PAYLOAD_TYPE
    assert not verify_envelope_signature(env, public)

    env = fresh()
    sig = bytearray(env.signatures[0].sig)
    sig[-1] ^= 1
    env.signatures[0].sig = bytes(sig)
    assert not verify_envelope_signature(env, public)

    env = fresh()
    env.signatures[0].sig = b""
    assert not verify_envelope_signature(env, public)

    env = fresh()
    del env.signatures[:]
    assert not verify_envelope_signature(env, public)

    assert not verify_envelope_signature(fresh(), PrivateKey.generate(suite, "x").public_key())


def test_envelope_declared_suite_must_match_key() -> None:
    key = PrivateKey.generate(Suite.ED25519, "k")
    env = sign_envelope(payload_type=SUBMISSION_PAYLOAD_TYPE, payload=b"p", signer=key)
    env.signatures[0].suite = envelope_pb2.SIGNATURE_SUITE_ECDSA_P256_SHA256
    assert not verify_envelope_signature(env, key.public_key())
    env.signatures[0].suite = envelope_pb2.SIGNATURE_SUITE_UNSPECIFIED
    assert not verify_envelope_signature(env, key.public_key())


def test_sha256_helper() -> None:
    assert sha256(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
