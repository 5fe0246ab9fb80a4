"""Which database errors mean "the store is unavailable" (retry later), not a bug.

Reads and the checkpoint job go through SQLAlchemy; the writer through the DB-API
drivers directly. Either way a dropped connection, a refused connection, a database
that is locked or shutting down is UNAVAILABLE to the caller, never INTERNAL.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

from gateway.domain.errors import Unavailable

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # pool exhausted while the database is slow
    sqlite3.OperationalError,
    ConnectionError,
)
try:  # psycopg is the optional [postgres] extra
    import psycopg

    _UNAVAILABLE += (psycopg.OperationalError, psycopg.InterfaceError)
except ImportError:  # pragma: no cover - SQLite-only installation
    pass


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _UNAVAILABLE)


def store_unavailable() -> Unavailable:
    return Unavailable("the gateway's database is unavailable; retry shortly", reason="STORE_UNAVAILABLE")
