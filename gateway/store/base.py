"""The handles every store module shares: the engines of one database, the store's
error, and how a database URL may be shown. Apart from engine.py so that the schema
history (migrate.py), which engine.py calls to check a database, needs nothing of it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.engine import make_url


class StoreError(RuntimeError):
    """The database cannot be used (wrong schema, unsafe durability settings)."""


def display_url(url: str) -> str:
    """The database URL as it may be shown or logged: never its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ""
    return parsed.render_as_string(hide_password=True)


@dataclass(frozen=True)
class Engines:
    url: str
    dialect: str  # "sqlite" or "postgresql"
    writer: Engine
    reader: Engine

    def dispose(self) -> None:
        self.writer.dispose()
        self.reader.dispose()
