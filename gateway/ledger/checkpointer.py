"""The checkpoint job: sign the log's head every ``interval`` seconds while it grows.

Never for an unchanged size. Several replicas may race to checkpoint the same size; the
primary key on tree_size makes the loser's insert a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from gateway.audit.checkpoints import sign_checkpoint
from gateway.crypto.suites import PrivateKey
from gateway.observability import metrics
from gateway.store.checkpoints import CheckpointStore
from gateway.store.rows import us

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self,
        store: CheckpointStore,
        *,
        key: PrivateKey,
        origin: str,
        clock: Callable[[], datetime],
        interval: float = 10.0,
    ):
        self._store = store
        self._key = key
        self.origin = origin
        self._clock = clock
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mrx-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval):
            try:
                self.checkpoint_now()
                if failing:
                    log.warning("checkpoints are being made again")
                failing = False
            except Exception as exc:
                if not failing:  # one line per outage, not one per attempt
                    log.error(
                        "checkpoint failed (%s); retrying every %.0f s", type(exc).__name__, self._interval
                    )
                failing = True
            # Also after a failed checkpoint: a growing age is how the alert learns of it.
            try:
                self.update_metrics()
            except Exception:
                log.debug("could not read the log size for the metrics", exc_info=True)

    def update_metrics(self) -> None:
        """Log size and checkpoint freshness, read back from the store: another replica's
        checkpoint counts as much as this one's."""
        size, signed, waiting_us = self._store.freshness()
        metrics.LOG_SIZE.set(size)
        metrics.CHECKPOINT_SIZE.set(signed)
        age = 0.0 if waiting_us is None else max(us(self._clock()) - waiting_us, 0) / 1e6
        metrics.CHECKPOINT_AGE.set(age)

    def checkpoint_now(self) -> int | None:
        """Checkpoint the log as it is now; returns the tree size, or None if unchanged."""
        head = self._store.unsigned_head()
        if head is None:
            return None
        size, root = head
        now = self._clock()
        envelope = sign_checkpoint(origin=self.origin, tree_size=size, root_hash=root, at=now, key=self._key)
        if not self._store.add(
            tree_size=size,
            root_hash=root,
            created_at_us=us(now),
            envelope=envelope.SerializeToString(deterministic=True),
        ):
            return None
        log.info("checkpoint: tree size %d", size)
        return size
