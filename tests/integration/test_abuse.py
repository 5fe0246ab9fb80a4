"""Availability under abuse: abandoned and idle streams cannot take the gateway away.

100 anonymous callers open a SubmitStream and abandon it, 50 more hold one open and send
nothing, while a well-behaved province keeps submitting (unary, batch, its own stream)
and reading, and health keeps answering. Bounded in count and time.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.ledger.front import StreamLimits
from gateway.pb import exchange_pb2, exchange_pb2_grpc

Code = grpc.StatusCode
LIMITS = StreamLimits(max_streams=48, max_anonymous=24, max_per_sender=4, first_message_timeout=1.5)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_abandoned_and_idle_streams_do_not_starve_a_province(gateway_factory, client_for, certs_of, make_env):
    running = gateway_factory(stream_limits=LIMITS)
    address = running.address
    refused: list[Code] = []

    def abandon(n: int) -> None:
        for _ in range(n):
            with grpc.insecure_channel(address) as channel:
                call = exchange_pb2_grpc.ExchangeServiceStub(channel).SubmitStream(iter(()), timeout=10)
                call.cancel()

    idle_calls = []

    def hold_idle() -> None:
        channel = grpc.insecure_channel(address)
        never = threading.Event()

        def nothing():
            never.wait(20)
            return
            yield

        call = exchange_pb2_grpc.ExchangeServiceStub(channel).SubmitStream(nothing(), timeout=20)
        idle_calls.append((channel, call, never))
        try:
            for _ in call:
                pass
        except grpc.RpcError as err:
            refused.append(err.code())

    attackers = [threading.Thread(target=abandon, args=(10,)) for _ in range(10)]
    idlers = [threading.Thread(target=hold_idle) for _ in range(50)]
    for t in attackers + idlers:
        t.start()

    js = client_for("CN-JS")
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    certs = certs_of("CN-JS", 60)
    done = 0
    deadline = time.monotonic() + 20
    for i in range(0, 60, 6):
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        part = certs[i : i + 6]
        js.submit(make_env(part[0]))
        assert all(o.receipt for o in js.submit_batch([make_env(c) for c in part[1:3]]))
        assert all(o.receipt for o in js.submit_many([make_env(c) for c in part[3:]]))
        assert js.get_certificate(part[0].scheme, part[0].certificate_number).certificate.version == 1
        done += 6
        assert time.monotonic() < deadline
    assert done == 60

    for t in attackers:
        t.join(30)
    for t in idlers:  # each ends when the gateway ends (or refuses) its stream
        t.join(30)
    for _, _, never in idle_calls:
        never.set()
    # Idle streams were ended by the gateway (or never admitted beyond the anonymous pool).
    assert len(refused) == 50
    assert set(refused) == {Code.RESOURCE_EXHAUSTED}
    # Nothing leaked: every slot is free again.
    deadline = time.monotonic() + 5
    while running.gateway.submitter.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.gateway.submitter.open_streams == 0
    for channel, _, _ in idle_calls:
        channel.close()


def test_a_sender_has_a_limited_number_of_streams(gateway_factory, client_for, certs_of, make_env):
    running = gateway_factory(stream_limits=StreamLimits(max_per_sender=1, first_message_timeout=5))
    stub = exchange_pb2_grpc.ExchangeServiceStub(grpc.insecure_channel(running.address))
    a, b = certs_of("CN-JS", 2)
    release = threading.Event()

    def slow():
        yield exchange_pb2.SubmitRequest(envelope=make_env(a))
        release.wait(10)

    first = stub.SubmitStream(slow(), timeout=20)
    assert next(first).HasField("receipt")
    with pytest.raises(grpc.RpcError) as info:
        list(stub.SubmitStream(iter([exchange_pb2.SubmitRequest(envelope=make_env(b))]), timeout=20))
    assert info.value.code() == Code.RESOURCE_EXHAUSTED
    assert "CN-JS" in info.value.details()
    release.set()
    assert list(first) == []
