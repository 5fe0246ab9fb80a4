"""Persistence: SQLAlchemy Core tables, the read-side repository and the sequencer.

Split by trust boundary as in trillian: ``ReadStore`` only reads (query services use
it), ``Sequencer`` is the one writer that appends to the exchange log.
"""
