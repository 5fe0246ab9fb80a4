"""The store on both backends: durability settings, restarts, schema versions, replicas."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from gateway.demo_fixtures import demo_status_change
from gateway.domain.certificates import CertState
from gateway.domain.errors import InvalidArgument, Unavailable
from gateway.ledger.values import Accepted, Refusal
from gateway.pb import exchange_pb2
from gateway.store.engine import StoreError, open_engines
from gateway.store.migrate import head_revision
from gateway.store.reads import ReadStore
from gateway.store.schema import SCHEMA_VERSION, exchanges, schema_info
from gateway.store.writes import LOG_LOCK_SQL

Code = grpc.StatusCode

only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
only_postgres = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def submit(client, envelope):
    return client.exchange.Submit(exchange_pb2.SubmitRequest(envelope=envelope), timeout=30).receipt


def log_indexes(engines) -> list[int]:
    with engines.reader.connect() as conn:
        return list(conn.execute(select(exchanges.c.log_index).order_by(exchanges.c.log_index)).scalars())


@contextmanager
def holding_the_log_lock(database_url):
    """Block the sequencers' commits (advisory lock / SQLite write lock) until exit."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        engine = create_engine(database_url)
        try:
            with engine.connect() as conn, conn.begin():
                conn.execute(text(LOG_LOCK_SQL))
                yield
        finally:
            engine.dispose()
    else:
        raw = sqlite3.connect(url.database, isolation_level=None, timeout=0)
        try:
            raw.execute("BEGIN IMMEDIATE")
            yield
            raw.execute("ROLLBACK")
        finally:
            raw.close()


# --- restart -----------------------------------------------------------------------------


def test_restart_keeps_certificates_receipts_and_a_dense_log(
    gateway, gateway_factory, client_for, certs_of, make_env, refused, clock
):
    a, b, c = certs_of("CN-JS", 3)
    js = client_for("CN-JS")
    env = make_env(a)
    first = submit(js, env)
    js.publish(b)
    refused(
        js, make_env(c, created_at=clock.now - timedelta(hours=1)), Code.FAILED_PRECONDITION, "STALE_MESSAGE"
    )
    gateway.stop()

    restarted = gateway_factory()
    js2 = client_for("CN-JS", target=restarted.address)
    view = js2.get_certificate(a.scheme, a.certificate_number)
    assert (view.certificate.version, view.log_index) == (1, 0)
    assert submit(js2, env).SerializeToString() == first.SerializeToString()
    assert restarted.store.exchange_count() == 3
    assert js2.publish(c).log_index == 3
    v2 = demo_status_change(b, state=CertState.SUSPENDED, reason="监督抽查不合格", effective_at=clock.now)
    assert js2.publish(v2).log_index == 4
    assert log_indexes(restarted.engines) == [0, 1, 2, 3, 4]
    # The stored state survived too: an older version is still stale.
    refused(js2, make_env(b), Code.FAILED_PRECONDITION, "STALE_VERSION")


def test_stop_commits_what_is_queued_and_then_refuses(gateway, database_url, make_env, certs_of, open_store):
    envelopes = [make_env(c) for c in certs_of("CN-JS", 3)]
    with holding_the_log_lock(database_url):
        writer = gateway.gateway.writer_client
        verify = gateway.gateway.verifier.verify
        futures = [writer.submit([verify(e)]) for e in envelopes]
        writer.stop(timeout=0)  # closed, while the commit is still blocked
        with pytest.raises(Unavailable) as info:
            writer.submit([verify(make_env(certs_of("CN-SH")[0]))])
        assert info.value.reason == "SHUTTING_DOWN"
        assert not any(f.done() for f in futures)
    gateway.stop()
    results = [outcome for f in futures for outcome in f.result(timeout=30)]
    assert all(isinstance(r, Accepted) for r in results)
    assert sorted(r.log_index for r in results) == [0, 1, 2]
    assert ReadStore(open_store(database_url)).certificate_count() == 3


# --- schema --------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["newer revision", "missing revision"])
def test_schema_revision_mismatch_is_refused(change, database_url, open_store):
    """The schema revision is alembic_version's (tests/integration/test_migrations.py has more)."""
    engines = open_store(database_url)
    with engines.writer.begin() as conn:
        if change == "newer revision":
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
        else:
            conn.execute(text("DELETE FROM alembic_version"))
    engines.dispose()
    expected = (
        "schema revision f00d is unknown to this release"
        if change == "newer revision"
        else "created by an mrx release before schema migrations .* run: mrx db upgrade --database"
    )
    with pytest.raises(StoreError, match=expected):
        open_engines(database_url)


def test_reopening_the_same_database_keeps_its_schema(database_url, open_store):
    first = open_store(database_url)
    with first.writer.begin() as conn:
        note = conn.execute(select(schema_info.c.note)).scalar_one()
    second = open_store(database_url)
    with second.reader.connect() as conn:
        assert conn.execute(select(schema_info.c.version, schema_info.c.note)).one() == (SCHEMA_VERSION, note)
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            head_revision()
        ]


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_in_memory_sqlite_is_refused(url):
    with pytest.raises(StoreError, match="in-memory"):
        open_engines(url)


def test_unsupported_backend_is_refused():
    with pytest.raises(StoreError, match="unsupported database backend 'mysql'"):
        open_engines("mysql://nobody@127.0.0.1/none")


# --- durability settings ---------------------------------------------------------------------


@only_sqlite
def test_sqlite_runs_wal_with_synchronous_full(database_url, open_store):
    engines = open_store(database_url)
    for engine in (engines.writer, engines.reader):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@only_sqlite
def test_sqlite_writer_takes_the_write_lock_at_begin(database_url, open_store):
    engines = open_store(database_url)
    path = make_url(database_url).database
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        # BEGIN IMMEDIATE: the lock is held before any statement has run.
        with engines.writer.begin(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        with engines.reader.begin() as conn:
            conn.execute(select(schema_info.c.version)).all()
            other.execute("BEGIN IMMEDIATE")  # readers never hold the write lock
            other.execute("ROLLBACK")
    finally:
        other.close()


@only_postgres
def test_postgres_synchronous_commit_is_on(database_url, open_store):
    engines = open_store(database_url)
    for engine in (engines.writer, engines.reader):
        with engine.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar_one() == "on"


@only_postgres
def test_postgres_with_synchronous_commit_off_is_refused(database_url):
    url = make_url(database_url)
    unsafe = url.update_query_dict(
        {"options": url.query["options"] + " -csynchronous_commit=off"}
    ).render_as_string(hide_password=False)
    with pytest.raises(StoreError, match="synchronous_commit is off"):
        open_engines(unsafe)


@only_postgres
def test_each_postgres_test_has_its_own_schema(database_url, open_store):
    engines = open_store(database_url)
    schema = make_url(database_url).query["options"].split("search_path=")[1].split()[0]
    with engines.writer.connect() as conn:
        assert conn.execute(text("SELECT current_schema()")).scalar_one() == schema
        tables = set(
            conn.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            ).scalars()
        )
    assert {
        "exchanges",
        "certificates",
        "records",
        "record_versions",
        "merkle_nodes",
        "mrx_schema",
        "alembic_version",
    } <= tables


# --- several replicas on one database ----------------------------------------------------------


def test_two_replicas_write_one_dense_linear_log(
    gateway, gateway_factory, client_for, certs_of, make_env, backend
):
    replicas = [gateway, gateway_factory()]
    per_replica_threads, per_thread = 6, 10
    certs = certs_of("CN-JS", 2 * per_replica_threads * per_thread)
    clients = [client_for("CN-JS", target=r.address) for r in replicas]
    start = threading.Barrier(2 * per_replica_threads + 2)

    def worker(n):
        start.wait()
        client = clients[n % 2]
        return [client.publish(c).log_index for c in certs[n * per_thread : (n + 1) * per_thread]]

    # The same message id with different bytes at both replicas at once: one wins.
    x, y = certs_of("CN-SH", 2)
    contested = [make_env(x, message_id="contested"), make_env(y, message_id="contested")]
    # Identical bytes at both replicas at once: one receipt.
    twice = make_env(certs_of("CN-ZJ")[0])

    def contest(i):
        start.wait()
        sh = client_for("CN-SH", target=replicas[i].address)
        zj = client_for("CN-ZJ", target=replicas[i].address)
        outcomes = []
        try:
            outcomes.append(("ok", submit(sh, contested[i])))
        except grpc.RpcError as err:
            outcomes.append(("refused", err.code()))
        outcomes.append(("ok", submit(zj, twice)))
        return outcomes

    with ThreadPoolExecutor(2 * per_replica_threads + 2) as pool:
        futures = [pool.submit(worker, n) for n in range(2 * per_replica_threads)]
        contests = [pool.submit(contest, i) for i in range(2)]
        indexes = [i for f in futures for i in f.result()]
        contest_results = [f.result() for f in contests]

    kinds = sorted(r[0][0] for r in contest_results)
    assert kinds == ["ok", "refused"]
    assert [r[0][1] for r in contest_results if r[0][0] == "refused"] == [Code.ALREADY_EXISTS]
    twice_receipts = {r[1][1].SerializeToString() for r in contest_results}
    assert len(twice_receipts) == 1

    total = len(certs) + 2 + 1  # publications, the contested pair (one refused, logged), one of `twice`
    assert len(set(indexes)) == len(indexes)
    assert log_indexes(gateway.engines) == list(range(total))
    assert gateway.store.certificate_count() == len(certs) + 2
    # Both replicas really took part.
    assert all(r.gateway.writer_client.committed > 0 for r in replicas)


# --- a refused record must not break its batch ---------------------------------------------------


def _nul_number(cert):
    return dataclasses.replace(
        cert, certificate_number=cert.certificate_number[:4] + "\x00" + cert.certificate_number[4:]
    )


def test_nul_in_certificate_number_is_an_invalid_argument(
    backend, request, client_for, certs_of, make_env, refused
):
    env = make_env(_nul_number(certs_of("CN-JS")[0]))
    refused(
        client_for("CN-JS"),
        env,
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("certificate_status.certificate_number",),
    )


def test_a_refused_record_does_not_fail_the_rest_of_its_batch(
    backend, request, gateway, database_url, certs_of, make_env
):
    good_a, poison, good_c = certs_of("CN-JS", 3)
    envelopes = [make_env(good_a), make_env(_nul_number(poison)), make_env(good_c)]
    with holding_the_log_lock(database_url):
        # Queued while the commit is blocked, so the poison shares a batch with good items.
        verify = gateway.gateway.verifier.verify
        future = gateway.gateway.writer_client.submit([verify(e) for e in envelopes])
    a, poison_outcome, c = future.result(timeout=30)
    assert isinstance(poison_outcome, Refusal)
    assert isinstance(poison_outcome.error(), InvalidArgument)
    assert isinstance(a, Accepted)
    assert isinstance(c, Accepted)


def test_a_call_cancelled_while_its_commit_waits_does_not_stop_later_submissions(
    gateway, database_url, client_for, certs_of, make_env
):
    js = client_for("CN-JS")
    first, second = certs_of("CN-JS", 2)
    env = make_env(first)
    with holding_the_log_lock(database_url):
        # The client gives up while the commit is blocked: the gateway's future for that
        # chunk is cancelled, and the writer's answer must not break anything.
        with pytest.raises(grpc.RpcError) as info:
            js.exchange.Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=0.5)
        assert info.value.code() == Code.DEADLINE_EXCEEDED
    # Later submissions still get answers, and a retry of the abandoned one gets its receipt.
    assert js.publish(second).log_index == 1
    assert js.submit(env).log_index == 0
