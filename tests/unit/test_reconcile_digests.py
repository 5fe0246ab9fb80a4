"""The reconciliation digests (docs/reconciliation.md): both sides compute the same
values, the worked example in the doc is true, and the comparison names every class."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from datetime import UTC, date, datetime
from pathlib import Path

from gateway.client import make_submission
from gateway.convert import record_to_proto
from gateway.crypto.suites import PrivateKey, Suite
from gateway.demo_fixtures import demo_assessors, demo_pt_results, demo_spot_checks, demo_test_reports
from gateway.domain.certificates import Certificate, CertState, Holder, Scheme
from gateway.domain.identifiers import is_message_id
from gateway.pb import reconcile_pb2
from gateway.reconcile.digests import (
    aggregate,
    bucket_of,
    content_sha256,
    digest16,
    entry,
    key_hash,
    leaf,
    record_entry,
)
from gateway.reconcile.digests import message_id as message_id_for
from gateway.reconcile.engine import compare, stored_digest
from gateway.reconcile.participant import first_bits
from gateway.store.reconcile import StoredRecord

DOC = Path(__file__).resolve().parents[2] / "docs" / "reconciliation.md"
EXAMPLE = Certificate(
    certificate_number="2026010902080001",
    scheme=Scheme.CCC,
    issuing_body="CNCA-R-2002-001",
    issuer="CN-JS",
    holder=Holder(name="苏州华锐精密电器有限公司", credit_code="913205057344096226"),
    scope="便携式计算机",
    state=CertState.VALID,
    reason="",
    effective_at=datetime(2026, 7, 19, tzinfo=UTC),
    issue_date=date(2026, 7, 19),
    expiry_date=date(2031, 7, 19),
    version=1,
)
TODAY = date(2026, 11, 23)


def test_the_gateway_computes_the_participants_digest_from_the_stored_envelope():
    key = PrivateKey.generate(Suite.ED25519, "CN-JS/test")
    records = [
        EXAMPLE,
        *demo_assessors("CN-SN", count=1, today=TODAY),
        *demo_test_reports("CN-JS", count=1, today=TODAY),
        *demo_pt_results("CN-BJ", count=1, today=TODAY),
        *demo_spot_checks("CN-FJ", count=1, today=TODAY),
    ]
    for record in records:
        envelope = make_submission(record, sender=record.issuer, signer=key)
        content, keyid = stored_digest(envelope.SerializeToString())
        assert (content, keyid) == (record_entry(record).content_sha256, "CN-JS/test"), record.key


def test_gateway_set_fields_do_not_change_the_content_digest():
    pt = demo_pt_results("CN-BJ", count=1, today=TODAY)[0]
    _, msg = record_to_proto(pt)
    marked = type(msg)()
    marked.CopyFrom(msg)
    marked.classification = 3  # what the gateway would set on read
    assert content_sha256(marked) == content_sha256(msg)


def test_the_worked_example_in_the_doc_is_what_the_code_computes():
    text = DOC.read_text(encoding="utf-8")
    _, msg = record_to_proto(EXAMPLE)
    e = record_entry(EXAMPLE)
    expected = {
        "serialized record": msg.SerializeToString(deterministic=True).hex(),
        "content digest": e.content_sha256.hex(),
        "key hash": f"{e.key_hash:08x}",
        "record digest": leaf(e.record_key, e.version, e.state, e.content_sha256).hex(),
    }
    for name, value in expected.items():
        found = re.search(rf"{name}:\s*\n?\s*([0-9a-f\s]+?)\n\n", text)
        assert found, f"docs/reconciliation.md lacks the {name}"
        assert re.sub(r"\s", "", found.group(1)) == value, name
    # The definitions, restated independently of the code.
    raw = msg.SerializeToString(deterministic=True)
    assert hashlib.sha256(raw).digest() == e.content_sha256
    assert e.key_hash == struct.unpack(">I", hashlib.sha256(e.record_key.encode()).digest()[:4])[0]
    assert (
        leaf(e.record_key, 1, 1, e.content_sha256)
        == hashlib.sha256(
            e.record_key.encode()
            + b"\x00"
            + (1).to_bytes(8, "big")
            + (1).to_bytes(4, "big")
            + e.content_sha256
        ).digest()
    )


def test_buckets_are_prefixes_of_the_key_hash_and_their_digest_ignores_order():
    entries = [entry(f"certificate_status/CCC/{i:016d}", 1, 1, bytes(32)) for i in range(500)]
    h = entries[0].key_hash
    assert bucket_of(h, 0) == 0 and bucket_of(h, 32) == h and bucket_of(h, 4) == h >> 28
    forward = aggregate(((e.key_hash, e.leaf) for e in entries), 6)
    backward = aggregate(((e.key_hash, e.leaf) for e in reversed(entries)), 6)
    assert forward == backward and sum(c for c, _ in forward.values()) == 500
    # A child level's buckets partition their parent's.
    children = aggregate(((e.key_hash, e.leaf) for e in entries), 10)
    for parent, (count, xor) in forward.items():
        mine = [v for p, v in children.items() if p >> 4 == parent]
        assert sum(c for c, _ in mine) == count
        acc = 0
        for _, x in mine:
            acc ^= x
        assert digest16(acc) == digest16(xor)


def test_compare_names_every_class_with_both_sides():
    def stored(key: str, version: int, state: int, content: bytes) -> StoredRecord:
        return StoredRecord(
            key, key_hash(key), 7, version, state, content, "CN-JS/k", leaf(key, version, state, content)
        )

    a, b = bytes(32), b"\x01" * 32
    local = [entry("k/x/same", 1, 1, a), entry("k/x/state", 1, 2, a), entry("k/x/ver", 2, 1, a)]
    local += [entry("k/x/content", 1, 1, b), entry("k/x/new", 1, 1, a)]
    gateway = [stored("k/x/same", 1, 1, a), stored("k/x/state", 1, 1, a), stored("k/x/ver", 1, 1, a)]
    gateway += [stored("k/x/content", 1, 1, a), stored("k/x/old", 3, 1, a)]
    found = {d.record_key: d for d in compare(local, gateway)}
    assert {k: d.category for k, d in found.items()} == {
        "k/x/state": reconcile_pb2.STATE_DIFFERS,
        "k/x/ver": reconcile_pb2.VERSION_DIFFERS,
        "k/x/content": reconcile_pb2.CONTENT_DIFFERS,
        "k/x/new": reconcile_pb2.MISSING_AT_GATEWAY,
        "k/x/old": reconcile_pb2.MISSING_LOCALLY,
    }
    assert (found["k/x/state"].local_state, found["k/x/state"].gateway_state) == (2, 1)
    assert (found["k/x/ver"].local_version, found["k/x/ver"].gateway_version) == (2, 1)
    assert found["k/x/new"].gateway_version is None and found["k/x/old"].local_version is None
    assert found["k/x/old"].gateway_keyid == "CN-JS/k" and found["k/x/old"].gateway_log_index == 7


def test_the_first_level_holds_about_64_records_per_bucket():
    assert [first_bits(n) for n in (0, 1, 64, 65, 1000, 1_000_000, 10**9)] == [0, 0, 0, 1, 4, 14, 16]


def test_missing_records_are_sent_under_a_deterministic_valid_message_id():
    first = message_id_for(EXAMPLE)
    assert first == message_id_for(EXAMPLE) and is_message_id(first)
    changed = dataclasses.replace(EXAMPLE, version=2)
    assert message_id_for(changed) != first
