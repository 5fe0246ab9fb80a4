"""The writer loop on a fake store: what one bad chunk or a database failure does to the
chunks batched with it. No database, no process: serve() in a thread over a real pipe."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import threading
from contextlib import contextmanager
from datetime import UTC, datetime

from gateway.ledger.values import Accepted, Staged
from gateway.ledger.writer import WriterOptions, serve
from gateway.store.writes import Appended


class FakeTx:
    def __init__(self, store: FakeStore):
        self.store = store

    def log_size(self):
        return len(self.store.entries)

    def get_nodes(self, ids):
        return {i: self.store.nodes[i] for i in ids if i in self.store.nodes}

    def accepted_by_digest(self, digests):
        return {}

    def used_message_ids(self, pairs):
        return set()

    def current_states(self, keys):
        return {}

    def append(self, rows: Appended):
        if self.store.down:
            self.store.down -= 1  # down for that many commits
            raise sqlite3.OperationalError("unable to open database file")
        if any(e.message_id == "poison" for e in rows.entries):
            raise ValueError("a bug this submission triggers")
        self.store.entries += list(rows.entries)
        self.store.nodes.update(dict(rows.nodes))


class FakeStore:
    dialect = "fake"

    def __init__(self):
        self.entries = []
        self.nodes = {}
        self.down = 0

    @contextmanager
    def transaction(self):
        snapshot = (list(self.entries), dict(self.nodes))
        try:
            yield FakeTx(self)
        except BaseException:
            self.entries, self.nodes = snapshot
            raise

    def close(self):
        pass


def staged(message_id: str) -> Staged:
    body = message_id.encode() * 3
    return Staged(
        envelope=body,
        envelope_sha256=hashlib.sha256(body).digest(),
        sender="CN-JS",
        message_id=message_id,
        kind=1,
        record_key="",
        record_version=0,
        subject_issuer="CN-JS",
        received_at=datetime(2026, 11, 23, tzinfo=UTC),
    )


def run(store, messages):
    ours, theirs = multiprocessing.Pipe()
    thread = threading.Thread(target=serve, args=([theirs], store, WriterOptions(delay=0.05, max_items=3)))
    thread.start()
    for msg in messages:
        ours.send(msg)
    answers = {}
    expected = sum(len(m[1]) for m in messages)
    while len(answers) < expected:
        msg = ours.recv()
        if msg[0] == "done":
            answers.update({cid: outcomes for cid, outcomes in msg[1]})
        else:
            answers.update({cid: msg[2] for cid in msg[1]})
    ours.send(("stop",))
    assert ours.recv() == ("stopped",)
    thread.join(5)
    return answers


def test_one_bad_chunk_fails_alone():
    store = FakeStore()
    answers = run(store, [("batch", [(1, [staged("a")]), (2, [staged("poison")]), (3, [staged("c")])])])
    assert answers[2] == "INTERNAL"
    assert all(isinstance(o, Accepted) for o in answers[1] + answers[3])
    assert [e.message_id for e in store.entries] == ["a", "c"]


def test_after_a_failed_slice_the_rest_of_the_round_is_not_applied():
    store = FakeStore()
    store.down = 1  # back by the second slice
    # max_items=3: two slices; the second must not commit after the first failed (a
    # stream's later chunk must not land before its earlier one).
    answers = run(
        store, [("batch", [(1, [staged("a"), staged("b")])]), ("batch", [(2, [staged("c"), staged("d")])])]
    )
    assert answers == {1: "STORE_UNAVAILABLE", 2: "STORE_UNAVAILABLE"}
    assert store.entries == []
