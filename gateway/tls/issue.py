"""Issuing the federation's TLS certificates: a CA, gateway server certificates, participant
client certificates (what ``mrx tls`` runs; tests use it to make throwaway ones).

Keys are ECDSA P-256 (every TLS stack and HSM speaks it), signatures SHA-256. Each
certificate says what it is for: the CA may only sign certificates (pathlen 0), a
server certificate only serves (EKU serverAuth, the gateway's DNS names and IPs as
SANs), a client certificate only connects (EKU clientAuth, its participant as the SAN
URI ``urn:mrx:participant:<code>``). gRPC's TLS library checks the EKU, so a client
certificate cannot serve and a server certificate cannot log in as a participant.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.tls.transport import TlsConfigError, participant_uri

CA_DAYS = 3650
LEAF_DAYS = 397  # the CA/Browser Forum's ceiling for server certificates; rotate yearly
# Issued slightly in the past: a client whose clock is a minute behind still accepts it.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organization: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def init_ca(
    *, name: str = "mrx federation TLS CA", organization: str | None = None, days: int = CA_DAYS
) -> Issued:
    """A self-signed CA that signs only end-entity certificates (pathlen 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = _name(name, organization)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _load_ca(ca: Issued) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsConfigError("the CA key is not an ECDSA key (mrx tls init-ca makes one)")
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not basic.ca:
        raise TlsConfigError(f"{cert.subject.rfc4514_string()} is not a CA certificate")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise TlsConfigError("the CA key does not belong to the CA certificate")
    return cert, key


def _leaf(
    ca: Issued,
    *,
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> Issued:
    ca_cert, ca_key = _load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_server(ca: Issued, *, hosts: Sequence[str], days: int = LEAF_DAYS) -> Issued:
    """A gateway server certificate for ``hosts`` (DNS names and IP addresses, as SANs)."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or IP address")
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return _leaf(
        ca, subject=_name(hosts[0], None), sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH, days=days
    )


def issue_client(ca: Issued, *, participant: str, days: int = LEAF_DAYS) -> Issued:
    """A client certificate naming ``participant`` (SAN URI; the CN repeats it for people)."""
    uri = participant_uri(participant)
    return _leaf(
        ca,
        subject=_name(participant, None),
        sans=[x509.UniformResourceIdentifier(uri)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
    )


def write_pair(issued: Issued, cert_path: Path, key_path: Path, *, force: bool = False) -> None:
    """Write the certificate (0644) and the private key (0600, created that way, never widened).

    Refuses to overwrite either file unless ``force``; the caller checks that the key's
    directory cannot be committed (gateway.registry.keygen's rule).
    """
    for path in (cert_path, key_path):
        if path.exists() and not force:
            raise FileExistsError(f"refusing to overwrite {path} (use --force)")
    key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    _write(key_path, issued.key_pem, 0o600)
    _write(cert_path, issued.cert_pem, 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)  # exactly this mode, whatever the umask
    os.replace(tmp, path)


def load_issued(cert_path: Path, key_path: Path) -> Issued:
    try:
        return Issued(cert_path.read_bytes(), key_path.read_bytes())
    except OSError as exc:
        raise TlsConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
