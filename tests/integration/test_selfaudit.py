"""The self-audit against a real log written by a real gateway, on SQLite and PostgreSQL.

A clean log passes; each kind of tampering an operator could meet after a bad restore
or an intruder (a leaf rewritten, a Merkle node rewritten, a checkpoint's root rewritten,
an entry deleted in the middle or at the end, a forged checkpoint signature) yields a
problem that names what is wrong and where.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from sqlalchemy import delete, select, update

from gateway.jobs.selfaudit import SelfAuditResult, run_self_audit
from gateway.pb import envelope_pb2
from gateway.store.schema import checkpoints, exchanges, merkle_nodes

MRX = [sys.executable, "-m", "gateway.cli"]
ENTRIES = 37  # not a power of two: the tree has a ragged right edge


@pytest.fixture
def audited_log(gateway, client_for, certs_of, federation):
    """A log of ENTRIES entries with checkpoints at several sizes, the gateway stopped."""
    js = client_for("CN-JS")
    sizes = []
    for n, cert in enumerate(certs_of("CN-JS", ENTRIES), start=1):
        js.submit(js.sign(cert))
        if n in (1, 2, 5, 16, 30):
            sizes.append(gateway.gateway.checkpointer.checkpoint_now())
    gateway.stop()  # the final checkpoint covers everything
    with gateway.engines.reader.connect() as conn:
        stored = list(
            conn.execute(select(checkpoints.c.tree_size).order_by(checkpoints.c.tree_size)).scalars()
        )
    assert stored == [1, 2, 5, 16, 30, ENTRIES], sizes
    return gateway.engines


def gateway_keys(federation):
    return {k.keyid: k.public_key for k in federation.keys_of(federation.gateway_code)}


def audit(engines, federation, **kwargs) -> SelfAuditResult:
    return run_self_audit(
        engines,
        gateway_keys=gateway_keys(federation),
        origin=f"{federation.name}/exchange-log",
        **kwargs,
    )


def test_a_clean_log_passes_in_pages_of_any_size(audited_log, federation):
    for page in (1, 3, 16, 1000):
        result = audit(audited_log, federation, page_size=page)
        assert result.ok, result.problems
        assert (result.tree_size, result.checkpoints_checked, result.problems) == (ENTRIES, 6, ())
        assert result.warnings == ()
        assert "self-audit ok: 37 entries, 6 checkpoints" in result.summary()


def test_an_empty_log_passes(open_store, database_url, federation):
    result = audit(open_store(database_url), federation)
    assert (result.ok, result.tree_size, result.checkpoints_checked) == (True, 0, 0)


def test_a_tampered_leaf_is_named(audited_log, federation):
    with audited_log.writer.begin() as conn:
        leaf = conn.execute(select(exchanges.c.leaf).where(exchanges.c.log_index == 7)).scalar_one()
        conn.execute(update(exchanges).where(exchanges.c.log_index == 7).values(leaf=leaf + b"\x00"))
    result = audit(audited_log, federation, page_size=5)
    assert not result.ok
    assert result.problems[0] == (
        "entry 7: its stored leaf does not hash to its Merkle node (level 0, index 7): "
        "the entry or the node was altered"
    )
    # Checkpoints covering entry 7 no longer match the leaves; those before it still do.
    assert "checkpoint at tree size 16: its root is not the root of the stored leaves" in result.problems
    assert not any("tree size 5:" in p for p in result.problems)
    assert "FAILED" in result.summary()


def test_a_tampered_node_is_named(audited_log, federation):
    with audited_log.writer.begin() as conn:
        conn.execute(
            update(merkle_nodes)
            .where(merkle_nodes.c.level == 2, merkle_nodes.c.idx == 8)
            .values(hash=hashlib.sha256(b"forged").digest())
        )
    result = audit(audited_log, federation)
    assert not result.ok
    assert (
        "Merkle node (level 2, index 8) is not the hash of its two stored children: it or a child was altered"
        in result.problems
    )
    # The leaves are intact, so the root recomputed from them still matches every checkpoint;
    # the root of 37 = 32 + 4 + 1 entries is folded from node (2, 8), so proofs would fail.
    assert result.problems[1:] == (
        f"checkpoint at tree size {ENTRIES}: its root is not the root folded from the stored Merkle nodes "
        "(proofs served from them would not verify)",
    )


def test_a_missing_node_is_named(audited_log, federation):
    with audited_log.writer.begin() as conn:
        conn.execute(delete(merkle_nodes).where(merkle_nodes.c.level == 1, merkle_nodes.c.idx == 9))
    result = audit(audited_log, federation)
    assert result.problems == ("Merkle node (level 1, index 9) is missing from the store",)


def test_a_tampered_checkpoint_root_is_named(audited_log, federation):
    with audited_log.writer.begin() as conn:
        conn.execute(update(checkpoints).where(checkpoints.c.tree_size == 16).values(root_hash=b"\x11" * 32))
    result = audit(audited_log, federation)
    assert set(result.problems) == {
        "checkpoint at tree size 16: its root is not the root of the stored leaves",
        "checkpoint at tree size 16: its root is not the root folded from the stored Merkle nodes "
        "(proofs served from them would not verify)",
        "checkpoint at tree size 16: the signed payload (size 16) differs from the size and root stored "
        "beside it",
    }


def test_a_forged_checkpoint_signature_is_named(audited_log, federation):
    with audited_log.reader.connect() as conn:
        raw = conn.execute(select(checkpoints.c.envelope).where(checkpoints.c.tree_size == 5)).scalar_one()
    env = envelope_pb2.Envelope.FromString(raw)
    env.signatures[0].sig = bytes(64)
    with audited_log.writer.begin() as conn:
        conn.execute(
            update(checkpoints)
            .where(checkpoints.c.tree_size == 5)
            .values(envelope=env.SerializeToString(deterministic=True))
        )
    result = audit(audited_log, federation)
    assert len(result.problems) == 1
    assert result.problems[0].startswith("checkpoint at tree size 5: the checkpoint is signed by")
    assert "no signature verifies with a pinned gateway key" in result.problems[0]
    # Without keys the signature is not checked, and the result says so.
    unkeyed = run_self_audit(audited_log)
    assert unkeyed.ok and unkeyed.warnings == (
        "no gateway keys given: checkpoint signatures were not checked",
    )


def test_an_entry_deleted_in_the_middle_is_a_gap(audited_log, federation):
    with audited_log.writer.begin() as conn:
        conn.execute(delete(exchanges).where(exchanges.c.log_index.in_([20, 21])))
    result = audit(audited_log, federation, page_size=8)
    assert not result.ok
    assert result.problems[0] == (
        "the log is not dense: log index 20 to 21 are missing (the next stored entry is 22); "
        "entries were deleted"
    )
    assert "checkpoint at tree size 30: its root is not the root of the stored leaves" in result.problems


def test_an_entry_deleted_at_the_end_is_caught_by_the_checkpoints(audited_log, federation):
    with audited_log.writer.begin() as conn:
        conn.execute(delete(exchanges).where(exchanges.c.log_index == ENTRIES - 1))
    result = audit(audited_log, federation)
    assert result.problems == (
        f"checkpoint at tree size {ENTRIES} is beyond the end of the log ({ENTRIES - 1} entries): "
        "signed entries were removed",
    )


def test_problems_are_bounded_per_kind(audited_log, federation):
    with audited_log.writer.begin() as conn:
        conn.execute(delete(merkle_nodes).where(merkle_nodes.c.level == 0))
    result = audit(audited_log, federation)
    missing = [p for p in result.problems if "missing from the store" in p]
    assert len(missing) == 20
    assert f"... and {ENTRIES - 20} more problem(s) of the kind 'node'" in result.problems


@pytest.mark.e2e
def test_mrx_audit_self_check_exits_1_with_the_problems(
    audited_log, database_url, federation_dir, federation
):
    ok = subprocess.run(
        [*MRX, "audit", "self-check", "--database", database_url, "--federation", str(federation_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"self-audit ok: {ENTRIES} entries, 6 checkpoints verified" in ok.stdout
    with audited_log.writer.begin() as conn:
        conn.execute(delete(exchanges).where(exchanges.c.log_index == 3))
    bad = subprocess.run(
        [*MRX, "audit", "self-check", "--database", database_url, "--federation", str(federation_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL the log is not dense: log index 3 is missing (the next stored entry is 4)" in bad.stdout
