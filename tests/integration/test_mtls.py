"""Mutual TLS on a real port: the gateway, the SDK and peer_participant over real handshakes.

Every certificate here is made by the test (gateway.tls.issue) and lives in memory: no
private key is ever committed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.client import AuditClient, GatewayClient
from gateway.pb import exchange_pb2, registry_pb2
from gateway.server import ConfigError, _server_tls, start_gateway
from gateway.tls import ClientTls, PeerIdentityError, ServerTls, peer_participant
from gateway.tls.issue import Issued, _leaf, init_ca, issue_client, issue_server


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the transport does not depend on the database backend."""
    return f"sqlite:///{tmp_path / 'mrx.db'}"


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    ca = init_ca(name="mrx test CA")
    stranger = init_ca(name="some other CA")
    return {
        "ca": ca,
        "server": issue_server(ca, hosts=["localhost", "127.0.0.1"]),
        "CN-JS": issue_client(ca, participant="CN-JS"),
        "YRD-SEC": issue_client(ca, participant="YRD-SEC"),
        "CN-SH": issue_client(ca, participant="CN-SH"),
        "stranger": stranger,
        "CN-JS@stranger": issue_client(stranger, participant="CN-JS"),
        "anonymous": _leaf(
            ca,
            subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "CN-JS")]),
            sans=[x509.DNSName("monitor.example")],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            days=1,
        ),
    }


@pytest.fixture
def mutual(pki: dict[str, Issued]) -> ServerTls:
    return ServerTls(
        cert_chain=pki["server"].cert_pem, key=pki["server"].key_pem, client_ca=pki["ca"].cert_pem
    )


def client_tls(pki: dict[str, Issued], who: str | None, ca: str = "ca") -> ClientTls:
    if who is None:
        return ClientTls(ca=pki[ca].cert_pem)
    return ClientTls(ca=pki[ca].cert_pem, cert=pki[who].cert_pem, key=pki[who].key_pem)


def list_participants(client: GatewayClient) -> list[str]:
    reply = client.registry.ListParticipants(registry_pb2.ListParticipantsRequest(), timeout=10)
    return [p.code for p in reply.participants]


# --- the gateway over mutual TLS -------------------------------------------------------------


def test_a_participant_certificate_opens_the_gateway(
    gateway_factory: Callable[..., Any],
    mutual: ServerTls,
    pki: dict[str, Issued],
    signers: dict[str, Any],
    certs_of: Callable[..., Any],
    make_env: Callable[..., Any],
) -> None:
    gateway = gateway_factory(tls=mutual)
    tls = client_tls(pki, "CN-JS")
    with GatewayClient(gateway.address, sender="CN-JS", signer=signers["CN-JS"], tls=tls) as js:
        assert "CN-JS" in list_participants(js)
        receipt = js.submit(make_env(certs_of("CN-JS")[0]))
    assert receipt.log_index == 0

    gateway.gateway.checkpointer.checkpoint_now()
    with AuditClient(
        gateway.address, principal="YRD-SEC", signer=signers["YRD-SEC"], tls=client_tls(pki, "YRD-SEC")
    ) as auditor:
        assert auditor.checkpoint().payload_type


def test_the_certificate_must_be_the_senders_and_the_readers(
    gateway_factory: Callable[..., Any],
    mutual: ServerTls,
    pki: dict[str, Issued],
    signers: dict[str, Any],
    certs_of: Callable[..., Any],
    make_env: Callable[..., Any],
    rpc_refusal: Callable[..., Any],
) -> None:
    gateway = gateway_factory(tls=mutual)
    # Over CN-JS's certificate, a valid CN-SH envelope and a CN-SH-signed read are refused.
    with GatewayClient(
        gateway.address, sender="CN-SH", signer=signers["CN-SH"], tls=client_tls(pki, "CN-JS")
    ) as sh:
        env = make_env(certs_of("CN-SH")[0])
        refusal = rpc_refusal(
            lambda: sh.exchange.Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=10),
            grpc.StatusCode.PERMISSION_DENIED,
            "CERTIFICATE_MISMATCH",
        )
        assert (refusal.metadata["certificate"], refusal.metadata["sender"]) == ("CN-JS", "CN-SH")
        outcomes = sh.submit_batch([env])
        assert outcomes[0].refusal is not None and outcomes[0].refusal.reason == "CERTIFICATE_MISMATCH"
        rpc_refusal(
            lambda: list(sh.query_certificates()), grpc.StatusCode.PERMISSION_DENIED, "CERTIFICATE_MISMATCH"
        )
    assert gateway.store.exchange_count() == 0
    # Over its own certificate, the same envelope is accepted.
    with GatewayClient(
        gateway.address, sender="CN-SH", signer=signers["CN-SH"], tls=client_tls(pki, "CN-SH")
    ) as sh:
        assert sh.submit(env).log_index == 0
        assert list(sh.query_certificates())


@pytest.mark.parametrize(
    ("who", "ca"),
    [
        pytest.param(None, "ca", id="no-client-certificate"),
        pytest.param("CN-JS@stranger", "ca", id="certificate-from-another-CA"),
        # A server certificate (EKU serverAuth) cannot log in as a client.
        pytest.param("server", "ca", id="server-certificate-as-client"),
    ],
)
def test_the_handshake_refuses_a_client_without_a_participant_certificate_of_the_ca(
    gateway_factory: Callable[..., Any], mutual: ServerTls, pki: dict[str, Issued], who: str | None, ca: str
) -> None:
    gateway = gateway_factory(tls=mutual)
    with (
        GatewayClient(gateway.address, tls=client_tls(pki, who, ca), timeout=5) as client,
        pytest.raises(grpc.RpcError) as info,
    ):
        list_participants(client)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_client_refuses_a_gateway_certificate_from_another_ca(
    gateway_factory: Callable[..., Any], mutual: ServerTls, pki: dict[str, Issued]
) -> None:
    gateway = gateway_factory(tls=mutual)
    stranger_trust = ClientTls(
        ca=pki["stranger"].cert_pem, cert=pki["CN-JS"].cert_pem, key=pki["CN-JS"].key_pem
    )
    with (
        GatewayClient(gateway.address, tls=stranger_trust, timeout=5) as client,
        pytest.raises(grpc.RpcError) as info,
    ):
        list_participants(client)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_plaintext_is_refused_by_a_tls_gateway(
    gateway_factory: Callable[..., Any], mutual: ServerTls
) -> None:
    gateway = gateway_factory(tls=mutual)
    with GatewayClient(gateway.address, timeout=5) as client, pytest.raises(grpc.RpcError) as info:
        list_participants(client)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_the_older_certificate_and_key_pair_serves_tls_without_client_certificates(
    gateway_factory: Callable[..., Any], pki: dict[str, Issued]
) -> None:
    gateway = gateway_factory(tls=(pki["server"].cert_pem, pki["server"].key_pem))
    with GatewayClient(gateway.address, tls=client_tls(pki, None)) as client:
        assert "CN-JS" in list_participants(client)


# --- plaintext only on loopback ----------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "gateway.example:7443"])
def test_plaintext_on_a_network_address_is_refused_before_anything_starts(
    address: str,
    federation: Any,
    signers: dict[str, Any],
    open_store: Callable[[str], Any],
    tmp_path: Path,
) -> None:
    engines = open_store(f"sqlite:///{tmp_path / 'mrx.db'}")
    with pytest.raises(ConfigError, match=r"--tls-cert and --tls-key.*--tls-client-ca") as info:
        start_gateway(
            federation=federation,
            engines=engines,
            gateway_key=signers[federation.gateway_code],
            address=address,
            writer_mode="thread",
        )
    assert "refusing to serve plaintext" in str(info.value)


def test_a_server_certificate_near_its_end_is_reported_at_start(
    pki: dict[str, Issued], caplog: pytest.LogCaptureFixture
) -> None:
    soon = issue_server(pki["ca"], hosts=["127.0.0.1"], days=10)
    with caplog.at_level("WARNING", logger="gateway.server"):
        assert _server_tls("127.0.0.1:0", ServerTls(cert_chain=soon.cert_pem, key=soon.key_pem)) is not None
    assert any("server certificate expires" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="gateway.server"):
        _server_tls("0.0.0.0:7443", ServerTls(cert_chain=pki["server"].cert_pem, key=pki["server"].key_pem))
    assert [r.getMessage() for r in caplog.records if "expires" in r.getMessage()] == []


def test_plaintext_on_loopback_is_served_with_a_warning(
    gateway_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="gateway.server"):
        gateway = gateway_factory()
    assert any("PLAINTEXT" in r.getMessage() for r in caplog.records)
    with GatewayClient(gateway.address) as client:
        assert list_participants(client)


# --- peer_participant inside a real call ------------------------------------------------------


class _Recorder(health_pb2_grpc.HealthServicer):
    """A servicer that answers Check and keeps what peer_participant said about the caller."""

    def __init__(self) -> None:
        self.seen: list[str | Exception | None] = []

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            self.seen.append(peer_participant(context))
        except PeerIdentityError as exc:
            self.seen.append(exc)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def aio_server() -> Iterator[Callable[[ServerTls | None], tuple[str, _Recorder]]]:
    """``aio_server(tls)``: a grpc.aio server on 127.0.0.1:0 (its own loop thread) and its recorder."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[grpc.aio.Server] = []

    def _start(tls: ServerTls | None) -> tuple[str, _Recorder]:
        recorder = _Recorder()

        async def build() -> int:
            server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(recorder, server)
            if tls is None:
                port = server.add_insecure_port("127.0.0.1:0")
            else:
                port = server.add_secure_port("127.0.0.1:0", tls.credentials())
            await server.start()
            servers.append(server)
            return port

        port = asyncio.run_coroutine_threadsafe(build(), loop).result(10)
        return f"127.0.0.1:{port}", recorder

    yield _start
    for server in servers:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _check(address: str, tls: ClientTls | None) -> None:
    channel = (
        grpc.secure_channel(address, tls.credentials()) if tls is not None else grpc.insecure_channel(address)
    )
    with channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


def test_peer_participant_names_the_certificates_participant_in_a_real_call(
    aio_server: Callable[..., tuple[str, _Recorder]], mutual: ServerTls, pki: dict[str, Issued]
) -> None:
    address, recorder = aio_server(mutual)
    _check(address, client_tls(pki, "CN-JS"))
    _check(address, client_tls(pki, "YRD-SEC"))
    _check(address, client_tls(pki, "anonymous"))
    assert recorder.seen[:2] == ["CN-JS", "YRD-SEC"]
    assert isinstance(recorder.seen[2], PeerIdentityError)  # CN=CN-JS, but no participant URI


def test_peer_participant_is_none_without_a_client_certificate(
    aio_server: Callable[..., tuple[str, _Recorder]], pki: dict[str, Issued]
) -> None:
    server_only = ServerTls(cert_chain=pki["server"].cert_pem, key=pki["server"].key_pem)
    tls_address, tls_recorder = aio_server(server_only)
    # The client has a certificate, but a server without a client CA never asks for it.
    _check(tls_address, client_tls(pki, "CN-JS"))
    plain_address, plain_recorder = aio_server(None)
    _check(plain_address, None)
    assert tls_recorder.seen == [None]
    assert plain_recorder.seen == [None]
