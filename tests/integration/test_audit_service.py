"""AuditService on a real server: who sees what, signed reads, sizes, and what the leaves say.

Every refusal is checked by gRPC code and ErrorInfo reason. The log is built through the
real submission path, so leaves, receipts and proofs are the gateway's own.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
import pytest

from gateway.audit import merkle
from gateway.audit.checkpoints import CHECKPOINT_PAYLOAD_TYPE
from gateway.client import AuditClient, Refusal
from gateway.crypto.dsse import sha256
from gateway.crypto.reads import MD_SIGNATURE, MD_SIGNED_AT, sign_read
from gateway.crypto.suites import PrivateKey, Suite, pae
from gateway.pb import audit_pb2, envelope_pb2, exchange_pb2

Code = grpc.StatusCode
METHOD = "/mrx.v1.AuditService/"
YRD = {"CN-SH", "CN-JS", "CN-ZJ", "CN-AH"}
BTH = {"CN-BJ", "CN-TJ", "CN-HE"}


@pytest.fixture
def gateway(gateway_factory):
    """One gateway per test, checkpointing only when a test says so."""
    return gateway_factory(checkpoint_interval=3600)


@pytest.fixture
def audit(gateway, signers):
    """``audit(code)``: an AuditClient signing reads as ``code`` with its demo key."""
    opened = []

    def _open(code, *, signer=None):
        client = AuditClient(gateway.address, principal=code, signer=signer or signers[code])
        opened.append(client)
        return client

    yield _open
    for client in opened:
        client.close()


@dataclass
class Logged:
    log_index: int
    sender: str
    issuer: str
    outcome: int
    reason: str = ""
    receipt_payload: bytes | None = None
    envelope_sha256: bytes = b""


@dataclass
class Scenario:
    logged: list[Logged] = field(default_factory=list)
    # Envelopes refused before their signature was proven: never in the log.
    unlogged: list[envelope_pb2.Envelope] = field(default_factory=list)

    def visible_to(self, parties):
        return [e.log_index for e in self.logged if e.sender in parties or e.issuer in parties]


def _submit(client, envelope):
    return client.exchange.Submit(exchange_pb2.SubmitRequest(envelope=envelope), timeout=30)


@pytest.fixture
def scenario(gateway, client_for, certs_of, make_env, signers, clock):
    """Accepted exchanges in YRD and BTH, refusals after the signature check (logged) and
    before it (not logged), then a checkpoint."""
    s = Scenario()

    def accepted(sender, cert):
        envelope = make_env(cert, sender=sender)
        receipt = _submit(client_for(sender), envelope).receipt
        body = envelope_pb2.Receipt.FromString(receipt.payload)
        s.logged.append(
            Logged(
                body.log_index,
                sender,
                cert.issuer,
                envelope_pb2.OUTCOME_ACCEPTED,
                receipt_payload=receipt.payload,
                envelope_sha256=body.envelope_sha256,
            )
        )

    def refused(sender, cert, reason, **kw):
        envelope = make_env(cert, sender=sender, **kw)
        with pytest.raises(grpc.RpcError) as info:
            _submit(client_for(sender), envelope)
        refusal = Refusal.from_rpc_error(info.value)
        assert refusal.reason == reason, str(refusal)
        digest = sha256(envelope.SerializeToString(deterministic=True))
        s.logged.append(
            Logged(
                int(refusal.metadata["log_index"]),
                sender,
                cert.issuer,
                envelope_pb2.OUTCOME_REFUSED,
                reason,
                envelope_sha256=digest,
            )
        )

    for cert in certs_of("CN-JS", 3):
        accepted("CN-JS", cert)
    for cert in certs_of("CN-SH", 2):
        accepted("CN-SH", cert)
    for cert in certs_of("CN-BJ", 2):
        accepted("CN-BJ", cert)
    # CN-BJ publishing a CN-JS certificate: refused after the signature, so logged, and
    # visible to YRD (the subject's issuer) as well as to BTH (the sender).
    refused("CN-BJ", certs_of("CN-JS", 1, start_serial=40)[0], "NOT_ISSUER")
    refused("CN-TJ", certs_of("CN-TJ", 1)[0], "STALE_MESSAGE", created_at=clock.now - timedelta(hours=1))

    forged = make_env(certs_of("CN-JS", 1, start_serial=41)[0])
    forged.signatures[0].sig = bytes(64)
    unknown = make_env(
        certs_of("CN-JS", 1, start_serial=42)[0], signer=PrivateKey.generate(Suite.ED25519, "CN-JS/x")
    )
    for envelope, reason in ((forged, "BAD_SIGNATURE"), (unknown, "UNKNOWN_KEY")):
        with pytest.raises(grpc.RpcError) as info:
            _submit(client_for("CN-JS"), envelope)
        assert Refusal.from_rpc_error(info.value).reason == reason
        s.unlogged.append(envelope)

    assert sorted(e.log_index for e in s.logged) == list(range(len(s.logged)))
    assert gateway.gateway.checkpointer.checkpoint_now() == len(s.logged)
    return s


def listed(client, **kw):
    return [e.log_index for e in client.exchanges(audit_pb2.ListExchangesRequest(**kw))]


def checkpoint_of(client, gateway_key):
    envelope = client.checkpoint()
    assert envelope.payload_type == CHECKPOINT_PAYLOAD_TYPE
    sig = envelope.signatures[0]
    assert gateway_key.verify(pae(envelope.payload_type, envelope.payload), sig.sig)
    return audit_pb2.Checkpoint.FromString(envelope.payload)


# --- who sees what --------------------------------------------------------------------------


def test_a_secretariat_sees_exchanges_involving_its_members(scenario, audit):
    yrd = audit("YRD-SEC")
    expected = scenario.visible_to(YRD)
    assert listed(yrd) == expected == listed(yrd, alliance="YRD")
    not_issuer = next(e for e in scenario.logged if e.reason == "NOT_ISSUER")
    assert not_issuer.log_index in expected  # sent by CN-BJ, but about a CN-JS certificate
    assert listed(yrd, participant="CN-SH") == [e.log_index for e in scenario.logged if e.sender == "CN-SH"]
    assert not any(e.sender in BTH and e.issuer in BTH and e.log_index in expected for e in scenario.logged)


def test_a_secretariat_is_refused_exchanges_outside_its_alliance(scenario, audit, rpc_refusal):
    yrd = audit("YRD-SEC")
    outside = [e for e in scenario.logged if e.sender in BTH and e.issuer in BTH]
    assert outside
    for e in outside:
        rpc_refusal(lambda e=e: yrd.envelope(log_index=e.log_index), Code.PERMISSION_DENIED, "OUTSIDE_SCOPE")
        rpc_refusal(
            lambda e=e: yrd.inclusion_proof(log_index=e.log_index), Code.PERMISSION_DENIED, "OUTSIDE_SCOPE"
        )
        by_digest = rpc_refusal(
            lambda e=e: yrd.inclusion_proof(envelope_sha256=e.envelope_sha256),
            Code.PERMISSION_DENIED,
            "OUTSIDE_SCOPE",
        )
        # Asked by digest, the refusal must not say where the hidden exchange sits.
        assert "log_index" not in by_digest.metadata
        assert str(e.log_index) not in by_digest.message


def test_a_secretariat_may_not_list_another_alliance(scenario, audit, rpc_refusal):
    bth = audit("BTH-SEC")
    refusal = rpc_refusal(lambda: listed(bth, alliance="YRD"), Code.PERMISSION_DENIED, "OUTSIDE_SCOPE")
    assert "BTH-SEC" in refusal.message
    rpc_refusal(lambda: listed(bth, participant="CN-JS"), Code.PERMISSION_DENIED, "OUTSIDE_SCOPE")
    assert listed(bth) == scenario.visible_to(BTH)


def test_a_province_sees_its_own_exchanges_only(scenario, audit, rpc_refusal):
    js = audit("CN-JS")
    expected = scenario.visible_to({"CN-JS"})
    assert listed(js) == expected == listed(js, participant="CN-JS")
    assert {e.sender for e in scenario.logged if e.log_index in expected} == {"CN-JS", "CN-BJ"}
    rpc_refusal(lambda: listed(js, participant="CN-SH"), Code.PERMISSION_DENIED, "OUTSIDE_SCOPE")
    rpc_refusal(lambda: listed(js, alliance="YRD"), Code.PERMISSION_DENIED, "OUTSIDE_SCOPE")
    sh = next(e for e in scenario.logged if e.sender == "CN-SH")
    rpc_refusal(lambda: js.envelope(log_index=sh.log_index), Code.PERMISSION_DENIED, "OUTSIDE_SCOPE")
    rpc_refusal(lambda: js.inclusion_proof(log_index=sh.log_index), Code.PERMISSION_DENIED, "OUTSIDE_SCOPE")


def test_the_gateway_principal_sees_everything(scenario, audit):
    assert listed(audit("MRX-GW")) == [e.log_index for e in scenario.logged]


def test_an_unknown_alliance_is_an_invalid_argument(scenario, audit, rpc_refusal):
    rpc_refusal(
        lambda: listed(audit("YRD-SEC"), alliance="XX"),
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("alliance",),
    )


def test_paging_follows_tokens_and_binds_them_to_the_filter(scenario, audit, rpc_refusal):
    yrd = audit("YRD-SEC")
    assert listed(yrd, page_size=2) == scenario.visible_to(YRD)
    first = yrd._call("ListExchanges", audit_pb2.ListExchangesRequest(page_size=2))
    assert first.next_page_token
    other = audit_pb2.ListExchangesRequest(page_size=2, participant="CN-SH", page_token=first.next_page_token)
    rpc_refusal(
        lambda: yrd._call("ListExchanges", other), Code.INVALID_ARGUMENT, "BAD_PAGE_TOKEN", ("page_token",)
    )
    # A token is bound to its principal too: CN-JS cannot continue YRD-SEC's listing.
    again = audit_pb2.ListExchangesRequest(page_size=2, page_token=first.next_page_token)
    rpc_refusal(
        lambda: audit("CN-JS")._call("ListExchanges", again),
        Code.INVALID_ARGUMENT,
        "BAD_PAGE_TOKEN",
        ("page_token",),
    )


# --- signed reads ---------------------------------------------------------------------------


def _call_with(client, name, request, metadata):
    return getattr(client.stub, name)(request, metadata=metadata, timeout=30)


def test_an_unsigned_read_is_unauthenticated(scenario, audit, rpc_refusal):
    yrd = audit("YRD-SEC")
    refusal = rpc_refusal(
        lambda: yrd.stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=30),
        Code.UNAUTHENTICATED,
        "MISSING_CREDENTIALS",
    )
    assert MD_SIGNATURE in refusal.message


def test_a_read_signed_with_the_wrong_key_or_altered_is_refused(scenario, audit, signers, rpc_refusal):
    yrd = audit("YRD-SEC")
    request = audit_pb2.ListExchangesRequest()
    method = METHOD + "ListExchanges"
    # CN-JS's key, presented under YRD-SEC's key id.
    wrong = sign_read(signer=signers["CN-JS"], principal="YRD-SEC", method=method, request=request)
    wrong = [(k, "YRD-SEC/demo" if k == "x-mrx-keyid" else v) for k, v in wrong]
    rpc_refusal(
        lambda: _call_with(yrd, "ListExchanges", request, wrong), Code.UNAUTHENTICATED, "BAD_SIGNATURE"
    )

    good = sign_read(signer=signers["YRD-SEC"], principal="YRD-SEC", method=method, request=request)
    tampered = [(k, bytes([v[0] ^ 1]) + v[1:] if k == MD_SIGNATURE else v) for k, v in good]
    rpc_refusal(
        lambda: _call_with(yrd, "ListExchanges", request, tampered), Code.UNAUTHENTICATED, "BAD_SIGNATURE"
    )
    # The signature covers the request: the same metadata on a different request fails.
    widened = audit_pb2.ListExchangesRequest(with_envelopes=True)
    rpc_refusal(
        lambda: _call_with(yrd, "ListExchanges", widened, good), Code.UNAUTHENTICATED, "BAD_SIGNATURE"
    )
    # Someone else's key under one's own name.
    theirs = sign_read(signer=signers["CN-JS"], principal="YRD-SEC", method=method, request=request)
    rpc_refusal(
        lambda: _call_with(yrd, "ListExchanges", request, theirs),
        Code.UNAUTHENTICATED,
        "SENDER_NOT_KEY_OWNER",
    )


def test_a_signature_for_another_method_cannot_be_replayed(scenario, audit, signers, rpc_refusal):
    yrd = audit("YRD-SEC")
    request = audit_pb2.GetEnvelopeRequest(log_index=0)
    for_list = sign_read(
        signer=signers["YRD-SEC"], principal="YRD-SEC", method=METHOD + "GetInclusionProof", request=request
    )
    rpc_refusal(
        lambda: _call_with(yrd, "GetEnvelope", request, for_list), Code.UNAUTHENTICATED, "BAD_SIGNATURE"
    )


def test_a_stale_read_signature_is_refused(scenario, audit, signers, clock, rpc_refusal):
    yrd = audit("YRD-SEC")
    request = audit_pb2.GetCheckpointRequest()
    old = sign_read(
        signer=signers["YRD-SEC"],
        principal="YRD-SEC",
        method=METHOD + "GetCheckpoint",
        request=request,
        now=clock.now - timedelta(seconds=90),
    )
    refusal = rpc_refusal(
        lambda: _call_with(yrd, "GetCheckpoint", request, old), Code.UNAUTHENTICATED, "STALE_CREDENTIALS"
    )
    assert "60 s" in refusal.message
    garbled = [(k, "yesterday" if k == MD_SIGNED_AT else v) for k, v in old]
    rpc_refusal(
        lambda: _call_with(yrd, "GetCheckpoint", request, garbled), Code.UNAUTHENTICATED, "BAD_CREDENTIALS"
    )


# --- sizes and proofs -----------------------------------------------------------------------


def test_bad_sizes_are_refused_with_the_numbers(scenario, audit, rpc_refusal):
    gw = audit("MRX-GW")
    n = len(scenario.logged)
    r = rpc_refusal(
        lambda: gw.inclusion_proof(log_index=0, tree_size=n + 5), Code.OUT_OF_RANGE, "TREE_SIZE_BEYOND_LOG"
    )
    assert (
        f"tree_size {n + 5}" in r.message
        and f"has {n} entries" in r.message
        and r.metadata["log_size"] == str(n)
    )
    r = rpc_refusal(
        lambda: gw.inclusion_proof(log_index=n, tree_size=n), Code.OUT_OF_RANGE, "INDEX_BEYOND_TREE"
    )
    assert f"log_index {n} is not in a tree of size {n}" in r.message
    r = rpc_refusal(
        lambda: gw.inclusion_proof(log_index=4, tree_size=3), Code.OUT_OF_RANGE, "INDEX_BEYOND_TREE"
    )
    assert r.metadata["tree_size"] == "3"
    r = rpc_refusal(lambda: gw.consistency_proof(0, n), Code.INVALID_ARGUMENT, "BAD_TREE_SIZE", ("old_size",))
    assert f"old_size 0, new_size {n}" in r.message
    r = rpc_refusal(lambda: gw.consistency_proof(5, 3), Code.INVALID_ARGUMENT, "BAD_TREE_SIZE", ("old_size",))
    assert "old_size 5, new_size 3" in r.message
    r = rpc_refusal(lambda: gw.consistency_proof(1, n + 1), Code.OUT_OF_RANGE, "TREE_SIZE_BEYOND_LOG")
    assert f"new_size {n + 1}" in r.message and f"has {n} entries" in r.message
    rpc_refusal(
        lambda: gw._call("GetInclusionProof", audit_pb2.GetInclusionProofRequest(tree_size=n)),
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("log_index",),
    )
    rpc_refusal(lambda: gw.envelope(log_index=n + 100), Code.NOT_FOUND, "EXCHANGE_NOT_FOUND")


def test_an_empty_log_has_no_checkpoint(gateway, audit, rpc_refusal):
    assert gateway.gateway.checkpointer.checkpoint_now() is None
    yrd = audit("YRD-SEC")
    rpc_refusal(yrd.checkpoint, Code.NOT_FOUND, "NO_CHECKPOINT")
    rpc_refusal(lambda: yrd.inclusion_proof(log_index=0), Code.NOT_FOUND, "NO_CHECKPOINT")
    assert listed(yrd) == []


def test_proofs_verify_against_the_signed_checkpoint(
    scenario, audit, federation, gateway, client_for, certs_of
):
    gateway_key = federation.keys["MRX-GW/demo"].public_key
    yrd = audit("YRD-SEC")
    first = checkpoint_of(yrd, gateway_key)
    assert first.tree_size == len(scenario.logged)
    for index in scenario.visible_to(YRD):
        proof = yrd.inclusion_proof(log_index=index)
        assert proof.tree_size == first.tree_size and proof.checkpoint.payload_type == CHECKPOINT_PAYLOAD_TYPE
        assert merkle.verify_inclusion(
            merkle.leaf_hash(proof.leaf), index, first.tree_size, proof.hashes, first.root_hash
        )
    for cert in certs_of("CN-ZJ", 3):
        client_for("CN-ZJ").publish(cert)
    gateway.gateway.checkpointer.checkpoint_now()
    second = checkpoint_of(yrd, gateway_key)
    assert second.tree_size == first.tree_size + 3
    hashes = yrd.consistency_proof(first.tree_size, second.tree_size)
    assert merkle.verify_consistency(
        first.tree_size, second.tree_size, first.root_hash, second.root_hash, hashes
    )
    # A proof against the older tree size still works, with that size's checkpoint.
    old = yrd.inclusion_proof(log_index=0, tree_size=first.tree_size)
    assert audit_pb2.Checkpoint.FromString(old.checkpoint.payload).root_hash == first.root_hash


# --- what the leaves say --------------------------------------------------------------------


def test_leaves_record_refusals_after_the_signature_but_not_before(scenario, audit, rpc_refusal):
    gw = audit("MRX-GW")
    entries = {e.log_index: e for e in gw.exchanges(audit_pb2.ListExchangesRequest(with_envelopes=True))}
    assert len(entries) == len(scenario.logged)
    for expected in scenario.logged:
        entry = entries[expected.log_index]
        leaf = audit_pb2.ExchangeLeaf.FromString(entry.leaf)
        assert (leaf.log_index, leaf.sender, leaf.subject_issuer) == (
            expected.log_index,
            expected.sender,
            expected.issuer,
        )
        assert (leaf.outcome, leaf.reason) == (expected.outcome, expected.reason)
        assert (
            leaf.envelope_sha256
            == expected.envelope_sha256
            == sha256(entry.envelope.SerializeToString(deterministic=True))
        )
        if expected.outcome == envelope_pb2.OUTCOME_REFUSED:
            assert leaf.receipt_sha256 == b""
    refused = [e for e in scenario.logged if e.outcome == envelope_pb2.OUTCOME_REFUSED]
    assert {e.reason for e in refused} == {"NOT_ISSUER", "STALE_MESSAGE"}
    assert len(listed(gw, outcome=envelope_pb2.OUTCOME_REFUSED)) == len(refused)
    for envelope in scenario.unlogged:
        digest = sha256(envelope.SerializeToString(deterministic=True))
        rpc_refusal(
            lambda d=digest: gw.inclusion_proof(envelope_sha256=d), Code.NOT_FOUND, "EXCHANGE_NOT_FOUND"
        )


def test_receipts_match_their_leaves(scenario, audit):
    gw = audit("MRX-GW")
    accepted = [e for e in scenario.logged if e.outcome == envelope_pb2.OUTCOME_ACCEPTED]
    assert accepted
    for expected in accepted:
        receipt = envelope_pb2.Receipt.FromString(expected.receipt_payload)
        leaf = audit_pb2.ExchangeLeaf.FromString(gw.envelope(log_index=receipt.log_index).leaf)
        assert leaf.log_index == receipt.log_index
        assert leaf.receipt_sha256 == sha256(expected.receipt_payload)
        assert leaf.envelope_sha256 == receipt.envelope_sha256
        assert leaf.received_at == receipt.received_at


# --- bugs found -----------------------------------------------------------------------------


def _forged_token(principal, request, cursor):
    shape = audit_pb2.ListExchangesRequest()
    shape.CopyFrom(request)
    digest = hashlib.sha256(principal.encode() + shape.SerializeToString(deterministic=True)).hexdigest()[:16]
    return base64.urlsafe_b64encode(json.dumps([digest, cursor]).encode()).decode().rstrip("=")


def test_a_forged_page_token_with_a_huge_cursor_is_refused_cleanly(scenario, audit, rpc_refusal):
    yrd = audit("YRD-SEC")
    request = audit_pb2.ListExchangesRequest()
    request.page_token = _forged_token("YRD-SEC", request, 10**30)
    rpc_refusal(lambda: yrd._call("ListExchanges", request), Code.INVALID_ARGUMENT, "BAD_PAGE_TOKEN")


def test_an_out_of_range_time_filter_is_an_invalid_argument(scenario, audit, rpc_refusal):
    request = audit_pb2.ListExchangesRequest()
    request.received_from.seconds = 10**12  # year ~33658
    rpc_refusal(
        lambda: audit("YRD-SEC")._call("ListExchanges", request), Code.INVALID_ARGUMENT, "INVALID_FIELDS"
    )
