"""The ledger: everything between a verified envelope and a durable, acknowledged entry.

- ``verify``: the stateless checks in DESIGN order; produces a ``Staged`` value.
- ``values``: the plain values that cross from the front ends to the writer process.
- ``rules``: the append rules (replay, issuer, version, transition, leaf, receipt)
  written against ``gateway.store.writes.WriteTx``, one implementation per backend.
- ``writer``: the process that owns the database, fed batches over a pipe, and the
  front-end side that batches, supervises and resolves futures.
- ``front``: unary, batch and stream submission as the servicers use them.

Layering (tests/unit/test_architecture.py): services -> ledger -> store, never back.
"""
