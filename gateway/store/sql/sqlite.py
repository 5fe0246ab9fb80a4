"""The SQLite write store: fixed SQL on the sqlite3 cursor, multi-row statements.

``executemany`` releases and re-takes the GIL for every row; with any other busy thread
in the process that turned a 0.13 ms/record commit into 8.9 ms (the GIL convoy in
../shared/WRITE-PATH.md). One ``INSERT ... VALUES (...), (...)`` statement per chunk of
rows runs in one call into SQLite and does not suffer it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from gateway.audit.merkle import NodeId
from gateway.store.engine import set_wal
from gateway.store.rows import (
    CERTIFICATE_COLUMNS,
    CERTIFICATE_KEY_COLUMNS,
    RECORD_COLUMNS,
    RECORD_KEY_COLUMNS,
)
from gateway.store.writes import Appended, LogEntry, StoredState, VersionRow, chunks, split_current

# Rows per multi-row INSERT; the remainder gets a statement of its own size. SQLite
# caches the prepared statements by text, so a handful of shapes recur.
INSERT_CHUNK = 128
IN_CHUNK = 500
ACCEPTED = 1


def _iso(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v.isoformat() if isinstance(v, date) else v for v in row)


def _placeholders(columns: int, rows: int) -> str:
    one = "(" + ",".join("?" * columns) + ")"
    return ",".join([one] * rows)


class _SqliteTx:
    def __init__(self, cur: sqlite3.Cursor):
        self._cur = cur

    def log_size(self) -> int:
        row = self._cur.execute("SELECT coalesce(max(log_index), -1) + 1 FROM exchanges").fetchone()
        return int(row[0])

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        # One ``level = ? AND idx IN (...)`` term per level is SQLite's primary-key plan;
        # a row-value IN is a full scan on 3.40 (gateway/store/merkle.py).
        if not ids:
            return {}
        by_level: dict[int, list[int]] = {}
        for level, idx in ids:
            by_level.setdefault(level, []).append(idx)
        terms, params = [], []
        for level, idxs in sorted(by_level.items()):
            terms.append(f"(level = ? AND idx IN ({','.join('?' * len(idxs))}))")
            params += [level, *idxs]
        sql = f"SELECT level, idx, hash FROM merkle_nodes WHERE {' OR '.join(terms)}"  # noqa: S608
        return {(r[0], r[1]): r[2] for r in self._cur.execute(sql, params)}

    def accepted_by_digest(self, digests: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
        # No outcome condition in SQL: with it the planner may walk the partial index of
        # every accepted message instead of probing the digest index.
        found: dict[bytes, tuple[int, bytes]] = {}
        for part in chunks(digests, IN_CHUNK):
            sql = (
                "SELECT envelope_sha256, log_index, receipt, outcome FROM exchanges "  # noqa: S608
                f"WHERE envelope_sha256 IN ({','.join('?' * len(part))})"
            )
            for digest, index, receipt, outcome in self._cur.execute(sql, part):
                if outcome == ACCEPTED:
                    found[digest] = (index, receipt)
        return found

    def used_message_ids(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        by_sender: dict[str, list[str]] = {}
        for sender, message_id in pairs:
            by_sender.setdefault(sender, []).append(message_id)
        used: set[tuple[str, str]] = set()
        for sender, ids in by_sender.items():
            for part in chunks(ids, IN_CHUNK):
                # Both columns of the partial unique index: one probe per id.
                sql = (
                    "SELECT message_id FROM exchanges WHERE outcome = 1 AND sender = ? "  # noqa: S608
                    f"AND message_id IN ({','.join('?' * len(part))})"
                )
                used.update((sender, r[0]) for r in self._cur.execute(sql, [sender, *part]))
        return used

    def current_states(self, keys: Sequence[str]) -> dict[str, StoredState]:
        found: dict[str, StoredState] = {}
        for part in chunks(keys, IN_CHUNK):
            marks = ",".join("?" * len(part))
            columns = "record_key, issuer, state, version"
            sql = (
                f"SELECT {columns} FROM certificates WHERE record_key IN ({marks}) "  # noqa: S608
                f"UNION ALL SELECT {columns} FROM records WHERE record_key IN ({marks})"
            )
            for key, issuer, state, version in self._cur.execute(sql, [*part, *part]):
                found[key] = StoredState(issuer, state, version)
        return found

    def append(self, rows: Appended) -> None:
        self._insert("exchanges", LogEntry._fields, rows.entries)
        self._insert("merkle_nodes", ("level", "idx", "hash"), [(lv, ix, h) for (lv, ix), h in rows.nodes])
        self._insert("record_versions", VersionRow._fields, rows.versions)
        new, changed = split_current(rows.current)
        # sqlite3's default date adapter is deprecated: dates go in as ISO strings.
        new, changed = ({t: [_iso(r) for r in rs] for t, rs in d.items()} for d in (new, changed))
        self._insert("certificates", CERTIFICATE_COLUMNS, new["certificates"])
        self._insert("records", RECORD_COLUMNS, new["records"])
        self._update("certificates", CERTIFICATE_COLUMNS, CERTIFICATE_KEY_COLUMNS, changed["certificates"])
        self._update("records", RECORD_COLUMNS, RECORD_KEY_COLUMNS, changed["records"])

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        names = ",".join(columns)
        for part in chunks(rows, INSERT_CHUNK):
            sql = f"INSERT INTO {table} ({names}) VALUES {_placeholders(len(columns), len(part))}"  # noqa: S608
            self._cur.execute(sql, [v for row in part for v in row])  # type: ignore[attr-defined]

    def _update(self, table: str, columns: Sequence[str], keys: int, rows: Sequence[tuple[Any, ...]]) -> None:
        # One UPDATE ... FROM (VALUES ...) per chunk, for the same reason as the inserts.
        changed = columns[keys:]
        sets = ",".join(f"{c} = v.{c}" for c in changed)
        names = ",".join(("k", *changed))
        for part in chunks(rows, INSERT_CHUNK):
            sql = (
                f"WITH v({names}) AS (VALUES {_placeholders(len(changed) + 1, len(part))}) "  # noqa: S608
                f"UPDATE {table} SET {sets} FROM v WHERE {table}.record_key = v.k"
            )
            self._cur.execute(sql, [v for row in part for v in (row[0], *row[keys:])])  # type: ignore[index]


class SqliteWriteStore:
    dialect = "sqlite"

    def __init__(self, url: str):
        database = make_url(url).database
        if not database or database == ":memory:":
            raise ValueError("the SQLite write store needs a file")
        self._path = Path(database)
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, cached_statements=512
            )
            # WAL + synchronous=FULL: a commit is fsynced before it returns (a receipt
            # survives power loss); see gateway/store/engine.py.
            conn.execute("PRAGMA busy_timeout=10000")
            set_wal(conn.cursor())
            conn.execute("PRAGMA synchronous=FULL")
            # The writer walks the log's indexes on every commit: keep them in memory
            # (64 MiB instead of SQLite's 2 MiB default) rather than re-read them from the OS.
            conn.execute("PRAGMA cache_size=-65536")
            self._conn = conn
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTx]:
        conn = self._connection()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield _SqliteTx(cur)
            cur.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self.close()
            raise
        finally:
            cur.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
