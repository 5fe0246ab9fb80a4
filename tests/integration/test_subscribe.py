"""ExchangeService.Subscribe through a real gateway (SQLite, and PostgreSQL when set):
backfill then live, filters, scope, resume, bounded slow subscribers, caps, cancellation."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.client import Change, SubmissionRefused
from gateway.crypto.reads import sign_read
from gateway.demo_fixtures import demo_assessors, demo_status_change
from gateway.domain.certificates import CertState, Scheme
from gateway.ledger.feed import FeedLimits
from gateway.observability import metrics
from gateway.pb import exchange_pb2, exchange_pb2_grpc

Code = grpc.StatusCode
METHOD = "/mrx.v1.ExchangeService/Subscribe"
WAIT = 20.0  # a bound on waiting for an event, not a latency assertion


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Follower:
    """A subscriber on a thread, collecting what the SDK yields."""

    def __init__(self, client: Any, **kwargs: Any):
        self.changes: queue.Queue[Change] = queue.Queue()
        self.error: BaseException | None = None
        self._iterator: Iterator[Change] = client.subscribe(**kwargs)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for change in self._iterator:
                self.changes.put(change)
        except grpc.RpcError as exc:
            if exc.code() is not Code.CANCELLED:  # type: ignore[attr-defined]
                self.error = exc
        except BaseException as exc:
            self.error = exc

    def take(self, n: int) -> list[Change]:
        got = [self.changes.get(timeout=WAIT) for _ in range(n)]
        return got

    def nothing_more(self, seconds: float = 1.0) -> bool:
        try:
            extra = self.changes.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected change {extra.record_key} at {extra.log_index}")


@pytest.fixture
def stub(gateway: Any) -> Iterator[exchange_pb2_grpc.ExchangeServiceStub]:
    with grpc.insecure_channel(gateway.address) as ch:
        yield exchange_pb2_grpc.ExchangeServiceStub(ch)


@pytest.fixture
def raw_subscribe(stub: Any, signers: dict[str, Any], clock: Any) -> Callable[..., Any]:
    """``raw_subscribe(principal, **request fields)``: the signed call (a grpc stream)."""

    def _call(principal: str, **fields: Any) -> Any:
        request = exchange_pb2.SubscribeRequest(**fields)
        metadata = sign_read(
            signer=signers[principal], principal=principal, method=METHOD, request=request, now=clock.now
        )
        return stub.Subscribe(request, metadata=metadata)

    return _call


def _first_event(call: Any) -> exchange_pb2.SubscribeEvent:
    return next(iter(call))


def test_backfill_then_live_in_log_order_and_only_accepted(client_for, certs_of, clock, gateway):
    js = client_for("CN-JS")
    certs = certs_of("CN-JS", 3)
    receipts = [js.publish(c) for c in certs]
    # A refused attempt is in the log too; it is not a change.
    with pytest.raises(SubmissionRefused) as refused:
        js.publish(certs[0])  # the same version again: refused, and logged
    assert refused.value.refusal.reason == "STALE_VERSION"
    follower = Follower(client_for("CN-JS"), start_index=0)
    backfill = follower.take(3)
    assert [c.log_index for c in backfill] == [r.log_index for r in receipts]
    assert [c.record for c in backfill] == certs
    assert all(c.record_key.startswith("certificate_status/") for c in backfill)
    _wait_until(lambda: gateway.gateway.feed.tailing, "the subscriber to go live")
    suspended = demo_status_change(certs[1], state=CertState.SUSPENDED, reason="整改", effective_at=clock.now)
    live = [js.publish(c) for c in [*certs_of("CN-JS", 2, start_serial=10), suspended]]
    got = follower.take(3)
    assert [c.log_index for c in got] == [r.log_index for r in live]
    assert live[0].log_index == receipts[-1].log_index + 2  # the refusal took an index
    assert got[-1].record == suspended
    assert follower.nothing_more(0.5)
    assert follower.error is None


def test_resume_after_a_disconnect_loses_and_repeats_nothing(client_for, certs_of):
    js = client_for("CN-JS")
    published = [js.publish(c).log_index for c in certs_of("CN-JS", 6)]
    stream = js.subscribe(start_index=0)
    first = [next(stream) for _ in range(2)]
    stream.close()  # the subscriber goes away mid-backfill
    more = [js.publish(c).log_index for c in certs_of("CN-JS", 2, start_serial=20)]
    rest = list(js.subscribe(start_index=first[-1].log_index + 1, until_caught_up=True))
    indexes = [c.log_index for c in first + rest]
    assert indexes == published + more
    assert len(set(indexes)) == len(indexes)
    # Resuming at the end of the log is allowed (it waits for the next change).
    assert list(js.subscribe(start_index=more[-1] + 1, until_caught_up=True)) == []


def test_filters(client_for, certs_of, clock):
    js = client_for("CN-JS")
    certs = certs_of("CN-JS", 4)
    for c in certs:
        js.publish(c)
    assessor = demo_assessors("CN-JS", count=1, today=clock.today())[0]
    js.publish(assessor)

    def keys(**kw: Any) -> list[str]:
        return [c.record_key for c in js.subscribe(until_caught_up=True, **kw)]

    cert_keys = [f"certificate_status/{c.scheme.name}/{c.certificate_number}" for c in certs]
    assert len(keys()) == 5
    assert keys(kinds=["certificate_status"]) == cert_keys
    assert keys(kinds=["assessor"]) == [f"assessor/CN-JS/{assessor.registration_number}"]
    assert keys(certificate_numbers=[certs[2].certificate_number]) == [cert_keys[2]]
    assert keys(holder_credit_codes=[certs[1].holder.credit_code]) == [
        k
        for c, k in zip(certs, cert_keys, strict=True)
        if c.holder.credit_code == certs[1].holder.credit_code
    ]
    scheme = certs[0].scheme
    assert keys(schemes=[scheme]) == [k for c, k in zip(certs, cert_keys, strict=True) if c.scheme is scheme]
    other = next(s for s in Scheme if s is not scheme and all(c.scheme is not s for c in certs))
    assert keys(schemes=[other]) == []
    assert keys(issuers=["CN-JS"], kinds=["assessor", "certificate_status"]) == keys()


def test_scope_member_secretariat_and_personal_data(client_for, certs_of, clock, raw_subscribe, rpc_refusal):
    today = clock.today()
    gd, js = client_for("CN-GD"), client_for("CN-JS")
    gd_cert, js_cert = certs_of("CN-GD", 1)[0], certs_of("CN-JS", 1)[0]
    gd.publish(gd_cert)
    gd.publish(demo_assessors("CN-GD", count=1, today=today)[0])
    js.publish(js_cert)
    js.publish(demo_assessors("CN-JS", count=1, today=today)[0])

    def seen(code: str, **kw: Any) -> list[str]:
        return [_kind_issuer(c) for c in client_for(code).subscribe(until_caught_up=True, **kw)]

    # CN-HK is bound to CN-GD by the GBA agreement (certificates, test reports): not assessors.
    assert seen("CN-HK") == ["certificate_status:CN-GD"]
    # CN-SH (YRD) sees CN-JS's certificates and assessors (the YRD agreement covers them).
    assert seen("CN-SH") == ["certificate_status:CN-JS", "assessor:CN-JS"]
    # The YRD secretariat sees its members' records, assessors included; nothing of CN-GD.
    assert seen("YRD-SEC") == ["certificate_status:CN-JS", "assessor:CN-JS"]
    assert seen("CN-GD") == ["certificate_status:CN-GD", "assessor:CN-GD"]
    refusal = rpc_refusal(
        lambda: _first_event(raw_subscribe("CN-HK", issuers=["CN-GD"], kinds=["assessor"])),
        Code.PERMISSION_DENIED,
        "PERSONAL_DATA",
    )
    assert refusal.metadata["issuer"] == "CN-GD"
    refusal = rpc_refusal(
        lambda: _first_event(raw_subscribe("CN-GD", issuers=["CN-JS"])),
        Code.PERMISSION_DENIED,
        "OUTSIDE_SCOPE",
    )
    assert refusal.metadata["issuer"] == "CN-JS"
    rpc_refusal(
        lambda: _first_event(raw_subscribe("BTH-SEC", issuers=["CN-SH"])),
        Code.PERMISSION_DENIED,
        "OUTSIDE_SCOPE",
    )


def _kind_issuer(change: Change) -> str:
    kind, issuer = change.record_key.split("/")[:2]
    if kind == "certificate_status":
        issuer = change.record.issuer  # type: ignore[union-attr]
    return f"{kind}:{issuer}"


def test_bad_requests(raw_subscribe, rpc_refusal, stub, client_for, certs_of):
    client_for("CN-JS").publish(certs_of("CN-JS", 1)[0])
    refusal = rpc_refusal(
        lambda: _first_event(raw_subscribe("CN-JS", kinds=["certificate_status", "certificates"])),
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("kinds[1]",),
    )
    assert "unknown kind 'certificates'" in refusal.field_violations[0][1]
    rpc_refusal(
        lambda: _first_event(raw_subscribe("CN-JS", issuers=["CN-XX"], schemes=[99])),
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("issuers[0]", "schemes[0]"),
    )
    rpc_refusal(
        lambda: _first_event(raw_subscribe("CN-JS", certificate_numbers=["x"] * 101)),
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("certificate_numbers",),
    )
    refusal = rpc_refusal(
        lambda: _first_event(raw_subscribe("CN-JS", start_index=2)), Code.OUT_OF_RANGE, "START_BEYOND_LOG"
    )
    assert refusal.metadata["log_size"] == "1"
    rpc_refusal(
        lambda: _first_event(stub.Subscribe(exchange_pb2.SubscribeRequest())),
        Code.UNAUTHENTICATED,
        "MISSING_CREDENTIALS",
    )


def test_caps_and_cancellation_free_resources(gateway_factory, signers, clock, rpc_refusal):
    gw = gateway_factory(feed_limits=FeedLimits(max_subscriptions=3, per_principal=2))
    feed = gw.gateway.feed
    gauge = metrics.SUBSCRIBERS._value  # one process here: the plain registry's gauge
    before = gauge.get()
    with grpc.insecure_channel(gw.address) as ch:
        stub = exchange_pb2_grpc.ExchangeServiceStub(ch)

        def call(principal: str) -> Any:
            request = exchange_pb2.SubscribeRequest()
            md = sign_read(
                signer=signers[principal], principal=principal, method=METHOD, request=request, now=clock.now
            )
            return stub.Subscribe(request, metadata=md)

        open_calls = [call("CN-JS"), call("CN-JS"), call("CN-SH")]
        for c in open_calls:
            assert _first_event(c).HasField("caught_up")
        assert feed.subscriptions == 3 and feed.tailing
        assert gauge.get() == before + 3  # mrx_subscribers counts them
        refusal = rpc_refusal(
            lambda: _first_event(call("CN-ZJ")), Code.RESOURCE_EXHAUSTED, "TOO_MANY_SUBSCRIPTIONS"
        )
        assert refusal.metadata["limit"] == "3"
        open_calls[2].cancel()
        _wait_until(lambda: feed.subscriptions == 2, "a cancelled subscription to be released")
        try:
            _first_event(call("CN-JS"))
            raise AssertionError("a third CN-JS subscription was accepted")
        except grpc.RpcError as err:
            status = rpc_status.from_call(err)
            assert status is not None
            retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
            assert err.code() is Code.RESOURCE_EXHAUSTED and retry
        for c in open_calls[:2]:
            c.cancel()
        _wait_until(lambda: feed.subscriptions == 0, "every subscription to be released")
        _wait_until(lambda: not feed.tailing, "the tailer to stop with the last subscriber")
        assert gauge.get() == before


def test_a_slow_subscriber_is_bounded_and_loses_nothing(gateway_factory, signers, clock, certs_of):
    # Tail reads of up to 16 rows against a queue of 8: a burst always overflows the queue,
    # whatever the client's gRPC buffers absorb, and the subscription must go back to the log.
    limits = FeedLimits(queue_rows=8, page_rows=16, ring_rows=8)
    gw = gateway_factory(feed_limits=limits)
    feed = gw.gateway.feed
    from gateway.client import GatewayClient

    with GatewayClient(gw.address, sender="CN-JS", signer=signers["CN-JS"]) as js:
        js.now = lambda: clock.now  # type: ignore[method-assign]
        js.publish(certs_of("CN-JS", 1)[0])
        stream = js.subscribe()
        assert next(stream).log_index == 0
        _wait_until(lambda: feed.tailing, "the subscriber to go live")
        # The subscriber reads nothing while 300 changes are committed in small batches.
        certs = certs_of("CN-JS", 300, start_serial=100)
        expected = []
        for i in range(0, 300, 20):
            expected += [o.receipt.log_index for o in js.publish_batch(certs[i : i + 20])]
        _wait_until(lambda: feed.overflows > 0, "the slow subscriber to overflow its queue")
        assert feed.max_pending_rows <= limits.queue_rows
        got = [next(stream).log_index for _ in range(300)]
        assert got == expected
        stream.close()
    _wait_until(lambda: feed.subscriptions == 0, "the subscription to be released")


def test_heartbeats_carry_the_resume_position(gateway_factory, signers, clock, certs_of):
    gw = gateway_factory(feed_limits=FeedLimits(heartbeat=0.2))
    with grpc.insecure_channel(gw.address) as ch:
        from gateway.client import GatewayClient

        with GatewayClient(gw.address, sender="CN-JS", signer=signers["CN-JS"]) as js:
            js.now = lambda: clock.now  # type: ignore[method-assign]
            js.publish(certs_of("CN-JS", 1)[0])
        request = exchange_pb2.SubscribeRequest(kinds=["assessor"])
        md = sign_read(
            signer=signers["CN-JS"], principal="CN-JS", method=METHOD, request=request, now=clock.now
        )
        events = iter(exchange_pb2_grpc.ExchangeServiceStub(ch).Subscribe(request, metadata=md))
        first, second = next(events), next(events)
        # Nothing matches, yet the subscriber learns it may resume from index 1.
        assert first.WhichOneof("event") == "caught_up" and first.caught_up.next_index == 1
        assert second.WhichOneof("event") == "heartbeat" and second.heartbeat.next_index == 1


def test_a_key_that_expires_while_the_stream_is_open_ends_it(gateway_factory, signers, clock, rpc_refusal):
    gw = gateway_factory(feed_limits=FeedLimits(heartbeat=0.2, key_check=0.1))
    with grpc.insecure_channel(gw.address) as ch:
        request = exchange_pb2.SubscribeRequest()
        # CN-JS/edge is valid for ten more days of the test clock.
        md = sign_read(
            signer=signers["CN-JS/edge"], principal="CN-JS", method=METHOD, request=request, now=clock.now
        )
        # The deadline only bounds the test: without the check the stream would go on.
        call = exchange_pb2_grpc.ExchangeServiceStub(ch).Subscribe(request, metadata=md, timeout=20)
        events = iter(call)
        assert next(events).WhichOneof("event") == "caught_up"
        assert next(events).WhichOneof("event") == "heartbeat"  # still valid: the stream goes on
        clock.advance(timedelta(days=11))

        def drain() -> None:
            for _ in events:
                pass

        rpc_refusal(drain, grpc.StatusCode.UNAUTHENTICATED, "KEY_EXPIRED")
    _wait_until(lambda: gw.gateway.feed.subscriptions == 0, "the subscription to be released")


def test_stopping_the_gateway_ends_subscriptions_with_unavailable(
    gateway_factory, signers, clock, rpc_refusal
):
    gw = gateway_factory()
    with grpc.insecure_channel(gw.address) as ch:
        request = exchange_pb2.SubscribeRequest()
        md = sign_read(
            signer=signers["CN-JS"], principal="CN-JS", method=METHOD, request=request, now=clock.now
        )
        events = iter(exchange_pb2_grpc.ExchangeServiceStub(ch).Subscribe(request, metadata=md))
        assert next(events).HasField("caught_up")
        gw.stop()
        # The feed ends it (a server stop alone would hold it for the grace period, then cancel).
        refusal = rpc_refusal(lambda: next(events), Code.UNAVAILABLE, "SHUTTING_DOWN")
        assert "resume" in refusal.message
