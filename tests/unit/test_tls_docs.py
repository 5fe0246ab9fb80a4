"""Every TLS flag that exists is documented, and every documented TLS flag exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gateway.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"


def _subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_tls_flag_is_documented_in_operations_md() -> None:
    docs = _section(OPERATIONS.read_text(encoding="utf-8"), "Mutual TLS")
    parser = build_parser()
    wanted: dict[str, set[str]] = {
        "mrx serve": {f for f in _flags(_subparser(parser, "serve")) if f.startswith("--tls-")},
        "mrx audit export": {
            f for f in _flags(_subparser(parser, "audit", "export")) if f.startswith("--tls-")
        },
        "mrx audit watch": {
            f for f in _flags(_subparser(parser, "audit", "watch")) if f.startswith("--tls-")
        },
    }
    tls = _subparser(parser, "tls")
    commands = next(a for a in tls._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        assert f"mrx tls {name}" in docs, f"mrx tls {name} is not in docs/operations.md"
        wanted[f"mrx tls {name}"] = _flags(sub)
    missing = [
        f"{cmd} {flag}" for cmd, flags in wanted.items() for flag in sorted(flags) if f"`{flag}" not in docs
    ]
    assert not missing, "undocumented in docs/operations.md 'Mutual TLS': " + ", ".join(missing)


def test_every_documented_tls_flag_exists() -> None:
    parser = build_parser()
    tls = _subparser(parser, "tls")
    commands = next(a for a in tls._actions if isinstance(a, argparse._SubParsersAction)).choices
    existing = (
        _flags(_subparser(parser, "serve"))
        | _flags(_subparser(parser, "audit", "export"))
        | _flags(_subparser(parser, "audit", "watch"))
        | {f for sub in commands.values() for f in _flags(sub)}
    )
    text = _section(OPERATIONS.read_text(encoding="utf-8"), "Mutual TLS") + (ROOT / "README.md").read_text(
        encoding="utf-8"
    )
    documented = set(re.findall(r"--tls-[a-z-]+[a-z]", text))
    assert documented - existing == set()
    for command in re.findall(r"mrx tls ([a-z-]+)", text):
        assert command in commands, f"mrx tls {command} is documented but does not exist"
