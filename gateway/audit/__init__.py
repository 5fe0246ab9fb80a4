"""Tamper-evident audit log: the exchange log as an RFC 6962 / RFC 9162 Merkle tree."""
