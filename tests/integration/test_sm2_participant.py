"""An SM2 participant (CN-TJ in the demo federation) publishes, reads and is audited like any other.

Also: a gateway whose own key is SM2 (receipts, decisions, checkpoints), rotation from an
Ed25519 key to an SM2 key, and every SM2-specific bad input refused as UNAUTHENTICATED.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest
from grpc import StatusCode as Code
from tongsuopy.crypto import serialization as ts_serialization

from gateway.audit.bundle import TrustedKey, export_bundle, trusted_from_federation, verify_bundle
from gateway.client import AuditClient, GatewayClient, SubmissionRefused
from gateway.crypto.dsse import verify_envelope_signature
from gateway.crypto.sm2 import N, decode_signature, encode_signature
from gateway.crypto.suites import PrivateKey, Suite, pae
from gateway.pb import audit_pb2, envelope_pb2
from gateway.registry.federation import Federation, KeyRecord
from gateway.server import start_gateway

REPO = Path(__file__).resolve().parents[2]


def _load_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sm2_reference", REPO / "docs" / "sm2_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

# Added to the demo federation for this module: CN-HE rotates from Ed25519 to SM2 (the
# windows overlap by 15 days), and the gateway gets an SM2 key of its own.
# keyid: (suite, not_before offset, not_after offset) relative to the session start.
EXTRA = {
    "CN-HE/2026-ed25519": (Suite.ED25519, timedelta(days=-300), timedelta(days=10)),
    "CN-HE/2026-sm2": (Suite.SM2_SM3, timedelta(days=-5), timedelta(days=400)),
    "MRX-GW/sm2": (Suite.SM2_SM3, timedelta(days=-1), timedelta(days=365)),
}


@pytest.fixture(scope="module")
def extra_keys() -> dict[str, PrivateKey]:
    return {keyid: PrivateKey.generate(suite, keyid) for keyid, (suite, _, _) in EXTRA.items()}


@pytest.fixture
def federation(federation: Federation, extra_keys: dict[str, PrivateKey], session_start) -> Federation:
    """The shared test federation, with CN-HE's demo key replaced by the rotation pair."""
    keys = {k: v for k, v in federation.keys.items() if v.owner != "CN-HE"}
    for keyid, (suite, before, after) in EXTRA.items():
        keys[keyid] = KeyRecord(
            keyid=keyid,
            owner=keyid.split("/")[0],
            suite=suite,
            public_key=extra_keys[keyid].public_key(),
            not_before=session_start + before,
            not_after=session_start + after,
            revoked=False,
            revoked_at=None,
        )
    return Federation(
        name=federation.name,
        freshness_window=federation.freshness_window,
        gateway_code=federation.gateway_code,
        participants=federation.participants,
        alliances=federation.alliances,
        keys=keys,
        agreements=federation.agreements,
        source=federation.source,
    )


# --- publishing and reading -------------------------------------------------------------------


def test_sm2_participant_publishes_and_reads(client_for, certs_of, signers, gateway, federation):
    assert signers["CN-TJ"].suite is Suite.SM2_SM3
    assert [k.suite for k in federation.keys_of("CN-TJ")] == [Suite.SM2_SM3]
    tj = client_for("CN-TJ")
    cert, cert2 = certs_of("CN-TJ", 2)
    receipt = tj.publish(cert)
    assert receipt.record_version == 1
    assert [o.receipt.record_version for o in tj.publish_many([cert2])] == [1]
    # Reads are signed with the SM2 key too (x-mrx-signature-bin); another province reads it.
    view = tj.get_certificate(cert.scheme, cert.certificate_number)
    assert view.certificate.holder.name == cert.holder.name
    record = client_for("CN-BJ").get_record(receipt.record_key)
    stored = record.envelope
    assert stored.signatures[0].suite == envelope_pb2.SIGNATURE_SUITE_SM2_SM3
    assert stored.signatures[0].keyid == "CN-TJ/demo"
    assert verify_envelope_signature(stored, federation.keys["CN-TJ/demo"].public_key)
    # A recognition question asked by the SM2 participant is authenticated and answered.
    decision = tj.check_recognition(record_key=receipt.record_key)
    assert decision.asked_by == "CN-TJ"


def test_sm2_participant_reads_its_audit_trail(client_for, certs_of, gateway, signers, rpc_refusal):
    # Audit reads are signed per call (x-mrx-signature-bin over the read-request PAE): with SM2 here.
    tj_receipt = client_for("CN-TJ").publish(certs_of("CN-TJ")[0])
    client_for("CN-JS").publish(certs_of("CN-JS")[0])
    with AuditClient(gateway.address, principal="CN-TJ", signer=signers["CN-TJ"]) as tj:
        mine = [e.log_index for e in tj.exchanges(audit_pb2.ListExchangesRequest())]
        assert mine == [tj_receipt.log_index]
        assert tj.envelope(log_index=tj_receipt.log_index).envelope.signatures[0].keyid == "CN-TJ/demo"
    # The same read signed by another SM2 key under CN-TJ's key id is refused.
    impostor = PrivateKey.generate(Suite.SM2_SM3, "CN-TJ/demo")
    with AuditClient(gateway.address, principal="CN-TJ", signer=impostor) as forged:
        rpc_refusal(
            lambda: list(forged.exchanges(audit_pb2.ListExchangesRequest())),
            Code.UNAUTHENTICATED,
            "BAD_SIGNATURE",
        )


# --- bad input: each UNAUTHENTICATED with its reason, none logged --------------------------------


def _tj_scalar(signers) -> int:
    key = ts_serialization.load_pem_private_key(signers["CN-TJ"].pem(), password=None)
    return int(key.private_numbers().private_value)


def _resign_sm2(env, signers, *, ident=b"1234567812345678", mangle=None) -> None:
    """Replace CN-TJ's signature with one made by the reference implementation."""
    r, s = ref.sign(
        _tj_scalar(signers), pae(env.payload_type, env.payload), int.from_bytes(os.urandom(31)), ident
    )
    env.signatures[0].sig = mangle(r, s) if mangle else encode_signature(r, s)


def _der_int(value: int, pad: bool = False) -> bytes:
    body = (b"\x00" if pad else b"") + value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + bytes([len(body)]) + body


def _seq(*ints: bytes) -> bytes:
    body = b"".join(ints)
    return b"\x30" + bytes([len(body)]) + body


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("SM2 signature declared as Ed25519", "SUITE_MISMATCH"),
        ("Ed25519 signature declared as SM2", "SUITE_MISMATCH"),
        ("SM2 signature under an Ed25519 key", "BAD_SIGNATURE"),
        ("Ed25519 signature under an SM2 key", "BAD_SIGNATURE"),
        ("wrong distinguishing identifier", "BAD_SIGNATURE"),
        ("empty distinguishing identifier (OpenSSL's default)", "BAD_SIGNATURE"),
        ("s + n (same point, out of range)", "BAD_SIGNATURE"),
        ("r = 0", "BAD_SIGNATURE"),
        ("non-canonical DER: padded r", "BAD_SIGNATURE"),
        ("non-canonical DER: trailing byte", "BAD_SIGNATURE"),
        ("raw r || s instead of DER", "BAD_SIGNATURE"),
    ],
)
def test_sm2_bad_input_is_unauthenticated(
    case, reason, client_for, certs_of, make_env, refused, signers, store
):
    sender = (
        "CN-JS"
        if case in {"Ed25519 signature declared as SM2", "SM2 signature under an Ed25519 key"}
        else "CN-TJ"
    )
    env = make_env(certs_of(sender)[0])
    # Sanity: the untouched envelope is good, so only the change below can be refused.
    r, s = decode_signature(env.signatures[0].sig) if sender == "CN-TJ" else (0, 0)
    if case == "SM2 signature declared as Ed25519":
        env.signatures[0].suite = envelope_pb2.SIGNATURE_SUITE_ED25519
    elif case == "Ed25519 signature declared as SM2":
        env.signatures[0].suite = envelope_pb2.SIGNATURE_SUITE_SM2_SM3
    elif case == "SM2 signature under an Ed25519 key":
        env.signatures[0].sig = signers["CN-TJ"].sign(pae(env.payload_type, env.payload))
    elif case == "Ed25519 signature under an SM2 key":
        env.signatures[0].sig = signers["CN-SH"].sign(pae(env.payload_type, env.payload))
    elif case == "wrong distinguishing identifier":
        _resign_sm2(env, signers, ident=b"ALICE123@YAHOO.COM")
    elif case == "empty distinguishing identifier (OpenSSL's default)":
        _resign_sm2(env, signers, ident=b"")
    elif case == "s + n (same point, out of range)":
        env.signatures[0].sig = _seq(_der_int(r), _der_int(s + N))
    elif case == "r = 0":
        env.signatures[0].sig = _seq(_der_int(0), _der_int(s))
    elif case == "non-canonical DER: padded r":
        env.signatures[0].sig = _seq(_der_int(r, pad=True), _der_int(s))
    elif case == "non-canonical DER: trailing byte":
        env.signatures[0].sig += b"\x00"
    else:
        env.signatures[0].sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    refusal = refused(client_for(sender), env, Code.UNAUTHENTICATED, reason)
    assert refusal.metadata["keyid"] == f"{sender}/demo"
    assert store.exchange_count() == 0


def test_reference_resigning_is_accepted(client_for, certs_of, make_env, signers):
    # The control for the identifier cases above: the same re-signing with the right ID passes.
    env = make_env(certs_of("CN-TJ")[0])
    _resign_sm2(env, signers)
    assert client_for("CN-TJ").submit(env).record_version == 1


# --- rotation from Ed25519 to SM2 ------------------------------------------------------------------


def test_rotation_from_ed25519_to_sm2(client_for, certs_of, extra_keys, federation, clock):
    old, new = extra_keys["CN-HE/2026-ed25519"], extra_keys["CN-HE/2026-sm2"]
    assert federation.current_key("CN-HE", at=clock.now).keyid == new.keyid  # the newer key wins
    a, b, c, d = certs_of("CN-HE", 4)
    # During the overlap both keys are accepted.
    assert client_for("CN-HE", signer=old).publish(a).record_version == 1
    assert client_for("CN-HE", signer=new).publish(b).record_version == 1
    # Once the Ed25519 key's window has closed, only the SM2 key signs.
    clock.advance(timedelta(days=11))
    with pytest.raises(SubmissionRefused) as info:
        client_for("CN-HE", signer=old).publish(c)
    assert (info.value.refusal.code, info.value.refusal.reason) == (Code.UNAUTHENTICATED, "KEY_EXPIRED")
    assert federation.current_key("CN-HE", at=clock.now).keyid == new.keyid
    assert client_for("CN-HE", signer=new).publish(d).record_version == 1


# --- a gateway whose own key is SM2 ----------------------------------------------------------------


def test_sm2_gateway_key_signs_receipts_decisions_and_checkpoints_and_bundles_verify(
    database_url, open_store, federation, signers, extra_keys, certs_of
):
    # Not the `gateway` fixture: this one signs with MRX-GW/sm2, on the real clock.
    gw = start_gateway(
        federation=federation, engines=open_store(database_url), gateway_key=extra_keys["MRX-GW/sm2"]
    )
    try:
        with (
            GatewayClient(gw.address, sender="CN-TJ", signer=signers["CN-TJ"]) as tj,
            GatewayClient(gw.address, sender="CN-BJ", signer=signers["CN-BJ"]) as bj,
        ):
            receipt = tj.publish(certs_of("CN-TJ")[0])  # the SDK checks it with MRX-GW/sm2 from ListKeys
            bj.publish(certs_of("CN-BJ")[0])
            assert tj.gateway_keys["MRX-GW/sm2"].suite is Suite.SM2_SM3
            decision = bj.check_recognition(record_key=receipt.record_key)  # verified likewise
            assert decision.asked_by == "CN-BJ"
        assert gw.checkpointer.checkpoint_now() == 2
        with AuditClient(gw.address, principal="BTH-SEC", signer=signers["BTH-SEC"]) as audit:
            checkpoint = audit.checkpoint()
            assert checkpoint.signatures[0].keyid == "MRX-GW/sm2"
            assert checkpoint.signatures[0].suite == envelope_pb2.SIGNATURE_SUITE_SM2_SM3
            data, _ = export_bundle(audit, gateway=gw.address, alliance="BTH")
    finally:
        gw.stop()
    # Offline: the SM2 checkpoint signature and the SM2 submission signature both verify.
    gateway_keys, signer_keys = trusted_from_federation(federation)
    result = verify_bundle(data, gateway_keys=gateway_keys, signer_keys=signer_keys)
    assert result.ok, [str(p) for p in result.problems]
    assert result.checkpoint_verified and result.entries_verified == 2
    # The verifier really checks both SM2 signatures: with another SM2 key pinned for
    # CN-TJ, or for the gateway, the bundle fails at that signature.
    other = PrivateKey.generate(Suite.SM2_SM3, "x").public_key()
    bad = verify_bundle(data, gateway_keys=gateway_keys, signer_keys={**signer_keys, "CN-TJ/demo": other})
    assert not bad.ok and bad.checkpoint_verified and bad.entries_verified == 1
    bad = verify_bundle(data, gateway_keys=[TrustedKey("MRX-GW/sm2", other)], signer_keys=signer_keys)
    assert not bad.ok and not bad.checkpoint_verified
