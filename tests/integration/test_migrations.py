"""The schema history (Alembic, gateway/store/migrations) on SQLite and PostgreSQL.

Every other test builds its schema through the migrations too: ``open_engines`` runs them
on the empty database each test starts with.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text, update

from gateway.client import GatewayClient
from gateway.domain.certificates import CertState
from gateway.domain.demo_data import demo_status_change
from gateway.pb import exchange_pb2
from gateway.server import start_gateway
from gateway.store import migrate
from gateway.store.engine import StoreError, connect, display_url, open_engines
from gateway.store.schema import SCHEMA_VERSION, exchanges, metadata, schema_info

MRX = [sys.executable, "-m", "gateway.cli"]

# A later release's revision on top of this release's head (written at test time).
REVISION_LATER = "0900"
REVISION_2 = '''"""A later release's revision, for the tests: one more index."""

from __future__ import annotations

from alembic import op

revision = "0900"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_records_issuer_test", "records", ["issuer"])
'''


def mrx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MRX, *args], capture_output=True, text=True, timeout=120, check=False)


def revisions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


def test_the_history_builds_exactly_the_tables_of_schema_py(database_url, open_store):
    engines = open_store(database_url)
    with engines.writer.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    assert revisions(database_url) == [migrate.head_revision()]
    with engines.reader.connect() as conn:
        assert conn.execute(select(schema_info)).all() == [(1, SCHEMA_VERSION, "created by mrx")]


def test_the_history_is_one_line_and_ships_with_the_package():
    script = migrate._script()
    assert script.get_heads() == [migrate.head_revision()]
    assert migrate.FIRST_RELEASE_REVISION in migrate.known_revisions()
    assert migrate.MIGRATIONS.is_relative_to(Path(migrate.__file__).parent)
    assert (migrate.MIGRATIONS / "versions" / "__init__.py").exists()  # found as a package
    assert (migrate.MIGRATIONS / "script.py.mako").exists()
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"store/migrations/script.py.mako"' in pyproject


def test_engines_racing_on_one_fresh_database_all_succeed_with_one_history(database_url):
    """Replicas starting together, and an operator's upgrade at the same moment."""
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_one(upgrade_explicitly: bool) -> None:
        engines = connect(database_url)
        try:
            start.wait()
            if upgrade_explicitly:
                migrate.upgrade(engines)
            else:
                migrate.check_or_create(engines)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engines.dispose()

    threads = [threading.Thread(target=open_one, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert revisions(database_url) == [migrate.head_revision()]
    open_engines(database_url).dispose()


def test_a_revision_unknown_to_this_release_is_refused(database_url, open_store):
    engines = open_store(database_url)
    with engines.writer.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match=r"revision 9999 is unknown to this release of mrx .*newer mrx"):
        open_engines(database_url)
    with pytest.raises(StoreError, match="revision 9999 is unknown"):
        migrate.upgrade(engines)
    result = mrx("db", "current", "--database", database_url)
    assert result.returncode == 1
    assert f"9999, unknown to this release (head {migrate.head_revision()})" in result.stdout


def test_a_database_behind_the_code_is_refused_until_upgraded(
    database_url, open_store, monkeypatch, tmp_path
):
    """A later release (here: this one plus a revision 0900) meets a database at this head."""
    open_engines(database_url).dispose()
    head = migrate.head_revision()
    later = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, later, ignore=shutil.ignore_patterns("__pycache__"))
    (later / "versions" / "0900_test.py").write_text(REVISION_2.replace("{head}", head))
    monkeypatch.setattr(migrate, "MIGRATIONS", later)
    migrate._script.cache_clear()
    try:
        with pytest.raises(StoreError) as info:
            open_engines(database_url)
        assert str(info.value) == (
            f"database schema: {head}, behind head 0900; back it up and run: "
            f"mrx db upgrade --database {display_url(database_url)}"
        )
        engines = connect(database_url)
        try:
            done = migrate.upgrade(engines)
        finally:
            engines.dispose()
        assert (done.before.revision, done.stamped, done.after.revision) == (head, False, "0900")
        engines = open_store(database_url)
        with engines.reader.connect() as conn:
            assert "ix_records_issuer_test" in {i["name"] for i in inspect(conn).get_indexes("records")}
    finally:
        migrate._script.cache_clear()
    monkeypatch.undo()
    # This release again: 0900 is ahead of it.
    with pytest.raises(StoreError, match="revision 0900 is unknown to this release"):
        open_engines(database_url)


def test_a_first_release_database_is_refused_with_the_command_to_run(database_url, first_release_database):
    first_release_database(database_url)
    with pytest.raises(StoreError) as info:
        open_engines(database_url)
    assert "created by an mrx release before schema migrations (mrx_schema version 1)" in str(info.value)
    assert str(info.value).endswith(f"mrx db upgrade --database {display_url(database_url)}")


def test_the_first_releases_tables_are_revision_0001s(database_url, first_release_database):
    """What justifies the stamp: after it, the database is exactly what the history builds."""
    first_release_database(database_url)
    engines = connect(database_url)
    try:
        done = migrate.upgrade(engines)
        assert (done.before.revision, done.stamped, done.after.revision) == (
            None,
            True,
            migrate.head_revision(),
        )
        with engines.writer.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engines.dispose()


@pytest.mark.parametrize("damage", ["other mrx_schema version", "missing column", "no mrx_schema"])
def test_an_unversioned_database_that_is_not_the_first_releases_is_not_upgraded(
    damage, database_url, first_release_database
):
    first_release_database(database_url)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        if damage == "other mrx_schema version":
            conn.execute(update(schema_info).values(version=7))
        elif damage == "missing column":
            conn.execute(text("DROP INDEX ix_records_subject"))
            conn.execute(text("ALTER TABLE records DROP COLUMN subject"))
        else:
            conn.execute(text("DROP TABLE mrx_schema"))
    engine.dispose()
    engines = connect(database_url)
    try:
        with pytest.raises(StoreError, match=r"not upgrading|only a database of the first release"):
            migrate.upgrade(engines)
        with pytest.raises(StoreError):
            migrate.check_or_create(engines)
    finally:
        engines.dispose()
    assert "alembic_version" not in inspect(create_engine(database_url)).get_table_names()


def test_db_current_on_a_missing_sqlite_file_creates_nothing(tmp_path):
    path = tmp_path / "none" / "mrx.db"
    result = mrx("db", "current", "--database", str(path))
    assert (result.returncode, result.stderr.strip()) == (1, f"mrx: no database at {path}")
    assert not path.parent.exists()


@pytest.mark.e2e
def test_a_first_release_database_with_data_is_upgraded_by_mrx_db_upgrade_and_served(
    database_url,
    first_release_database,
    federation,
    signers,
    clock,
    gateway_factory,
    certs_of,
    make_env,
    federation_dir,
    federation_paths,
):
    """The previous release's tables, with data in them, upgraded as an operator would.

    The data is written by this release's writer onto the first release's frozen DDL
    (tests/fixtures/schema_757f7fd.py), with the schema check bypassed (``connect``): that
    release's code is not available here, and the rows it wrote are the contract's bytes
    (envelopes, ExchangeLeaf, Receipt) in the same columns.
    """
    first_release_database(database_url)
    a, b, c = certs_of("CN-JS", 3)
    sh = certs_of("CN-SH")[0]
    envelopes = [make_env(a), make_env(b), make_env(sh, sender="CN-SH")]
    later = demo_status_change(b, state=CertState.SUSPENDED, reason="监督抽查不合格", effective_at=clock.now)
    envelopes.append(make_env(later))
    old_engines = connect(database_url)
    old = start_gateway(
        federation=federation,
        engines=old_engines,
        gateway_key=signers[federation.gateway_code],
        address="127.0.0.1:0",
        clock=clock,
        writer_mode="thread",
        checkpoint_interval=3600,
    )
    try:
        clients = {
            code: GatewayClient(old.address, sender=code, signer=signers[code]) for code in ("CN-JS", "CN-SH")
        }
        receipts = [
            clients["CN-JS" if e is not envelopes[2] else "CN-SH"]
            .exchange.Submit(exchange_pb2.SubmitRequest(envelope=e), timeout=30)
            .receipt.SerializeToString()
            for e in envelopes
        ]
        for client in clients.values():
            client.close()
    finally:
        old.stop()
    with old_engines.reader.connect() as conn:
        rows_before = conn.execute(select(exchanges).order_by(exchanges.c.log_index)).all()
    old_engines.dispose()
    assert len(rows_before) == 4

    with pytest.raises(StoreError, match="mrx db upgrade --database"):
        open_engines(database_url)
    refused = mrx(
        "serve",
        "--address",
        "127.0.0.1:0",
        "--database",
        database_url,
        "--federation",
        str(federation_dir),
        "--gateway-key",
        str(federation_paths[federation.gateway_code]),
        "--gateway-keyid",
        f"{federation.gateway_code}/demo",
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip() == (
        "mrx: database schema: created by an mrx release before schema migrations (mrx_schema "
        f"version 1); not at head {migrate.head_revision()}; back it up and run: "
        f"mrx db upgrade --database {display_url(database_url)}"
    )
    current = mrx("db", "current", "--database", database_url)
    assert current.returncode == 1, current.stdout + current.stderr
    assert "before schema migrations" in current.stdout
    assert "to upgrade: mrx db upgrade --database" in current.stdout

    upgraded = mrx("db", "upgrade", "--database", database_url)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "stamped 0001" in upgraded.stdout
    assert f"now:      {migrate.head_revision()} (head)" in upgraded.stdout
    current = mrx("db", "current", "--database", database_url)
    assert (current.returncode, current.stdout.strip().rsplit(": ", 1)[-1]) == (
        0,
        f"{migrate.head_revision()} (head)",
    )
    again = mrx("db", "upgrade", "--database", database_url)
    assert again.returncode == 0 and "stamped" not in again.stdout

    served = gateway_factory(database_url)
    with served.engines.reader.connect() as conn:
        assert conn.execute(select(exchanges).order_by(exchanges.c.log_index)).all() == rows_before
    js = GatewayClient(served.address, sender="CN-JS", signer=signers["CN-JS"])
    try:
        for envelope, receipt in zip(envelopes, receipts, strict=True):
            resent = js.exchange.Submit(exchange_pb2.SubmitRequest(envelope=envelope), timeout=30).receipt
            assert resent.SerializeToString() == receipt
        view = js.get_certificate(b.scheme, b.certificate_number)
        assert (view.certificate.version, view.log_index) == (2, 3)
        assert js.get_certificate(a.scheme, a.certificate_number).log_index == 0
        assert js.publish(c).log_index == 4
    finally:
        js.close()
    assert served.store.exchange_count() == 5
