"""SubmitStream and concurrent Submit: one answer per item, in order; one dense log."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import select

from gateway.crypto.suites import PrivateKey, Suite
from gateway.demo_fixtures import demo_status_change
from gateway.domain.certificates import CertState
from gateway.pb import exchange_pb2
from gateway.store.schema import exchanges

Code = grpc.StatusCode


def log_indexes(gateway) -> list[int]:
    with gateway.engines.reader.connect() as conn:
        return list(conn.execute(select(exchanges.c.log_index).order_by(exchanges.c.log_index)).scalars())


def test_batch_of_300_with_bad_items_mixed_in(
    client_for, certs_of, make_env, signers, clock, status_refusal, store, gateway
):
    js = client_for("CN-JS")
    certs = certs_of("CN-JS", 300)
    rogue = PrivateKey.generate(Suite.ED25519, "CN-JS/rogue")

    def forged(env):
        env.signatures[0].sig = bytes(64)
        return env

    def bad_code(s):
        h = s.certificate_status.holder
        h.credit_code = h.credit_code[:17] + ("0" if h.credit_code[17] != "0" else "1")

    # position -> (envelope, expected code, reason, logged?)
    bad = {
        3: (forged(make_env(certs[3])), Code.UNAUTHENTICATED, "BAD_SIGNATURE", False),
        50: (make_env(certs[50], mutate=bad_code), Code.INVALID_ARGUMENT, "INVALID_FIELDS", True),
        51: (make_env(certs[51], signer=rogue), Code.UNAUTHENTICATED, "UNKNOWN_KEY", False),
        123: (
            make_env(dataclasses.replace(certs[123], issuer="CN-SH"), sender="CN-JS"),
            Code.PERMISSION_DENIED,
            "NOT_ISSUER",
            True,
        ),
        200: (
            make_env(certs[200], created_at=clock.now - timedelta(hours=2)),
            Code.FAILED_PRECONDITION,
            "STALE_MESSAGE",
            True,
        ),
        # Same message id as item 10, other bytes.
        201: (make_env(certs[201], message_id="stream-10"), Code.ALREADY_EXISTS, "MESSAGE_ID_REUSED", True),
        299: (
            make_env(certs[299], signer=signers["CN-JS/expired"]),
            Code.UNAUTHENTICATED,
            "KEY_EXPIRED",
            False,
        ),
    }
    envelopes = [
        bad[i][0] if i in bad else make_env(c, message_id="stream-10" if i == 10 else None)
        for i, c in enumerate(certs)
    ]

    outcomes = list(js.submit_many(envelopes))

    assert [o.sequence for o in outcomes] == list(range(300))
    receipts = {}
    for i, (outcome, cert) in enumerate(zip(outcomes, certs, strict=True)):
        if i in bad:
            _, code, reason, was_logged = bad[i]
            assert outcome.receipt is None
            assert (outcome.refusal.code, outcome.refusal.reason) == (code, reason), i
            assert ("log_index" in outcome.refusal.metadata) is was_logged
        else:
            assert outcome.refusal is None, (i, outcome.refusal)
            assert (
                outcome.receipt.record_key
                == f"certificate_status/{cert.scheme.name}/{cert.certificate_number}"
            )
            assert outcome.receipt.sender == "CN-JS"
            receipts[i] = outcome.receipt
    # Raw statuses carry the same details a unary error does.
    raw = list(js.exchange.SubmitStream(iter([exchange_pb2.SubmitRequest(envelope=bad[50][0])])))
    assert [r.sequence for r in raw] == [0]
    status_refusal(
        raw[0].error, Code.INVALID_ARGUMENT, "INVALID_FIELDS", ("certificate_status.holder.credit_code",)
    )

    assert receipts[10].message_id == "stream-10"
    assert store.certificate_count() == 300 - len(bad)
    n_logged = 300 - sum(1 for v in bad.values() if not v[3]) + 1  # + the raw re-send of item 50
    assert log_indexes(gateway) == list(range(n_logged))
    assert len({r.log_index for r in receipts.values()}) == len(receipts)
    assert gateway.verifier.unlogged_refusals["BAD_SIGNATURE"] == 1


def test_two_versions_of_one_certificate_in_one_stream_apply_in_order(client_for, certs_of, clock):
    js = client_for("CN-JS")
    v1, other = certs_of("CN-JS", 2)
    v2 = demo_status_change(v1, state=CertState.SUSPENDED, reason="监督抽查不合格", effective_at=clock.now)
    v3 = demo_status_change(v2, state=CertState.REVOKED, reason="逾期未整改", effective_at=clock.now)
    outcomes = list(js.publish_many([v1, other, v2, v3]))
    assert [o.refusal for o in outcomes] == [None] * 4
    assert [o.receipt.record_version for o in outcomes] == [1, 1, 2, 3]
    view = js.get_certificate(v1.scheme, v1.certificate_number)
    assert (view.certificate.version, view.effective_state) == (3, CertState.REVOKED)


def test_out_of_order_versions_in_one_stream(client_for, certs_of, clock):
    js = client_for("CN-JS")
    v1 = certs_of("CN-JS")[0]
    v2 = demo_status_change(v1, state=CertState.SUSPENDED, reason="监督抽查不合格", effective_at=clock.now)
    outcomes = list(js.publish_many([v2, v1]))
    assert outcomes[0].receipt.record_version == 2
    assert (outcomes[1].refusal.code, outcomes[1].refusal.reason) == (
        Code.FAILED_PRECONDITION,
        "STALE_VERSION",
    )


def test_identical_envelope_twice_in_one_stream_gets_one_receipt(client_for, certs_of, make_env, store):
    js = client_for("CN-JS")
    env = make_env(certs_of("CN-JS")[0])
    first, second = js.submit_many([env, env])
    assert first.receipt == second.receipt
    assert store.exchange_count() == 1


def test_empty_stream(client_for):
    assert list(client_for("CN-JS").submit_many([])) == []


def test_concurrent_unary_submits_and_a_stream_share_one_dense_log(client_for, certs_of, store, gateway):
    threads, per_thread, streamed = 16, 8, 150
    unary = certs_of("CN-JS", threads * per_thread)
    stream_certs = certs_of("CN-SH", streamed)
    clients = [client_for("CN-JS") for _ in range(4)]
    sh = client_for("CN-SH")
    start = threading.Barrier(threads + 1)

    def unary_worker(n):
        start.wait()
        client = clients[n % len(clients)]
        return [client.publish(c).log_index for c in unary[n * per_thread : (n + 1) * per_thread]]

    def stream_worker():
        start.wait()
        return [o.receipt.log_index for o in sh.publish_many(stream_certs)]

    with ThreadPoolExecutor(threads + 1) as pool:
        futures = [pool.submit(unary_worker, n) for n in range(threads)]
        stream_future = pool.submit(stream_worker)
        indexes = [i for f in futures for i in f.result()] + stream_future.result()

    total = threads * per_thread + streamed
    assert sorted(indexes) == list(range(total))
    assert log_indexes(gateway) == list(range(total))
    assert store.certificate_count() == total
    # Group commit: concurrent submissions shared transactions.
    assert gateway.writer.committed == total
    assert gateway.writer.commits < gateway.writer.committed


@pytest.mark.parametrize("bad_at", [0, 2])
def test_a_malformed_item_does_not_end_the_stream(bad_at, client_for, certs_of, make_env):
    js = client_for("CN-JS")
    envelopes = [make_env(c) for c in certs_of("CN-JS", 3)]
    envelopes[bad_at].payload_type = "text/plain"
    outcomes = list(js.submit_many(envelopes))
    assert len(outcomes) == 3
    assert outcomes[bad_at].refusal.reason == "MALFORMED_ENVELOPE"
    assert sum(o.receipt is not None for o in outcomes) == 2


def test_an_oversized_item_is_refused_as_that_item_and_the_stream_goes_on(client_for, certs_of, make_env):
    js = client_for("CN-JS")
    a, big, c = certs_of("CN-JS", 3)
    oversized = make_env(big, mutate=lambda s: setattr(s.certificate_status, "scope", "x" * 300_000))
    outcomes = list(js.submit_many([make_env(a), oversized, make_env(c)]))
    assert [o.sequence for o in outcomes] == [0, 1, 2]
    assert outcomes[0].receipt is not None and outcomes[2].receipt is not None
    assert (outcomes[1].refusal.code, outcomes[1].refusal.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MESSAGE_TOO_LARGE",
    )
