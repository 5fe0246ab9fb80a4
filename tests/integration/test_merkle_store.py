"""Merkle nodes in SQL: proofs read from the database equal the in-memory reference,
and the node lookup uses the primary key (a full scan made proofs O(n) on SQLite)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from sqlalchemy import event

from gateway.audit import merkle
from gateway.store.engine import Engines
from gateway.store.merkle import SqlNodeReader, insert_nodes

SIZE = 300


@pytest.fixture
def tree(database_url: str, open_store: Callable[[str], Engines]) -> tuple[Engines, merkle.MemoryNodeStore]:
    engines = open_store(database_url)
    memory = merkle.MemoryNodeStore()
    frontier = merkle.CompactRange()
    nodes = []
    for i in range(SIZE):
        nodes += frontier.append(merkle.leaf_hash(i.to_bytes(4, "big")))
    memory.put(nodes)
    with engines.writer.begin() as conn:
        insert_nodes(conn, nodes)
    return engines, memory


def test_sql_proofs_equal_the_reference(tree: tuple[Engines, merkle.MemoryNodeStore]) -> None:
    engines, memory = tree
    rng = random.Random(7)
    with engines.reader.connect() as conn:
        sql = SqlNodeReader(conn)
        for size in (1, 2, 3, 64, 65, 127, 255, 256, 299, 300):
            root = merkle.root_hash(size, memory)
            assert merkle.root_hash(size, sql) == root
            assert merkle.CompactRange.from_store(size, sql).root() == root
            for index in {0, size - 1, rng.randrange(size)}:
                proof = merkle.inclusion_proof(index, size, sql)
                assert proof == merkle.inclusion_proof(index, size, memory)
                leaf = merkle.leaf_hash(index.to_bytes(4, "big"))
                assert merkle.verify_inclusion(leaf, index, size, proof, root)
            old = rng.randrange(1, size + 1)
            proof = merkle.consistency_proof(old, size, sql)
            assert proof == merkle.consistency_proof(old, size, memory)
            assert merkle.verify_consistency(old, size, merkle.root_hash(old, memory), root, proof)


def test_node_lookup_uses_the_primary_key_on_sqlite(tree: tuple[Engines, merkle.MemoryNodeStore]) -> None:
    engines, _ = tree
    if engines.dialect != "sqlite":
        pytest.skip("query plan check is SQLite's; PostgreSQL's planner is checked by bench/PROOFS.md")
    executed: list[tuple[str, object]] = []

    def capture(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
        if "merkle_nodes" in statement:
            executed.append((statement, parameters))

    with engines.reader.connect() as conn:
        event.listen(conn, "before_cursor_execute", capture)
        merkle.inclusion_proof(137, SIZE, SqlNodeReader(conn))  # the statement proofs really use
        event.remove(conn, "before_cursor_execute", capture)
        assert len(executed) == 1
        statement, parameters = executed[0]
        plan_rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()  # type: ignore[arg-type]
    plan = " | ".join(str(row[-1]) for row in plan_rows)
    assert "SCAN merkle_nodes" not in plan, plan
    assert "USING INDEX" in plan, plan
