"""Adapters connecting provincial systems to the gateway (client side only: see gateway.client).

An adapter is a *reader* (how rows come out of a local system) plus a *mapping* file (local
names and words -> canonical records), named by an adapter config file::

    adapter = load_adapter(Path("/etc/mrx/adapter.toml"))
    for mapped in adapter.changes(cursor):   # Mapped(where, record | None, problems, cursor)
        ...

docs/adapters.md is the guide for a province adding its own system.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.base import AdapterError, Mapped, Reader, RowProblem, Sink, SourceError, SourceRow
from adapters.config import AdapterConfig, load_config
from adapters.mapping import Mapping_, content_digest, load_mapping, message_id

__all__ = [
    "Adapter",
    "AdapterConfig",
    "AdapterError",
    "Mapped",
    "Reader",
    "RowProblem",
    "Sink",
    "SourceError",
    "load_adapter",
    "message_id",
]


class Adapter:
    """A local system seen through its reader and mapping (and, optionally, its sink)."""

    def __init__(
        self,
        *,
        participant: str,
        mapping: Mapping_,
        reader: Reader,
        sink: Sink | None = None,
        config: AdapterConfig | None = None,
    ):
        self.participant = participant
        self.mapping = mapping
        self.reader = reader
        self.sink = sink
        self.config = config

    def snapshot(self) -> Iterator[Mapped]:
        """Every local record (for reconciliation and first loads), cursor left None."""
        for mapped in self._mapped(self._checked(self.reader.rows(None))):
            yield Mapped(mapped.where, mapped.record, mapped.problems, None, mapped.warnings)

    def changes(self, cursor: str | None) -> Iterator[Mapped]:
        """Rows after ``cursor`` in cursor order; each Mapped carries the cursor after it."""
        m = self.mapping
        since = None if cursor is None else m.cursor_key(cursor)
        bad: list[Mapped] = []

        def later(rows: Iterator[SourceRow]) -> Iterator[tuple[Any, SourceRow]]:
            for row in rows:
                raw = (row.values.get(m.cursor_column) or "").strip()
                try:
                    key = m.cursor_key(raw)
                except ValueError:
                    why = f"cursor value {raw!r} is not a whole number" if raw else "cursor value is empty"
                    bad.append(Mapped(row.where, None, (RowProblem(m.cursor_column, why),), None))
                    continue
                if since is None or key > since:
                    yield key, row

        pairs: Iterator[tuple[Any, SourceRow]] = later(self._checked(self.reader.rows(cursor)))
        if not self.reader.ordered:
            # Exports are nearly always in cursor order already: a first pass over the keys
            # alone checks that, so a large file streams instead of being held to be sorted.
            keys = [key for key, _ in pairs]
            bad.clear()
            pairs = later(self._checked(self.reader.rows(cursor)))
            if any(a > b for a, b in itertools.pairwise(keys)):
                pairs = iter(sorted(pairs, key=lambda pair: pair[0]))
        rows = (SourceRow(row.where, {**row.values, m.cursor_column: str(key)}) for key, row in pairs)
        for mapped in self._mapped(rows):
            yield from bad
            bad.clear()
            yield mapped
        yield from bad

    def _checked(self, rows: Iterator[SourceRow]) -> Iterator[SourceRow]:
        """Stop at the first row if a mapped column is missing: a renamed column is a config error."""
        first = True
        for row in rows:
            if first:
                missing = [c for c in self.mapping.columns if c not in row.values]
                if missing:
                    raise AdapterError(
                        f"the source has no column(s) {missing} that the mapping "
                        f"{self.mapping.source or ''} reads (renamed or missing?); it has: {list(row.values)}"
                    )
                first = False
            yield row

    def _mapped(self, rows: Iterator[SourceRow]) -> Iterator[Mapped]:
        seen: dict[tuple[str, int], tuple[str, str]] = {}
        for row in rows:
            mapped = self.mapping.map_row(row)
            record = mapped.record
            if record is None:
                yield mapped
                continue
            if record.issuer != self.participant:
                column = self.mapping.column_of("issuer")
                why = f"issuer {record.issuer!r} is not this adapter's participant {self.participant!r}"
                yield Mapped(mapped.where, None, (RowProblem(column, why),), mapped.cursor)
                continue
            digest = content_digest(record)
            earlier = seen.get((record.key, record.version))
            if earlier is not None:
                where, earlier_digest = earlier
                why = (
                    f"duplicate of {where} (same record, same version {record.version}); sent once"
                    if earlier_digest == digest
                    else f"conflicts with {where}: same record and version {record.version}, other values; "
                    "give the change a new version"
                )
                yield Mapped(
                    mapped.where, None, (RowProblem(self.mapping.column_of("version"), why),), mapped.cursor
                )
                continue
            seen[(record.key, record.version)] = (mapped.where, digest)
            yield mapped


def build_reader(config: AdapterConfig, mapping: Mapping_) -> Reader:
    from adapters import readers

    opts = dict(config.reader)
    kind = opts.pop("type")
    try:
        if kind == "csv":
            return readers.CsvReader(opts.pop("path"), **opts)
        if kind == "xml":
            return readers.XmlReader(opts.pop("path"), **opts)
        if kind == "http":
            return readers.HttpJsonReader(opts.pop("url"), **opts)
        return readers.SqlReader(
            opts.pop("url"), cursor_column=mapping.cursor_column, cursor_type=mapping.cursor_type, **opts
        )
    except (KeyError, TypeError) as err:
        raise AdapterError(
            f"adapter config {config.path}: [reader] options for {kind!r} are wrong: {err}"
        ) from None


def build_sink(config: AdapterConfig, mapping: Mapping_) -> Sink | None:
    if config.sink is None:
        return None
    from adapters.sinks import SqlSink

    opts = dict(config.sink)
    opts.pop("type")
    sink_mapping = load_mapping(opts.pop("mapping")) if "mapping" in opts else mapping
    try:
        return SqlSink(opts.pop("url"), mapping=sink_mapping, **opts)
    except (KeyError, TypeError) as err:
        raise AdapterError(f"adapter config {config.path}: [sink] options are wrong: {err}") from None


def load_adapter(config_path: Path) -> Adapter:
    """The adapter a config file describes (AdapterError names what is wrong in it)."""
    config = load_config(config_path)
    mapping = load_mapping(config.mapping)
    return Adapter(
        participant=config.participant,
        mapping=mapping,
        reader=build_reader(config, mapping),
        sink=build_sink(config, mapping),
        config=config,
    )
