"""Several replicas on one PostgreSQL: two real `mrx serve` processes, one linear log.

Both replicas take submissions at once (unary calls and a stream each, the same envelope
at both, the same message id with different bytes at both) and both run the checkpoint
job every 0.5 s. Afterwards the database alone must show one dense log with no fork:
every receipt's log index names its envelope, every stored checkpoint is signed by the
gateway key over the root of the stored leaves, and each checkpoint is consistent with the
one before it. Checkpoint sizes are the `checkpoints` primary key, so the two replicas'
checkpoint jobs can never store one size twice (the loser's insert does nothing).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import inspect, select

from gateway.audit.merkle import EMPTY_ROOT, leaf_hash, node_hash, verify_consistency, verify_inclusion
from gateway.audit.watch import open_checkpoint
from gateway.client import make_submission, verify_receipt
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates
from gateway.pb import envelope_pb2, exchange_pb2, exchange_pb2_grpc
from gateway.registry.federation import load_federation
from gateway.store.audit_reads import AuditStore
from gateway.store.checkpoints import CheckpointStore
from gateway.store.schema import checkpoints, exchanges

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

Code = grpc.StatusCode
ACCEPTED = envelope_pb2.OUTCOME_ACCEPTED


def _digest(env: envelope_pb2.Envelope) -> bytes:
    return hashlib.sha256(env.SerializeToString(deterministic=True)).digest()


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash of leaf hashes, computed from scratch (no stored node used)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_replicas_on_one_postgresql_keep_one_linear_log(
    federation_dir, federation_paths, database_url, open_store, serve_process
):
    js = PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
    certs = demo_certificates("CN-JS", count=520, today=datetime.now(UTC).date())
    envelopes = [make_submission(c, sender="CN-JS", signer=js) for c in certs[:500]]
    # 4 unary threads (2 per replica), a stream per replica, 20 envelopes sent to both at once.
    unary_parts = [envelopes[i:400:4] for i in range(4)]
    stream_parts = [envelopes[400:440], envelopes[440:480]]
    both = envelopes[480:500]
    # The same message id, different bytes (different records), sent to both at once.
    reused_ids = [str(uuid.uuid4()) for _ in range(10)]
    reused = [
        (
            make_submission(certs[500 + i], sender="CN-JS", signer=js, message_id=mid),
            make_submission(certs[510 + i], sender="CN-JS", signer=js, message_id=mid),
        )
        for i, mid in enumerate(reused_ids)
    ]

    # Both start together on a fresh schema: creating the tables is serialized too.
    replicas = [
        serve_process(
            federation_dir, database_url, federation_paths["MRX-GW"], "--checkpoint-interval", "0.5"
        )
        for _ in range(2)
    ]
    try:
        addresses = [r.ready() for r in replicas]
    except BaseException:
        for r in replicas:
            r.stop()
        raise
    channels = [grpc.insecure_channel(a) for a in addresses]
    stubs = [exchange_pb2_grpc.ExchangeServiceStub(c) for c in channels]

    receipts: list[tuple[bytes, envelope_pb2.Envelope]] = []  # (envelope digest, signed receipt)
    errors: list[str] = []
    pair_results: dict[tuple[int, int, int], tuple[str, envelope_pb2.Envelope | None]] = {}
    lock = threading.Lock()
    start = threading.Barrier(8)

    def submit(stub, env):
        return stub.Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=30).receipt

    def unary(stub, part):
        start.wait()
        for env in part:
            try:
                receipt = submit(stub, env)
            except grpc.RpcError as err:
                with lock:
                    errors.append(f"unary: {err.code()} {err.details()}")
                continue
            with lock:
                receipts.append((_digest(env), receipt))
            time.sleep(0.005)  # spread the load over a few checkpoint intervals

    def stream(stub, part):
        def requests():
            for env in part:
                yield exchange_pb2.SubmitRequest(envelope=env)
                time.sleep(0.08)  # 40 items: the stream stays open for over 3 s

        start.wait()
        try:
            for response in stub.SubmitStream(requests(), timeout=60):
                if response.HasField("receipt"):
                    with lock:
                        receipts.append((_digest(part[response.sequence]), response.receipt))
                else:
                    with lock:
                        errors.append(f"stream item {response.sequence}: {response.error}")
        except grpc.RpcError as err:
            with lock:
                errors.append(f"stream: {err.code()} {err.details()}")

    def at_both(pairs, tag):
        """Each pair's two envelopes go to the two replicas at the same moment."""
        start.wait()
        for n, (a, b) in enumerate(pairs):
            gate = threading.Barrier(2)

            def one(side, stub, env, n=n, gate=gate):
                gate.wait()
                try:
                    result = ("ok", submit(stub, env))
                except grpc.RpcError as err:
                    result = (err.code().name, None)
                with lock:
                    pair_results[(tag, n, side)] = result

            pair = [threading.Thread(target=one, args=(s, stubs[s], e)) for s, e in enumerate((a, b))]
            for t in pair:
                t.start()
            for t in pair:
                t.join(60)
            time.sleep(0.05)

    threads = [threading.Thread(target=unary, args=(stubs[i % 2], p)) for i, p in enumerate(unary_parts)]
    threads += [threading.Thread(target=stream, args=(stubs[i], p)) for i, p in enumerate(stream_parts)]
    threads.append(threading.Thread(target=at_both, args=([(e, e) for e in both], 0)))
    threads.append(threading.Thread(target=at_both, args=(reused, 1)))
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - began
    for c in channels:
        c.close()
    codes = [r.stop() for r in replicas]
    outputs = ["".join(r.lines) for r in replicas]
    assert codes == [0, 0], outputs
    assert not errors, errors[:10]

    # The same envelope at both replicas: one entry, one receipt, the same at both.
    for n, env in enumerate(both):
        (a, ra), (b, rb) = pair_results[(0, n, 0)], pair_results[(0, n, 1)]
        assert (a, b) == ("ok", "ok")
        assert ra.payload == rb.payload
        receipts.append((_digest(env), ra))
    # The same message id with different bytes: one accepted, one ALREADY_EXISTS.
    for n, (a_env, b_env) in enumerate(reused):
        results = [pair_results[(1, n, 0)], pair_results[(1, n, 1)]]
        assert sorted(code for code, _ in results) == ["ALREADY_EXISTS", "ok"], results
        winner = a_env if results[0][0] == "ok" else b_env
        receipts.append((_digest(winner), next(r for code, r in results if code == "ok")))

    e = exchanges.c
    engines = open_store(database_url)
    with engines.reader.connect() as conn:
        rows = conn.execute(
            select(e.log_index, e.envelope_sha256, e.outcome, e.reason, e.receipt, e.leaf).order_by(
                e.log_index
            )
        ).all()
        stored_checkpoints = conn.execute(select(checkpoints).order_by(checkpoints.c.tree_size)).all()
        pk = inspect(conn).get_pk_constraint(checkpoints.name)["constrained_columns"]

    # One linear log: indexes 0..n-1, no gap, no duplicate.
    indexes = [r.log_index for r in rows]
    assert indexes == list(range(len(rows)))
    assert len(rows) == len(envelopes) + 2 * len(reused)  # 500 + 10 accepted + 10 refused
    by_index = {r.log_index: r for r in rows}
    accepted = [r for r in rows if r.outcome == ACCEPTED]
    assert len(accepted) == len(envelopes) + len(reused)
    assert len({r.envelope_sha256 for r in accepted}) == len(accepted), "an envelope accepted twice"
    refused = [r for r in rows if r.outcome != ACCEPTED]
    assert sorted(r.reason for r in refused) == ["MESSAGE_ID_REUSED"] * len(reused)

    # Every receipt is signed by the gateway key and names its envelope under a log index of its own.
    gateway_keys = {
        keyid: rec.public_key
        for keyid, rec in load_federation(federation_dir).keys.items()
        if keyid == "MRX-GW/demo"
    }
    assert len(receipts) == len(envelopes) + len(reused)
    seen: dict[int, bytes] = {}
    for digest, receipt_env in receipts:
        receipt = verify_receipt(receipt_env, gateway_keys)
        assert seen.setdefault(receipt.log_index, digest) == digest, f"index {receipt.log_index} given twice"
        row = by_index[receipt.log_index]
        assert (row.envelope_sha256, row.receipt) == (digest, receipt_env.payload)
        assert receipt.envelope_sha256 == digest

    # Checkpoints: stored during the load by both replicas' jobs, each size once (primary key).
    assert pk == ["tree_size"]
    sizes = [c.tree_size for c in stored_checkpoints]
    assert len([s for s in sizes if s < len(rows)]) >= 3, (
        f"checkpoints every 0.5 s over {elapsed:.1f} s: {sizes}"
    )
    assert len(set(sizes)) == len(sizes)
    assert sizes[-1] == len(rows), "the last checkpoint (on shutdown) covers the whole log"
    leaf_hashes = [leaf_hash(r.leaf) for r in rows]
    origin = f"{load_federation(federation_dir).name}/exchange-log"
    for c in stored_checkpoints:
        signed = open_checkpoint(envelope_pb2.Envelope.FromString(c.envelope), gateway_keys)
        assert (signed.origin, signed.tree_size, signed.root_hash) == (origin, c.tree_size, c.root_hash)
        assert c.root_hash == _mth(leaf_hashes[: c.tree_size]), (
            f"checkpoint {c.tree_size}: not the stored leaves"
        )
    last_size, last_root = stored_checkpoints[-1].tree_size, stored_checkpoints[-1].root_hash
    with AuditStore(engines).snapshot() as audit:
        for old, new in itertools.pairwise(stored_checkpoints):
            proof = audit.consistency_proof(old.tree_size, new.tree_size)
            assert verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof), (
                old.tree_size,
                new.tree_size,
            )
        # And every receipt's entry is in the last checkpoint's tree (every 7th: one query each).
        for _, receipt_env in receipts[::7]:
            index = envelope_pb2.Receipt.FromString(receipt_env.payload).log_index
            proof = audit.inclusion_proof(index, last_size)
            assert verify_inclusion(leaf_hashes[index], index, last_size, proof, last_root), index
    print(f"{len(rows)} entries in {elapsed:.1f} s at two replicas; checkpoints at sizes {sizes}")  # with -s
    # A replica racing for a size already stored does nothing.
    last = stored_checkpoints[-1]
    assert not CheckpointStore(engines).add(
        tree_size=last.tree_size, root_hash=last.root_hash, created_at_us=0, envelope=last.envelope
    )
