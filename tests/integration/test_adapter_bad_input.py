"""Bad input at the adapters: what the user sees, and that nothing is lost.

Wrong encodings, renamed columns, unknown words, duplicates, bad credit codes, hostile
XML, a failing or slow HTTP API, a locked local table. A source error stops the pass
before anything is sent and leaves the cursor where it was.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import AdapterError, SourceError, load_adapter
from adapters.readers import HttpJsonReader
from adapters.sinks import SinkError

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("adapter_systems", ROOT / "tests/fixtures/adapters/systems.py")
assert _spec is not None and _spec.loader is not None
systems = sys.modules.setdefault("adapter_systems", importlib.util.module_from_spec(_spec))
if not hasattr(systems, "start"):
    _spec.loader.exec_module(systems)


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as s:
        yield s


def _problems(system: Any) -> dict[str, list[tuple[str, str]]]:
    return {
        m.where: [(p.field, p.why) for p in m.problems]
        for m in load_adapter(system.config).snapshot()
        if m.problems
    }


# --- encodings and columns -------------------------------------------------------------------


def test_a_utf8_file_declared_gbk_is_refused_before_anything_is_read(
    tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    system = systems.start("jiangsu_ccc", tmp_path, stack)
    data = system.dir / "jiangsu_ccc.csv"
    data.write_bytes(data.read_bytes().decode("gbk").encode("utf-8"))
    with pytest.raises(
        SourceError, match=r"declared gbk but is UTF-8 .*encoding = \"utf-8\".*nothing was read"
    ):
        list(load_adapter(system.config).changes(None))


def test_a_gbk_file_declared_utf8_names_the_byte_and_line(
    tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    system = systems.start("jiangsu_ccc", tmp_path, stack)
    system.config.write_text(system.config.read_text("utf-8").replace('"gbk"', '"utf-8"'), "utf-8")
    with pytest.raises(SourceError, match=r"not valid utf-8 at byte \d+ \(line 1\) \(it looks like GBK"):
        list(load_adapter(system.config).snapshot())


def test_a_renamed_column_is_named_at_the_start(tmp_path: Path, stack: contextlib.ExitStack) -> None:
    system = systems.start("jiangsu_ccc", tmp_path, stack)
    data = system.dir / "jiangsu_ccc.csv"
    data.write_bytes(data.read_bytes().decode("gbk").replace("统一社会信用代码", "信用代码", 1).encode("gbk"))
    with pytest.raises(AdapterError, match=r"no column\(s\) \['统一社会信用代码'\].*renamed or missing"):
        list(load_adapter(system.config).snapshot())


def test_a_missing_xml_element_is_named_at_the_start(tmp_path: Path, stack: contextlib.ExitStack) -> None:
    system = systems.start("guangdong_reports", tmp_path, stack)
    data = system.dir / "guangdong_reports.xml"
    text = data.read_text("utf-8").replace("<检验依据>", "<标准>").replace("</检验依据>", "</标准>")
    data.write_text(text, "utf-8")
    with pytest.raises(AdapterError, match=r"no column\(s\) \['检验依据'\]"):
        list(load_adapter(system.config).snapshot())


def test_an_export_out_of_cursor_order_is_sorted(tmp_path: Path, stack: contextlib.ExitStack) -> None:
    system = systems.start("jiangsu_ccc", tmp_path, stack)
    data = system.dir / "jiangsu_ccc.csv"
    header, *lines = data.read_bytes().decode("gbk").splitlines(keepends=True)
    data.write_bytes("".join([header, *reversed(lines)]).encode("gbk"))
    changes = list(load_adapter(system.config).changes("100"))
    cursors = [int(m.cursor) for m in changes if m.cursor is not None]
    assert cursors == sorted(cursors) and cursors[0] == 101
    assert sum(m.record is not None for m in changes) == system.expected["good"] - 100


# --- row problems: the row, the column, why ------------------------------------------------------


def test_unknown_words_bad_codes_and_duplicates_name_row_column_and_why(
    tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    problems = _problems(systems.start("jiangsu_ccc", tmp_path, stack))
    assert problems["line 296"] == [
        (
            "统一社会信用代码",
            "check character (position 18) does not match GB 32100-2015; a character is likely mistyped",
        )
    ]
    assert problems["line 297"] == [
        ("证书状态", "unknown word '待定'; the mapping knows: 有效, 暂停, 撤销, 注销, 过期")
    ]
    assert problems["line 298"][0][1].startswith("says expired, but the expiry date")
    assert problems["line 304"] == [
        ("序号", "duplicate of line 303 (same record, same version 302); sent once")
    ]


def test_the_http_api_words_are_checked_too(tmp_path: Path, stack: contextlib.ExitStack) -> None:
    problems = _problems(systems.start("zhejiang_ms", tmp_path, stack))
    assert problems["page 6 item 12"] == [
        ("status", "unknown word 'Unknown'; the mapping knows: 有效, 暂停, 撤销, 注销, 过期")
    ]


# --- hostile XML ----------------------------------------------------------------------------------

BOMB = """<?xml version="1.0"?>
<!DOCTYPE r [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
]>
<检验报告导出><报告><报告编号>&d;</报告编号></报告></检验报告导出>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<检验报告导出><报告><报告编号>&secret;</报告编号></报告></检验报告导出>
"""


@pytest.mark.parametrize(("content", "what"), [(BOMB, "entity expansion"), (EXTERNAL, "external entity")])
def test_hostile_xml_is_refused_and_nothing_is_read(
    content: str, what: str, tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    system = systems.start("guangdong_reports", tmp_path, stack)
    (system.dir / "guangdong_reports.xml").write_text(content, "utf-8")
    with pytest.raises(SourceError) as info:
        list(load_adapter(system.config).changes(None))
    message = str(info.value)
    assert "EntitiesForbidden" in message and "never expanded" in message, (what, message)
    assert "root:" not in message  # nothing of the external file leaks into the error


# --- the HTTP API failing -----------------------------------------------------------------------------


def test_a_500_is_retried_and_then_goes_through(tmp_path: Path, stack: contextlib.ExitStack) -> None:
    system = systems.start("zhejiang_ms", tmp_path, stack)
    system.api.fail_next = 2
    mapped = list(load_adapter(system.config).snapshot())
    assert sum(m.record is not None for m in mapped) == system.expected["good"]
    assert system.api.requests == 2 + 6  # two failures, then six pages


def test_a_500_that_persists_is_reported_with_the_page(tmp_path: Path, stack: contextlib.ExitStack) -> None:
    system = systems.start("zhejiang_ms", tmp_path, stack)
    system.api.fail_next = 100
    with pytest.raises(
        SourceError, match=r"page 1: HTTP 500 after 3 attempt\(s\); the cursor stays before this page"
    ):
        list(load_adapter(system.config).changes("1100"))
    assert system.api.requests == 3


def test_an_api_that_times_out_is_retried_then_reported(tmp_path: Path, stack: contextlib.ExitStack) -> None:
    system = systems.start("zhejiang_ms", tmp_path, stack)
    system.api.delay = 0.5
    reader = HttpJsonReader(system.api.url, timeout=0.1, attempts=2, backoff=0.01)
    with pytest.raises(SourceError, match=r"page 1: ReadTimeout after 2 attempt\(s\) \(timeout 0.1 s\)"):
        list(reader.rows(None))


# --- a locked local table -------------------------------------------------------------------------------


def test_a_table_locked_by_another_writer_is_reported_then_read_when_released(
    tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    system = systems.start("shanghai_certs", tmp_path, stack)
    db = system.db_url.removeprefix("sqlite:///")
    other = sqlite3.connect(db, isolation_level=None)
    stack.callback(other.close)
    other.execute("BEGIN EXCLUSIVE")  # the local system's own long write
    adapter = load_adapter(system.config)
    with pytest.raises(SourceError, match=r"locked by another writer .*the cursor stays where it was"):
        list(adapter.changes(None))
    other.execute("ROLLBACK")
    assert sum(m.record is not None for m in adapter.changes(None)) == system.expected["good"]


def test_a_sink_table_locked_by_another_writer_applies_nothing_and_says_so(
    tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    system = systems.start("shanghai_certs", tmp_path, stack)
    adapter = load_adapter(system.config)
    assert adapter.sink is not None
    record = next(m.record for m in adapter.snapshot() if m.record is not None)
    db = system.db_url.removeprefix("sqlite:///")
    other = sqlite3.connect(db, isolation_level=None)
    stack.callback(other.close)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO sh_inbound_cert (source_province, cert_no) VALUES ('CN-XX', 'held')")
    with pytest.raises(SinkError, match=r"locked by another writer .*not applied, the inbound cursor stays"):
        adapter.sink.apply(record)
    other.execute("ROLLBACK")
    assert adapter.sink.apply(record) is True


def test_an_unreachable_local_database_is_reported_without_its_password() -> None:
    import socket

    from adapters.readers import SqlReader

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = SqlReader(
        f"postgresql+psycopg://adapter:s3cret-pw@127.0.0.1:{port}/local",
        table="sh_cert_status",
        cursor_column="change_seq",
        attempts=2,
        backoff=0.01,
    )
    with pytest.raises(SourceError) as info:
        list(reader.rows(None))
    message = str(info.value)
    assert "table 'sh_cert_status' could not be read: OperationalError" in message
    assert "s3cret" not in message and "the cursor stays where it was" in message
