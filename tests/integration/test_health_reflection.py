"""Standard gRPC health checking and server reflection on a running gateway."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SERVICES = (
    "mrx.v1.ExchangeService",
    "mrx.v1.RegistryService",
    "mrx.v1.AuditService",
    "mrx.v1.RecognitionService",
)


@pytest.fixture
def database_url(tmp_path):
    # Health and reflection do not touch the store: one backend is enough.
    return f"sqlite:///{tmp_path / 'mrx.db'}"


@pytest.fixture
def channel(gateway):
    with grpc.insecure_channel(gateway.address) as ch:
        yield ch


@pytest.mark.parametrize("service", ["", *SERVICES])
def test_health_check_serving(service, channel):
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="mrx.v1.NoSuchService"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _reflect(channel, request):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return response


def test_reflection_lists_the_services(channel):
    response = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    assert set(SERVICES) <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_reflection_describes_the_exchange_service(channel):
    response = _reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="mrx.v1.ExchangeService")
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    exchange = next(f for f in files if f.name == "mrx/v1/exchange.proto")
    (service,) = exchange.service
    assert {m.name for m in service.method} == {
        "Submit",
        "SubmitBatch",
        "SubmitStream",
        "GetCertificate",
        "QueryCertificates",
        "GetRecord",
        "Subscribe",
    }
    stream = next(m for m in service.method if m.name == "SubmitStream")
    assert stream.client_streaming and stream.server_streaming
    feed = next(m for m in service.method if m.name == "Subscribe")
    assert feed.server_streaming and not feed.client_streaming
