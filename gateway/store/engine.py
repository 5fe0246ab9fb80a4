"""Opening the database: URL resolution, durability settings, schema creation.

A receipt means "durably committed", so:
- SQLite runs in WAL mode with synchronous=FULL: a commit is fsynced before it returns
  and survives power loss (NORMAL, the usual WAL pairing, may lose the last commits).
- PostgreSQL keeps its default synchronous_commit=on; we refuse to start if an operator
  turned it off, because every receipt would then be a promise the store cannot keep.
The writer engine starts SQLite transactions with BEGIN IMMEDIATE so the writer
takes the write lock up front instead of failing on upgrade; readers use deferred
transactions and never block the writer in WAL mode.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

# Re-exported: callers open and name databases through this module.
from gateway.store.base import Engines as Engines
from gateway.store.base import StoreError as StoreError
from gateway.store.base import display_url as display_url

ENV_DATABASE_URL = "MRX_DATABASE_URL"


def default_database_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mrx" / "mrx.db"


def resolve_database_url(explicit: str | None) -> str:
    """--database wins, then MRX_DATABASE_URL, then the embedded SQLite default.

    A bare path is taken as a SQLite file.
    """
    url = explicit or os.environ.get(ENV_DATABASE_URL) or ""
    if not url:
        path = default_database_path()
        return f"sqlite:///{path}"
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # psycopg 3 is the supported driver; spare operators the +psycopg suffix.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def set_wal(cur: Any) -> None:
    """Put the database in WAL mode (persistent in the file, so this only works once).

    Switching takes an exclusive lock and SQLite answers "locked" at once, busy handler or
    not, while another connection is doing the same on a new database: replicas (or the
    gateway and its writer) opening one together retry for a few seconds.
    """
    for attempt in range(100):
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=False)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours to issue.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # busy_timeout first: switching a new database to WAL takes an exclusive lock, and
        # several replicas (or engines) opening it at once must wait, not fail "locked".
        cur.execute("PRAGMA busy_timeout=10000")
        set_wal(cur)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def open_engines(url: str) -> Engines:
    """The engines of a database whose schema is this release's (created if empty).

    A database behind the code, or ahead of it, is refused with a StoreError that says
    what to run (``gateway/store/migrate.py``).
    """
    engines = connect(url)
    try:
        ensure_schema(engines)
    except BaseException:
        engines.dispose()
        raise
    return engines


def connect(url: str) -> Engines:
    """The engines, with the durability settings checked but the schema not looked at."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            raise StoreError("an in-memory SQLite database cannot give durable receipts; use a file path")
        writer = _sqlite_engine(url, immediate=True)
        reader = _sqlite_engine(url, immediate=False)
        engines = Engines(url=url, dialect="sqlite", writer=writer, reader=reader)
    elif parsed.get_backend_name() == "postgresql":
        # A database that stops answering (a dropped route) must fail a connect in seconds,
        # not hold a thread for the TCP timeout.
        connect_args = {"connect_timeout": 10}
        writer = create_engine(
            url, pool_size=4, max_overflow=4, pool_pre_ping=True, connect_args=connect_args
        )
        reader = create_engine(
            url, pool_size=8, max_overflow=8, pool_pre_ping=True, connect_args=connect_args
        )
        engines = Engines(url=url, dialect="postgresql", writer=writer, reader=reader)
        with writer.connect() as conn:
            setting = conn.execute(text("SHOW synchronous_commit")).scalar_one()
        if setting == "off":
            engines.dispose()
            raise StoreError("PostgreSQL synchronous_commit is off: receipts would not be durable")
    else:
        raise StoreError(
            f"unsupported database backend {parsed.get_backend_name()!r}; use sqlite or postgresql"
        )
    return engines


def ensure_schema(engines: Engines) -> None:
    """Create the schema (through the migrations) on an empty database; refuse one whose
    schema is not this release's head, naming the command to run."""
    from gateway.store.migrate import check_or_create

    check_or_create(engines)
