"""The runner's state directory: cursors, the outbox of the batch in flight, reports.

Every file is replaced atomically (write, fsync, rename), so a crash leaves either the
old or the new content, never half of one.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.base import AdapterError
from gateway.pb import envelope_pb2


@dataclass(frozen=True)
class Pending:
    """A batch signed and perhaps sent, whose receipts were not yet all verified."""

    envelopes: list[envelope_pb2.Envelope]
    wheres: list[str]
    end_cursor: str | None


class State:
    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    # cursors ----------------------------------------------------------------------------

    def cursor(self, name: str = "cursor") -> str | None:
        data = self._read(f"{name}.json")
        return None if data is None else data.get("cursor")

    def save_cursor(self, cursor: str | None, name: str = "cursor") -> None:
        self._write(f"{name}.json", {"cursor": cursor, "saved_at": _now()})

    # outbox -----------------------------------------------------------------------------

    def pending(self) -> Pending | None:
        data = self._read("outbox.json")
        if data is None:
            return None
        envelopes = [envelope_pb2.Envelope.FromString(base64.b64decode(e)) for e in data["envelopes"]]
        return Pending(envelopes, list(data["wheres"]), data["end_cursor"])

    def save_pending(self, pending: Pending) -> None:
        self._write(
            "outbox.json",
            {
                "end_cursor": pending.end_cursor,
                "wheres": pending.wheres,
                "envelopes": [
                    base64.b64encode(e.SerializeToString(deterministic=True)).decode()
                    for e in pending.envelopes
                ],
            },
        )

    def clear_pending(self) -> None:
        (self.dir / "outbox.json").unlink(missing_ok=True)
        _fsync_dir(self.dir)

    # reports ----------------------------------------------------------------------------

    def append(self, name: str, entries: list[dict[str, Any]]) -> None:
        """Append JSON lines to a report file (rejects.jsonl, receipts.jsonl)."""
        if not entries:
            return
        with (self.dir / name).open("a", encoding="utf-8") as f:
            for entry in entries:
                f.write(json.dumps({"at": _now(), **entry}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def lines(self, name: str) -> list[dict[str, Any]]:
        path = self.dir / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # files ------------------------------------------------------------------------------

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.dir / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            raise AdapterError(
                f"state file {path} is damaged; move it aside (the gateway keeps what was sent)"
            ) from None
        if not isinstance(data, dict):
            raise AdapterError(f"state file {path} is damaged")
        return data

    def _write(self, name: str, data: dict[str, Any]) -> None:
        path = self.dir / name
        tmp = path.with_name(f".{name}.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.dir)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# What `mrx reconcile run` sent through an adapter's state (message id, log index per line):
# the runner does not send those again (adapters/nightly.py).
RECONCILED = "reconciled.jsonl"


def sent_by_reconciliation(state: State) -> dict[str, int]:
    """{message id: log index} of everything reconciliation sent (the runner skips these)."""
    path = state.dir / RECONCILED
    if not path.exists():
        return {}
    out: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                entry = json.loads(line)
                out[entry["message_id"]] = int(entry["log_index"])
    return out
