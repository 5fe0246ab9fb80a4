"""Sinks: applying inbound canonical records (other provinces') to the local system."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from adapters.base import AdapterError
from adapters.mapping import Mapping_
from adapters.readers import _locked, _retry, _transient, db_message, make_engine, reflect_table
from gateway.domain.kinds import kind_named, kind_of_record
from gateway.domain.records import Record

# A result's ``lab`` key part is one of two fields (gateway.domain.kinds.lab_identity):
# the CMA number, or for a Hong Kong or Macau lab its accreditation number.
_LAB_FIELDS = ("lab_cma_number", "accreditation_number")


class SinkError(AdapterError):
    """A record could not be applied; the inbound cursor stays before it."""


def _key_columns(mapping: Mapping_) -> list[str]:
    """The local columns a sink finds a record's row by. Records arrive from other issuers,
    so every key field must be a column of the table (a constant would merge their rows);
    of a result's two lab fields, the ones the mapping has."""
    mapped = set(mapping.fields)
    kind = kind_named(mapping.kind)
    columns: list[str] = []
    missing: list[str] = []
    for part in kind.key_parts:
        if part == "lab":
            labs = [f for f in _LAB_FIELDS if f in mapped]
            if not labs:
                missing.append(" or ".join(_LAB_FIELDS))
            columns.extend(mapping.column_of(f) for f in labs)
        elif part in mapped:
            columns.append(mapping.column_of(part))
        else:
            missing.append(part)
    if missing:
        raise SinkError(
            f"a sink's mapping must map every field of the {kind.title} key to a column of its "
            f"table; not mapped: {', '.join(missing)} (records arrive from every issuer)"
        )
    return columns


class SqlSink:
    """Upserts records into a table of the local database, through the reverse mapping.

    Rows are found by the local columns of the record's key fields; a stored row whose
    version is the same or newer is left alone, so applying a change twice (after a
    restart) or out of order changes nothing.
    """

    def __init__(
        self,
        url: str,
        *,
        table: str,
        mapping: Mapping_,
        schema: str | None = None,
        lock_timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ):
        self.engine = make_engine(url, lock_timeout)
        self.table_name = table
        self.schema = schema
        self.mapping = mapping
        self.attempts = attempts
        self.backoff = backoff
        self._table: sa.Table | None = None
        self.key_columns = _key_columns(mapping)

    @property
    def table(self) -> sa.Table:
        if self._table is None:
            self._table = reflect_table(
                self.engine,
                self.table_name,
                self.schema,
                needs=self.mapping.to_columns(),
                what="mapped column",
                error=SinkError,
            )
        return self._table

    def apply(self, record: Record) -> bool:
        return self.apply_batch([record])[0]

    def apply_batch(self, records: Sequence[Record]) -> list[bool]:
        """Apply records in order in ONE local transaction; say which changed something.

        All or nothing: on failure none is applied (the inbound cursor stays before them).
        A record met twice in the batch is judged against what the batch already wrote.
        """
        if not records:
            return []
        rows = []
        for record in records:
            kind = kind_of_record(record).name
            if kind != self.mapping.kind:
                raise SinkError(f"this sink takes {self.mapping.kind} records, not {kind}")
            rows.append(self.mapping.to_row(record))
        kind = self.mapping.kind
        version_col = self.mapping.column_of("version")
        key_cols = self.key_columns

        def write() -> list[bool]:
            # Statements are built once per batch and run with many parameter sets: building
            # one SQLAlchemy statement per row cost more than the database work itself.
            table = self.table
            with self.engine.begin() as conn:
                stored = self._stored_versions(conn, table, key_cols, version_col, rows)
                inserts: dict[tuple[Any, ...], dict[str, str]] = {}
                updates: dict[tuple[Any, ...], dict[str, str]] = {}
                changed: list[bool] = []
                for record, row in zip(records, rows, strict=True):
                    key = self._key(row, key_cols)
                    if key in stored and stored[key] >= record.version:
                        changed.append(False)  # the same or newer is there (or earlier in this batch)
                        continue
                    (updates if key in stored and key not in inserts else inserts)[key] = row
                    stored[key] = record.version
                    changed.append(True)
                if inserts:
                    conn.execute(sa.insert(table), [self._typed(row) for row in inserts.values()])
                # Grouped by the columns written, in case a mapping leaves some out of a row.
                groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
                for row in updates.values():
                    groups.setdefault(tuple(row), []).append(row)
                for columns, group in groups.items():
                    params = [self._update_params(row, key_cols) for row in group]
                    conn.execute(self._update(table, key_cols, columns), params)
            return changed

        first = records[0]
        what = (
            f"{first.key} v{first.version} not applied"
            if len(records) == 1
            else f"a batch of {len(records)} records from {first.key} v{first.version} not applied"
        )
        try:
            return _retry(write, _transient, self.attempts, self.backoff, f"sink table {self.table_name}")
        except sa.exc.DBAPIError as err:
            reason = "locked by another writer" if _locked(err) else f"unavailable ({db_message(err)})"
            raise SinkError(
                f"sink table {self.table_name!r} is {reason} (after {self.attempts} attempts); "
                f"{what}, the inbound cursor stays before it"
            ) from None

    def _update(self, table: sa.Table, key_cols: list[str], columns: tuple[str, ...]) -> sa.Update:
        return (
            sa.update(table)
            .where(*[table.c[c] == sa.bindparam(f"key_{c}") for c in key_cols])
            .values({c: sa.bindparam(f"new_{c}") for c in columns})
        )

    def _update_params(self, row: dict[str, str], key_cols: list[str]) -> dict[str, Any]:
        typed = self._typed(row)
        return {**{f"key_{c}": typed[c] for c in key_cols}, **{f"new_{c}": v for c, v in typed.items()}}

    def _stored_versions(
        self,
        conn: sa.Connection,
        table: sa.Table,
        key_cols: list[str],
        version_col: str,
        rows: list[dict[str, str]],
    ) -> dict[tuple[Any, ...], int]:
        """key -> stored version for the rows' keys, read in a few IN queries."""
        found: dict[tuple[Any, ...], int] = {}
        # Compared as the column's type (what the database returns), not as the row's text.
        wanted = {self._key(row, key_cols) for row in rows}
        # The most selective key column (the number) narrows the query; the rest filter here.
        narrow = key_cols[-1]
        values = list({key[-1] for key in wanted})
        columns = [table.c[c] for c in key_cols] + [table.c[version_col]]
        for at in range(0, len(values), 500):
            chunk = values[at : at + 500]
            for *key, version in conn.execute(sa.select(*columns).where(table.c[narrow].in_(chunk))):
                k = tuple(key)
                if k in wanted:
                    found[k] = max(found.get(k, 0), self._version(version))
        return found

    def _key(self, row: dict[str, str], key_cols: list[str]) -> tuple[Any, ...]:
        typed = self._typed({c: row[c] for c in key_cols})
        return tuple(typed[c] for c in key_cols)

    def _version(self, stored: Any) -> int:
        return int(self.mapping.parse_field("version", str(stored)))

    def _typed(self, row: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column, text in row.items():
            python_type: type | None
            try:
                python_type = self.table.c[column].type.python_type
            except NotImplementedError:
                python_type = None
            out[column] = int(text) if python_type is int else text
        return out


def run_sql_script(url: str, script: str) -> None:
    """Run ``;``-separated DDL/DML against a local database: setting up a local system's
    tables for ``mrx demo --adapters`` (a real province has its own)."""
    engine = make_engine(url, 5.0)
    try:
        with engine.begin() as conn:
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
