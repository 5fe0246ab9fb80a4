"""After a database restore: is the restored log the one that was published?

The reference is a checkpoint published before the backup was taken, verified and kept
by someone other than the gateway: the state file of ``mrx audit watch`` (each round
saves the last checkpoint it verified). The restored gateway's newest checkpoint must
extend it (an RFC 6962 consistency proof from the saved size to the restored one); if
the restored log is shorter, the entries between are acknowledged exchanges the backup
does not hold, and the check names them. The state file is only read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from gateway.audit.watch import (
    CheckpointError,
    SignedCheckpoint,
    Status,
    WatchState,
    WatchStateError,
    judge,
    open_checkpoint,
)
from gateway.client import AuditClient, Refusal
from gateway.crypto.suites import PublicKey


@dataclass(frozen=True)
class RestoreCheck:
    ok: bool
    lines: tuple[str, ...]
    saved: SignedCheckpoint
    restored: SignedCheckpoint | None


def verify_restore(
    client: AuditClient, state_path: Path, *, extra_keys: Mapping[str, PublicKey] | None = None
) -> RestoreCheck:
    """``extra_keys``: gateway keys trusted besides the pinned ones (the federation's, when
    the gateway key was rotated since the watcher pinned its keys)."""
    state = WatchState.load(state_path)
    if state is None or state.checkpoint is None:
        raise WatchStateError(f"{state_path}: no saved checkpoint to compare the restored log with")
    saved = state.checkpoint
    keys = {**state.gateway_keys, **(extra_keys or {})}
    try:
        restored: SignedCheckpoint | None = open_checkpoint(client.checkpoint(), keys)
    except grpc.RpcError as exc:
        refusal = Refusal.from_rpc_error(exc)
        if (refusal.code, refusal.reason) != (grpc.StatusCode.NOT_FOUND, "NO_CHECKPOINT"):
            raise
        restored = None
    except CheckpointError as exc:
        return RestoreCheck(False, (f"FAIL the restored gateway's checkpoint: {exc}",), saved, None)
    head = [
        f"saved:    {saved.describe()}",
        f"restored: {restored.describe() if restored else '(no checkpoint)'}",
    ]
    restored_size = restored.tree_size if restored is not None else 0
    if restored_size < saved.tree_size and (restored is None or restored.origin == saved.origin):
        missing = saved.tree_size - restored_size
        return RestoreCheck(
            False,
            (
                *head,
                f"FAIL the restored log has {restored_size} entries; {saved.tree_size} were published: "
                f"log indices {restored_size}..{saved.tree_size - 1} ({missing} acknowledged exchanges) "
                "are not in the restored database. Restore a later backup; if there is none, see "
                "docs/operations.md, 'Backup and restore'.",
            ),
            saved,
            restored,
        )
    verdict = judge(saved, restored, client.consistency_proof)
    if verdict.status in (Status.GREW, Status.UNCHANGED):
        grown = restored_size - saved.tree_size
        return RestoreCheck(
            True,
            (
                *head,
                f"OK the restored log contains the published one ({saved.tree_size} entries)"
                + (f" and {grown} more, consistency proof verified" if grown else ", same root"),
            ),
            saved,
            restored,
        )
    return RestoreCheck(False, (*head, f"FAIL {verdict.finding}"), saved, restored)
