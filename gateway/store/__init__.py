"""Persistence: SQLAlchemy Core tables, the read-only repositories, the read-write store.

Split by trust boundary as in trillian: ``ReadStore``, ``RecordReads`` and ``AuditStore``
only read (the query services use them); ``writes.WriteStore`` is what the one writer
(gateway/ledger/writer.py) appends through, one implementation per backend in ``sql/``.
"""
