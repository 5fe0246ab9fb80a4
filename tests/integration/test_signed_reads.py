"""Every read is signed by its reader: over the exact bytes sent, once, within 60 s.

And what each principal may read: certificates and results every participant, assessor
records (personal data) only the issuer, its secretariat, the gateway and members whose
agreement covers assessors.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.crypto.reads import MD_NONCE, sign_read
from gateway.demo_fixtures import demo_assessors
from gateway.pb import exchange_pb2
from gateway.services.auth import ReadLimits

Code = grpc.StatusCode
SERVICE = "/mrx.v1.ExchangeService/"


def sh_query_metadata(signers, clock, request):
    """CN-SH's signature metadata for one QueryCertificates call with ``request``."""
    return sign_read(
        signer=signers["CN-SH"],
        principal="CN-SH",
        method=SERVICE + "QueryCertificates",
        request=request,
        now=clock.now,
    )


def raw_call(address: str, method: str, body: bytes, metadata=()):
    """A call with the exact request bytes given (no protobuf library in between)."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)
        return call(body, metadata=list(metadata), timeout=30)


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("GetCertificate", exchange_pb2.GetCertificateRequest(scheme=1, certificate_number="1")),
        ("QueryCertificates", exchange_pb2.QueryCertificatesRequest()),
        ("GetRecord", exchange_pb2.GetRecordRequest(record_key="assessor/CN-SN/X")),
    ],
)
def test_every_read_needs_a_signature(method, request_, gateway, client_for, rpc_refusal):
    reader = client_for("CN-SH")
    refusal = rpc_refusal(
        lambda: getattr(reader.exchange, method)(request_, timeout=30),
        Code.UNAUTHENTICATED,
        "MISSING_CREDENTIALS",
    )
    assert MD_NONCE in refusal.message


def test_a_signed_read_cannot_be_replayed(gateway, client_for, signers, clock, rpc_refusal):
    reader = client_for("CN-SH")
    request = exchange_pb2.QueryCertificatesRequest()
    md = sh_query_metadata(signers, clock, request)
    reader.exchange.QueryCertificates(request, metadata=md, timeout=30)
    rpc_refusal(
        lambda: reader.exchange.QueryCertificates(request, metadata=md, timeout=30),
        Code.UNAUTHENTICATED,
        "REPLAYED_REQUEST",
    )


def test_the_signature_covers_the_bytes_sent_not_a_re_encoding(gateway, signers, clock, rpc_refusal):
    canonical = exchange_pb2.QueryCertificatesRequest(page_size=7).SerializeToString()
    # What protobufjs writes: the same message with a default-valued field (state = 0)
    # written out. A gateway re-encoding the parsed message would hash other bytes.
    explicit = canonical + b"\x18\x00"
    assert exchange_pb2.QueryCertificatesRequest.FromString(explicit).SerializeToString() == canonical
    md = sh_query_metadata(signers, clock, explicit)
    response = exchange_pb2.QueryCertificatesResponse.FromString(
        raw_call(gateway.address, "QueryCertificates", explicit, md)
    )
    assert response.next_page_token == ""
    md2 = sh_query_metadata(signers, clock, explicit)
    rpc_refusal(
        lambda: raw_call(gateway.address, "QueryCertificates", canonical, md2),
        Code.UNAUTHENTICATED,
        "BAD_SIGNATURE",
    )


def test_an_undecodable_body_is_an_invalid_argument(gateway, rpc_refusal):
    for method in ("GetCertificate", "Submit", "SubmitBatch"):
        rpc_refusal(
            lambda method=method: raw_call(gateway.address, method, b"\xff\xff\xff"),
            Code.INVALID_ARGUMENT,
            "MALFORMED_REQUEST",
            ("request",),
        )


def test_reads_are_rate_limited_per_principal_with_a_retry_hint(gateway_factory, client_for, rpc_refusal):
    limited = gateway_factory(read_limits=ReadLimits(rate=0.5, burst=3))
    sh = client_for("CN-SH", target=limited.address)
    js = client_for("CN-JS", target=limited.address)
    for _ in range(3):
        list(sh.query_certificates())
    with pytest.raises(grpc.RpcError) as info:
        list(sh.query_certificates())
    assert info.value.code() == Code.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(info.value)
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(retry) == 1
    hint = error_details_pb2.RetryInfo()
    retry[0].Unpack(hint)
    assert 0 < hint.retry_delay.ToTimedelta().total_seconds() <= 2
    list(js.query_certificates())  # another principal is not affected


def test_assessor_records_are_personal_data(gateway, client_for, clock, rpc_refusal):
    assessor = demo_assessors("CN-SN", count=1, today=clock.today())[0]
    receipt = client_for("CN-SN").publish(assessor)
    key = receipt.record_key
    # The issuer, and members of an agreement covering assessors (SN-BJ-HE-2026-ASSESSORS).
    for code in ("CN-SN", "CN-HE", "CN-BJ"):
        assert client_for(code).get_record(key).version == 1
    # Fujian has no such agreement with Shaanxi; a Yangtze secretariat does not cover it.
    for code in ("CN-FJ", "YRD-SEC"):
        refusal = rpc_refusal(
            lambda code=code: client_for(code).get_record(key), Code.PERMISSION_DENIED, "PERSONAL_DATA"
        )
        assert refusal.metadata["issuer"] == "CN-SN"
    # Refused before the lookup: a record that does not exist answers the same.
    rpc_refusal(
        lambda: client_for("CN-FJ").get_record("assessor/CN-SN/NO-SUCH-ONE"),
        Code.PERMISSION_DENIED,
        "PERSONAL_DATA",
    )


def test_refusals_do_not_echo_unbounded_input(gateway, client_for, signers, clock):
    request = exchange_pb2.QueryCertificatesRequest()
    md = sh_query_metadata(signers, clock, request)
    md = [(k, "K" * 5_000 if k == "x-mrx-keyid" else v) for k, v in md]
    with pytest.raises(grpc.RpcError) as info:
        client_for("CN-SH").exchange.QueryCertificates(request, metadata=md, timeout=30)
    assert info.value.code() == Code.UNAUTHENTICATED
    trailer = sum(len(v) for _, v in info.value.trailing_metadata() or ())
    assert len(info.value.details()) <= 512
    assert trailer < 2_000
