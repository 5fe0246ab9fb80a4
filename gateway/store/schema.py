"""Tables. SQLAlchemy Core, shared by SQLite and PostgreSQL.

Times are stored as integer microseconds since the Unix epoch (UTC): exact, ordered and
identical on both backends, where DateTime round-trips differ (SQLite keeps strings).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

# What mrx_schema.version holds. The schema's revision is alembic_version's (the history
# is gateway/store/migrations; a test keeps its head equal to these tables). mrx_schema
# stays for the releases before migrations, which accept only version 1: a revision that
# makes the tables incompatible with them must raise it (and this constant).
SCHEMA_VERSION = 1

metadata = MetaData()

# The exchange log: one row per attempt that passed signature verification, accepted
# or refused. log_index is dense and allocated by the writer under a lock, so
# several replicas on one PostgreSQL still write one linear log.
exchanges = Table(
    "exchanges",
    metadata,
    Column("log_index", BigInteger, primary_key=True, autoincrement=False),
    Column("received_at_us", BigInteger, nullable=False),
    Column("sender", String(16), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("kind", Integer, nullable=False),
    Column("record_key", String(200), nullable=False),
    Column("record_version", BigInteger, nullable=False),
    # Participant named as the record's issuer (who may publish it); decides which
    # secretariats and provinces may see the exchange.
    Column("subject_issuer", String(16), nullable=False),
    Column("outcome", SmallInteger, nullable=False),  # envelope_pb2.Outcome
    Column("reason", String(64), nullable=False),  # "" when accepted
    Column("envelope_sha256", LargeBinary(32), nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    # Receipt payload (serialized mrx.v1.Receipt) for accepted exchanges. The gateway
    # signs it on the way out; Ed25519 is deterministic, so a resubmission gets the
    # byte-identical receipt back without storing the signature.
    Column("receipt", LargeBinary, nullable=True),
    # The audit-log leaf (serialized mrx.v1.ExchangeLeaf) exactly as hashed.
    Column("leaf", LargeBinary, nullable=False),
)
# Message ids are consumed only by accepted submissions: a refused message may be
# corrected and sent again under the same id.
Index(
    "ux_exchanges_accepted_message",
    exchanges.c.sender,
    exchanges.c.message_id,
    unique=True,
    sqlite_where=exchanges.c.outcome == 1,
    postgresql_where=exchanges.c.outcome == 1,
)
Index("ix_exchanges_envelope_sha256", exchanges.c.envelope_sha256)
Index("ix_exchanges_sender", exchanges.c.sender, exchanges.c.log_index)
Index("ix_exchanges_subject_issuer", exchanges.c.subject_issuer, exchanges.c.log_index)
Index("ix_exchanges_received_at", exchanges.c.received_at_us)

# Perfect subtrees of the RFC 6962 tree over the exchange log: node (level, idx) covers
# leaves [idx * 2**level, (idx + 1) * 2**level). Written once, when complete, in the
# same transaction as the leaves, so any proof is a handful of primary-key reads.
merkle_nodes = Table(
    "merkle_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# Signed checkpoints (tree size, root, time), newest is the one served.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
)

# Current state of each certificate (the latest accepted version).
certificates = Table(
    "certificates",
    metadata,
    Column("scheme", SmallInteger, primary_key=True, autoincrement=False),
    Column("certificate_number", String(64), primary_key=True),
    Column("issuer", String(16), nullable=False),
    Column("issuing_body", String(64), nullable=False),
    Column("holder_credit_code", String(18), nullable=False),
    Column("holder_name", String(200), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("effective_at_us", BigInteger, nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("expiry_date", Date, nullable=False),
    Column("log_index", BigInteger, nullable=False),
    Column("record_key", String(200), nullable=False, unique=True),
)
Index("ix_certificates_holder", certificates.c.holder_credit_code)
Index("ix_certificates_issuing_body", certificates.c.issuing_body)
Index("ix_certificates_issuer", certificates.c.issuer)

# Current state of every other record kind (assessors, test reports, PT results, spot
# checks), keyed like the exchange log by record key (kind/issuer/number).
records = Table(
    "records",
    metadata,
    Column("record_key", String(200), primary_key=True),
    Column("kind", SmallInteger, nullable=False),
    Column("issuer", String(16), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("effective_at_us", BigInteger, nullable=False),
    # End of validity (an assessor's last qualification); NULL when the kind does not expire.
    Column("valid_until", Date, nullable=True),
    # What the record is about, for lookups: a lab's CMA number, a spot-check target's
    # credit code, ...
    Column("subject", String(64), nullable=False),
    # PT results: the gateway's ISO 13528 class (mrx.v1.PtClass); NULL otherwise.
    Column("classification", SmallInteger, nullable=True),
    Column("log_index", BigInteger, nullable=False),
)
Index("ix_records_kind_issuer", records.c.kind, records.c.issuer)
Index("ix_records_subject", records.c.subject)

# Every accepted version of every record, so "what was the state on date D" stays
# answerable (recognition decisions depend on it).
record_versions = Table(
    "record_versions",
    metadata,
    Column("record_key", String(200), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("state", SmallInteger, nullable=False),
    Column("effective_at_us", BigInteger, nullable=False),
    Column("log_index", BigInteger, nullable=False),
)

schema_info = Table(
    "mrx_schema",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    Column("note", Text, nullable=False),
)

# Scheduled jobs (gateway/jobs): one row per (job, scheduled time), claimed by the first
# replica whose INSERT lands; the primary key is what makes each run happen once across
# replicas (APScheduler's own job stores must not be shared between schedulers). A claim
# holds a lease its runner renews; a claim left "running" past its lease (the runner was
# killed) is taken over or marked abandoned. Revision 0003.
job_runs = Table(
    "job_runs",
    metadata,
    Column("job", String(64), primary_key=True),
    Column("scheduled_at_us", BigInteger, primary_key=True, autoincrement=False),
    Column("claimed_by", String(128), nullable=False),
    # 1 for the first claimant, +1 for each takeover of an expired claim.
    Column("attempt", SmallInteger, nullable=False),
    Column("taken_over_from", String(128), nullable=True),
    Column("started_at_us", BigInteger, nullable=False),
    Column("lease_until_us", BigInteger, nullable=False),
    Column("finished_at_us", BigInteger, nullable=True),
    # running | ok | failed (ran, found a problem) | error (could not finish) | abandoned
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False),
)
Index("ix_job_runs_outcome_lease", job_runs.c.outcome, job_runs.c.lease_until_us)

# --- reconciliation (revision 0002) ------------------------------------------------------
# Per current record: what reconciliation compares, computed from the stored envelope
# once per accepted version (log_index says which), so a night's run decodes only what
# changed since the last one. key_hash is the first 32 bits of SHA-256(record_key): the
# bucket a record falls in at any depth is a prefix of it (docs/reconciliation.md).
reconcile_digests = Table(
    "reconcile_digests",
    metadata,
    Column("record_key", String(200), primary_key=True),
    Column("issuer", String(16), nullable=False),
    Column("key_hash", BigInteger, nullable=False),
    Column("log_index", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("content_sha256", LargeBinary(32), nullable=False),
    Column("keyid", String(128), nullable=False),
    Column("leaf", LargeBinary(32), nullable=False),
)
Index("ix_reconcile_digests_issuer", reconcile_digests.c.issuer, reconcile_digests.c.key_hash)

# One row per run; status is mrx.v1.RunStatus. heartbeat_at_us is the lease: a running
# run not heard from within the lease is abandoned, never resumed.
reconcile_runs = Table(
    "reconcile_runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("participant", String(16), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("started_at_us", BigInteger, nullable=False),
    Column("heartbeat_at_us", BigInteger, nullable=False),
    Column("ended_at_us", BigInteger, nullable=True),
    Column("snapshot_size", BigInteger, nullable=True),
    # JSON list of the key ids the participant recognises as its own.
    Column("recognised_keyids", Text, nullable=False),
    Column("request_bytes", BigInteger, nullable=False),
    # JSON {class number: count} once complete.
    Column("summary", Text, nullable=True),
    # Why a failed run failed, as its participant said.
    Column("failure", Text, nullable=True),
)
Index("ix_reconcile_runs_participant", reconcile_runs.c.participant, reconcile_runs.c.started_at_us)
Index("ix_reconcile_runs_status", reconcile_runs.c.status)

# What a run found, kept as found (a gateway dying mid-run loses nothing already
# compared); the report is built from these rows.
reconcile_discrepancies = Table(
    "reconcile_discrepancies",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("record_key", String(200), primary_key=True),
    Column("category", SmallInteger, primary_key=True, autoincrement=False),
    Column("local_version", BigInteger, nullable=True),
    Column("local_state", SmallInteger, nullable=True),
    Column("local_content_sha256", LargeBinary(32), nullable=True),
    Column("gateway_version", BigInteger, nullable=True),
    Column("gateway_state", SmallInteger, nullable=True),
    Column("gateway_content_sha256", LargeBinary(32), nullable=True),
    Column("gateway_keyid", String(128), nullable=True),
    Column("gateway_log_index", BigInteger, nullable=True),
)

# At most one report per run (the primary key), written in the transaction that marks
# the run complete.
reconcile_reports = Table(
    "reconcile_reports",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("created_at_us", BigInteger, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
)
