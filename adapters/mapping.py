"""Mapping files: local column names and words -> canonical gateway.domain records, and back.

One TOML file per local system (docs/adapters.md lists every key). Which canonical fields
a kind has, and how each is parsed, is not written here: it is derived from the kinds
registry (gateway.domain.kinds) and the protobuf message of each kind (Kind.proto_class),
so a new kind is mappable without touching the adapters. The mapping parses the local
forms (status words, scheme names, date formats), fills the kind's wire message and
hands it to gateway.convert.record_from_proto, so every domain rule reports a row problem
naming the local column and why, exactly as the gateway would refuse it.

Flat rows and nested messages: a singular nested message is flattened with its field
name as prefix (``holder.credit_code`` -> ``holder_credit_code``); a repeated message
takes numbered column groups (``qualifications_1_kind``, ``qualifications_2_kind`` ...;
a group whose columns are all empty is left out); a repeated text field is one column
split on the ``[formats] list_separators``.
"""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from adapters.base import AdapterError, Mapped, RowProblem, SourceRow
from gateway.convert import WIRE_KINDS, record_from_proto, record_to_proto
from gateway.domain.errors import FieldViolation, InvalidArgument
from gateway.domain.kinds import Kind, kind_named, kind_names
from gateway.domain.records import Record
from gateway.reconcile.digests import message_id as message_id  # one derivation, shared

CHINA = ZoneInfo("Asia/Shanghai")
# A local "expired" word: the gateway derives EXPIRED from the record's dates and refuses
# it as a published state, so the mapping sends VALID and checks those dates have passed.
EXPIRED = "EXPIRED"
STATE = "state"
# The placeholder for a group number in the reference (qualifications_N_kind).
N = "N"
DEFAULT_LIST_SEPARATORS = (";", "；")

_TIMESTAMP = "google.protobuf.Timestamp"
_INTS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
}
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}


# --- the canonical fields of each kind, derived ------------------------------------------


@dataclass(frozen=True)
class Canonical:
    """One canonical (flat) field of a kind: how its text is parsed and where it goes."""

    name: str  # e.g. "holder_credit_code"; in a group: the subfield name ("kind")
    type: str  # text, date, datetime, int, float, list, enum
    path: tuple[str, ...]  # protobuf field names from the kind's message (or the group's)
    # An optional protobuf field: left unset when empty (else empty means zero).
    presence: bool = False
    enum: EnumDescriptor | None = None

    def enum_names(self) -> dict[str, int]:
        """The enum's value names without their prefix (CERTIFICATE_STATE_VALID -> VALID)."""
        assert self.enum is not None
        prefix = self.enum.values[0].name.removesuffix("UNSPECIFIED")
        return {v.name.removeprefix(prefix): v.number for v in self.enum.values if v.number != 0}


@dataclass(frozen=True)
class KindFields:
    """Every mappable field of one kind: flat fields, and repeated groups by name."""

    kind: Kind
    flat: dict[str, Canonical]
    groups: dict[str, dict[str, Canonical]]

    def spec(self, name: str) -> Canonical | None:
        """The field named ``name``, numbered group fields (``qualifications_2_grade``) included."""
        if name in self.flat:
            return self.flat[name]
        split = self.split(name)
        return None if split is None else self.groups[split[0]][split[2]]

    def split(self, name: str) -> tuple[str, int, str] | None:
        """``qualifications_2_grade`` -> ("qualifications", 2, "grade"); None when not a group field."""
        for group, subs in self.groups.items():
            m = re.fullmatch(rf"{group}_(\d+)_(\w+)", name)
            if m and m.group(2) in subs and int(m.group(1)) >= 1:
                return group, int(m.group(1)), m.group(2)
        return None


def _dates_of(cls: Any) -> dict[str, Any]:
    """Field annotations of a domain class; a text field annotated ``date`` is a date."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {}


def _element(hint: Any) -> Any:
    args = typing.get_args(hint)
    return args[0] if args else None


def _fields_of(desc: Descriptor, domain: Any, path: tuple[str, ...], prefix: str) -> dict[str, Canonical]:
    hints = _dates_of(domain)
    out: dict[str, Canonical] = {}
    for f in desc.fields:
        name = prefix + f.name
        here = (*path, f.name)
        repeated = f.is_repeated
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            assert f.message_type is not None
            if f.message_type.full_name == _TIMESTAMP:
                out[name] = Canonical(name, "datetime", here, presence=True)
            elif not repeated:
                out.update(_fields_of(f.message_type, hints.get(f.name), here, name + "_"))
            continue  # repeated messages are groups (see kind_fields)
        if repeated:
            out[name] = Canonical(name, "list", here)
        elif f.type == FieldDescriptor.TYPE_ENUM:
            out[name] = Canonical(name, "enum", here, enum=f.enum_type)
        elif f.type in _INTS:
            out[name] = Canonical(name, "int", here, presence=f.has_presence)
        elif f.type in _FLOATS:
            out[name] = Canonical(name, "float", here, presence=f.has_presence)
        elif f.type == FieldDescriptor.TYPE_STRING:
            out[name] = Canonical(name, "date" if hints.get(f.name) is date else "text", here)
        else:
            raise TypeError(f"{desc.full_name}.{f.name}: no flat-row form for protobuf type {f.type}")
    return out


@cache
def kind_fields(kind: str) -> KindFields:
    """The mappable fields of ``kind``, from its protobuf message and its domain class."""
    wire = WIRE_KINDS[kind_named(kind).name]
    desc: Descriptor = wire.proto_class.DESCRIPTOR
    hints = _dates_of(wire.record_class)
    groups: dict[str, dict[str, Canonical]] = {}
    for f in desc.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.is_repeated:
            assert f.message_type is not None
            groups[f.name] = _fields_of(f.message_type, _element(hints.get(f.name)), (), "")
    return KindFields(wire.kind, _fields_of(desc, wire.record_class, (), ""), groups)


def _word_key(fields: KindFields, name: str) -> str:
    """The ``[values.X]`` table of a field: group fields share one (``qualifications_kind``)."""
    split = fields.split(name)
    return name if split is None else f"{split[0]}_{split[2]}"


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
    list_separators: tuple[str, ...] = DEFAULT_LIST_SEPARATORS

    @property
    def canonical(self) -> KindFields:
        return kind_fields(self.kind)

    @property
    def columns(self) -> list[str]:
        """Every local column the mapping reads (checked against the source at start)."""
        cols = [spec.column for spec in self.fields.values()]
        return list(dict.fromkeys([*cols, self.cursor_column]))

    def column_of(self, canonical: str) -> str:
        spec = self.fields.get(canonical)
        if spec is None and canonical == "issuer":
            # Records say ``issuer``; an assessor's is its ``home`` field.
            spec = self.fields.get(self.canonical.kind.issuer_field)
        return spec.column if spec else canonical

    def to_columns(self) -> list[str]:
        """The local columns ``to_row`` writes."""
        return [spec.column for spec in self.fields.values()]

    def parse_field(self, name: str, raw: str) -> Any:
        """One canonical field parsed from its local text (ValueError says why not)."""
        spec = self.canonical.spec(name)
        assert spec is not None, name
        return self._parse(name, spec, raw.strip())

    def cursor_key(self, value: str) -> Any:
        if self.cursor_type == "int":
            return int(value)
        return value

    # --- rows -> records ---------------------------------------------------------------

    def _names(self) -> list[str]:
        """Every canonical field this mapping fills: the kind's flat fields, then mapped groups."""
        flat = list(self.canonical.flat)
        grouped = [n for n in (*self.fields, *self.constants) if n not in self.canonical.flat]
        return flat + sorted(dict.fromkeys(grouped), key=lambda n: self.canonical.split(n) or (n, 0, ""))

    def map_row(self, row: SourceRow) -> Mapped:
        problems: list[RowProblem] = []
        failed: set[str] = set()
        values: dict[str, Any] = {}
        cursor = row.values.get(self.cursor_column)
        for name in self._names():
            raw = self._raw(name, row, problems, failed)
            if raw is None:
                continue
            spec = self.canonical.spec(name)
            assert spec is not None
            try:
                values[name] = self._parse(name, spec, raw)
            except ValueError as err:
                problems.append(RowProblem(self.column_of(name), str(err)))
                failed.add(name)
        expired = values.get(STATE) == EXPIRED
        if expired:
            values[STATE] = "VALID"
        record: Record | None = None
        warnings: list[str] = []
        try:
            msg, numbers = self._message(values, problems, failed)
            record, raw_warnings = record_from_proto(msg)  # type: ignore[arg-type]
            warnings = [self._local_path(w, numbers) for w in raw_warnings]
        except InvalidArgument as err:
            for v in err.violations:
                canonical = self._canonical_path(v, numbers)
                if canonical not in failed:
                    problems.append(RowProblem(self.column_of(canonical), v.description))
        if expired and record is not None:
            problem = self._expired(record)
            if problem is not None:
                problems.append(problem)
        if problems:
            return Mapped(row.where, None, tuple(problems), cursor)
        return Mapped(row.where, record, (), cursor, tuple(warnings))

    def _raw(self, name: str, row: SourceRow, problems: list[RowProblem], failed: set[str]) -> str | None:
        if name in self.constants:
            return self.constants[name]
        spec = self.fields.get(name)
        if spec is None:
            return ""  # not mapped: the domain says if the kind needs it
        if spec.column not in row.values:
            problems.append(RowProblem(spec.column, "column missing in this row"))
            failed.add(name)
            return None
        return (row.values[spec.column] or "").strip()

    def _parse(self, name: str, spec: Canonical, raw: str) -> Any:
        kind = spec.type
        if kind == "text":
            return raw
        if kind == "enum":
            return self._enum(name, spec, raw)
        if raw == "":
            return None
        if kind == "list":
            parts = [raw]
            for sep in self.list_separators:
                parts = [p for part in parts for p in part.split(sep)]
            return [p.strip() for p in parts if p.strip()]
        if kind == "date":
            return self._date(raw).isoformat()
        if kind == "datetime":
            return self._datetime(raw)
        if kind == "float":
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"must be a number, got {raw!r}") from None
        if kind == "int":
            if self.fields.get(name, FieldSpec("")).parse == "datetime":
                return int(self._datetime(raw).timestamp())
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"must be a whole number, got {raw!r}") from None
        raise AssertionError(kind)

    def _enum(self, name: str, spec: Canonical, raw: str) -> Any:
        if raw == "":
            return None
        words = self.values.get(_word_key(self.canonical, name), {})
        target = words.get(raw) or {k.casefold(): v for k, v in words.items()}.get(raw.casefold())
        if target is None and not words:
            target = raw.upper()
        if target is None:
            known = ", ".join(words)
            raise ValueError(f"unknown word {raw!r}; the mapping knows: {known}")
        if name == STATE and target == EXPIRED:
            return EXPIRED
        if target not in spec.enum_names():
            assert spec.enum is not None
            raise ValueError(f"{raw!r} maps to {target!r}, which is not a {spec.enum.name}")
        return target

    def _message(
        self,
        values: dict[str, Any],
        problems: list[RowProblem],
        failed: set[str],
        *,
        keep_empty: bool = False,
    ) -> tuple[Message, dict[str, list[int]]]:
        """The kind's wire message from parsed values; which group numbers it holds, in order."""
        fields = self.canonical
        msg: Message = fields.kind.proto_class()
        for name, spec in fields.flat.items():
            self._set(msg, spec, name, values.get(name), problems, failed)
        numbers: dict[str, list[int]] = {}
        present: dict[tuple[str, int], dict[str, Any]] = {}
        for name, value in values.items():
            split = fields.split(name)
            if split is not None:
                present.setdefault(split[:2], {})[split[2]] = (name, value)
        for (group, number), subs in sorted(present.items()):
            # A group whose columns are all empty is absent (a row with fewer qualifications).
            empty = all(v in (None, "", []) for _, v in subs.values())
            if empty and not keep_empty and not any(n in failed for n, _ in subs.values()):
                continue
            numbers.setdefault(group, []).append(number)
            child = getattr(msg, group).add()
            for sub, (name, value) in subs.items():
                self._set(child, fields.groups[group][sub], name, value, problems, failed)
        return msg, numbers

    def _set(
        self,
        msg: Message,
        spec: Canonical,
        name: str,
        value: Any,
        problems: list[RowProblem],
        failed: set[str],
    ) -> None:
        target = msg
        for part in spec.path[:-1]:
            target = getattr(target, part)
        attr = spec.path[-1]
        if value is None or value == "":
            if spec.type == "float" and not spec.presence and name not in failed:
                # A number without presence would otherwise read as 0.0, a valid value.
                problems.append(RowProblem(self.column_of(name), "required"))
                failed.add(name)
            return
        try:
            if spec.type == "enum":
                setattr(target, attr, spec.enum_names()[value])
            elif spec.type == "datetime":
                getattr(target, attr).FromDatetime(value)
            elif spec.type == "list":
                getattr(target, attr).extend(value)
            else:
                setattr(target, attr, value)
        except (ValueError, TypeError, OverflowError) as err:
            problems.append(RowProblem(self.column_of(name), f"out of range: {err}"))
            failed.add(name)

    def _canonical_path(self, v: FieldViolation, numbers: Mapping[str, list[int]]) -> str:
        return self._canonical(v.field, numbers)

    def _canonical(self, path: str, numbers: Mapping[str, list[int]]) -> str:
        # "assessor.qualifications[0].fields[1]" -> "qualifications_<its number>_fields";
        # "certificate_status.holder.credit_code" -> "holder_credit_code".
        path = path.split(".", 1)[1] if path.startswith(self.kind + ".") else path
        m = re.match(r"(\w+)\[(\d+)\]\.(\w+)", path)
        if m and m.group(1) in self.canonical.groups:
            used = numbers.get(m.group(1), [])
            index = int(m.group(2))
            number = used[index] if index < len(used) else index + 1
            return f"{m.group(1)}_{number}_{m.group(3)}"
        path = re.sub(r"\[\d+\]", "", path)
        if path in self.canonical.groups:
            # The whole group ("at least one qualification is required"): its first column.
            order = list(self.canonical.groups[path])
            mapped = [split for s in self.fields if (split := self.canonical.split(s)) and split[0] == path]
            if mapped:
                _, number, sub = min(mapped, key=lambda t: (t[1], order.index(t[2])))
                return f"{path}_{number}_{sub}"
            return path
        return path.replace(".", "_")

    def _expired(self, record: Record) -> RowProblem | None:
        column = self.column_of(STATE)
        kind = self.canonical.kind
        if kind.valid_until_field is None:
            return RowProblem(column, f"an expired {kind.name} cannot be published: it does not expire")
        until = kind.valid_until(record)
        if until is not None and until >= self.today():
            label = kind.valid_until_field.replace("_", " ")
            return RowProblem(column, f"says expired, but the {label} {until.isoformat()} has not passed")
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

    def _local_path(self, warning: str, numbers: Mapping[str, list[int]]) -> str:
        # "certificate_status.holder.credit_code: ..." -> "统一社会信用代码: ..."
        path, _, rest = warning.partition(": ")
        if "." in path:
            return f"{self.column_of(self._canonical(path, numbers))}: {rest}"
        return warning

    def required(self, *, every_group: bool = False) -> list[str]:
        """The fields every row needs, as the domain decides them given this mapping's constants.

        Found by building a record from the constants alone (and, for a repeated group the
        kind needs, one empty group): whatever the domain then refuses is required. So a
        Hong Kong mapping (issuer constant CN-HK) needs no CMA number, a mainland one does.
        ``every_group``: also what each group of an optional group needs once present.
        """
        values: dict[str, Any] = {}
        for name, raw in self.constants.items():
            spec = self.canonical.spec(name)
            try:
                values[name] = self._parse(name, spec, raw) if spec else None
            except ValueError:
                continue
        found = [n for n, spec in self.canonical.flat.items() if spec.type == "float" and not spec.presence]
        found += self._refused(values, keep_empty=False)
        needed = {g for g in self.canonical.groups if any(n.startswith(g + "_1_") or n == g for n in found)}
        if not every_group:
            # Only a group the kind needs makes its columns required at load.
            found += [
                n
                for n in self._refused({**values, **self._one_empty_group_each()}, keep_empty=True)
                if (self.canonical.split(n) or ("",))[0] in needed
            ]
        else:
            found += self._refused({**values, **self._one_empty_group_each()}, keep_empty=True)
        return [n for n in dict.fromkeys(found) if self.canonical.spec(n) is not None]

    def _refused(self, values: dict[str, Any], *, keep_empty: bool) -> list[str]:
        msg, numbers = self._message(values, [], set(), keep_empty=keep_empty)
        try:
            record_from_proto(msg)  # type: ignore[arg-type]
        except InvalidArgument as err:
            return [self._canonical(v.field, numbers) for v in err.violations]
        return []

    def _one_empty_group_each(self) -> dict[str, Any]:
        groups = self.canonical.groups.items()
        return {f"{g}_1_{sub}": None for g, subs in groups for sub in subs}

    # --- records -> rows (the sink side) ------------------------------------------------

    def to_row(self, record: Record) -> dict[str, str]:
        """The local row for a canonical record: every mapped column, in local words."""
        values = canonical_values(record)
        row: dict[str, str] = {}
        for name, fspec in self.fields.items():
            value = values.get(name)
            spec = self.canonical.spec(name)
            assert spec is not None
            if value is None:
                text = ""
            elif spec.type == "enum":
                text = self._local_word(name, value)
            elif spec.type == "date":
                text = value.strftime(self.date_formats[0])
            elif spec.type == "datetime":
                text = value.astimezone(self.timezone).strftime(self.datetime_formats[0])
            elif spec.type == "int" and fspec.parse == "datetime":
                text = datetime.fromtimestamp(value, self.timezone).strftime(self.datetime_formats[0])
            elif spec.type == "list":
                text = self.list_separators[0].join(value)
            else:
                text = str(value)
            row[fspec.column] = text
        return row

    def _local_word(self, name: str, value: str) -> str:
        key = _word_key(self.canonical, name)
        preferred = self.reverse.get(key, {}).get(value)
        if preferred is not None:
            return preferred
        for word, target in self.values.get(key, {}).items():
            if target == value:
                return word
        return value


def _flat_values(msg: Message, specs: Mapping[str, Canonical], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        target: Any = msg
        for part in spec.path[:-1]:
            target = getattr(target, part)
        attr = spec.path[-1]
        value: Any = getattr(target, attr)
        if spec.presence and not target.HasField(attr):
            value = None
        elif spec.type == "enum":
            value = {n: k for k, n in spec.enum_names().items()}.get(value)
        elif spec.type == "date":
            value = date.fromisoformat(value) if value else None
        elif spec.type == "datetime":
            value = value.ToDatetime(tzinfo=UTC)
        elif spec.type == "list":
            value = list(value)
        out[prefix + name] = value
    return out


def canonical_values(record: Record) -> dict[str, Any]:
    """A record's values by canonical field name (the inverse of what map_row builds).

    Enums are their canonical names ("VALID"), dates ``date``, times aware ``datetime``;
    group fields are numbered from 1 (``qualifications_1_kind``).
    """
    kind, msg = record_to_proto(record)
    fields = kind_fields(kind)
    values = _flat_values(msg, fields.flat)
    for name, spec in fields.flat.items():
        # What the gateway computes (a PT result's classification) is not in a submission's
        # message, but the record has it, and a local system receiving it wants it.
        own = getattr(record, name, None) if values[name] is None and spec.type == "enum" else None
        if own is not None:
            values[name] = own.name
    for group, subs in fields.groups.items():
        for number, child in enumerate(getattr(msg, group), start=1):
            values.update(_flat_values(child, subs, f"{group}_{number}_"))
    return values


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


def _field_list(fields: KindFields) -> list[str]:
    groups = [f"{g}_{N}_{sub}" for g, subs in fields.groups.items() for sub in subs]
    return [*fields.flat, *groups]


def mapping_from_dict(data: Mapping[str, Any], *, source: Path | None = None) -> Mapping_:
    where = f"mapping file {source}" if source else "mapping"
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise AdapterError(f"{where}: unknown section(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    record = data.get("record", {})
    kind = record.get("kind", "")
    if kind not in kind_names():
        raise AdapterError(f"{where}: [record] kind must be one of {sorted(kind_names())}, got {kind!r}")
    cursor = record.get("cursor", "")
    if not cursor:
        raise AdapterError(f"{where}: [record] cursor (the column that orders changes) is required")
    cursor_type = record.get("cursor_type", "int")
    if cursor_type not in ("int", "text"):
        raise AdapterError(f"{where}: [record] cursor_type must be 'int' or 'text', got {cursor_type!r}")
    canonical = kind_fields(kind)
    fields: dict[str, FieldSpec] = {}
    for name, spec in data.get("fields", {}).items():
        if canonical.spec(name) is None:
            raise AdapterError(
                f"{where}: [fields] {name!r} is not a field of {kind}; fields: {_field_list(canonical)}"
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
        if canonical.spec(name) is None:
            raise AdapterError(f"{where}: [constants] {name!r} is not a field of {kind}")
    values = {str(k): {str(w): str(t) for w, t in v.items()} for k, v in data.get("values", {}).items()}
    enums = {_word_key(canonical, n): s for n, s in canonical.flat.items() if s.type == "enum"}
    enums.update(
        {
            f"{g}_{sub}": s
            for g, subs in canonical.groups.items()
            for sub, s in subs.items()
            if s.type == "enum"
        }
    )
    for name, words in values.items():
        if name not in enums:
            raise AdapterError(
                f"{where}: [values.{name}]: {name} is not a field with fixed values ({sorted(enums)})"
            )
        names = enums[name].enum_names()
        for word, target in words.items():
            if target not in names and not (name == STATE and target == EXPIRED):
                raise AdapterError(
                    f"{where}: [values.{name}] {word!r} = {target!r}: not one of {list(names)}"
                )
    reverse = {str(k): {str(n): str(w) for n, w in v.items()} for k, v in data.get("reverse", {}).items()}
    formats = data.get("formats", {})
    date_formats = tuple(_as_list(formats.get("date", ["%Y-%m-%d"])))
    datetime_formats = tuple(_as_list(formats.get("datetime", ["%Y-%m-%d %H:%M:%S"])))
    separators = tuple(_as_list(formats.get("list_separators", list(DEFAULT_LIST_SEPARATORS))))
    if not separators or not all(separators):
        raise AdapterError(f"{where}: [formats] list_separators must be non-empty strings")
    try:
        tz = ZoneInfo(formats.get("timezone", "Asia/Shanghai"))
    except (ZoneInfoNotFoundError, ValueError):
        raise AdapterError(f"{where}: [formats] timezone {formats.get('timezone')!r} is unknown") from None
    mapping = Mapping_(
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
        list_separators=separators,
    )
    missing = [n for n in mapping.required() if n not in fields and n not in constants]
    if missing:
        raise AdapterError(f"{where}: no column or constant for {missing} (add them under [fields])")
    return mapping


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


# --- the reference (docs/adapters.md, checked against this by a test) --------------------

_TYPE_WORDS = {
    "text": "text",
    "date": "date (`[formats] date`)",
    "datetime": "time (`[formats] datetime`, `timezone`)",
    "int": "whole number",
    "float": "number",
    "list": "list in one column (`[formats] list_separators`)",
}


def reference_markdown() -> str:
    """The canonical fields of every kind, as the table docs/adapters.md shows."""
    lines: list[str] = []
    for kind in kind_names():
        fields = kind_fields(kind)
        probe = Mapping_(
            kind=kind,
            cursor_column="",
            cursor_type="int",
            fields={},
            constants={},
            values={},
            reverse={},
            date_formats=("%Y-%m-%d",),
            datetime_formats=("%Y-%m-%d %H:%M:%S",),
            timezone=CHINA,
        )
        required = set(probe.required())
        in_group = set(probe.required(every_group=True)) - required
        lines += [f"**`{kind}`** ({fields.kind.title})", "", "| field | type | required |", "|---|---|---|"]
        for name in _field_list(fields):
            spec = fields.spec(name.replace(f"_{N}_", "_1_"))
            assert spec is not None
            kind_word = (
                "one of " + ", ".join(f"`{n}`" for n in spec.enum_names())
                if spec.type == "enum"
                else _TYPE_WORDS[spec.type]
            )
            first = name.replace(f"_{N}_", "_1_")
            need = "yes" if first in required else "in each group given" if first in in_group else ""
            lines.append(f"| `{name}` | {kind_word} | {need} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
