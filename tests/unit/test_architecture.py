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
    "gateway/audit/restore.py",
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


def test_the_participants_scheduling_helper_is_client_side():
    """gateway/jobs/participant.py runs beside a province's adapter, like the SDK."""
    bad = _violations(
        _files("gateway/jobs/participant.py", "gateway/jobs/cron.py", "gateway/jobs/__init__.py"),
        (*SERVER_PACKAGES, "gateway.jobs.scheduler", "gateway.jobs.selfaudit", "sqlalchemy", "psycopg"),
    )
    assert not bad, "the participant's scheduling imports nothing of the server:\n" + "\n".join(bad)


def test_the_store_and_the_ledger_never_import_the_jobs():
    """The jobs read through the store; the store and the writer know nothing of schedules."""
    bad = _violations(_files("gateway/store", "gateway/ledger"), ("gateway.jobs",))
    assert not bad, "jobs -> store, never back:\n" + "\n".join(bad)


def test_only_the_store_talks_sql():
    allowed = GATEWAY / "store"
    # The SQL reader and sink talk to a province's *local* database, never the gateway's.
    local_db = {ROOT / "adapters/readers.py", ROOT / "adapters/sinks.py"}
    files = [
        p
        for p in _files("gateway", "adapters")
        if allowed not in p.parents and "pb" not in p.parts and p not in local_db
    ]
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


# --- one definition per record kind --------------------------------------------------------

KINDS_MODULE = "gateway/domain/kinds.py"
_KIND_NAMES = ("certificate_status", "assessor", "test_report", "pt_result", "spot_check")


def _strings(node: ast.AST) -> list[tuple[int, str]]:
    """String literals in ``node``, f-strings' literal parts included."""
    return [
        (n.lineno, n.value)
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def _kind_knowledge(path: Path, root: Path = ROOT) -> list[str]:
    """Where ``path`` spells a record key's format or lists the kinds itself."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root)
    bad = []
    for line, text in _strings(tree):
        # A literal starting "<kind>/" is a key format (or the start of one in an f-string).
        if any(text.startswith(name + "/") for name in _KIND_NAMES):
            bad.append(f"{rel}:{line} spells a record key: {text[:40]!r}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Set | ast.List | ast.Tuple | ast.Dict):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            named = {i.value for i in items if isinstance(i, ast.Constant) and i.value in _KIND_NAMES}
            if len(named) >= 2:
                bad.append(f"{rel}:{node.lineno} lists record kinds itself: {sorted(named)}")
    return bad


def _kind_checked_files() -> list[Path]:
    files = _files("gateway", "adapters")
    return [p for p in files if "pb" not in p.relative_to(ROOT).parts and p != ROOT / KINDS_MODULE]


def test_a_kinds_knowledge_lives_only_in_the_kinds_module():
    # Key formats and the list of kinds are what an adapter's mapping, the store and
    # reconciliation must agree on; a second spelling would drift from the first.
    bad = [b for path in _kind_checked_files() for b in _kind_knowledge(path)]
    assert not bad, "use gateway.domain.kinds (Kind.key, format_key, kind_names):\n" + "\n".join(bad)


def test_the_kind_rule_would_catch_a_violation(tmp_path):
    spelled = tmp_path / "spelled.py"
    spelled.write_text(
        'def key(r):\n    return f"test_report/{r.issuer}/{r.report_number}"\n'
        'KINDS = frozenset({"assessor", "spot_check"})\n',
        encoding="utf-8",
    )
    found = _kind_knowledge(spelled, tmp_path)
    assert len(found) == 2 and "spells a record key" in found[0] and "lists record kinds" in found[1]


def test_observability_is_a_leaf_the_server_layers_use():
    # The ledger and the services record metrics and read the request id: observability
    # importing them back would be a cycle, and importing the store would put SQL there.
    bad = _violations(_files("gateway/observability"), (*SERVER_PACKAGES, "sqlalchemy", "gateway.config"))
    assert not bad, (
        "gateway/observability imports only the standard library and its libraries:\n" + "\n".join(bad)
    )


def test_adapters_are_client_side():
    """adapters/ runs beside a province's local system, on the SDK: never the server's internals."""
    bad = _violations(_files("adapters"), (*SERVER_PACKAGES, "gateway.registry.keygen", "gateway.cli"))
    assert not bad, "adapters may use the SDK, domain, crypto, convert and pb only:\n" + "\n".join(bad)


def test_the_reconciliation_engine_knows_nothing_of_grpc_or_the_services():
    """services -> reconcile.engine -> store: the engine is called by the servicer, never back."""
    bad = _violations(_files("gateway/reconcile/engine.py"), ("gateway.services", "gateway.server", "grpc"))
    assert not bad, "the reconciliation engine sits below the servicers:\n" + "\n".join(bad)
