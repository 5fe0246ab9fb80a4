"""gateway.tls without a network: the identity convention, issuing, loading, plaintext rules."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.tls import (
    ClientTls,
    PeerIdentityError,
    ServerTls,
    TlsConfigError,
    certificate_participant,
    channel,
    is_loopback,
    participant_uri,
    peer_participant,
)
from gateway.tls.issue import Issued, init_ca, issue_client, issue_server, write_pair


@pytest.fixture(scope="module")
def ca() -> Issued:
    return init_ca(name="test CA")


class FakeContext:
    """What peer_participant reads: the auth context gRPC builds from the handshake."""

    def __init__(self, auth: dict[str, list[bytes]]):
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def _tls_auth(*uris: str, cert: bool = True) -> dict[str, list[bytes]]:
    auth = {"transport_security_type": [b"ssl"], "x509_common_name": [b"CN-SH"]}
    if cert:
        auth["x509_pem_cert"] = [b"-----BEGIN CERTIFICATE-----..."]
    if uris:
        auth["peer_uri"] = [u.encode() for u in uris]
    return auth


def test_peer_participant_reads_the_san_uri_and_never_the_cn() -> None:
    assert peer_participant(FakeContext(_tls_auth("urn:mrx:participant:CN-JS"))) == "CN-JS"
    other = _tls_auth("spiffe://example/ns/x", "urn:mrx:participant:YRD-SEC")
    assert peer_participant(FakeContext(other)) == "YRD-SEC"


def test_peer_participant_is_none_without_tls_or_without_a_client_certificate() -> None:
    plaintext = {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}
    assert peer_participant(FakeContext(plaintext)) is None
    assert peer_participant(FakeContext({})) is None
    assert peer_participant(FakeContext(_tls_auth(cert=False))) is None


@pytest.mark.parametrize(
    "uris",
    [
        (),  # a certificate naming no participant: its CN (CN-SH) is not read
        ("urn:mrx:participant:CN-JS", "urn:mrx:participant:CN-SH"),
        ("urn:mrx:participant:cn-js",),
        ("urn:mrx:participant:CN-JS/evil",),
    ],
)
def test_peer_participant_refuses_a_certificate_that_does_not_name_exactly_one(uris: tuple[str, ...]) -> None:
    with pytest.raises(PeerIdentityError):
        peer_participant(FakeContext(_tls_auth(*uris)))


def test_participant_uri_checks_the_code() -> None:
    assert participant_uri("CN-JS") == "urn:mrx:participant:CN-JS"
    for bad in ("cn-js", "CN JS", "", "CN-JS:x"):
        with pytest.raises(ValueError):
            participant_uri(bad)


def test_issued_certificates_say_what_they_are_for(ca: Issued) -> None:
    ca_cert = ca.cert
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0

    server = issue_server(ca, hosts=["gw.example", "10.0.0.5", "::1"]).cert
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "::1"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert certificate_participant(server) is None
    assert server.issuer == ca_cert.subject

    client = issue_client(ca, participant="CN-JS").cert
    assert certificate_participant(client) == "CN-JS"
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert not client.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert client.not_valid_after_utc <= ca_cert.not_valid_after_utc


def test_a_leaf_never_outlives_its_ca() -> None:
    short = init_ca(days=30)
    assert issue_client(short, participant="CN-SH", days=400).cert.not_valid_after_utc <= (
        short.cert.not_valid_after_utc
    )


def test_a_leaf_cannot_sign_certificates(ca: Issued) -> None:
    leaf = issue_client(ca, participant="CN-JS")
    with pytest.raises(TlsConfigError, match="not a CA"):
        issue_client(leaf, participant="CN-SH")


def test_write_pair_keeps_the_key_private_and_refuses_to_overwrite(ca: Issued, tmp_path: Path) -> None:
    issued = issue_client(ca, participant="CN-JS")
    cert, key = tmp_path / "out" / "CN-JS.crt", tmp_path / "out" / "CN-JS.key"
    write_pair(issued, cert, key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert key.read_bytes() == issued.key_pem
    with pytest.raises(FileExistsError):
        write_pair(issued, cert, key)
    write_pair(issue_client(ca, participant="CN-JS"), cert, key, force=True)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not list((tmp_path / "out").glob(".*"))


def test_server_tls_checks_its_files(ca: Issued, tmp_path: Path) -> None:
    server = issue_server(ca, hosts=["localhost"])
    other = issue_server(ca, hosts=["localhost"])
    tls = ServerTls(cert_chain=server.cert_pem, key=server.key_pem, client_ca=ca.cert_pem)
    assert tls.mutual and tls.describe() == "mutual TLS"
    assert "PRIVATE KEY" not in repr(tls)
    assert isinstance(tls.credentials(), grpc.ServerCredentials)
    assert not ServerTls(cert_chain=server.cert_pem, key=server.key_pem).mutual
    with pytest.raises(TlsConfigError, match="does not belong"):
        ServerTls(cert_chain=server.cert_pem, key=other.key_pem)
    with pytest.raises(TlsConfigError, match="no PEM certificate"):
        ServerTls(cert_chain=server.cert_pem, key=server.key_pem, client_ca=b"not a certificate")
    with pytest.raises(TlsConfigError, match="cannot read"):
        ServerTls(cert_chain=tmp_path / "missing.crt", key=server.key_pem)
    (tmp_path / "s.crt").write_bytes(server.cert_pem)
    (tmp_path / "s.key").write_bytes(server.key_pem)
    assert ServerTls(cert_chain=tmp_path / "s.crt", key=tmp_path / "s.key").cert_chain == server.cert_pem


def test_an_expired_server_certificate_is_refused_at_start() -> None:
    expired_ca = init_ca(days=0)
    server = issue_server(expired_ca, hosts=["localhost"])
    with pytest.raises(TlsConfigError, match="valid only"):
        ServerTls(cert_chain=server.cert_pem, key=server.key_pem)


def test_client_tls(ca: Issued) -> None:
    client = issue_client(ca, participant="CN-ZJ")
    tls = ClientTls(ca=ca.cert_pem, cert=client.cert_pem, key=client.key_pem)
    assert tls.participant == "CN-ZJ"
    assert b"PRIVATE KEY" not in repr(tls).encode() and "key=" not in repr(tls)
    assert ClientTls(ca=ca.cert_pem).participant is None
    with pytest.raises(TlsConfigError, match="go together"):
        ClientTls(ca=ca.cert_pem, cert=client.cert_pem)
    with pytest.raises(TlsConfigError, match="does not belong"):
        ClientTls(ca=ca.cert_pem, cert=client.cert_pem, key=issue_client(ca, participant="CN-ZJ").key_pem)
    assert ClientTls(ca=ca.cert_pem, server_name="gw.example").channel_options() == [
        ("grpc.ssl_target_name_override", "gw.example")
    ]


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:0", True),
        ("127.1.2.3:7443", True),
        ("[::1]:7443", True),
        ("localhost:7443", True),
        ("LOCALHOST:7443", True),
        ("unix:/run/mrx.sock", True),
        ("dns:///localhost:7443", True),
        ("ipv4:127.0.0.1:7443", True),
        ("0.0.0.0:7443", False),
        ("[::]:7443", False),
        (":7443", False),
        ("10.0.0.5:7443", False),
        ("gw.example:7443", False),
        ("localhost.example:7443", False),
        ("dns:///gw.example:7443", False),
        ("[::ffff:10.0.0.5]:7443", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_the_sdk_refuses_plaintext_across_a_network(ca: Issued) -> None:
    with pytest.raises(TlsConfigError, match="plaintext is for loopback only"):
        channel("gw.example:7443")
    channel("127.0.0.1:7443").close()
    channel("gw.example:7443", tls=ClientTls(ca=ca.cert_pem)).close()
    with pytest.raises(TlsConfigError, match="not both"):
        channel(
            "gw.example:7443", tls=ClientTls(ca=ca.cert_pem), credentials=grpc.local_channel_credentials()
        )
