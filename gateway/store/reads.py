"""Read-only repository: what the query services may see. Never writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Select, and_, func, or_, select

from gateway.domain.certificates import CertState
from gateway.store.engine import Engines
from gateway.store.schema import certificates, exchanges


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    scheme: int
    certificate_number: str
    issuer: str
    state: int
    version: int
    expiry_date: date
    log_index: int
    received_at_us: int
    envelope: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateFilter:
    holder_credit_code: str = ""
    issuing_body: str = ""
    issuer: str = ""
    scheme: int = 0
    # The effective state (EXPIRED derived from the expiry date), 0 for any.
    state: int = 0


_LIVE = (int(CertState.VALID), int(CertState.SUSPENDED))


class ReadStore:
    def __init__(self, engines: Engines):
        self._engines = engines

    def _select(self) -> Select[int, str, str, int, int, date, int, int, bytes]:
        return select(
            certificates.c.scheme,
            certificates.c.certificate_number,
            certificates.c.issuer,
            certificates.c.state,
            certificates.c.version,
            certificates.c.expiry_date,
            certificates.c.log_index,
            exchanges.c.received_at_us,
            exchanges.c.envelope,
        ).join(exchanges, exchanges.c.log_index == certificates.c.log_index)

    def get_certificate(self, scheme: int, number: str) -> StoredCertificate | None:
        stmt = self._select().where(
            certificates.c.scheme == scheme, certificates.c.certificate_number == number
        )
        with self._engines.reader.connect() as conn:
            row = conn.execute(stmt).first()
        return StoredCertificate(*row) if row else None

    def query_certificates(
        self, flt: CertificateFilter, *, today: date, after: tuple[int, str] | None, limit: int
    ) -> list[StoredCertificate]:
        """Keyset-paged on (scheme, certificate_number): stable under concurrent inserts."""
        c = certificates.c
        stmt = self._select()
        if flt.holder_credit_code:
            stmt = stmt.where(c.holder_credit_code == flt.holder_credit_code)
        if flt.issuing_body:
            stmt = stmt.where(c.issuing_body == flt.issuing_body)
        if flt.issuer:
            stmt = stmt.where(c.issuer == flt.issuer)
        if flt.scheme:
            stmt = stmt.where(c.scheme == flt.scheme)
        if flt.state == CertState.EXPIRED:
            stmt = stmt.where(c.state.in_(_LIVE), c.expiry_date < today)
        elif flt.state in _LIVE:
            stmt = stmt.where(c.state == flt.state, c.expiry_date >= today)
        elif flt.state:
            stmt = stmt.where(c.state == flt.state)
        if after is not None:
            scheme, number = after
            stmt = stmt.where(or_(c.scheme > scheme, and_(c.scheme == scheme, c.certificate_number > number)))
        stmt = stmt.order_by(c.scheme, c.certificate_number).limit(limit)
        with self._engines.reader.connect() as conn:
            return [StoredCertificate(*row) for row in conn.execute(stmt)]

    def ping(self) -> None:
        """One round trip to the database; raises if it cannot be reached."""
        with self._engines.reader.connect() as conn:
            conn.execute(select(1)).scalar_one()

    def exchange_count(self) -> int:
        with self._engines.reader.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(exchanges)).scalar_one())

    def certificate_count(self) -> int:
        with self._engines.reader.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(certificates)).scalar_one())
