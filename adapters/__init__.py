"""Adapters connecting provincial systems to the gateway (see gateway.client)."""
