"""The Merkle tree's node storage: the SQL side of gateway.audit.merkle.NodeReader."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import Connection, insert, select, tuple_

from gateway.audit.merkle import NodeId
from gateway.store.schema import merkle_nodes


class SqlNodeReader:
    """Reads perfect-subtree hashes in one SELECT per call, within ``conn``'s transaction."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        if not ids:
            return {}
        c = merkle_nodes.c
        rows = self._conn.execute(select(c.level, c.idx, c.hash).where(tuple_(c.level, c.idx).in_(list(ids))))
        return {(row.level, row.idx): row.hash for row in rows}


def insert_nodes(conn: Connection, nodes: Iterable[tuple[NodeId, bytes]]) -> None:
    rows = [{"level": level, "idx": idx, "hash": h} for (level, idx), h in nodes]
    if rows:
        conn.execute(insert(merkle_nodes), rows)
