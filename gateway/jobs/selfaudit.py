"""The gateway's self-audit: does the stored log still hold what it has signed?

``run_self_audit(engines)`` walks the exchange log from the first entry to the last in
bounded pages (gateway/store/log_walk.py) and checks, independently of every shortcut
the writer and the proofs take:

- the log is dense: log indexes 0, 1, 2, ... with none missing;
- every stored leaf hashes (RFC 6962, ``merkle.leaf_hash``) to its stored Merkle node
  at level 0, and every stored interior node is the hash of its two stored children,
  with none missing; so a tampered node is named, not just "the root is wrong";
- every stored checkpoint is signed by a gateway key (when keys are given), signs the
  size and root stored beside it, and its root equals both the root recomputed from the
  leaves alone and the root folded from the stored nodes that proofs are served from;
- no checkpoint is beyond the end of the log (entries removed at the end).

Memory stays bounded whatever the log's size: one page of leaves and their nodes, the
recomputed frontier (``CompactRange``, log2 n hashes) and the stored frontier (the same).
Problems are phrased for an operator (docs/jobs.md explains each) and bounded in number
per kind, so a damaged log of a million entries yields a readable list, not a million
lines.

It reads only; it is what ``mrx audit self-check`` runs after a restore and what the
gateway's nightly job runs (gateway/jobs/scheduler.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from gateway.audit.merkle import CompactRange, leaf_hash, node_hash
from gateway.audit.watch import CheckpointError, open_checkpoint
from gateway.crypto.suites import PublicKey
from gateway.pb import audit_pb2, envelope_pb2
from gateway.store.engine import Engines
from gateway.store.log_walk import LogWalk, StoredCheckpoint

__all__ = ["SelfAuditResult", "run_self_audit"]

# Leaves per page: ~1 MiB of leaf bytes and ~2 node rows per leaf; one query each.
DEFAULT_PAGE = 4096
# Problems kept per kind; the rest are counted.
MAX_PER_KIND = 20


@dataclass(frozen=True)
class SelfAuditResult:
    ok: bool
    tree_size: int  # entries walked (the log's size when the audit started)
    checkpoints_checked: int
    problems: tuple[str, ...]
    finished_at: datetime
    # What was not checked (e.g. no gateway keys: signatures skipped); never a failure.
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        if self.ok:
            return f"self-audit ok: {self.tree_size} entries, {self.checkpoints_checked} checkpoints verified"
        return (
            f"self-audit FAILED: {len(self.problems)} problem(s) in {self.tree_size} entries and "
            f"{self.checkpoints_checked} checkpoints; first: {self.problems[0]}"
        )


class _Problems:
    def __init__(self) -> None:
        self._kept: list[str] = []
        self._counts: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        n = self._counts.get(kind, 0) + 1
        self._counts[kind] = n
        if n <= MAX_PER_KIND:
            self._kept.append(message)

    def result(self) -> tuple[str, ...]:
        more = [
            f"... and {n - MAX_PER_KIND} more problem(s) of the kind '{kind}'"
            for kind, n in self._counts.items()
            if n > MAX_PER_KIND
        ]
        return (*self._kept, *more)


def run_self_audit(
    engines: Engines,
    *,
    gateway_keys: Mapping[str, PublicKey] | None = None,
    origin: str | None = None,
    page_size: int = DEFAULT_PAGE,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SelfAuditResult:
    """Audit the stored log (see the module docstring).

    ``gateway_keys`` (key id -> public key, the gateway principal's keys in the federation)
    are what checkpoint signatures are checked with; without them signatures are skipped and
    a warning says so. ``origin``, when given, is the origin every checkpoint must name.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    walk = LogWalk(engines)
    problems = _Problems()
    warnings: list[str] = []
    if gateway_keys is None:
        warnings.append("no gateway keys given: checkpoint signatures were not checked")
    checkpointed, size = walk.heads()
    pending = iter(walk.checkpoints(up_to=checkpointed))
    checkpoint = next(pending, None)
    checked = 0

    recomputed = CompactRange()
    # The stored frontier: the latest stored node at each level with an even index (a left
    # child waiting for its sibling). For a tree of size n, the nodes at n's set bits are
    # exactly its frontier, so the stored root is folded from them as proofs would.
    stored_left: dict[int, bytes] = {}
    nodes_whole = True  # every stored node so far present (else the stored root is moot)
    position = 0
    expected = 0
    for page in walk.leaves(below=size, page=page_size):
        stored = walk.nodes_completed_by(position, position + len(page))
        for log_index, leaf in page:
            if log_index != expected:
                problems.add(
                    "gap",
                    f"the log is not dense: log index {expected}"
                    + (f" to {log_index - 1} are" if log_index - 1 > expected else " is")
                    + f" missing (the next stored entry is {log_index}); entries were deleted",
                )
            expected = log_index + 1
            below: bytes | None = None  # the stored node just completed one level down
            for (level, idx), value in recomputed.append(leaf_hash(leaf)):
                have = stored.get((level, idx))
                if have is None:
                    problems.add(
                        "node", f"Merkle node (level {level}, index {idx}) is missing from the store"
                    )
                    nodes_whole = False
                elif level == 0:
                    if have != value:
                        problems.add(
                            "leaf",
                            f"entry {log_index}: its stored leaf does not hash to its Merkle node "
                            f"(level 0, index {idx}): the entry or the node was altered",
                        )
                else:
                    left = stored_left.get(level - 1)
                    if left is not None and below is not None and have != node_hash(left, below):
                        problems.add(
                            "node",
                            f"Merkle node (level {level}, index {idx}) is not the hash of its two stored "
                            f"children: it or a child was altered",
                        )
                if idx % 2 == 0:
                    stored_left[level] = have if have is not None else value
                below = have if have is not None else value
            position += 1
            while checkpoint is not None and checkpoint.tree_size <= position:
                _check_checkpoint(
                    checkpoint,
                    leaf_root=recomputed.root(),
                    node_root=_stored_root(position, stored_left) if nodes_whole else None,
                    gateway_keys=gateway_keys,
                    origin=origin,
                    problems=problems,
                )
                checked += 1
                checkpoint = next(pending, None)
    while checkpoint is not None:
        problems.add(
            "checkpoint",
            f"checkpoint at tree size {checkpoint.tree_size} is beyond the end of the log ({position} "
            f"entries): signed entries were removed",
        )
        checked += 1
        checkpoint = next(pending, None)
    found = problems.result()
    return SelfAuditResult(
        ok=not found,
        tree_size=position,
        checkpoints_checked=checked,
        problems=found,
        finished_at=clock(),
        warnings=tuple(warnings),
    )


def _stored_root(size: int, stored_left: Mapping[int, bytes]) -> bytes | None:
    levels = [level for level in range(size.bit_length()) if size >> level & 1]
    try:
        frontier = [stored_left[level] for level in reversed(levels)]
    except KeyError:
        return None
    acc = frontier[-1]
    for left in reversed(frontier[:-1]):
        acc = node_hash(left, acc)
    return acc


def _check_checkpoint(
    cp: StoredCheckpoint,
    *,
    leaf_root: bytes,
    node_root: bytes | None,
    gateway_keys: Mapping[str, PublicKey] | None,
    origin: str | None,
    problems: _Problems,
) -> None:
    where = f"checkpoint at tree size {cp.tree_size}"
    if cp.root_hash != leaf_root:
        problems.add("checkpoint", f"{where}: its root is not the root of the stored leaves")
    if node_root is not None and cp.root_hash != node_root:
        problems.add(
            "checkpoint",
            f"{where}: its root is not the root folded from the stored Merkle nodes (proofs served "
            f"from them would not verify)",
        )
    try:
        envelope = envelope_pb2.Envelope.FromString(cp.envelope)
    except DecodeError:
        problems.add("signature", f"{where}: the stored envelope is not a serialized Envelope")
        return
    try:
        if gateway_keys is not None:
            signed = open_checkpoint(envelope, gateway_keys)
            size, root, named = signed.tree_size, signed.root_hash, signed.origin
        else:
            body = audit_pb2.Checkpoint.FromString(envelope.payload)
            size, root, named = body.tree_size, body.root_hash, body.origin
    except CheckpointError as exc:
        problems.add("signature", f"{where}: {exc}")
        return
    except DecodeError:
        problems.add("signature", f"{where}: the signed payload is not a serialized Checkpoint")
        return
    if (size, root) != (cp.tree_size, cp.root_hash):
        problems.add(
            "checkpoint",
            f"{where}: the signed payload (size {size}) differs from the size and root stored beside it",
        )
    if origin is not None and named != origin:
        problems.add("checkpoint", f"{where}: signed for origin {named[:80]!r}, not {origin!r}")
