"""Schema history: Alembic migrations for SQLite and PostgreSQL (``mrx db upgrade``).

The migration environment lives in ``gateway/store/migrations/`` and installs with the
package; there is no alembic.ini: the configuration is built here and every run uses
a connection we opened, inside one transaction that holds the schema lock:

- PostgreSQL: ``pg_advisory_xact_lock(7262001)``, the lock the first release took to
  create its tables, so replicas starting together (of this release or that one)
  take turns; the second finds the work done.
- SQLite: the writer engine's ``BEGIN IMMEDIATE`` (the database's one write lock).

DDL is transactional on both backends, so an upgrade commits whole or not at all.

Which schema a database has:

- ``alembic_version`` names a revision of ours: that revision.
- No ``alembic_version`` but ``mrx_schema`` version 1: created by the first release
  (before migrations); its tables are revision 0001's, and an upgrade checks them and
  stamps it so.
- None of our tables: empty; an upgrade (or ``open_engines``) creates the schema.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select, text

from gateway.store.base import Engines, StoreError, display_url
from gateway.store.schema import metadata, schema_info

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SCHEMA_LOCK_SQL = "SELECT pg_advisory_xact_lock(7262001)"
# The revision whose tables the first release (757f7fd, before migrations) created.
FIRST_RELEASE_REVISION = "0001"
FIRST_RELEASE_TABLES: dict[str, frozenset[str]] = {
    "exchanges": frozenset(
        {
            "log_index", "received_at_us", "sender", "message_id", "kind", "record_key",
            "record_version", "subject_issuer", "outcome", "reason", "envelope_sha256",
            "envelope", "receipt", "leaf",
        }
    ),
    "merkle_nodes": frozenset({"level", "idx", "hash"}),
    "checkpoints": frozenset({"tree_size", "root_hash", "created_at_us", "envelope"}),
    "certificates": frozenset(
        {
            "scheme", "certificate_number", "issuer", "issuing_body", "holder_credit_code",
            "holder_name", "state", "version", "effective_at_us", "issue_date", "expiry_date",
            "log_index", "record_key",
        }
    ),
    "records": frozenset(
        {
            "record_key", "kind", "issuer", "state", "version", "effective_at_us", "valid_until",
            "subject", "classification", "log_index",
        }
    ),
    "record_versions": frozenset({"record_key", "version", "state", "effective_at_us", "log_index"}),
    "mrx_schema": frozenset({"id", "version", "note"}),
}  # fmt: skip


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration, without an ini file; ``connection`` is the one to migrate."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None
    return head


def known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in _script().walk_revisions())


@dataclasses.dataclass(frozen=True)
class SchemaState:
    """What a database holds, read without changing it."""

    revision: str | None  # alembic_version, if any
    first_release_version: int | None  # mrx_schema.version of a database without alembic_version
    tables: frozenset[str]  # which of our tables exist

    @property
    def empty(self) -> bool:
        return self.revision is None and not self.tables

    @property
    def at_head(self) -> bool:
        return self.revision == head_revision()

    @property
    def known(self) -> bool:
        return self.revision is None or self.revision in known_revisions()

    def describe(self) -> str:
        head = head_revision()
        if self.empty:
            return "empty (no mrx tables)"
        if self.revision is None:
            if self.first_release_version is not None:
                return (
                    f"created by an mrx release before schema migrations (mrx_schema version "
                    f"{self.first_release_version}); not at head {head}"
                )
            return "mrx tables without a schema version (neither alembic_version nor mrx_schema)"
        if self.revision == head:
            return f"{self.revision} (head)"
        if self.known:
            return f"{self.revision}, behind head {head}"
        return f"{self.revision}, unknown to this release (head {head}): upgraded by a newer mrx"


def read_state(conn: Connection) -> SchemaState:
    insp = inspect(conn)
    ours = set(metadata.tables) | set(FIRST_RELEASE_TABLES)
    tables = frozenset(t for t in insp.get_table_names() if t in ours)
    revision = MigrationContext.configure(conn).get_current_revision()
    first: int | None = None
    if revision is None and schema_info.name in tables:
        first = conn.execute(select(schema_info.c.version).where(schema_info.c.id == 1)).scalar_one_or_none()
    return SchemaState(revision=revision, first_release_version=first, tables=tables)


@contextmanager
def schema_lock(engines: Engines) -> Iterator[Connection]:
    """A writer transaction holding the schema lock (see the module docstring)."""
    with engines.writer.begin() as conn:
        if engines.dialect == "postgresql":
            conn.execute(text(SCHEMA_LOCK_SQL))
        yield conn


def upgrade_command(engines: Engines) -> str:
    return f"mrx db upgrade --database {display_url(engines.url)}"


def check_or_create(engines: Engines) -> SchemaState:
    """What ``open_engines`` does: create the schema on an empty database, accept one at
    head, and refuse anything else, naming the command to run. Never alters an existing
    schema: operators upgrade explicitly (and take a backup first)."""
    with schema_lock(engines) as conn:
        state = read_state(conn)
        if state.empty:
            command.upgrade(alembic_config(conn), "head")
            return read_state(conn)
    if state.at_head:
        return state
    if not state.known:
        raise StoreError(
            f"database schema revision {state.revision} is unknown to this release of mrx (its head "
            f"is {head_revision()}): a newer mrx upgraded it; run that release, or restore a backup"
        )
    if state.revision is None and state.first_release_version is None:
        raise StoreError(f"database schema: {state.describe()}; refusing to use it")
    raise StoreError(f"database schema: {state.describe()}; back it up and run: {upgrade_command(engines)}")


@dataclasses.dataclass(frozen=True)
class Upgraded:
    before: SchemaState
    stamped: bool  # a first-release database recognised as revision 0001
    after: SchemaState


def upgrade(engines: Engines) -> Upgraded:
    """``mrx db upgrade``: bring the database to head, under the schema lock."""
    with schema_lock(engines) as conn:
        before = read_state(conn)
        if not before.known:
            raise StoreError(
                f"database schema revision {before.revision} is unknown to this release of mrx "
                f"(its head is {head_revision()}): it was upgraded by a newer mrx; not touching it"
            )
        stamped = False
        if before.revision is None and before.tables:
            _check_first_release(conn, before)
            command.stamp(alembic_config(conn), FIRST_RELEASE_REVISION)
            stamped = True
        command.upgrade(alembic_config(conn), "head")
        after = read_state(conn)
    return Upgraded(before=before, stamped=stamped, after=after)


def _check_first_release(conn: Connection, state: SchemaState) -> None:
    """A database without alembic_version is stamped only if it is the first release's."""
    if state.first_release_version != 1:
        raise StoreError(
            f"database schema: {state.describe()}; only a database of the first release "
            f"(mrx_schema version 1, no alembic_version) is recognised and upgraded"
        )
    insp = inspect(conn)
    for table, columns in FIRST_RELEASE_TABLES.items():
        if table not in state.tables:
            raise StoreError(f"database schema: table {table} of the first release is missing; not upgrading")
        found = {c["name"] for c in insp.get_columns(table)}
        if found != columns:
            raise StoreError(
                f"database schema: table {table} differs from the first release's (columns "
                f"{sorted(found ^ columns)}); not upgrading"
            )
