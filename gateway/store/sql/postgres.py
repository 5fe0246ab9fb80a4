"""The PostgreSQL write store: psycopg 3 directly, COPY for inserts, one index probe per key.

Measured on the landed code (../shared/WRITE-PATH.md): COPY halves the commit and cuts
client CPU by three quarters; ``outcome = 1 AND envelope_sha256 IN (...)`` walked the
whole partial index of accepted messages, so commits got slower as the log grew, and
``= ANY(array)`` with hundreds of keys turned into sequential scans. Every lookup here
is ``unnest(keys) CROSS JOIN LATERAL (...)``: one index probe per key, flat in the size
of the log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from gateway.audit.merkle import NodeId
from gateway.store.rows import (
    CERTIFICATE_COLUMNS,
    CERTIFICATE_KEY_COLUMNS,
    RECORD_COLUMNS,
    RECORD_KEY_COLUMNS,
)
from gateway.store.writes import LOG_LOCK_SQL, Appended, LogEntry, StoredState, VersionRow, split_current

ACCEPTED = 1

# OFFSET 0 keeps each LATERAL subquery a subquery: without it the planner may flatten it
# into a join and, without fresh statistics, hash-join over a sequential scan of the log
# (measured: 1.2 s for 64 digests at 1M entries). With it, every key is one index probe
# whatever the statistics say.
_BY_DIGEST = (
    "SELECT d.digest, e.log_index, e.receipt, e.outcome FROM unnest(%s::bytea[]) AS d(digest) "
    "CROSS JOIN LATERAL (SELECT log_index, receipt, outcome FROM exchanges "
    "WHERE envelope_sha256 = d.digest OFFSET 0) AS e"
)
_USED_IDS = (
    "SELECT u.s, u.m FROM unnest(%s::text[], %s::text[]) AS u(s, m) CROSS JOIN LATERAL "
    "(SELECT 1 FROM exchanges WHERE outcome = 1 AND sender = u.s AND message_id = u.m LIMIT 1 OFFSET 0) AS x"
)
_STATES = (
    "SELECT k.key, c.issuer, c.state, c.version FROM unnest(%s::text[]) AS k(key) "
    "CROSS JOIN LATERAL (SELECT issuer, state, version FROM certificates WHERE record_key = k.key "
    "UNION ALL SELECT issuer, state, version FROM records WHERE record_key = k.key OFFSET 0) AS c"
)


def conninfo(url: str) -> str:
    """The libpq URI of an SQLAlchemy PostgreSQL URL (options such as search_path kept)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class _PostgresTx:
    def __init__(self, cur: psycopg.Cursor[Any]):
        self._cur = cur

    def log_size(self) -> int:
        row = self._cur.execute("SELECT coalesce(max(log_index), -1) + 1 FROM exchanges").fetchone()
        assert row is not None
        return int(row[0])

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        if not ids:
            return {}
        levels = [level for level, _ in ids]
        idxs = [idx for _, idx in ids]
        rows = self._cur.execute(
            "SELECT n.level, n.idx, n.hash FROM unnest(%s::smallint[], %s::bigint[]) AS k(level, idx) "
            "JOIN merkle_nodes AS n ON n.level = k.level AND n.idx = k.idx",
            (levels, idxs),
        ).fetchall()
        return {(r[0], r[1]): bytes(r[2]) for r in rows}

    def accepted_by_digest(self, digests: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
        if not digests:
            return {}
        found: dict[bytes, tuple[int, bytes]] = {}
        for digest, index, receipt, outcome in self._cur.execute(_BY_DIGEST, (list(digests),)):
            if outcome == ACCEPTED:
                found[bytes(digest)] = (index, bytes(receipt))
        return found

    def used_message_ids(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not pairs:
            return set()
        rows = self._cur.execute(_USED_IDS, ([s for s, _ in pairs], [m for _, m in pairs]))
        return {(s, m) for s, m in rows}

    def current_states(self, keys: Sequence[str]) -> dict[str, StoredState]:
        if not keys:
            return {}
        return {k: StoredState(i, s, v) for k, i, s, v in self._cur.execute(_STATES, (list(keys),))}

    def append(self, rows: Appended) -> None:
        self._copy("exchanges", LogEntry._fields, rows.entries)
        self._copy("merkle_nodes", ("level", "idx", "hash"), [(lv, ix, h) for (lv, ix), h in rows.nodes])
        self._copy("record_versions", VersionRow._fields, rows.versions)
        new, changed = split_current(rows.current)
        self._copy("certificates", CERTIFICATE_COLUMNS, new["certificates"])
        self._copy("records", RECORD_COLUMNS, new["records"])
        self._update("certificates", CERTIFICATE_COLUMNS, CERTIFICATE_KEY_COLUMNS, changed["certificates"])
        self._update("records", RECORD_COLUMNS, RECORD_KEY_COLUMNS, changed["records"])

    def _copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._cur.copy(f"COPY {table} ({','.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _update(self, table: str, columns: Sequence[str], keys: int, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        sets = ",".join(f"{c} = %s" for c in columns[keys:])
        # executemany runs in psycopg's pipeline mode: one round trip for all rows.
        self._cur.executemany(
            f"UPDATE {table} SET {sets} WHERE record_key = %s",  # noqa: S608
            [(*row[keys:], row[0]) for row in rows],
        )


class PostgresWriteStore:
    dialect = "postgresql"

    def __init__(self, url: str):
        self._conninfo = conninfo(url)
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            conn = psycopg.connect(self._conninfo, autocommit=False, connect_timeout=10)
            # JIT compiles these small probe queries on every execution (4-11 ms each).
            conn.execute("SET jit = off")
            row = conn.execute("SHOW synchronous_commit").fetchone()
            conn.commit()  # a SET is transactional: a rollback would undo it
            if row is not None and row[0] == "off":
                conn.close()
                raise RuntimeError("PostgreSQL synchronous_commit is off: receipts would not be durable")
            self._conn = conn
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[_PostgresTx]:
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                # One appender at a time across every replica: one dense, linear log.
                cur.execute(LOG_LOCK_SQL)
                yield _PostgresTx(cur)
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except psycopg.Error:
                self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
