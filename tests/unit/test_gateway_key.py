"""The gateway refuses to sign with a key outside its validity window and warns before it ends."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from gateway.server import ConfigError, check_gateway_key


@pytest.fixture
def gateway(base_federation, signers):
    key = signers["MRX-GW"]
    return base_federation, key, base_federation.keys[key.keyid]


def test_a_key_inside_its_window_is_accepted_quietly(gateway, caplog):
    federation, key, record = gateway
    with caplog.at_level(logging.WARNING, logger="gateway.server"):
        check_gateway_key(federation, key, now=record.not_before + timedelta(days=1))
    assert not caplog.records


def test_an_expired_gateway_key_is_refused_naming_the_key_and_what_to_do(gateway):
    federation, key, record = gateway
    with pytest.raises(ConfigError, match=rf"gateway key {key.keyid} expired at .*rotate"):
        check_gateway_key(federation, key, now=record.not_after + timedelta(seconds=1))


def test_a_gateway_key_before_its_not_before_is_refused(gateway):
    federation, key, record = gateway
    with pytest.raises(ConfigError, match=rf"gateway key {key.keyid} is not valid before"):
        check_gateway_key(federation, key, now=record.not_before - timedelta(seconds=1))


def test_a_key_with_less_than_30_days_left_is_logged(gateway, caplog):
    federation, key, record = gateway
    with caplog.at_level(logging.WARNING, logger="gateway.server"):
        check_gateway_key(federation, key, now=record.not_after - timedelta(days=10))
    assert any(f"gateway key {key.keyid} expires at" in r.getMessage() for r in caplog.records)
