"""README's command reference lists every command and flag `mrx` has, and no other."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gateway.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, [*path, name])
        if not subs:
            found[" ".join(path)] = {
                o
                for a in parser._actions
                if not isinstance(a, argparse._HelpAction)
                for o in a.option_strings
            }

    walk(build_parser(), ["mrx"])
    return found


def _documented() -> dict[str, set[str]]:
    text = README.read_text(encoding="utf-8").split("## Command reference", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`mrx"):
            continue
        flags = set(re.findall(r"`(-[-\w]+)`", cells[1])) | set(
            re.findall(r"`(-\w)`/`(--[\w-]+)`", cells[1])[0] if "`/`" in cells[1] else ()
        )
        for command in re.findall(r"`(mrx[\w -]*)`", cells[0]):
            rows[command] = flags
    return rows


def test_every_command_and_flag_is_in_the_readme_and_nothing_else():
    actual, documented = _commands(), _documented()
    assert set(documented) == set(actual), set(documented) ^ set(actual)
    for command, flags in actual.items():
        assert flags == documented[command], (command, flags ^ documented[command])
