"""The layering, kept by a test (tessera's habit of forbidding what would break it).

Read from the source with ``ast``: no module is imported, so the test needs nothing but
the files. Each rule says why it exists; a failure names the file, the line and the
import or call that broke it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"

# The client side: what a provincial system, an adapter or an auditor runs. It must
# install and work without the server's database layer, and must not change when the
# server's internals do.
SDK_MODULES = (
    "gateway/client.py",
    "gateway/audit/bundle.py",
    "gateway/audit/watch.py",
    "gateway/audit/merkle.py",
    "gateway/audit/checkpoints.py",
    "gateway/crypto",
    "gateway/convert.py",
    "gateway/registry/federation.py",
    "gateway/tls",
    # Reconciliation's client half: the digests both sides compute, the participant's
    # driver and `mrx reconcile` (the gateway's half is gateway/reconcile/engine.py).
    "gateway/reconcile/digests.py",
    "gateway/reconcile/participant.py",
    "gateway/reconcile/commands.py",
)
SERVER_PACKAGES = (
    "gateway.store",
    "gateway.ledger",
    "gateway.services",
    "gateway.server",
    "gateway.demo",
    "gateway.reconcile.engine",
)


def _files(*rels: str) -> list[Path]:
    out: list[Path] = []
    for rel in rels:
        path = ROOT / rel
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module imported by ``path`` (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = ".".join(path.relative_to(ROOT).with_suffix("").parts[: -node.level])
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in files:
        for line, name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return sorted(set(bad))


def test_domain_imports_only_the_standard_library():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _files("gateway/domain")
        for line, name in _imports(path)
        if name.split(".")[0] not in stdlib and not name.startswith("gateway.domain")
    ]
    assert not bad, "the domain is pure (no I/O, no protobuf, no SQL):\n" + "\n".join(bad)


def test_store_never_imports_the_ledger_or_the_services():
    bad = _violations(_files("gateway/store"), ("gateway.ledger", "gateway.services", "gateway.server"))
    assert not bad, "services -> ledger -> store, never back:\n" + "\n".join(bad)


def test_ledger_never_imports_the_services_or_grpc():
    bad = _violations(_files("gateway/ledger"), ("gateway.services", "gateway.server", "grpc"))
    assert not bad, "the ledger knows nothing of gRPC; servicers translate:\n" + "\n".join(bad)


def test_services_write_only_through_the_ledger():
    bad = _violations(
        _files("gateway/services"),
        (
            "gateway.store.writes",
            "gateway.store.sql",
            "gateway.ledger.writer",
            "gateway.ledger.rules",
            "sqlalchemy",
        ),
    )
    assert not bad, "servicers stay thin: submissions go through gateway.ledger.front:\n" + "\n".join(bad)


def test_the_sdk_and_the_auditors_tools_import_nothing_of_the_server():
    bad = _violations(_files(*SDK_MODULES), (*SERVER_PACKAGES, "sqlalchemy", "psycopg"))
    assert not bad, "adapters and auditors depend on the client side only:\n" + "\n".join(bad)


def test_tls_imports_only_grpc_cryptography_and_the_standard_library():
    """The server and the SDK share gateway/tls; it must not drag either side's code along."""
    allowed = set(sys.stdlib_module_names) | {"__future__", "grpc", "cryptography"}
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _files("gateway/tls")
        for line, name in _imports(path)
        if name.split(".")[0] not in allowed and not name.startswith("gateway.tls")
    ]
    assert not bad, "gateway/tls is shared by server and SDK:\n" + "\n".join(bad)


def test_only_the_store_talks_sql():
    allowed = GATEWAY / "store"
    files = [p for p in _files("gateway", "adapters") if allowed not in p.parents and "pb" not in p.parts]
    bad = _violations(files, ("sqlalchemy", "psycopg", "sqlite3"))
    assert not bad, "SQL lives in gateway/store (one module per backend in store/sql):\n" + "\n".join(bad)


def _calls(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                out.append((node.lineno, f"{func.value.id}.{func.attr}"))
            elif isinstance(func, ast.Attribute):
                out.append((node.lineno, f"*.{func.attr}"))
    return out


@pytest.mark.parametrize(
    ("where", "call", "why"),
    [
        # The submission front end runs on the asyncio loop: one blocking sleep stalls
        # every call in flight.
        ("gateway/ledger/front.py", "time.sleep", "blocks the event loop"),
        ("gateway/services", "time.sleep", "blocks the event loop"),
        # executemany on sqlite3 releases and re-takes the GIL per row (the convoy in
        # ../shared/WRITE-PATH.md): inserts are multi-row statements.
        ("gateway/store/sql/sqlite.py", "*.executemany", "the per-row GIL convoy"),
    ],
)
def test_forbidden_calls(where, call, why):
    bad = [
        f"{path.relative_to(ROOT)}:{line} calls {name}"
        for path in _files(where)
        for line, name in _calls(path)
        if name == call or (call.startswith("*.") and name.endswith(call[1:]))
    ]
    assert not bad, f"{call} is forbidden in {where} ({why}):\n" + "\n".join(bad)


def test_the_rules_would_catch_a_violation(tmp_path):
    """The checker itself: a store module importing the ledger is reported."""
    fake = ROOT / "gateway" / "store" / "_arch_probe.py"
    try:
        fake.write_text("from gateway.ledger.values import Staged\nimport grpc\n", encoding="utf-8")
        assert _violations([fake], ("gateway.ledger",)) == [
            "gateway/store/_arch_probe.py:1 imports gateway.ledger.values",
            "gateway/store/_arch_probe.py:1 imports gateway.ledger.values.Staged",
        ]
    finally:
        fake.unlink()


def test_the_reconciliation_engine_knows_nothing_of_grpc_or_the_services():
    """services -> reconcile.engine -> store: the engine is called by the servicer, never back."""
    bad = _violations(_files("gateway/reconcile/engine.py"), ("gateway.services", "gateway.server", "grpc"))
    assert not bad, "the reconciliation engine sits below the servicers:\n" + "\n".join(bad)
