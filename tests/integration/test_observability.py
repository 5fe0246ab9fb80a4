"""Metrics over real HTTP and request ids over real gRPC, on a real gateway on port 0.

Counters are process-wide (other tests in this process move them too), so every check
compares a scrape taken before with one taken after.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from gateway.pb import exchange_pb2

Scrape = Callable[[], dict[tuple[str, tuple[tuple[str, str], ...]], float]]


def _scraper(port: int) -> Scrape:
    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            text = response.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    return scrape


def _get(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def observed(gateway_factory):
    running = gateway_factory(metrics_address=("127.0.0.1", 0), checkpoint_interval=0.2)
    server = running.gateway.metrics_server
    assert server is not None and server.port > 0
    return running, _scraper(server.port)


def test_submissions_rpcs_batches_and_signatures_are_counted(observed, client_for, certs_of, make_env):
    _, scrape = observed
    js = client_for("CN-JS")
    certs = certs_of("CN-JS", 12)
    before = scrape()

    js.submit(make_env(certs[0]))
    forged = make_env(certs[1])
    forged.signatures[0].sig = bytes(64)
    with pytest.raises(grpc.RpcError) as refused:
        js.exchange.Submit(exchange_pb2.SubmitRequest(envelope=forged), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    results = js.exchange.SubmitBatch(
        exchange_pb2.SubmitBatchRequest(envelopes=[make_env(c) for c in certs[2:12]]), timeout=30
    ).results
    assert all(r.HasField("receipt") for r in results)

    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert delta("mrx_submissions_total", outcome="accepted", reason="") == 11
    assert delta("mrx_submissions_total", outcome="refused", reason="BAD_SIGNATURE") == 1
    assert delta("mrx_signature_failures_total", participant="CN-JS", reason="BAD_SIGNATURE") == 1
    submit = "/mrx.v1.ExchangeService/Submit"
    assert delta("mrx_rpc_requests_total", method=submit, code="OK") == 1
    assert delta("mrx_rpc_requests_total", method=submit, code="UNAUTHENTICATED") == 1
    assert delta("mrx_rpc_requests_total", method="/mrx.v1.ExchangeService/SubmitBatch", code="OK") == 1
    assert delta("mrx_rpc_latency_seconds_count", method=submit) == 2
    # Two writer transactions: the unary one (1 record) and the batch (10 records).
    assert delta("mrx_group_commit_records_count") == 2
    assert delta("mrx_group_commit_records_sum") == 11
    assert delta("mrx_group_commit_records_bucket", le="1.0") == 1
    assert _get(after, "mrx_store_up") == 1
    assert _get(after, "mrx_writer_up") == 1


def test_log_size_and_checkpoint_gauges_follow_the_checkpointer(observed, client_for, certs_of, make_env):
    _, scrape = observed
    js = client_for("CN-JS")
    for cert in certs_of("CN-JS", 3):
        js.submit(make_env(cert))
    deadline = time.monotonic() + 20
    while True:
        samples = scrape()
        if _get(samples, "mrx_checkpoint_size") == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert _get(samples, "mrx_log_size") == 3
    assert _get(samples, "mrx_checkpoint_size") == 3
    assert _get(samples, "mrx_checkpoint_age_seconds") == 0
    # Exported from the start, so alert rules can be written before the first run.
    names = {name for name, _ in samples}
    for declared in ("mrx_subscribers", "mrx_self_audit_ok", "mrx_self_audit_last_run_timestamp_seconds"):
        assert declared in names


def test_the_request_id_is_returned_and_a_bad_one_replaced(gateway, client_for, certs_of, make_env):
    js = client_for("CN-JS")
    _, call = js.exchange.Submit.with_call(
        exchange_pb2.SubmitRequest(envelope=make_env(certs_of("CN-JS")[0])),
        metadata=[("x-request-id", "ticket-4711.a")],
        timeout=10,
    )
    assert dict(call.initial_metadata())["x-request-id"] == "ticket-4711.a"
    _, call = js.exchange.Submit.with_call(
        exchange_pb2.SubmitRequest(envelope=make_env(certs_of("CN-JS", 1, start_serial=2)[0])),
        metadata=[("x-request-id", "x" * 65)],
        timeout=10,
    )
    generated = dict(call.initial_metadata())["x-request-id"]
    assert generated != "x" * 65 and len(generated) == 16


def test_an_internal_error_quotes_the_request_id(
    gateway, client_for, certs_of, make_env, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, with secret internals")

    monkeypatch.setattr(gateway.gateway.submitter._verifier, "verify", broken)
    js = client_for("CN-JS")
    with pytest.raises(grpc.RpcError) as failed:
        js.exchange.Submit(
            exchange_pb2.SubmitRequest(envelope=make_env(certs_of("CN-JS")[0])),
            metadata=[("x-request-id", "quote-me-42")],
            timeout=10,
        )
    err = failed.value
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "secret internals" not in err.details()
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.metadata["request_id"] == "quote-me-42"
    assert "quote-me-42" in err.details()
    # The operator finds the traceback under the same id.
    assert any("quote-me-42" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_metrics_port_in_use_stops_the_start_with_a_clear_error(gateway_factory):
    import socket

    from gateway.server import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
        ):
            gateway_factory(metrics_address=("127.0.0.1", port))


def test_the_checkpoint_age_grows_while_checkpoints_fail(observed, client_for, certs_of, make_env, clock):
    from datetime import timedelta

    running, scrape = observed

    def failing():
        raise RuntimeError("the signing key file went away")

    running.gateway.checkpointer.checkpoint_now = failing
    client_for("CN-JS").submit(make_env(certs_of("CN-JS")[0]))
    clock.advance(timedelta(minutes=7))
    deadline = time.monotonic() + 20
    while True:
        samples = scrape()
        if _get(samples, "mrx_checkpoint_age_seconds") > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert _get(samples, "mrx_checkpoint_age_seconds") == 7 * 60
    assert _get(samples, "mrx_log_size") == 1
    assert _get(samples, "mrx_checkpoint_size") == 0


def test_the_gateway_keys_end_of_validity_is_exported(observed, federation, signers):
    _, scrape = observed
    record = federation.keys[signers[federation.gateway_code].keyid]
    assert record.not_after is not None
    assert _get(scrape(), "mrx_gateway_key_not_after_timestamp_seconds") == record.not_after.timestamp()
