"""The schema of the first release (mrx 0.1), before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written out table by table, not taken from ``gateway/store/schema.py``: a revision is
history and must not change when schema.py does. A test compares the head of the
history with schema.py on both backends.

A database created by that release (``metadata.create_all`` plus the ``mrx_schema``
row, no ``alembic_version``) has exactly these tables; ``mrx db upgrade`` checks them
and stamps it with this revision instead of running it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchanges",
        sa.Column("log_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("received_at_us", sa.BigInteger, nullable=False),
        sa.Column("sender", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("record_key", sa.String(200), nullable=False),
        sa.Column("record_version", sa.BigInteger, nullable=False),
        sa.Column("subject_issuer", sa.String(16), nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("envelope_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("receipt", sa.LargeBinary, nullable=True),
        sa.Column("leaf", sa.LargeBinary, nullable=False),
    )
    op.create_index(
        "ux_exchanges_accepted_message",
        "exchanges",
        ["sender", "message_id"],
        unique=True,
        sqlite_where=sa.text("outcome = 1"),
        postgresql_where=sa.text("outcome = 1"),
    )
    op.create_index("ix_exchanges_envelope_sha256", "exchanges", ["envelope_sha256"])
    op.create_index("ix_exchanges_sender", "exchanges", ["sender", "log_index"])
    op.create_index("ix_exchanges_subject_issuer", "exchanges", ["subject_issuer", "log_index"])
    op.create_index("ix_exchanges_received_at", "exchanges", ["received_at_us"])

    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )

    op.create_table(
        "checkpoints",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
    )

    op.create_table(
        "certificates",
        sa.Column("scheme", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("certificate_number", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.String(16), nullable=False),
        sa.Column("issuing_body", sa.String(64), nullable=False),
        sa.Column("holder_credit_code", sa.String(18), nullable=False),
        sa.Column("holder_name", sa.String(200), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("effective_at_us", sa.BigInteger, nullable=False),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("expiry_date", sa.Date, nullable=False),
        sa.Column("log_index", sa.BigInteger, nullable=False),
        sa.Column("record_key", sa.String(200), nullable=False, unique=True),
    )
    op.create_index("ix_certificates_holder", "certificates", ["holder_credit_code"])
    op.create_index("ix_certificates_issuing_body", "certificates", ["issuing_body"])
    op.create_index("ix_certificates_issuer", "certificates", ["issuer"])

    op.create_table(
        "records",
        sa.Column("record_key", sa.String(200), primary_key=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("issuer", sa.String(16), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("effective_at_us", sa.BigInteger, nullable=False),
        sa.Column("valid_until", sa.Date, nullable=True),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("classification", sa.SmallInteger, nullable=True),
        sa.Column("log_index", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_records_kind_issuer", "records", ["kind", "issuer"])
    op.create_index("ix_records_subject", "records", ["subject"])

    op.create_table(
        "record_versions",
        sa.Column("record_key", sa.String(200), primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("effective_at_us", sa.BigInteger, nullable=False),
        sa.Column("log_index", sa.BigInteger, nullable=False),
    )

    # Kept for the releases before migrations, which read it and refuse any version but
    # theirs: a revision that makes the tables incompatible with them raises it.
    schema = op.create_table(
        "mrx_schema",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.bulk_insert(schema, [{"id": 1, "version": 1, "note": "created by mrx"}])


def downgrade() -> None:
    raise NotImplementedError("mrx does not downgrade: restore the backup taken before upgrading")
