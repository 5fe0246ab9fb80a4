"""A database outage: health NOT_SERVING, every call UNAVAILABLE, then back by itself.

Runs against a throw-away PostgreSQL the test starts (never the machine's own service),
stopped with `pg_ctl -m immediate` while a gateway is serving.
"""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.client import AuditClient
from gateway.pb import audit_pb2, exchange_pb2

Code = grpc.StatusCode
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _wait_for(health, status, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == status:
                return True
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    return False


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the gateway uses its own server
def test_an_outage_is_unavailable_everywhere_and_recovers_by_itself(
    throwaway_postgres, gateway_factory, client_for, certs_of, make_env, signers, caplog
):
    def audit_client_for(code, address):
        return AuditClient(address, principal=code, signer=signers[code])

    running = gateway_factory(throwaway_postgres.url, health_interval=0.2)
    js = client_for("CN-JS", target=running.address)
    first, second = certs_of("CN-JS", 2)
    js.publish(first)
    channel = grpc.insecure_channel(running.address)
    health = health_pb2_grpc.HealthStub(channel)
    assert _wait_for(health, SERVING)

    caplog.set_level(logging.INFO)
    throwaway_postgres.stop()
    try:
        assert _wait_for(health, NOT_SERVING), "health must say NOT_SERVING while the database is down"
        calls = {
            "Submit": lambda: js.exchange.Submit(
                exchange_pb2.SubmitRequest(envelope=make_env(second)), timeout=20
            ),
            "GetCertificate": lambda: js.get_certificate(first.scheme, first.certificate_number),
            "QueryCertificates": lambda: list(js.query_certificates()),
            "GetRecord": lambda: js.get_record(
                f"certificate_status/{first.scheme.name}/{first.certificate_number}"
            ),
            "GetCheckpoint": lambda: audit_client_for("YRD-SEC", running.address).checkpoint(),
            "ListExchanges": lambda: list(
                audit_client_for("YRD-SEC", running.address).exchanges(audit_pb2.ListExchangesRequest())
            ),
        }
        for name, call in calls.items():
            for _ in range(5):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == Code.UNAVAILABLE, (name, info.value.code(), info.value.details())
    finally:
        throwaway_postgres.start()
    assert _wait_for(health, SERVING), "health must come back by itself"
    receipt = js.publish(second)
    assert receipt.record_version == 1
    assert js.get_certificate(second.scheme, second.certificate_number).certificate.version == 1
    channel.close()
    # One line per burst, not a traceback per request.
    fault_lines = [r for r in caplog.records if r.name == "gateway.faults"]
    assert 1 <= len(fault_lines) <= 6, [r.getMessage() for r in fault_lines]
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)
