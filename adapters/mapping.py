"""Mapping files: local column names and words -> canonical gateway.domain records, and back.

One TOML file per local system (docs/adapters.md lists every key). The mapping parses the
local forms (status words, scheme names, date formats) and then hands the values to the
domain's own builders (build_certificate, build_test_report), so every domain rule
reports a row problem naming the local column and why, exactly as the gateway would
refuse it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.base import AdapterError, Mapped, RowProblem, SourceRow
from gateway.domain.certificates import Certificate, CertState, Scheme, build_certificate
from gateway.domain.errors import InvalidArgument
from gateway.domain.kinds import CERTIFICATE_STATUS, TEST_REPORT
from gateway.domain.records import Conclusion, Record, TestReport, build_test_report
from gateway.reconcile.digests import message_id as message_id  # one derivation, shared

CHINA = ZoneInfo("Asia/Shanghai")
# A local "expired" word: the gateway derives EXPIRED from the expiry date and refuses it
# as a published state, so the mapping turns it into VALID with the (past) expiry date.
EXPIRED = "EXPIRED"

# Canonical fields of each supported kind and how their text is parsed. The kind names
# come from the domain (gateway.domain.kinds once the kinds refactor lands).
KIND_FIELDS: dict[str, dict[str, str]] = {
    CERTIFICATE_STATUS: {
        "certificate_number": "text",
        "scheme": "scheme",
        "issuing_body": "text",
        "issuer": "text",
        "holder_name": "text",
        "holder_credit_code": "text",
        "scope": "text",
        "state": "state",
        "reason": "text",
        "effective_at": "datetime",
        "issue_date": "date",
        "expiry_date": "date",
        "version": "int",
    },
    TEST_REPORT: {
        "report_number": "text",
        "issuer": "text",
        "lab_name": "text",
        "lab_cma_number": "text",
        "accreditation_number": "text",
        "product": "text",
        "standard": "text",
        "conclusion": "conclusion",
        "issue_date": "date",
        "state": "state",
        "reason": "text",
        "effective_at": "datetime",
        "version": "int",
    },
}
# lab_cma_number: a Hong Kong or Macau lab has none; the domain then requires the
# accreditation number (and says so, naming the column).
OPTIONAL = {"reason", "accreditation_number", "lab_cma_number"}
ENUMS: dict[str, type[Scheme] | type[CertState] | type[Conclusion]] = {
    "scheme": Scheme,
    "state": CertState,
    "conclusion": Conclusion,
}


@dataclass(frozen=True)
class FieldSpec:
    column: str
    # "datetime": the column holds a time; the version is its epoch seconds.
    parse: str = ""


@dataclass(frozen=True)
class Mapping_:
    """A loaded mapping file (named with a trailing underscore: typing.Mapping is taken)."""

    kind: str
    cursor_column: str
    cursor_type: str  # "int" or "text"
    fields: dict[str, FieldSpec]
    constants: dict[str, str]
    values: dict[str, dict[str, str]]  # canonical field -> local word -> canonical enum name
    reverse: dict[str, dict[str, str]]  # canonical field -> enum name -> preferred local word
    date_formats: tuple[str, ...]
    datetime_formats: tuple[str, ...]
    timezone: ZoneInfo
    source: Path | None = None
    row_id: str = ""
    today: Callable[[], date] = field(default=lambda: datetime.now(CHINA).date())

    @property
    def columns(self) -> list[str]:
        """Every local column the mapping reads (checked against the source at start)."""
        cols = [spec.column for spec in self.fields.values()]
        return list(dict.fromkeys([*cols, self.cursor_column]))

    def column_of(self, canonical: str) -> str:
        spec = self.fields.get(canonical)
        return spec.column if spec else canonical

    def to_columns(self) -> list[str]:
        """The local columns ``to_row`` writes."""
        return [spec.column for spec in self.fields.values()]

    def parse_field(self, name: str, raw: str) -> Any:
        """One canonical field parsed from its local text (ValueError says why not)."""
        return self._parse(name, KIND_FIELDS[self.kind][name], raw.strip())

    def cursor_key(self, value: str) -> Any:
        if self.cursor_type == "int":
            return int(value)
        return value

    # --- rows -> records ---------------------------------------------------------------

    def map_row(self, row: SourceRow) -> Mapped:
        problems: list[RowProblem] = []
        failed: set[str] = set()
        values: dict[str, Any] = {}
        cursor = row.values.get(self.cursor_column)
        for name, kind in KIND_FIELDS[self.kind].items():
            raw = self._raw(name, row, problems, failed)
            if raw is None:
                continue
            try:
                values[name] = self._parse(name, kind, raw)
            except ValueError as err:
                problems.append(RowProblem(self.column_of(name), str(err)))
                failed.add(name)
        expired_problem = self._expired(values)
        if expired_problem is not None:
            problems.append(expired_problem)
            failed.add("state")
        record: Record | None = None
        warnings: list[str] = []
        try:
            record, raw_warnings = self._build(values)
            warnings = [self._local_path(w) for w in raw_warnings]
        except InvalidArgument as err:
            for v in err.violations:
                canonical = v.field.split(".", 1)[1].replace(".", "_") if "." in v.field else v.field
                if canonical not in failed:
                    problems.append(RowProblem(self.column_of(canonical), v.description))
        if problems:
            return Mapped(row.where, None, tuple(problems), cursor)
        return Mapped(row.where, record, (), cursor, tuple(warnings))

    def _raw(self, name: str, row: SourceRow, problems: list[RowProblem], failed: set[str]) -> str | None:
        if name in self.constants:
            return self.constants[name]
        spec = self.fields.get(name)
        if spec is None:
            if name in OPTIONAL:
                return ""
            problems.append(RowProblem(name, "not mapped: add it under [fields] or [constants]"))
            failed.add(name)
            return None
        if spec.column not in row.values:
            problems.append(RowProblem(spec.column, "column missing in this row"))
            failed.add(name)
            return None
        return (row.values[spec.column] or "").strip()

    def _parse(self, name: str, kind: str, raw: str) -> Any:
        spec = self.fields.get(name)
        if kind == "text":
            return raw
        if kind in ENUMS:
            return self._enum(name, ENUMS[kind], raw)
        if raw == "":
            return None if kind != "date" else ""
        if kind == "date":
            return self._date(raw).isoformat()
        if kind == "datetime":
            return self._datetime(raw)
        if kind == "int":
            if spec is not None and spec.parse == "datetime":
                return int(self._datetime(raw).timestamp())
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"must be a whole number, got {raw!r}") from None
        raise AssertionError(kind)

    def _enum(self, name: str, cls: type[Scheme] | type[CertState] | type[Conclusion], raw: str) -> Any:
        if raw == "":
            return None
        words = self.values.get(name, {})
        target = words.get(raw) or {k.casefold(): v for k, v in words.items()}.get(raw.casefold())
        if target is None and not words:
            target = raw.upper()
        if target is None:
            known = ", ".join(words)
            raise ValueError(f"unknown word {raw!r}; the mapping knows: {known}")
        if name == "state" and target == EXPIRED:
            return EXPIRED
        try:
            return cls[target]
        except KeyError:
            raise ValueError(f"{raw!r} maps to {target!r}, which is not a {cls.__name__}") from None

    def _expired(self, values: dict[str, Any]) -> RowProblem | None:
        if values.get("state") != EXPIRED:
            return None
        column = self.column_of("state")
        if "expiry_date" not in KIND_FIELDS[self.kind]:
            values["state"] = None
            return RowProblem(column, f"an expired {self.kind} cannot be published: it does not expire")
        values["state"] = CertState.VALID
        expiry = values.get("expiry_date")
        if expiry and date.fromisoformat(expiry) >= self.today():
            return RowProblem(column, f"says expired, but the expiry date {expiry} has not passed")
        return None

    def _date(self, raw: str) -> date:
        for fmt in self.date_formats:
            try:
                return datetime.strptime(raw, fmt).date()
            except ValueError:
                continue
        raise ValueError(f"{raw!r} matches none of the date formats {list(self.date_formats)}")

    def _datetime(self, raw: str) -> datetime:
        for fmt in (*self.datetime_formats, *self.date_formats):
            try:
                parsed = datetime.strptime(raw, fmt)
            except ValueError:
                continue
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=self.timezone)
            return parsed
        raise ValueError(f"{raw!r} matches none of the time formats {list(self.datetime_formats)}")

    def _build(self, v: dict[str, Any]) -> tuple[Record, list[str]]:
        def enum(name: str) -> int:
            value = v.get(name)
            return int(value) if value is not None else 0

        common = {
            "issuer": v.get("issuer", ""),
            "state": enum("state"),
            "reason": v.get("reason") or "",
            "effective_at": v.get("effective_at"),
            "issue_date": v.get("issue_date") or "",
            "version": v.get("version") or 0,
        }
        if self.kind == CERTIFICATE_STATUS:
            return build_certificate(
                certificate_number=v.get("certificate_number", ""),
                scheme=enum("scheme"),
                issuing_body=v.get("issuing_body", ""),
                holder_name=v.get("holder_name", ""),
                holder_credit_code=v.get("holder_credit_code", ""),
                scope=v.get("scope", ""),
                expiry_date=v.get("expiry_date") or "",
                **common,
            )
        return build_test_report(
            report_number=v.get("report_number", ""),
            lab_name=v.get("lab_name", ""),
            lab_cma_number=v.get("lab_cma_number", ""),
            accreditation_number=v.get("accreditation_number") or "",
            product=v.get("product", ""),
            standard=v.get("standard", ""),
            conclusion=enum("conclusion"),
            **common,
        )

    def _local_path(self, warning: str) -> str:
        # "certificate_status.holder.credit_code: ..." -> "统一社会信用代码: ..."
        path, _, rest = warning.partition(": ")
        if "." in path:
            canonical = path.split(".", 1)[1].replace(".", "_")
            return f"{self.column_of(canonical)}: {rest}"
        return warning

    # --- records -> rows (the sink side) ------------------------------------------------

    def to_row(self, record: Record) -> dict[str, str]:
        """The local row for a canonical record: every mapped column, in local words."""
        values = canonical_values(record)
        row: dict[str, str] = {}
        for name, spec in self.fields.items():
            value = values[name]
            kind = KIND_FIELDS[self.kind][name]
            if kind in ENUMS:
                text = self._local_word(name, value)
            elif kind == "date":
                text = value.strftime(self.date_formats[0])
            elif kind == "datetime":
                text = value.astimezone(self.timezone).strftime(self.datetime_formats[0])
            elif kind == "int" and spec.parse == "datetime":
                text = datetime.fromtimestamp(value, self.timezone).strftime(self.datetime_formats[0])
            else:
                text = str(value)
            row[spec.column] = text
        return row

    def _local_word(self, name: str, value: Any) -> str:
        preferred = self.reverse.get(name, {}).get(value.name)
        if preferred is not None:
            return preferred
        for word, target in self.values.get(name, {}).items():
            if target == value.name:
                return word
        return str(value.name)


def canonical_values(record: Record) -> dict[str, Any]:
    """A record's values by canonical field name (the inverse of what map_row builds)."""
    if isinstance(record, Certificate):
        return {
            "certificate_number": record.certificate_number,
            "scheme": record.scheme,
            "issuing_body": record.issuing_body,
            "issuer": record.issuer,
            "holder_name": record.holder.name,
            "holder_credit_code": record.holder.credit_code,
            "scope": record.scope,
            "state": record.state,
            "reason": record.reason,
            "effective_at": record.effective_at,
            "issue_date": record.issue_date,
            "expiry_date": record.expiry_date,
            "version": record.version,
        }
    if isinstance(record, TestReport):
        return {
            name: getattr(record, name)
            for name in KIND_FIELDS[TEST_REPORT]  # the dataclass uses the canonical names
        }
    raise AdapterError(f"no mapping for record kind {type(record).__name__} yet")


def content_digest(record: Record) -> str:
    return message_id(record)


_TOP_KEYS = {"record", "fields", "constants", "values", "reverse", "formats"}


def load_mapping(path: Path) -> Mapping_:
    """Read and check a mapping file; AdapterError names the key that is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"mapping file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise AdapterError(f"mapping file {path} is not valid UTF-8 TOML: {err}") from None
    return mapping_from_dict(data, source=path)


def mapping_from_dict(data: Mapping[str, Any], *, source: Path | None = None) -> Mapping_:
    where = f"mapping file {source}" if source else "mapping"
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise AdapterError(f"{where}: unknown section(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    record = data.get("record", {})
    kind = record.get("kind", "")
    if kind not in KIND_FIELDS:
        raise AdapterError(f"{where}: [record] kind must be one of {sorted(KIND_FIELDS)}, got {kind!r}")
    cursor = record.get("cursor", "")
    if not cursor:
        raise AdapterError(f"{where}: [record] cursor (the column that orders changes) is required")
    cursor_type = record.get("cursor_type", "int")
    if cursor_type not in ("int", "text"):
        raise AdapterError(f"{where}: [record] cursor_type must be 'int' or 'text', got {cursor_type!r}")
    canonical = KIND_FIELDS[kind]
    fields: dict[str, FieldSpec] = {}
    for name, spec in data.get("fields", {}).items():
        if name not in canonical:
            raise AdapterError(
                f"{where}: [fields] {name!r} is not a field of {kind}; fields: {list(canonical)}"
            )
        if isinstance(spec, str):
            fields[name] = FieldSpec(spec)
        elif isinstance(spec, dict) and isinstance(spec.get("column"), str):
            fields[name] = FieldSpec(spec["column"], spec.get("parse", ""))
        else:
            raise AdapterError(
                f"{where}: [fields] {name} must be a column name or {{column = ..., parse = ...}}"
            )
    constants = {str(k): str(v) for k, v in data.get("constants", {}).items()}
    for name in constants:
        if name not in canonical:
            raise AdapterError(f"{where}: [constants] {name!r} is not a field of {kind}")
    missing = [n for n in canonical if n not in fields and n not in constants and n not in OPTIONAL]
    if missing:
        raise AdapterError(f"{where}: no column or constant for {missing} (add them under [fields])")
    values = {str(k): {str(w): str(t) for w, t in v.items()} for k, v in data.get("values", {}).items()}
    for name, words in values.items():
        if canonical.get(name) not in ENUMS:
            raise AdapterError(f"{where}: [values.{name}]: {name} is not a field with fixed values")
        cls = ENUMS[canonical[name]]
        for word, target in words.items():
            if target not in cls.__members__ and not (name == "state" and target == EXPIRED):
                raise AdapterError(
                    f"{where}: [values.{name}] {word!r} = {target!r}: not one of {list(cls.__members__)}"
                )
    reverse = {str(k): {str(n): str(w) for n, w in v.items()} for k, v in data.get("reverse", {}).items()}
    formats = data.get("formats", {})
    date_formats = tuple(_as_list(formats.get("date", ["%Y-%m-%d"])))
    datetime_formats = tuple(_as_list(formats.get("datetime", ["%Y-%m-%d %H:%M:%S"])))
    try:
        tz = ZoneInfo(formats.get("timezone", "Asia/Shanghai"))
    except (ZoneInfoNotFoundError, ValueError):
        raise AdapterError(f"{where}: [formats] timezone {formats.get('timezone')!r} is unknown") from None
    return Mapping_(
        kind=kind,
        cursor_column=cursor,
        cursor_type=cursor_type,
        fields=fields,
        constants=constants,
        values=values,
        reverse=reverse,
        date_formats=date_formats,
        datetime_formats=datetime_formats,
        timezone=tz,
        source=source,
        row_id=record.get("row_id", cursor),
    )


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]
