"""Read side for recognition: a record's current row, its version history and envelope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Table, null, select

from gateway.store.engine import Engines
from gateway.store.schema import certificates, exchanges, record_versions, records


@dataclass(frozen=True, slots=True)
class Version:
    version: int
    state: int
    effective_at_us: int
    log_index: int


@dataclass(frozen=True, slots=True)
class RecordSnapshot:
    record_key: str
    issuer: str
    version: int
    log_index: int
    # End of validity: a certificate's expiry date, an assessor's last qualification;
    # None when the kind does not expire.
    valid_until: date | None
    # The submission envelope of the current version, as received.
    envelope: bytes
    envelope_sha256: bytes
    # Every accepted version, oldest first.
    history: tuple[Version, ...]
    received_at_us: int
    # PT results: the gateway's class (mrx.v1.PtClass); None for other kinds.
    classification: int | None


class RecordReads:
    def __init__(self, engines: Engines):
        self._engines = engines

    def snapshot(self, record_key: str) -> RecordSnapshot | None:
        with self._engines.reader.connect() as conn, conn.begin():
            row = None
            kinds: tuple[tuple[Table, Any, Any], ...] = (
                (certificates, certificates.c.expiry_date, null()),
                (records, records.c.valid_until, records.c.classification),
            )
            for table, until, classification in kinds:
                c = table.c
                row = conn.execute(
                    select(
                        c.issuer,
                        c.version,
                        c.log_index,
                        until.label("valid_until"),
                        classification.label("classification"),
                        exchanges.c.envelope,
                        exchanges.c.envelope_sha256,
                        exchanges.c.received_at_us,
                    )
                    .join(exchanges, exchanges.c.log_index == c.log_index)
                    .where(c.record_key == record_key)
                ).first()
                if row is not None:
                    break
            if row is None:
                return None
            v = record_versions.c
            history = tuple(
                Version(*r)
                for r in conn.execute(
                    select(v.version, v.state, v.effective_at_us, v.log_index)
                    .where(v.record_key == record_key)
                    .order_by(v.version)
                )
            )
        return RecordSnapshot(
            record_key=record_key,
            issuer=row.issuer,
            version=row.version,
            log_index=row.log_index,
            valid_until=row.valid_until,
            envelope=row.envelope,
            envelope_sha256=row.envelope_sha256,
            history=history,
            received_at_us=row.received_at_us,
            classification=row.classification,
        )
