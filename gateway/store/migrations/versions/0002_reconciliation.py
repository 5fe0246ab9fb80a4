"""Reconciliation: per-record digests, runs, discrepancies and signed reports.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Only new tables: the first release's tables are untouched, so mrx_schema stays 1.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_digests",
        sa.Column("record_key", sa.String(200), primary_key=True),
        sa.Column("issuer", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.BigInteger, nullable=False),
        sa.Column("log_index", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("content_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("keyid", sa.String(128), nullable=False),
        sa.Column("leaf", sa.LargeBinary(32), nullable=False),
    )
    op.create_index("ix_reconcile_digests_issuer", "reconcile_digests", ["issuer", "key_hash"])
    op.create_table(
        "reconcile_runs",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("participant", sa.String(16), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("started_at_us", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_at_us", sa.BigInteger, nullable=False),
        sa.Column("ended_at_us", sa.BigInteger, nullable=True),
        sa.Column("snapshot_size", sa.BigInteger, nullable=True),
        sa.Column("recognised_keyids", sa.Text, nullable=False),
        sa.Column("request_bytes", sa.BigInteger, nullable=False),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("failure", sa.Text, nullable=True),
    )
    op.create_index("ix_reconcile_runs_participant", "reconcile_runs", ["participant", "started_at_us"])
    op.create_index("ix_reconcile_runs_status", "reconcile_runs", ["status"])
    op.create_table(
        "reconcile_discrepancies",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("record_key", sa.String(200), primary_key=True),
        sa.Column("category", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("local_version", sa.BigInteger, nullable=True),
        sa.Column("local_state", sa.SmallInteger, nullable=True),
        sa.Column("local_content_sha256", sa.LargeBinary(32), nullable=True),
        sa.Column("gateway_version", sa.BigInteger, nullable=True),
        sa.Column("gateway_state", sa.SmallInteger, nullable=True),
        sa.Column("gateway_content_sha256", sa.LargeBinary(32), nullable=True),
        sa.Column("gateway_keyid", sa.String(128), nullable=True),
        sa.Column("gateway_log_index", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "reconcile_reports",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("no downgrades: restore the backup taken before mrx db upgrade")
