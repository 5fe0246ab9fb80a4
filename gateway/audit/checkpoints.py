"""Signed checkpoints of the exchange log: (origin, tree size, root hash, time).

A checkpoint is made every ``interval`` seconds while the log grows (never for an
unchanged size), signed by the gateway key as a DSSE envelope of type
CHECKPOINT_PAYLOAD_TYPE, and stored. Several replicas may race to checkpoint the same
size; the primary key on tree_size makes the loser's insert a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from gateway.audit.merkle import CompactRange
from gateway.crypto.dsse import sign_envelope
from gateway.crypto.suites import PrivateKey
from gateway.pb import audit_pb2, envelope_pb2
from gateway.store.engine import Engines
from gateway.store.merkle import SqlNodeReader
from gateway.store.rows import us
from gateway.store.schema import checkpoints, exchanges

log = logging.getLogger(__name__)

CHECKPOINT_PAYLOAD_TYPE = "application/vnd.mrx.checkpoint.v1+protobuf"


def sign_checkpoint(
    *, origin: str, tree_size: int, root_hash: bytes, at: datetime, key: PrivateKey
) -> envelope_pb2.Envelope:
    body = audit_pb2.Checkpoint(origin=origin, tree_size=tree_size, root_hash=root_hash)
    body.timestamp.FromDatetime(at)
    return sign_envelope(
        payload_type=CHECKPOINT_PAYLOAD_TYPE, payload=body.SerializeToString(deterministic=True), signer=key
    )


class Checkpointer:
    def __init__(
        self,
        engines: Engines,
        *,
        key: PrivateKey,
        origin: str,
        clock: Callable[[], datetime],
        interval: float = 10.0,
    ):
        self._engines = engines
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
        while not self._stop.wait(self._interval):
            try:
                self.checkpoint_now()
            except Exception:
                log.exception("checkpoint failed; will retry in %.0f s", self._interval)

    def checkpoint_now(self) -> int | None:
        """Checkpoint the log as it is now; returns the tree size, or None if unchanged."""
        with self._engines.reader.connect() as conn, conn.begin():
            size = (
                int(conn.execute(select(func.coalesce(func.max(exchanges.c.log_index), -1))).scalar_one()) + 1
            )
            latest = conn.execute(select(func.max(checkpoints.c.tree_size))).scalar_one_or_none()
            if size == 0 or latest == size:
                return None
            root = CompactRange.from_store(size, SqlNodeReader(conn)).root()
        now = self._clock()
        envelope = sign_checkpoint(origin=self.origin, tree_size=size, root_hash=root, at=now, key=self._key)
        try:
            with self._engines.writer.begin() as conn:
                conn.execute(
                    insert(checkpoints).values(
                        tree_size=size,
                        root_hash=root,
                        created_at_us=us(now),
                        envelope=envelope.SerializeToString(deterministic=True),
                    )
                )
        except IntegrityError:
            return None  # another replica checkpointed this size first
        log.info("checkpoint: tree size %d", size)
        return size
