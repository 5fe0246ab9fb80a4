"""Alembic environment: always run on the connection the caller holds.

``gateway.store.migrate`` opens the connection, takes the schema lock and passes the
connection in ``config.attributes["connection"]``; the migrations run inside that
transaction, so an upgrade commits whole or not at all. There is no offline (SQL
script) mode and no alembic.ini: see ``gateway/store/migrate.py``.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through gateway.store.migrate (mrx db upgrade), not the alembic CLI")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
