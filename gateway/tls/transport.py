"""TLS for the gateway's port, shared by the server and the SDK.

Imports only grpc, cryptography and the standard library, so the SDK (gateway/client.py,
gateway/audit/*) may use it without pulling in anything of the server.

Who is on the other end of a connection
---------------------------------------
A participant's client certificate names it in a subjectAltName URI::

    urn:mrx:participant:CN-JS

(``PARTICIPANT_URI_PREFIX`` + the participant code of the federation file). The subject
CN carries the same code for people reading ``openssl x509 -subject``, but it is never
read as an identity: the CN is deprecated as one (RFC 9525, which replaced RFC 6125, no
longer accepts it), it is free text with no type, while a URI SAN is typed and exact, is
what SPIFFE identities use, and gRPC exposes it directly (auth context ``peer_uri``).
``peer_participant`` is the one place that turns a connection into a participant code.

Plaintext
---------
Without TLS the gateway listens only on loopback (127.0.0.0/8, ::1, ``localhost``) or
a unix socket, and the SDK connects in plaintext only to such a target: a signed
envelope is safe against tampering, but not against being read, and the reads of the
audit log are confidential to the alliance.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

PARTICIPANT_URI_PREFIX = "urn:mrx:participant:"
# The federation file's participant code (gateway/registry/federation.py PARTICIPANT_CODE).
_CODE = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$")
_MAX_CODE = 64

# Keys of a gRPC auth context (grpc core's GRPC_* property names).
AUTH_TRANSPORT = "transport_security_type"
AUTH_PEM_CERT = "x509_pem_cert"
AUTH_PEER_URI = "peer_uri"


class TlsConfigError(ValueError):
    """A certificate, key or CA file is unusable; the message names the file and why."""


class PeerIdentityError(Exception):
    """A verified client certificate that does not name exactly one participant."""


def participant_uri(code: str) -> str:
    """The subjectAltName URI naming participant ``code`` in a client certificate."""
    if not _CODE.match(code) or len(code) > _MAX_CODE:
        raise ValueError(f"{code!r} is not a participant code (e.g. CN-JS, YRD-SEC)")
    return PARTICIPANT_URI_PREFIX + code


def participants_named(uris: Sequence[str]) -> list[str]:
    """The participant codes among subjectAltName URIs (malformed ones raise)."""
    codes = []
    for uri in uris:
        if not uri.startswith(PARTICIPANT_URI_PREFIX):
            continue
        code = uri[len(PARTICIPANT_URI_PREFIX) :]
        if not _CODE.match(code) or len(code) > _MAX_CODE:
            raise PeerIdentityError(f"client certificate names a malformed participant URI {uri!r}")
        codes.append(code)
    return codes


def certificate_participant(cert: x509.Certificate) -> str | None:
    """The participant a certificate names, None if it names none; two or more raise."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    codes = participants_named(san.get_values_for_type(x509.UniformResourceIdentifier))
    if len(codes) > 1:
        raise PeerIdentityError(f"certificate names {len(codes)} participants ({', '.join(codes)}); one only")
    return codes[0] if codes else None


class _HasAuthContext(Protocol):
    def auth_context(self) -> Mapping[str, Sequence[bytes]]: ...


def peer_participant(context: _HasAuthContext | Any) -> str | None:
    """The participant code of the client certificate on this call, or None.

    ``context`` is the servicer context of a call (``grpc.aio.ServicerContext`` or
    ``grpc.ServicerContext``; only its ``auth_context()`` is used, which is synchronous
    in both). Exactly:

    - None when the call did not come over TLS, or came over TLS without a client
      certificate (a server started without a client CA never asks for one);
    - the code ``CN-JS`` when the client certificate carries the subjectAltName URI
      ``urn:mrx:participant:CN-JS`` and no other ``urn:mrx:participant:`` URI;
    - ``PeerIdentityError`` when a client certificate is present but names no
      participant, names two or more, or names a malformed code. The subject CN is
      never consulted.

    The certificate is trustworthy only because the server required and verified it
    (``ServerTls`` with a ``client_ca`` always does: gRPC's "request but do not verify"
    mode is never used). The caller compares the result with the envelope's sender or
    the signed reader and refuses a mismatch; whether None is acceptable (plaintext on
    loopback, server-only TLS) is the caller's policy.
    """
    auth: Mapping[str, Sequence[bytes]] = context.auth_context() or {}
    if [v.decode("ascii", "replace") for v in auth.get(AUTH_TRANSPORT, ())] != ["ssl"]:
        return None
    if not auth.get(AUTH_PEM_CERT):
        return None
    uris = [v.decode("utf-8", "replace") for v in auth.get(AUTH_PEER_URI, ())]
    codes = participants_named(uris)
    if not codes:
        raise PeerIdentityError(
            "the client certificate names no participant "
            f"(no subjectAltName URI {PARTICIPANT_URI_PREFIX}<code>)"
        )
    if len(codes) > 1:
        raise PeerIdentityError(
            f"the client certificate names {len(codes)} participants ({', '.join(codes)}); it must name one"
        )
    return codes[0]


# --- PEM files --------------------------------------------------------------------------


def _read(source: bytes | Path, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the {what} {source}: {exc.strerror or exc}") from None


def _certificates(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsConfigError(f"the {what} holds no PEM certificate") from None
    return certs


def _private_key(data: bytes, what: str) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsConfigError(f"the {what} is not an unencrypted PEM private key ({exc})") from None
    return key  # type: ignore[return-value]


def _check_pair(chain: bytes, key: bytes, what: str, at: datetime) -> x509.Certificate:
    leaf = _certificates(chain, f"{what} certificate")[0]
    private = _private_key(key, f"{what} key")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(serialization.Encoding.DER, spki) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise TlsConfigError(
            f"the {what} key does not belong to the {what} certificate ({leaf.subject.rfc4514_string()})"
        )
    if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
        raise TlsConfigError(
            f"the {what} certificate ({leaf.subject.rfc4514_string()}) is valid only from "
            f"{leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    return leaf


@dataclass(frozen=True)
class ServerTls:
    """The gateway's TLS: its certificate chain and key, and the CA of client certificates.

    With ``client_ca`` every client must present a certificate issued by it (verified
    during the handshake: without one, or with one from another CA, the connection
    fails before any call); ``peer_participant`` then names the caller. Without it the
    server is TLS-only and callers are known by their signatures alone.
    Each of ``cert_chain``, ``key`` and ``client_ca`` is PEM bytes or a path to a PEM file.
    """

    cert_chain: bytes | Path
    key: bytes | Path = field(repr=False)  # never in a log line or a traceback
    client_ca: bytes | Path | None = None
    leaf: x509.Certificate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chain = _read(self.cert_chain, "server certificate")
        key = _read(self.key, "server key")
        client_ca = _read(self.client_ca, "client CA") if self.client_ca is not None else None
        leaf = _check_pair(chain, key, "server", datetime.now(UTC))
        if client_ca is not None:
            _certificates(client_ca, "client CA")
        object.__setattr__(self, "cert_chain", chain)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "client_ca", client_ca)
        object.__setattr__(self, "leaf", leaf)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        assert isinstance(self.cert_chain, bytes) and isinstance(self.key, bytes)
        assert self.client_ca is None or isinstance(self.client_ca, bytes)
        return grpc.ssl_server_credentials(
            [(self.key, self.cert_chain)],
            root_certificates=self.client_ca,
            # Only ever "require and verify": gRPC's False with a CA means "request but
            # do not verify", which would let peer_participant read an unchecked name.
            require_client_auth=self.client_ca is not None,
        )

    def describe(self) -> str:
        return "mutual TLS" if self.mutual else "TLS (no client certificates)"


@dataclass(frozen=True)
class ClientTls:
    """How the SDK connects over TLS: the CA it trusts and its participant certificate.

    ``ca``: the CA that issued the gateway's certificate (None: the system's roots).
    ``cert`` and ``key``: this participant's client certificate (chain) and key, both
    or neither; a gateway with a client CA refuses a connection without them.
    ``server_name``: the name to check the gateway's certificate against when it is not
    the host of the target (e.g. connecting by IP to a certificate for a DNS name).
    Each PEM is bytes or a path.
    """

    ca: bytes | Path | None = None
    cert: bytes | Path | None = None
    key: bytes | Path | None = field(default=None, repr=False)  # never in a log line or a traceback
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TlsConfigError("a client certificate and its key go together")
        ca = _read(self.ca, "CA certificate") if self.ca is not None else None
        if ca is not None:
            _certificates(ca, "CA certificate")
        cert = _read(self.cert, "client certificate") if self.cert is not None else None
        key = _read(self.key, "client key") if self.key is not None else None
        if cert is not None and key is not None:
            _check_pair(cert, key, "client", datetime.now(UTC))
        object.__setattr__(self, "ca", ca)
        object.__setattr__(self, "cert", cert)
        object.__setattr__(self, "key", key)

    @property
    def participant(self) -> str | None:
        """The participant the client certificate names (None without one)."""
        if not isinstance(self.cert, bytes):
            return None
        return certificate_participant(_certificates(self.cert, "client certificate")[0])

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,  # type: ignore[arg-type]
            private_key=self.key,  # type: ignore[arg-type]
            certificate_chain=self.cert,  # type: ignore[arg-type]
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


# --- plaintext only on loopback ---------------------------------------------------------


def _host(address: str) -> str | None:
    """The host of a ``host:port`` / ``[v6]:port`` / gRPC target; None for a unix socket."""
    if address.startswith(("unix:", "unix-abstract:")):
        return None
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:", "passthrough:///"):
        if address.startswith(scheme):
            address = address[len(scheme) :].split(",", 1)[0]
            break
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") > 1:  # a bare IPv6 address without a port
        return address
    return address.rsplit(":", 1)[0] if ":" in address else address


def is_loopback(address: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1, localhost, unix:."""
    host = _host(address)
    if host is None:
        return True
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


# What an operator passes to serve beyond this machine (the server's ConfigError and warning).
PLAINTEXT_FLAGS = (
    "pass --tls-cert and --tls-key, and --tls-client-ca to require participant certificates "
    "(tls=ServerTls(...) in Python; docs/operations.md, 'Mutual TLS')"
)


def channel(
    target: str,
    *,
    tls: ClientTls | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to the gateway: TLS with ``tls`` (or ready-made ``credentials``), else plaintext.

    Plaintext only to a loopback or unix-socket target: anything else raises
    TlsConfigError, because the server would refuse it anyway and a plaintext channel
    across a network exposes what is read.
    """
    if tls is not None and credentials is not None:
        raise TlsConfigError("pass tls or credentials, not both")
    if tls is not None:
        return grpc.secure_channel(target, tls.credentials(), [*options, *tls.channel_options()])
    if credentials is not None:
        return grpc.secure_channel(target, credentials, list(options))
    if not is_loopback(target):
        raise TlsConfigError(
            f"refusing a plaintext connection to {target}: plaintext is for loopback only; pass "
            "tls=ClientTls(ca=..., cert=..., key=...) (mrx: --tls-ca, --tls-cert, --tls-key)"
        )
    return grpc.insecure_channel(target, list(options))
