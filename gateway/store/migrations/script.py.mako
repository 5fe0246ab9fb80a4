"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "${up_revision}"
down_revision = ${'"%s"' % down_revision if isinstance(down_revision, str) else repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Write the DDL out here (op.create_table, op.add_column, ...): never import schema.py.
    # If the tables stop being usable by releases before migrations, raise mrx_schema.version.
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    raise NotImplementedError("mrx does not downgrade: restore the backup taken before upgrading")
