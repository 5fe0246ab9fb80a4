"""SubmitBatch: many envelopes in one call, one transaction, one result each, in order."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import select

from gateway.client import BATCH_MAX_ENVELOPES
from gateway.demo_fixtures import demo_status_change
from gateway.domain.certificates import CertState
from gateway.pb import envelope_pb2, exchange_pb2
from gateway.store.schema import exchanges

Code = grpc.StatusCode


def batch(client, envelopes):
    return client.exchange.SubmitBatch(
        exchange_pb2.SubmitBatchRequest(envelopes=envelopes), timeout=60
    ).results


def test_one_result_per_envelope_in_order_with_refusals_in_place(
    gateway, client_for, certs_of, make_env, signers, clock, status_refusal, issuer_verifies
):
    js = client_for("CN-JS")
    certs = certs_of("CN-JS", 40)
    first = make_env(certs[0])
    js.submit(first)
    forged = make_env(certs[5])
    forged.signatures[0].sig = bytes(64)
    stale = make_env(certs[9], created_at=clock.now - timedelta(hours=1))
    revoked_key = make_env(certs[17], sender="CN-JS", signer=signers["CN-JS/revoked"])
    not_issuer = make_env(certs_of("CN-SH")[0], sender="CN-JS", signer=signers["CN-JS"])
    bad = {
        5: (forged, Code.UNAUTHENTICATED, "BAD_SIGNATURE", False),
        9: (stale, Code.FAILED_PRECONDITION, "STALE_MESSAGE", True),
        17: (revoked_key, Code.UNAUTHENTICATED, "KEY_REVOKED", False),
        23: (not_issuer, Code.PERMISSION_DENIED, "NOT_ISSUER", True),
        31: (make_env(certs[31], message_id="dup-id"), Code.ALREADY_EXISTS, "MESSAGE_ID_REUSED", True),
    }
    envelopes = [
        bad[i][0] if i in bad else make_env(c, message_id="dup-id" if i == 30 else None)
        for i, c in enumerate(certs)
    ]
    envelopes[0] = first  # already accepted: the original receipt, no new entry

    results = batch(js, envelopes)

    assert [r.sequence for r in results] == list(range(40))
    for i, result in enumerate(results):
        if i in bad:
            _, code, reason, logged = bad[i]
            refusal = status_refusal(result.error, code, reason)
            assert ("log_index" in refusal.metadata) is logged, i
        else:
            assert result.HasField("receipt"), (i, result.error)
            assert issuer_verifies(envelopes[i])
    original = js.submit(first)
    assert envelope_pb2.Receipt.FromString(results[0].receipt.payload) == original
    # One transaction for the whole call (the dense log shows the order was kept).
    with gateway.engines.reader.connect() as conn:
        rows = conn.execute(
            select(exchanges.c.log_index, exchanges.c.envelope_sha256).order_by(exchanges.c.log_index)
        ).all()
    logged = [
        hashlib.sha256(e.SerializeToString(deterministic=True)).digest()
        for i, e in enumerate(envelopes)
        if i and (i not in bad or bad[i][3])
    ]
    assert [r.log_index for r in rows] == list(range(1 + len(logged)))
    assert [r.envelope_sha256 for r in rows[1:]] == logged


def test_a_batch_is_one_commit(gateway, client_for, certs_of, make_env):
    js = client_for("CN-JS")
    before = gateway.writer.commits
    results = batch(js, [make_env(c) for c in certs_of("CN-JS", 200)])
    assert all(r.HasField("receipt") for r in results)
    assert gateway.writer.commits == before + 1
    assert gateway.writer.committed >= 200


def test_versions_of_one_record_in_one_batch_apply_in_order(client_for, certs_of, make_env, clock):
    js = client_for("CN-JS")
    v1 = certs_of("CN-JS")[0]
    v2 = demo_status_change(v1, state=CertState.SUSPENDED, reason="监督抽查不合格", effective_at=clock.now)
    v3 = demo_status_change(v2, state=CertState.REVOKED, reason="逾期未整改", effective_at=clock.now)
    outcomes = js.publish_batch([v1, v2, v3, v2])
    assert [o.receipt.record_version if o.receipt else o.refusal.reason for o in outcomes] == [
        1,
        2,
        3,
        "STALE_VERSION",
    ]
    view = js.get_certificate(v1.scheme, v1.certificate_number)
    assert (view.certificate.version, view.effective_state) == (3, CertState.REVOKED)


def test_an_empty_batch_is_an_invalid_argument(client_for, rpc_refusal):
    js = client_for("CN-JS")
    rpc_refusal(lambda: batch(js, []), Code.INVALID_ARGUMENT, "EMPTY_BATCH")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_too_many_envelopes_are_refused_and_the_sdk_splits(
    client_for, certs_of, make_env, rpc_refusal, gateway
):
    js = client_for("CN-JS")
    envelopes = [make_env(c) for c in certs_of("CN-JS", BATCH_MAX_ENVELOPES + 1)]
    refusal = rpc_refusal(lambda: batch(js, envelopes), Code.RESOURCE_EXHAUSTED, "BATCH_TOO_LARGE")
    assert refusal.metadata["limit"] == str(BATCH_MAX_ENVELOPES)
    assert gateway.store.exchange_count() == 0  # refused whole, nothing written
    outcomes = js.submit_batch(envelopes)
    assert [o.sequence for o in outcomes] == list(range(BATCH_MAX_ENVELOPES + 1))
    assert all(o.receipt is not None for o in outcomes)
    assert gateway.store.exchange_count() == BATCH_MAX_ENVELOPES + 1
