"""The digests both sides compute (docs/reconciliation.md is the specification).

- content digest: SHA-256 of the record message (the Submission's oneof: a
  CertificateStatus, AssessorRecord, ...) serialized deterministically, with the fields
  the gateway sets cleared (PtResult.classification);
- record digest ("leaf"): SHA-256(record_key UTF-8 || 0x00 || version as 8 bytes
  big-endian || state as 4 bytes big-endian, two's complement || content digest);
- key hash: the first 4 bytes of SHA-256(record_key UTF-8), big-endian; a record's
  bucket at depth ``bits`` is the top ``bits`` bits of it;
- bucket digest: the first 16 bytes of the XOR of its records' digests, with the count.

XOR makes a bucket's digest independent of order, so neither side sorts, and the
digests of deeper buckets come from the same per-record values. It is linear, so a
party could construct collisions on purpose; here each side summarises its own data
for itself, and the counts are compared too.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import Message

from gateway.convert import record_to_proto
from gateway.domain.records import Record
from gateway.pb import records_pb2

# Fields of record messages that the gateway sets and a submitter does not.
GATEWAY_SET_FIELDS: dict[type[Message], tuple[str, ...]] = {records_pb2.PtResult: ("classification",)}

MAX_BITS = 32
# A run's report: a DSSE envelope signed by the gateway key.
REPORT_PAYLOAD_TYPE = "application/vnd.mrx.reconciliation-report.v1+protobuf"


def message_id(record: Record) -> str:
    """THE message id of one change, derived from the change itself; the adapter runner
    and reconciliation both send under it (adapters/runner.py, ``mrx reconcile run``).

    Key + version + the canonical encoding: a retried or re-read change gets the same id
    (and so its original receipt), a different change never does, and a change one path
    already sent is recognised by the other (docs/reconciliation.md, "Sending what the
    gateway is missing").
    """
    field_name, msg = record_to_proto(record)
    digest = hashlib.sha256()
    for part in (record.key, str(record.version), field_name):
        digest.update(part.encode("utf-8") + b"\0")
    digest.update(msg.SerializeToString(deterministic=True))
    return f"adp-{digest.hexdigest()[:40]}"


def content_sha256(msg: Message) -> bytes:
    """The canonical content digest of a record message."""
    cleared = GATEWAY_SET_FIELDS.get(type(msg), ())
    if cleared:
        copy = type(msg)()
        copy.CopyFrom(msg)
        for name in cleared:
            copy.ClearField(name)
        msg = copy
    return hashlib.sha256(msg.SerializeToString(deterministic=True)).digest()


def submission_record(submission: records_pb2.Submission) -> Message:
    """The record message a Submission carries."""
    which = submission.WhichOneof("record")
    if which is None:
        raise ValueError("the submission carries no record")
    msg: Message = getattr(submission, which)
    return msg


def key_hash(record_key: str) -> int:
    value: int = struct.unpack(">I", hashlib.sha256(record_key.encode()).digest()[:4])[0]
    return value


def leaf(record_key: str, version: int, state: int, content: bytes) -> bytes:
    return hashlib.sha256(
        record_key.encode() + b"\x00" + struct.pack(">Qi", version, state) + content
    ).digest()


def bucket_of(khash: int, bits: int) -> int:
    return khash >> (MAX_BITS - bits) if bits else 0


def parent_of(prefix: int, bits: int, parent_bits: int) -> int:
    return prefix >> (bits - parent_bits)


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as a side holds it, with what the descent needs precomputed."""

    record_key: str
    version: int
    state: int
    content_sha256: bytes
    key_hash: int
    leaf: int  # the record digest as an integer, for XOR


def entry(record_key: str, version: int, state: int, content: bytes) -> Entry:
    return Entry(
        record_key,
        version,
        state,
        content,
        key_hash(record_key),
        int.from_bytes(leaf(record_key, version, state, content), "big"),
    )


def record_entry(record: Record) -> Entry:
    """A domain record's entry, as the participant computes it."""
    _, msg = record_to_proto(record)
    return entry(record.key, record.version, int(record.state), content_sha256(msg))


def digest16(xor: int) -> bytes:
    return xor.to_bytes(32, "big")[:16]


def aggregate(items: Iterable[tuple[int, int]], bits: int) -> dict[int, tuple[int, int]]:
    """{prefix: (count, xor of leaves)} of (key_hash, leaf) pairs at depth ``bits``."""
    out: dict[int, tuple[int, int]] = {}
    shift = MAX_BITS - bits
    for khash, value in items:
        prefix = khash >> shift if bits else 0
        count, acc = out.get(prefix, (0, 0))
        out[prefix] = (count + 1, acc ^ value)
    return out
