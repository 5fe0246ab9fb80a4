"""The one conformance suite every adapter passes (docs/adapters.md, "Conformance").

Runs against every fixture system in tests/fixtures/adapters/systems.py (the Shanghai
SQL table on SQLite, and on PostgreSQL when MRX_TEST_POSTGRES_URL is set). A province
runs it against its own adapter:

    MRX_ADAPTER_CONFIG=/etc/mrx/adapter.toml pytest tests/integration/test_adapter_conformance.py

(with an optional MRX_ADAPTER_EXPECTED=expected.json: {"good": N, "bad": {where: [column]}}).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from adapters import Adapter, Mapped, load_adapter, message_id
from adapters.mapping import load_mapping
from adapters.readers import SqlReader

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("adapter_systems", ROOT / "tests/fixtures/adapters/systems.py")
assert _spec is not None and _spec.loader is not None
systems = sys.modules.setdefault("adapter_systems", importlib.util.module_from_spec(_spec))
if not hasattr(systems, "start"):
    _spec.loader.exec_module(systems)

OWN_CONFIG = os.environ.get("MRX_ADAPTER_CONFIG")
PARAMS = (
    [pytest.param("own", id="own")]
    if OWN_CONFIG
    else [
        *(pytest.param(name, id=name) for name in systems.NAMES),
        pytest.param("shanghai_certs@postgresql", id="shanghai_certs-postgresql", marks=pytest.mark.postgres),
    ]
)


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    base = os.environ.get("MRX_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail("MRX_TEST_POSTGRES_URL must be set when CI=true")
        pytest.skip("MRX_TEST_POSTGRES_URL not set: PostgreSQL adapter tests skipped")
    schema = f"adapter_t_{uuid.uuid4().hex[:12]}"  # the local system's own schema, never the gateway's
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=PARAMS)
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:
        if request.param == "own":
            expected_path = os.environ.get("MRX_ADAPTER_EXPECTED")
            expected = json.loads(Path(expected_path).read_text("utf-8")) if expected_path else None
            config = Path(OWN_CONFIG or "")
            yield systems.System(
                "own", load_adapter(config).participant, config, expected or {}, config.parent
            )
            return
        name, _, backend = request.param.partition("@")
        pg = request.getfixturevalue("pg_schema_url") if backend == "postgresql" else None
        yield systems.start(name, tmp_path, stack, pg_url=pg)


def _all(adapter: Adapter, cursor: str | None = None) -> list[Mapped]:
    return list(adapter.changes(cursor))


def test_snapshot_maps_the_good_rows_and_reports_exactly_the_bad_ones(system: Any) -> None:
    adapter = load_adapter(system.config)
    mapped = list(adapter.snapshot())
    assert mapped, "the source yielded no rows"
    for m in mapped:
        assert (m.record is None) == bool(m.problems), m
        for problem in m.problems:
            assert problem.field and problem.why, m
        assert m.cursor is None
    if "good" not in system.expected:
        return
    assert sum(m.record is not None for m in mapped) == system.expected["good"]
    bad = {m.where: sorted({p.field for p in m.problems}) for m in mapped if m.problems}
    assert bad == {where: sorted(cols) for where, cols in system.expected["bad"].items()}


def test_records_belong_to_the_adapters_participant(system: Any) -> None:
    adapter = load_adapter(system.config)
    records = [m.record for m in adapter.snapshot() if m.record is not None]
    assert {r.issuer for r in records} == {adapter.participant}


def test_changes_come_in_cursor_order_and_match_the_snapshot(system: Any) -> None:
    adapter = load_adapter(system.config)
    changes = _all(adapter)
    cursors = [adapter.mapping.cursor_key(m.cursor) for m in changes if m.cursor is not None]
    assert cursors == sorted(cursors)
    snap = {(m.record.key, m.record.version) for m in adapter.snapshot() if m.record is not None}
    assert {(m.record.key, m.record.version) for m in changes if m.record is not None} == snap


def test_changes_since_a_cursor_return_only_later_rows_and_the_cursor_round_trips(system: Any) -> None:
    adapter = load_adapter(system.config)
    everything = _all(adapter)
    middle = everything[len(everything) // 2].cursor
    assert middle is not None
    # The cursor is an opaque string: through a file and back, as the runner keeps it.
    stored = json.loads(json.dumps({"cursor": middle}))["cursor"]
    later = _all(adapter, stored)
    key = adapter.mapping.cursor_key
    assert later and all(m.cursor is not None and key(m.cursor) > key(middle) for m in later)
    upto = [m for m in everything if m.cursor is not None and key(m.cursor) <= key(middle)]
    # "where" may be relative to the request (a page number), so compare cursors and records.
    assert [(m.cursor, m.record) for m in upto + later] == [
        (m.cursor, m.record) for m in everything if m.cursor is not None
    ]
    assert _all(adapter, everything[-1].cursor) == []


def test_message_ids_are_derived_from_the_change(system: Any) -> None:
    first = [message_id(m.record) for m in load_adapter(system.config).snapshot() if m.record is not None]
    again = [message_id(m.record) for m in load_adapter(system.config).snapshot() if m.record is not None]
    assert first == again
    assert len(set(first)) == len(first), "two different changes share a message id"


def test_reading_twice_gives_the_same_answer(system: Any) -> None:
    adapter = load_adapter(system.config)
    assert list(adapter.snapshot()) == list(adapter.snapshot())
    assert _all(adapter) == _all(adapter)


def test_sink_round_trip(system: Any) -> None:
    adapter = load_adapter(system.config)
    if adapter.sink is None:
        pytest.skip(f"{system.name} has no sink")
    records = [m.record for m in adapter.snapshot() if m.record is not None]
    assert all(adapter.sink.apply(r) for r in _latest(records))
    assert not any(adapter.sink.apply(r) for r in records), "applying again changed something"
    config = adapter.config
    assert config is not None and config.sink is not None
    inbound = load_mapping(config.sink["mapping"])
    reader = SqlReader(config.sink["url"], table=config.sink["table"], cursor_column=inbound.cursor_column)
    back = Adapter(participant=adapter.participant, mapping=inbound, reader=reader)
    read_back = sorted((m.record for m in back.snapshot() if m.record is not None), key=lambda r: r.key)
    assert read_back == sorted(_latest(records), key=lambda r: r.key)


def _latest(records: list[Any]) -> list[Any]:
    newest: dict[str, Any] = {}
    for r in records:
        if r.key not in newest or newest[r.key].version < r.version:
            newest[r.key] = r
    return list(newest.values())
