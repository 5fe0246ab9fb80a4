"""Offline audit bundles (gateway.audit.bundle) and the watch verdicts (gateway.audit.watch).

Bundles here are built in-process from real keys, a real RFC 6962 tree and real DSSE
envelopes, so every check runs exactly as it does on an exported file; no server needed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.audit import merkle
from gateway.audit.bundle import (
    PARTS,
    BundleEntry,
    BundleKey,
    ExportInfo,
    TrustedKey,
    encode_bundle,
    layout,
    load_public_key_pem,
    part_digest,
    trusted_from_federation,
    verify_bundle,
)
from gateway.audit.checkpoints import sign_checkpoint
from gateway.audit.watch import (
    CheckpointError,
    SignedCheckpoint,
    Status,
    WatchState,
    WatchStateError,
    judge,
    open_checkpoint,
    watch_loop,
)
from gateway.crypto.dsse import SUBMISSION_PAYLOAD_TYPE, sha256, sign_envelope
from gateway.crypto.suites import PrivateKey, PublicKey, Suite
from gateway.pb import audit_pb2, envelope_pb2, records_pb2
from gateway.registry.federation import Federation, KeyRecord

T0 = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
ORIGIN = "mrx test federation/exchange-log"
TREE_SIZE = 11
# The log has TREE_SIZE leaves; the bundle holds the ones "visible" to the exporter.
VISIBLE = (0, 2, 3, 5, 8, 10)


@dataclass
class Material:
    gateway: PrivateKey
    signers: dict[str, PrivateKey]  # by owner
    leaves: list[bytes]
    envelopes: list[bytes]
    store: merkle.MemoryNodeStore
    root: bytes

    def checkpoint(self, size: int = TREE_SIZE, key: PrivateKey | None = None) -> envelope_pb2.Envelope:
        root = merkle.root_hash(size, self.store)
        return sign_checkpoint(
            origin=ORIGIN,
            tree_size=size,
            root_hash=root,
            at=T0 + timedelta(minutes=5),
            key=key or self.gateway,
        )


def _signer_of(i: int) -> str:
    # Both suites: CN-GD signs with ECDSA P-256, the others with Ed25519.
    return ("CN-JS", "CN-SH", "CN-GD")[i % 3]


@pytest.fixture(scope="module")
def material() -> Material:
    gateway = PrivateKey.generate(Suite.ED25519, "MRX-GW/test")
    signers = {
        "CN-JS": PrivateKey.generate(Suite.ED25519, "CN-JS/test"),
        "CN-SH": PrivateKey.generate(Suite.ED25519, "CN-SH/test"),
        "CN-GD": PrivateKey.generate(Suite.ECDSA_P256_SHA256, "CN-GD/test-p256"),
    }
    leaves, envelopes = [], []
    tree = merkle.CompactRange()
    store = merkle.MemoryNodeStore()
    for i in range(TREE_SIZE):
        sender = _signer_of(i)
        submission = records_pb2.Submission(
            header=records_pb2.SubmissionHeader(
                message_id=f"msg-{i}",
                sender=sender,
                nonce=bytes(16),
                kind=records_pb2.RECORD_KIND_CERTIFICATE_STATUS,
            )
        )
        envelope = sign_envelope(
            payload_type=SUBMISSION_PAYLOAD_TYPE,
            payload=submission.SerializeToString(),
            signer=signers[sender],
        ).SerializeToString(deterministic=True)
        refused = i % 4 == 3
        leaf = audit_pb2.ExchangeLeaf(
            log_index=i,
            envelope_sha256=sha256(envelope),
            sender=sender,
            message_id=f"msg-{i}",
            kind=records_pb2.RECORD_KIND_CERTIFICATE_STATUS,
            record_key=f"certificate_status/CCC/{i:016d}",
            record_version=1,
            subject_issuer=sender,
            outcome=envelope_pb2.OUTCOME_REFUSED if refused else envelope_pb2.OUTCOME_ACCEPTED,
            reason="STALE_MESSAGE" if refused else "",
            receipt_sha256=b"" if refused else sha256(b"receipt %d" % i),
        )
        leaf.received_at.FromDatetime(T0 + timedelta(seconds=i))
        raw_leaf = leaf.SerializeToString(deterministic=True)
        store.put(tree.append(merkle.leaf_hash(raw_leaf)))
        leaves.append(raw_leaf)
        envelopes.append(envelope)
    return Material(gateway, signers, leaves, envelopes, store, tree.root())


def _key(private: PrivateKey) -> BundleKey:
    return BundleKey(
        keyid=private.keyid,
        owner=private.keyid.split("/")[0],
        public_key=private.public_key(),
        not_before=T0 - timedelta(days=30),
        not_after=T0 + timedelta(days=365),
    )


def build(
    m: Material,
    *,
    visible: tuple[int, ...] = VISIBLE,
    checkpoint: envelope_pb2.Envelope | None = None,
    export: ExportInfo | None = None,
    signer_keys: list[BundleKey] | None = None,
) -> bytes:
    size = TREE_SIZE
    return encode_bundle(
        export=export
        or ExportInfo(
            exported_by="YRD-SEC", exported_at=T0 + timedelta(hours=1), gateway="gw:7443", alliance="YRD"
        ),
        checkpoint=checkpoint or m.checkpoint(),
        gateway_keys=[_key(m.gateway)],
        signer_keys=signer_keys if signer_keys is not None else [_key(k) for k in m.signers.values()],
        entries=[
            BundleEntry(i, m.leaves[i], m.envelopes[i], tuple(merkle.inclusion_proof(i, size, m.store)))
            for i in visible
        ],
    )


@pytest.fixture(scope="module")
def bundle(material: Material) -> bytes:
    return build(material)


def doc_of(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    return doc


def reseal(doc: dict[str, Any]) -> bytes:
    """Recompute the digests and layout, as a careful forger would, so only the real checks remain."""
    doc["sha256"] = {part: part_digest(doc[part]) for part in PARTS}
    return layout(doc)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def pinned(m: Material) -> list[TrustedKey]:
    return [TrustedKey(m.gateway.keyid, m.gateway.public_key())]


def parts(result: Any) -> list[str]:
    return [str(p) for p in result.problems]


# --- a good bundle -------------------------------------------------------------------------


def test_a_good_bundle_passes_with_a_summary(material: Material, bundle: bytes) -> None:
    result = verify_bundle(bundle)
    assert result.ok, parts(result)
    assert result.entries == result.entries_verified == len(VISIBLE)
    assert (result.tree_size, result.root_hash) == (TREE_SIZE, material.root)
    assert result.outcomes == {"ACCEPTED": 5, "REFUSED": 1}
    assert result.refusal_reasons == {"STALE_MESSAGE": 1}
    assert result.checkpoint_verified and result.origin == ORIGIN
    # Unpinned: the bundle vouches for its own gateway key, and the auditor is told so.
    assert any("taken from the bundle itself" in w for w in result.warnings)
    summary = "\n".join(result.summary_lines())
    assert "tree size 11" in summary and material.root.hex() in summary and "PASS" in summary


def test_pinning_the_gateway_key_removes_the_warning(material: Material, bundle: bytes) -> None:
    result = verify_bundle(bundle, gateway_keys=pinned(material))
    assert result.ok, parts(result)
    assert result.gateway_key_source == "pinned"
    assert not any("taken from the bundle" in w for w in result.warnings)


def test_a_bare_pinned_pem_works_like_a_keyed_pin(material: Material, bundle: bytes) -> None:
    key = load_public_key_pem(material.gateway.public_key().pem().encode())
    assert verify_bundle(bundle, gateway_keys=[TrustedKey(None, key)]).ok


def test_a_bundle_signed_by_another_gateway_key_fails_against_the_pin(material: Material) -> None:
    impostor = PrivateKey.generate(Suite.ED25519, "MRX-GW/test")
    forged = encode_bundle(
        export=ExportInfo(exported_by="YRD-SEC", exported_at=T0, gateway="gw"),
        checkpoint=material.checkpoint(key=impostor),
        gateway_keys=[_key(impostor)],
        signer_keys=[_key(k) for k in material.signers.values()],
        entries=[],
    )
    # Self-consistent, so it passes unpinned: that is what the warning is about.
    assert verify_bundle(forged).ok
    result = verify_bundle(forged, gateway_keys=pinned(material))
    assert not result.ok
    assert any(p.part == "checkpoint.envelope" and "pinned gateway key" in p.message for p in result.problems)
    assert any(p.part == "gateway_keys[0] (MRX-GW/test)" for p in result.problems), parts(result)


def test_pinned_signer_keys_are_compared(material: Material, bundle: bytes) -> None:
    trusted = {k.keyid: k.public_key() for k in material.signers.values()}
    assert verify_bundle(bundle, gateway_keys=pinned(material), signer_keys=trusted).ok
    trusted["CN-JS/test"] = PrivateKey.generate(Suite.ED25519, "x").public_key()
    result = verify_bundle(bundle, gateway_keys=pinned(material), signer_keys=trusted)
    text = parts(result)
    assert any(t.startswith("signer_keys[0] (CN-JS/test)") and "differs" in t for t in text), text
    js_entries = [i for i, index in enumerate(VISIBLE) if _signer_of(index) == "CN-JS"]
    for i in js_entries:
        assert any(
            p.entry == i and "does not verify with federation key CN-JS/test" in p.message
            for p in result.problems
        )


def _federation(m: Material, *, gateway_revoked: bool) -> Federation:
    keys = [
        KeyRecord(
            keyid=k.keyid,
            owner=k.keyid.split("/")[0],
            suite=k.suite,
            public_key=k.public_key(),
            not_before=T0 - timedelta(days=30),
            not_after=None,
            revoked=gateway_revoked and k is m.gateway,
            revoked_at=None,
        )
        for k in (m.gateway, *m.signers.values())
    ]
    return Federation(
        name="test",
        freshness_window=timedelta(seconds=300),
        gateway_code="MRX-GW",
        participants={},
        alliances={},
        keys={k.keyid: k for k in keys},
    )


def test_a_federation_pins_every_key_but_never_a_revoked_gateway_key(
    material: Material, bundle: bytes
) -> None:
    gateway, signer_keys = trusted_from_federation(_federation(material, gateway_revoked=False))
    assert verify_bundle(bundle, gateway_keys=gateway, signer_keys=signer_keys).ok
    gateway, signer_keys = trusted_from_federation(_federation(material, gateway_revoked=True))
    text = parts(verify_bundle(bundle, gateway_keys=gateway, signer_keys=signer_keys))
    assert "checkpoint.envelope: signed by 'MRX-GW/test', which is not a pinned gateway key" in text
    assert "gateway_keys[0] (MRX-GW/test): is not an unrevoked gateway key of the pinned federation" in text


def test_an_empty_selection_still_proves_the_checkpoint(material: Material) -> None:
    result = verify_bundle(build(material, visible=()), gateway_keys=pinned(material))
    assert result.ok and result.entries == 0 and result.tree_size == TREE_SIZE


def test_a_signer_key_outside_its_validity_is_a_warning_not_a_failure(material: Material) -> None:
    keys = [_key(k) for k in material.signers.values()]
    keys[0] = BundleKey(
        keyid="CN-JS/test",
        owner="CN-JS",
        public_key=material.signers["CN-JS"].public_key(),
        not_after=T0 + timedelta(seconds=1),
    )
    result = verify_bundle(build(material, signer_keys=keys))
    assert result.ok, parts(result)
    # These submissions carry no created_at, so the leaf's received_at (T0 + index seconds) stands in.
    late = [w for w in result.warnings if "CN-JS/test was outside its validity" in w]
    assert len(late) == 1 and "log index 3" in late[0]


def test_the_digests_are_reproducible_with_jq(bundle: bytes, tmp_path: Path) -> None:
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq not installed")
    path = tmp_path / "b.json"
    path.write_bytes(bundle)
    doc = doc_of(bundle)
    for part in PARTS:
        compact = subprocess.run([jq, "-cj", f".{part}", str(path)], capture_output=True, check=True).stdout
        assert hashlib.sha256(compact).hexdigest() == doc["sha256"][part]


# --- one byte changed in each decoded part ---------------------------------------------------

TARGET = 2  # entries[2] is log index 3, a refused exchange
TARGET_INDEX = VISIBLE[TARGET]


def _edit_envelope(b64: str, edit: Callable[[envelope_pb2.Envelope], None]) -> str:
    envelope = envelope_pb2.Envelope.FromString(base64.b64decode(b64))
    edit(envelope)
    return base64.b64encode(envelope.SerializeToString(deterministic=True)).decode()


def _flip_field(envelope: envelope_pb2.Envelope, name: str) -> None:
    if name == "payload":
        envelope.payload = flip(envelope.payload, len(envelope.payload) // 2)
    else:
        envelope.signatures[0].sig = flip(envelope.signatures[0].sig, 5)


def _flip_pem(pem: str) -> str:
    der = serialization.load_pem_public_key(pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = base64.b64encode(flip(der, len(der) - 3)).decode()
    return "-----BEGIN PUBLIC KEY-----\n" + body + "\n-----END PUBLIC KEY-----\n"


def _flip_b64(b64: str, at: int) -> str:
    raw = base64.b64decode(b64)
    return base64.b64encode(flip(raw, at % len(raw))).decode()


def _flip_hex(h: str) -> str:
    return flip(bytes.fromhex(h), 7).hex()


TAMPERS: dict[str, tuple[Callable[[dict[str, Any]], None], Callable[[Any], bool]]] = {
    "checkpoint payload": (
        lambda d: d["checkpoint"].__setitem__(
            "envelope", _edit_envelope(d["checkpoint"]["envelope"], lambda e: _flip_field(e, "payload"))
        ),
        lambda p: p.part == "checkpoint.envelope" and "does not verify" in p.message,
    ),
    "checkpoint signature": (
        lambda d: d["checkpoint"].__setitem__(
            "envelope", _edit_envelope(d["checkpoint"]["envelope"], lambda e: _flip_field(e, "sig"))
        ),
        lambda p: (
            p.part == "checkpoint.envelope" and "does not verify with gateway key MRX-GW/test" in p.message
        ),
    ),
    "gateway key": (
        lambda d: d["gateway_keys"][0].__setitem__(
            "public_key_pem", _flip_pem(d["gateway_keys"][0]["public_key_pem"])
        ),
        lambda p: "gateway_keys[0]" in str(p),
    ),
    "signer key": (
        lambda d: d["signer_keys"][0].__setitem__(
            "public_key_pem", _flip_pem(d["signer_keys"][0]["public_key_pem"])
        ),
        lambda p: "signer_keys[0]" in str(p),
    ),
    "entry leaf": (
        lambda d: d["entries"][TARGET].__setitem__("leaf", _flip_b64(d["entries"][TARGET]["leaf"], 9)),
        lambda p: p.entry == TARGET and p.log_index == TARGET_INDEX and "inclusion proof fails" in p.message,
    ),
    "entry envelope payload": (
        lambda d: d["entries"][TARGET].__setitem__(
            "envelope", _edit_envelope(d["entries"][TARGET]["envelope"], lambda e: _flip_field(e, "payload"))
        ),
        lambda p: (
            p.part == f"entries[{TARGET}].envelope" and p.log_index == TARGET_INDEX and "SHA-256" in p.message
        ),
    ),
    "entry envelope signature": (
        lambda d: d["entries"][TARGET].__setitem__(
            "envelope", _edit_envelope(d["entries"][TARGET]["envelope"], lambda e: _flip_field(e, "sig"))
        ),
        lambda p: (
            p.part == f"entries[{TARGET}].envelope"
            and p.log_index == TARGET_INDEX
            and "does not verify" in p.message
        ),
    ),
    "entry proof hash": (
        lambda d: d["entries"][TARGET]["proof"].__setitem__(1, _flip_hex(d["entries"][TARGET]["proof"][1])),
        lambda p: p.entry == TARGET and p.log_index == TARGET_INDEX and "inclusion proof fails" in p.message,
    ),
    "entry log_index": (
        lambda d: d["entries"][TARGET].__setitem__("log_index", d["entries"][TARGET]["log_index"] ^ 1),
        lambda p: p.entry == TARGET and "the leaf says log index 3, the entry says 2" in p.message,
    ),
}


@pytest.mark.parametrize("what", list(TAMPERS))
def test_one_changed_byte_in_each_part_is_named(material: Material, bundle: bytes, what: str) -> None:
    tamper, names_it = TAMPERS[what]
    doc = doc_of(bundle)
    tamper(doc)
    result = verify_bundle(reseal(doc))
    assert not result.ok
    assert any(names_it(p) for p in result.problems), f"{what}: {parts(result)}"
    if what.startswith("entry"):
        # The damage stays local: every other entry still verifies.
        assert result.entries_verified == len(VISIBLE) - 1, parts(result)
        assert {p.entry for p in result.problems} == {TARGET}, parts(result)


@pytest.mark.parametrize("what", list(TAMPERS))
def test_without_resealing_the_digest_names_the_part_too(bundle: bytes, what: str) -> None:
    tamper, _ = TAMPERS[what]
    doc = doc_of(bundle)
    tamper(doc)
    result = verify_bundle(layout(doc))
    part = {
        "checkpoint": "checkpoint",
        "gateway": "gateway_keys",
        "signer": "signer_keys",
        "entry": "entries",
    }[what.split()[0]]
    assert any(p.part == part and "digest" in p.message for p in result.problems), parts(result)


def test_changed_export_metadata_is_caught_by_its_digest(bundle: bytes) -> None:
    doc = doc_of(bundle)
    doc["export"]["exported_by"] = "BTH-SEC"
    result = verify_bundle(layout(doc))
    (problem,) = result.problems
    assert problem.part == "export" and "does not match its digest sha256.export" in problem.message


def test_a_changed_informational_copy_is_named(bundle: bytes) -> None:
    doc = doc_of(bundle)
    doc["checkpoint"]["tree_size"] = 12
    result = verify_bundle(reseal(doc))
    assert parts(result) == ["checkpoint.tree_size: is 12 but the signed checkpoint says 11"]


def test_a_signed_checkpoint_of_another_tree_is_blamed_once(material: Material) -> None:
    other = sign_checkpoint(
        origin=ORIGIN, tree_size=TREE_SIZE, root_hash=bytes(32), at=T0, key=material.gateway
    )
    result = verify_bundle(build(material, checkpoint=other), gateway_keys=pinned(material))
    (problem,) = result.problems
    assert (
        problem.part == "entries"
        and f"none of the {len(VISIBLE)} entries is proven included" in problem.message
    )
    assert material.root.hex() in problem.message and result.entries_verified == 0


def test_every_failure_is_reported_not_just_the_first(bundle: bytes) -> None:
    doc = doc_of(bundle)
    for i in (0, 3, 5):
        doc["entries"][i]["proof"][0] = _flip_hex(doc["entries"][i]["proof"][0])
    result = verify_bundle(reseal(doc))
    assert sorted({p.entry for p in result.problems if p.entry is not None}) == [0, 3, 5]
    assert result.entries_verified == len(VISIBLE) - 3
    assert "3 with problems" in "\n".join(result.summary_lines())


# --- structural damage gets a precise message ------------------------------------------------


def test_bad_base64_names_the_entry_and_field(bundle: bytes) -> None:
    doc = doc_of(bundle)
    doc["entries"][3]["envelope"] = "!" + doc["entries"][3]["envelope"][1:]
    result = verify_bundle(reseal(doc))
    assert parts(result) == [f"entries[3].envelope (log index {VISIBLE[3]}): not valid base64"]


def test_non_canonical_base64_is_refused(bundle: bytes) -> None:
    doc = doc_of(bundle)
    leaf = doc["entries"][1]["leaf"]
    assert leaf.endswith("=")
    # The character before the padding carries unused low bits that decoders ignore.
    pad = len(leaf) - len(leaf.rstrip("="))
    last = leaf[-pad - 1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    doc["entries"][1]["leaf"] = leaf[: -pad - 1] + alphabet[alphabet.index(last) ^ 1] + "=" * pad
    assert base64.b64decode(doc["entries"][1]["leaf"]) == base64.b64decode(leaf)
    result = verify_bundle(reseal(doc))
    assert parts(result) == [
        f"entries[1].leaf (log index {VISIBLE[1]}): not canonical base64 (the last characters were altered)"
    ]


def test_upper_case_hex_is_refused(bundle: bytes) -> None:
    doc = doc_of(bundle)
    doc["entries"][4]["proof"][2] = doc["entries"][4]["proof"][2].upper()
    result = verify_bundle(reseal(doc))
    assert len(result.problems) == 1
    assert result.problems[0].part == "entries[4].proof[2]" and "lowercase hex" in result.problems[0].message


def test_broken_json_names_where_it_broke(bundle: bytes) -> None:
    text = bundle.decode()
    doc = doc_of(bundle)
    at = text.index(doc["entries"][4]["envelope"]) - 1  # the opening quote
    result = verify_bundle(bundle[:at] + b"x" + bundle[at + 1 :])
    (problem,) = result.problems
    assert problem.part == "entries[4].envelope" and "not valid JSON" in problem.message


def test_a_non_ascii_byte_names_its_part(bundle: bytes) -> None:
    at = bundle.index(b"BEGIN PUBLIC KEY") + 3
    result = verify_bundle(bundle[:at] + b"\xc3" + bundle[at + 1 :])
    (problem,) = result.problems
    assert problem.part == "gateway_keys[0].public_key_pem" and "not ASCII" in problem.message


def test_changed_whitespace_is_caught_by_the_layout_check(bundle: bytes) -> None:
    at = bundle.index(b'\n   "keyid": "CN-SH/test"') + 1
    changed = bundle[:at] + b"\t" + bundle[at + 1 :]
    assert json.loads(changed) == json.loads(bundle)  # same content, different bytes
    (problem,) = verify_bundle(changed).problems
    assert problem.part == "signer_keys[1]" and "layout" in problem.message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "bundle: the file is empty"),
        (b"[1, 2]", "bundle: not a bundle: the top level is a JSON array, not an object"),
        (
            b'{"format": "other"}',
            "format: is \"other\", expected 'mrx-audit-bundle': not an mrx audit bundle",
        ),
        (b'{"format": "mrx-audit-bundle", "version": 2}', "version: is 2; this verifier reads version 1"),
        (
            b'{"format": "mrx-audit-bundle", "version": true}',
            "version: is true; this verifier reads version 1",
        ),
    ],
)
def test_not_a_bundle(data: bytes, expected: str) -> None:
    assert parts(verify_bundle(data)) == [expected]


def test_missing_parts_are_listed(bundle: bytes) -> None:
    doc = doc_of(bundle)
    del doc["signer_keys"], doc["entries"]
    problems = parts(verify_bundle(layout(doc)))
    assert "signer_keys: missing" in problems and "entries: missing" in problems


def test_duplicate_and_out_of_tree_entries(material: Material, bundle: bytes) -> None:
    doc = doc_of(bundle)
    doc["entries"].append(dict(doc["entries"][1]))
    beyond = dict(doc["entries"][0])
    beyond["log_index"] = TREE_SIZE
    doc["entries"].append(beyond)
    text = parts(verify_bundle(reseal(doc)))
    assert f"entries[6] (log index {VISIBLE[1]}): duplicates entries[1]" in text
    assert (
        f"entries[7].log_index (log index {TREE_SIZE}): is not within the checkpoint's tree of size 11"
        in text
    )


def test_an_entry_outside_the_time_filter_is_reported(material: Material) -> None:
    export = ExportInfo(
        exported_by="CN-JS",
        exported_at=T0,
        gateway="gw",
        received_from=T0 + timedelta(seconds=3),
        received_to=T0 + timedelta(seconds=9),
    )
    result = verify_bundle(build(material, export=export))
    outside = sorted(p.log_index for p in result.problems if "outside the export's filter" in p.message)
    assert outside == [0, 2, 10]


def test_a_missing_signer_key_is_named(material: Material) -> None:
    keys = [_key(k) for owner, k in material.signers.items() if owner != "CN-GD"]
    result = verify_bundle(build(material, signer_keys=keys))
    gd = [i for i, index in enumerate(VISIBLE) if _signer_of(index) == "CN-GD"]
    assert sorted({p.entry for p in result.problems}) == gd
    assert all(
        "'CN-GD/test-p256', which is not a key listed in signer_keys" in p.message for p in result.problems
    )


def test_random_byte_flips_never_pass_and_never_raise(bundle: bytes) -> None:
    rng = random.Random(6962)
    for _ in range(400):
        at = rng.randrange(len(bundle))
        damaged = bundle[:at] + bytes([bundle[at] ^ rng.randrange(1, 256)]) + bundle[at + 1 :]
        result = verify_bundle(damaged)
        assert not result.ok, f"a change at byte {at} went unnoticed"
        assert all(p.part and p.message for p in result.problems)
    for _ in range(40):
        cut = rng.randrange(len(bundle))
        assert not verify_bundle(bundle[:cut]).ok


# --- watch: judging successive checkpoints --------------------------------------------------


def _signed(
    m: Material, size: int, *, root: bytes | None = None, key: PrivateKey | None = None
) -> SignedCheckpoint:
    envelope = sign_checkpoint(
        origin=ORIGIN,
        tree_size=size,
        root_hash=root if root is not None else merkle.root_hash(size, m.store),
        at=T0,
        key=key or m.gateway,
    )
    return open_checkpoint(envelope, {m.gateway.keyid: m.gateway.public_key()})


def _proofs(m: Material) -> Callable[[int, int], list[bytes]]:
    return lambda old, new: merkle.consistency_proof(old, new, m.store)


def test_judge_accepts_growth_with_a_valid_proof(material: Material) -> None:
    assert judge(None, _signed(material, 4), _proofs(material)).status is Status.FIRST
    assert judge(_signed(material, 4), _signed(material, 4), _proofs(material)).status is Status.UNCHANGED
    for old in range(1, TREE_SIZE):
        verdict = judge(_signed(material, old), _signed(material, TREE_SIZE), _proofs(material))
        assert verdict.status is Status.GREW, verdict.finding


def test_judge_alarms_on_every_kind_of_rewrite(material: Material) -> None:
    old = _signed(material, 6)
    other_root = _signed(material, 6, root=bytes(32))
    cases = {
        "the log shrank from 6 to 5 entries": judge(old, _signed(material, 5), _proofs(material)),
        "two signed checkpoints of size 6 with different roots": judge(old, other_root, _proofs(material)),
        "does not verify": judge(old, _signed(material, 9, root=bytes(32)), _proofs(material)),
        "serves no checkpoint": judge(old, None, _proofs(material)),
    }
    for expected, verdict in cases.items():
        assert verdict.status is Status.REWRITTEN and expected in verdict.finding, verdict.finding


def test_open_checkpoint_requires_a_pinned_key(material: Material) -> None:
    impostor = PrivateKey.generate(Suite.ED25519, material.gateway.keyid)
    envelope = material.checkpoint(key=impostor)
    with pytest.raises(CheckpointError, match="no signature verifies with a pinned gateway key"):
        open_checkpoint(envelope, {material.gateway.keyid: material.gateway.public_key()})


def test_watch_state_round_trips_and_refuses_damage(material: Material, tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    keys: dict[str, PublicKey] = {material.gateway.keyid: material.gateway.public_key()}
    assert WatchState.load(path) is None
    WatchState(gateway_keys=keys, checkpoint=_signed(material, 7), gateway="gw").save(path)
    loaded = WatchState.load(path)
    assert loaded is not None and loaded.checkpoint == _signed(material, 7)
    doc = json.loads(path.read_text())
    doc["checkpoint"]["envelope"] = _flip_b64(doc["checkpoint"]["envelope"], 40)
    path.write_text(json.dumps(doc))
    with pytest.raises(WatchStateError, match="damaged watch state"):
        WatchState.load(path)
    path.write_text("{not json")
    with pytest.raises(WatchStateError, match="unreadable"):
        WatchState.load(path)


def test_watch_loop_stops_at_the_first_alarm() -> None:
    codes = iter([0, 0, 3, 0])
    sleeps: list[float] = []
    assert watch_loop(lambda: next(codes), interval=7, err=io.StringIO(), sleep=sleeps.append) == 3
    assert sleeps == [7, 7]
