"""The writer in its own process: supervision, kill -9 under load, in-doubt answers.

A receipt means "committed". These tests kill the writer while unary calls and a stream
are in flight and then check, from the database alone, that every receipt a client was
given is in the log, and that a retry of anything unanswered is safe (the original
receipt if its commit had landed, a new one otherwise).
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from gateway.pb import envelope_pb2, exchange_pb2, exchange_pb2_grpc
from gateway.store.schema import exchanges

Code = grpc.StatusCode


def _digest(envelope: envelope_pb2.Envelope) -> bytes:
    return hashlib.sha256(envelope.SerializeToString(deterministic=True)).digest()


def _log(engines) -> dict[int, tuple[bytes, int, bytes | None]]:
    e = exchanges.c
    with engines.reader.connect() as conn:
        rows = conn.execute(select(e.log_index, e.envelope_sha256, e.outcome, e.receipt))
        return {r.log_index: (r.envelope_sha256, r.outcome, r.receipt) for r in rows}


def test_the_writer_is_a_separate_process(gateway_factory):
    gateway = gateway_factory(writer_mode="process")
    pid = gateway.gateway.writer.pid
    assert pid is not None and pid != os.getpid()
    os.kill(pid, 0)  # alive
    assert gateway.gateway.writer.mode == "process"


def test_kill_9_of_the_writer_under_load_loses_nothing_acknowledged(
    gateway_factory, make_env, certs_of, open_store, database_url
):
    running = gateway_factory(writer_mode="process")
    envelopes = [make_env(c) for c in certs_of("CN-JS", 360)]
    unary_part, stream_part = envelopes[:240], envelopes[240:]
    acked: dict[bytes, envelope_pb2.Envelope] = {}
    failed: list[Code] = []
    lock = threading.Lock()
    channel = grpc.insecure_channel(running.address)
    stub = exchange_pb2_grpc.ExchangeServiceStub(channel)

    def unary(part: list[envelope_pb2.Envelope]) -> None:
        for env in part:
            try:
                receipt = stub.Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=20).receipt
            except grpc.RpcError as err:
                with lock:
                    failed.append(err.code())
                continue
            with lock:
                acked[_digest(env)] = receipt

    def stream() -> None:
        requests = (exchange_pb2.SubmitRequest(envelope=e) for e in stream_part)
        try:
            for response in stub.SubmitStream(requests, timeout=30):
                if response.HasField("receipt"):
                    with lock:
                        acked[_digest(stream_part[response.sequence])] = response.receipt
                else:
                    with lock:
                        failed.append(Code.UNAVAILABLE if response.error.code == 14 else Code.UNKNOWN)
        except grpc.RpcError as err:
            with lock:
                failed.append(err.code())

    threads = [threading.Thread(target=unary, args=(unary_part[i::4],)) for i in range(4)]
    threads.append(threading.Thread(target=stream))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(running.gateway.writer.pid, signal.SIGKILL)
    for t in threads:
        t.join(60)
    channel.close()

    assert 40 <= len(acked) < len(envelopes), "the kill must land mid-load"
    assert failed and set(failed) == {Code.UNAVAILABLE}, failed
    assert running.gateway.failure is not None and "exit code -9" in running.gateway.failure

    # From the database alone: every acknowledged receipt is there, under its index.
    log = _log(open_store(database_url))
    for digest, receipt_env in acked.items():
        receipt = envelope_pb2.Receipt.FromString(receipt_env.payload)
        assert log[receipt.log_index][:2] == (digest, envelope_pb2.OUTCOME_ACCEPTED)
        assert log[receipt.log_index][2] == receipt_env.payload
    assert sorted(log) == list(range(len(log)))  # dense: no gap, no fork

    # A retry of everything is safe: the original receipt for what was committed.
    restarted = gateway_factory()
    channel = grpc.insecure_channel(restarted.address)
    stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
    try:
        for env in envelopes:
            receipt_env = stub.Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=20).receipt
            if _digest(env) in acked:
                assert receipt_env == acked[_digest(env)]
    finally:
        channel.close()
    log = _log(restarted.engines)
    assert sorted(log) == list(range(len(envelopes)))
    assert {v[0] for v in log.values()} == {_digest(e) for e in envelopes}


def test_a_dead_writer_stops_the_gateway_and_says_why(gateway_factory, make_env, certs_of, caplog):
    running = gateway_factory(writer_mode="process")
    channel = grpc.insecure_channel(running.address)
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    os.kill(running.gateway.writer.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while running.gateway.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running.gateway.failure is not None
    assert "writer" in running.gateway.failure
    stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Submit(exchange_pb2.SubmitRequest(envelope=make_env(certs_of("CN-JS")[0])), timeout=10)
    assert info.value.code() == Code.UNAVAILABLE
    running.gateway.wait()  # it stopped by itself
    assert any("writer stopped" in r.getMessage() for r in caplog.records)
    channel.close()


def test_thread_mode_runs_the_same_writer(gateway_factory, client_for, certs_of):
    running = gateway_factory(writer_mode="thread")
    assert running.gateway.writer.pid is None
    receipt = client_for("CN-JS", target=running.address).publish(certs_of("CN-JS")[0])
    assert receipt.log_index == 0
