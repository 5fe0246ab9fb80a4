"""Metrics, structured logs and request correlation for the gateway (docs/operations.md)."""
