"""Mutual TLS for the gateway's port: credentials, the participant of a client certificate,
and issuing certificates (docs/operations.md, "Mutual TLS").

The integration point for servicers is ``peer_participant(context)``: the participant
code named by the caller's verified client certificate, None without one.
"""

from gateway.tls.transport import (
    PARTICIPANT_URI_PREFIX,
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

__all__ = [
    "PARTICIPANT_URI_PREFIX",
    "ClientTls",
    "PeerIdentityError",
    "ServerTls",
    "TlsConfigError",
    "certificate_participant",
    "channel",
    "is_loopback",
    "participant_uri",
    "peer_participant",
]
