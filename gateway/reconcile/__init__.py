"""Reconciliation between a participant's local records and the gateway's ledger.

``digests`` (the canonical content digest, record digests, buckets) and ``participant``
(the driver a participant runs) are client-side: they import nothing of the server.
``engine`` is the gateway's side, on the store.
"""
