"""Claims of scheduled jobs: one row per (job, scheduled time) across replicas.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Written out, not taken from ``gateway/store/schema.py`` (a revision is history). Adding a
table keeps the first release's tables unchanged, so ``mrx_schema`` stays at version 1:
a first-release gateway on an upgraded database never touches this table.

Written beside revision 0002 (reconciliation) and chained after it: 0001 -> 0002 -> 0003.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("job", sa.String(64), primary_key=True),
        sa.Column("scheduled_at_us", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("claimed_by", sa.String(128), nullable=False),
        sa.Column("attempt", sa.SmallInteger, nullable=False),
        sa.Column("taken_over_from", sa.String(128), nullable=True),
        sa.Column("started_at_us", sa.BigInteger, nullable=False),
        sa.Column("lease_until_us", sa.BigInteger, nullable=False),
        sa.Column("finished_at_us", sa.BigInteger, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_job_runs_outcome_lease", "job_runs", ["outcome", "lease_until_us"])


def downgrade() -> None:
    raise NotImplementedError("mrx does not downgrade: restore the backup taken before upgrading")
