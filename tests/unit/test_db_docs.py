"""Every ``mrx db`` command and flag is documented, and every documented one exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gateway.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
SECTION = "Database schema and upgrades"


def _db_commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    db = sub.choices["db"]
    return dict(next(a for a in db._actions if isinstance(a, argparse._SubParsersAction)).choices)


def _section() -> str:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    start = text.index(f"## {SECTION}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_db_command_and_flag_is_documented() -> None:
    docs = _section()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, parser in _db_commands().items():
        assert f"mrx db {name}" in docs, f"mrx db {name} is not in docs/operations.md '{SECTION}'"
        assert f"mrx db {name}" in readme, f"mrx db {name} is not in README.md"
        row = next((line for line in docs.splitlines() if line.startswith(f"| `mrx db {name}` |")), "")
        flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        missing = sorted(f for f in flags if f"`{f}`" not in row)
        assert not missing, f"mrx db {name}: flags not in its row of the table: {missing}"


def test_every_documented_db_command_exists() -> None:
    commands = _db_commands()
    text = _section() + (ROOT / "README.md").read_text(encoding="utf-8")
    for name in re.findall(r"mrx db ([a-z-]+)", text):
        assert name in commands, f"mrx db {name} is documented but does not exist"
