"""Signed checkpoints of the exchange log: (origin, tree size, root hash, time).

The wire form only: what a checkpoint is and how the gateway signs it. Making them (the
job that signs one every few seconds while the log grows) is the server's
(gateway/ledger/checkpointer.py); auditors' tools import this module and nothing of the
server.
"""

from __future__ import annotations

from datetime import datetime

from gateway.crypto.dsse import sign_envelope
from gateway.crypto.suites import PrivateKey
from gateway.pb import audit_pb2, envelope_pb2

CHECKPOINT_PAYLOAD_TYPE = "application/vnd.mrx.checkpoint.v1+protobuf"


def sign_checkpoint(
    *, origin: str, tree_size: int, root_hash: bytes, at: datetime, key: PrivateKey
) -> envelope_pb2.Envelope:
    body = audit_pb2.Checkpoint(origin=origin, tree_size=tree_size, root_hash=root_hash)
    body.timestamp.FromDatetime(at)
    return sign_envelope(
        payload_type=CHECKPOINT_PAYLOAD_TYPE, payload=body.SerializeToString(deterministic=True), signer=key
    )
