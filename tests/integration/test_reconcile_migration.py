"""Revision 0002 (reconciliation tables) on a database at 0001, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from gateway.store import migrate
from gateway.store.engine import connect
from gateway.store.reconcile import ABANDONED, RUNNING, ReconcileStore

TABLES = {"reconcile_digests", "reconcile_runs", "reconcile_discrepancies", "reconcile_reports"}


def test_revision_0002_adds_the_reconciliation_tables_to_a_0001_database(database_url, open_store):
    engines = connect(database_url)
    try:
        with migrate.schema_lock(engines) as conn:
            command.upgrade(migrate.alembic_config(conn), "0001")
        with engines.reader.connect() as conn:
            assert not TABLES & set(inspect(conn).get_table_names())
        done = migrate.upgrade(engines)
        assert (done.before.revision, done.after.revision) == ("0001", migrate.head_revision())
    finally:
        engines.dispose()
    engines = open_store(database_url)  # at head: the schema check passes
    with engines.reader.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= TABLES
    store = ReconcileStore(engines)
    store.create_run("r1", "CN-JS", ["CN-JS/2026-01"], now_us=1_000)
    assert store.get_run("r1").status == RUNNING  # type: ignore[union-attr]
    assert store.abandon_stale(now_us=10_000_000, lease_us=1_000_000) == 1
    assert store.get_run("r1").status == ABANDONED  # type: ignore[union-attr]
    # A report is written only with the status change of a running run.
    assert not store.complete(
        "r1", now_us=10_000_001, lease_us=1_000_000, snapshot_size=0, summary={}, envelope=b"x"
    )
    assert store.report("r1") is None
