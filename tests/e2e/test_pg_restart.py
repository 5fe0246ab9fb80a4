"""PostgreSQL restarted under load, under a real `mrx serve` process.

The database is a throw-away PostgreSQL the test starts itself (never the machine's own
service), stopped with `pg_ctl -m immediate` (a crash) while unary calls and streams are
submitting pre-signed envelopes. Clients retry an envelope after UNAVAILABLE, with the
same bytes. While the database is down every submission is answered UNAVAILABLE (never
INTERNAL or UNKNOWN) and health is NOT_SERVING; `mrx serve` keeps running, and serves
again by itself within seconds of the database coming back. In the end every envelope is
in the log exactly once and every receipt any client was given is in the log under its
index.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from gateway.client import make_submission
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates
from gateway.pb import envelope_pb2, exchange_pb2, exchange_pb2_grpc
from gateway.store.engine import open_engines
from gateway.store.schema import exchanges

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

Code = grpc.StatusCode
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ACCEPTED = envelope_pb2.OUTCOME_ACCEPTED
RETRY_AFTER = 0.2  # seconds a client waits before sending the same bytes again
RECOVERY = 10.0  # service must resume within this of the database coming back


@pytest.fixture
def pg_url(throwaway_postgres) -> str:
    """A schema of this test's own on the throw-away server (other tests use its public schema)."""
    schema = f"mrx_r_{uuid.uuid4().hex[:12]}"
    admin = create_engine(throwaway_postgres.url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return (
        make_url(throwaway_postgres.url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


def _digest(env: envelope_pb2.Envelope) -> bytes:
    return hashlib.sha256(env.SerializeToString(deterministic=True)).digest()


def _health(stub) -> int | None:
    try:
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError:
        return None


def _wait_for(predicate, seconds: float) -> float | None:
    """Seconds until ``predicate()`` held, or None if it never did within ``seconds``."""
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if predicate():
            return time.monotonic() - began
        time.sleep(0.05)
    return None


class Load:
    """Client threads that retry every envelope until it has a receipt; every answer noted."""

    def __init__(self, stub, stop: threading.Event):
        self.stub = stub
        self.lock = threading.Lock()
        # (start, end, envelope digest, code name or "OK", signed receipt or None, "unary" | "stream")
        self.answers: list[tuple[float, float, bytes, str, envelope_pb2.Envelope | None, str]] = []
        self.stop = stop

    def note(self, began: float, digest: bytes, code: str, receipt=None, how: str = "unary") -> None:
        with self.lock:
            self.answers.append((began, time.monotonic(), digest, code, receipt, how))

    def receipts(self) -> int:
        with self.lock:
            return sum(1 for a in self.answers if a[3] == "OK")

    def unary(self, part: list[envelope_pb2.Envelope]) -> None:
        for env in part:
            while not self.stop.is_set():
                began = time.monotonic()
                try:
                    receipt = self.stub.Submit(exchange_pb2.SubmitRequest(envelope=env), timeout=15).receipt
                except grpc.RpcError as err:
                    self.note(began, _digest(env), err.code().name)
                    time.sleep(RETRY_AFTER)
                    continue
                self.note(began, _digest(env), "OK", receipt)
                time.sleep(0.01)
                break

    def stream(self, part: list[envelope_pb2.Envelope]) -> None:
        """Streams of up to 10 envelopes; what came back UNAVAILABLE goes again in the next."""
        pending = list(part)
        while pending and not self.stop.is_set():
            batch, pending = pending[:10], pending[10:]

            def requests(batch=batch):
                for env in batch:
                    yield exchange_pb2.SubmitRequest(envelope=env)
                    time.sleep(0.01)

            began = time.monotonic()
            done: set[int] = set()
            try:
                for response in self.stub.SubmitStream(requests(), timeout=15):
                    env = batch[response.sequence]
                    if response.HasField("receipt"):
                        done.add(response.sequence)
                        self.note(began, _digest(env), "OK", response.receipt, "stream")
                    else:
                        self.note(began, _digest(env), _code_name(response.error.code), how="stream")
            except grpc.RpcError as err:
                self.note(began, b"", err.code().name, how="stream")
            retry = [env for i, env in enumerate(batch) if i not in done]
            if retry:
                time.sleep(RETRY_AFTER)
            pending = retry + pending


def _code_name(number: int) -> str:
    return next(c.name for c in Code if c.value[0] == number)


def test_postgresql_restart_under_load_is_unavailable_then_recovers_losing_nothing(
    throwaway_postgres, pg_url, federation_dir, federation_paths, tmp_path
):
    js = PrivateKey.load(federation_paths["CN-JS"], "CN-JS/demo")
    certs = demo_certificates("CN-JS", count=360, today=datetime.now(UTC).date())
    envelopes = [make_submission(c, sender="CN-JS", signer=js) for c in certs]
    probes = iter(envelopes[300:])  # fresh envelopes sent while the database is down
    unary_parts = [envelopes[0:300:3][:80], envelopes[1:300:3][:80]]
    stream_part = envelopes[2:300:3][:80]
    loaded = unary_parts[0] + unary_parts[1] + stream_part

    out = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--address", "127.0.0.1:0",
         "--federation", str(federation_dir), "--database", pg_url,
         "--gateway-key", str(federation_paths["MRX-GW"]), "--gateway-keyid", "MRX-GW/demo",
         "--checkpoint-interval", "1"],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    pg_running = True
    stop_load = threading.Event()  # set if the test fails midway: the clients stop retrying
    try:
        line = ""
        deadline = time.monotonic() + 30
        while "serving on" not in line and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            out.seek(0)
            line = out.readline()
        match = re.search(r"serving on (\S+:\d+)", line)
        assert match, f"mrx serve did not start: {line}"
        channel = grpc.insecure_channel(match.group(1))
        stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        assert _wait_for(lambda: _health(health) == SERVING, 10) is not None

        load = Load(stub, stop_load)
        threads = [threading.Thread(target=load.unary, args=(p,), daemon=True) for p in unary_parts]
        threads.append(threading.Thread(target=load.stream, args=(stream_part,), daemon=True))
        for t in threads:
            t.start()
        assert _wait_for(lambda: load.receipts() >= 40, 30) is not None

        throwaway_postgres.stop()  # pg_ctl -m immediate -w: the server is gone when this returns
        pg_running = False
        down_at = time.monotonic()
        to_not_serving = _wait_for(lambda: _health(health) == NOT_SERVING, 5)
        assert to_not_serving is not None, "health must turn NOT_SERVING while the database is down"
        # Fresh submissions while it is down: UNAVAILABLE, every one.
        probe_codes = []
        while time.monotonic() - down_at < 3:
            try:
                stub.Submit(exchange_pb2.SubmitRequest(envelope=next(probes)), timeout=10)
                probe_codes.append("OK")
            except grpc.RpcError as err:
                probe_codes.append(err.code().name)
            time.sleep(0.1)
        assert _health(health) == NOT_SERVING
        assert proc.poll() is None, "mrx serve must ride out a database outage, not exit"
        up_from = time.monotonic()
        throwaway_postgres.start()
        pg_running = True
        up_at = time.monotonic()

        to_serving = _wait_for(lambda: _health(health) == SERVING, RECOVERY)
        assert to_serving is not None, f"health not SERVING {RECOVERY} s after the database came back"
        assert _wait_for(lambda: any(a[3] == "OK" and a[0] > up_at for a in load.answers), RECOVERY), (
            f"no submission accepted {RECOVERY} s after the database came back"
        )
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "the load did not finish after the database came back"
        channel.close()
    finally:
        stop_load.set()
        if not pg_running:
            with contextlib.suppress(subprocess.CalledProcessError):
                throwaway_postgres.start()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        out.seek(0)
        output = out.read()
        out.close()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output

    # While the database was down: only UNAVAILABLE.
    assert probe_codes and set(probe_codes) == {"UNAVAILABLE"}, probe_codes
    during = [a for a in load.answers if a[0] >= down_at and a[1] <= up_from]
    assert {a[3] for a in during} <= {"UNAVAILABLE"}, sorted({a[3] for a in during})
    for how in ("unary", "stream"):
        assert any(a[3] == "UNAVAILABLE" and a[5] == how for a in during), f"no {how} call saw the outage"
    # Anything but a receipt or UNAVAILABLE, at any time, is a bug.
    assert {a[3] for a in load.answers} <= {"OK", "UNAVAILABLE"}, sorted({a[3] for a in load.answers})

    # Every envelope in the log exactly once; every receipt given is there under its index.
    e = exchanges.c
    engines = open_engines(pg_url)
    try:
        with engines.reader.connect() as conn:
            rows = conn.execute(select(e.log_index, e.envelope_sha256, e.outcome, e.receipt)).all()
    finally:
        engines.dispose()
    assert sorted(r.log_index for r in rows) == list(range(len(rows)))
    assert all(r.outcome == ACCEPTED for r in rows)
    assert len(rows) == len(loaded), "only the loaded envelopes (the probes sent while down are not)"
    logged = [r.envelope_sha256 for r in rows]
    assert len(set(logged)) == len(logged), "an envelope is in the log twice"
    assert {_digest(env) for env in loaded} <= set(logged)
    by_index = {r.log_index: r for r in rows}
    given = [a for a in load.answers if a[3] == "OK"]
    assert {a[2] for a in given} == {_digest(env) for env in loaded}
    for _, _, digest, _, receipt_env, _ in given:
        receipt = envelope_pb2.Receipt.FromString(receipt_env.payload)
        row = by_index[receipt.log_index]
        assert (row.envelope_sha256, row.receipt) == (digest, receipt_env.payload)
    to_receipt = min(a[1] for a in given if a[0] > up_at) - up_at
    print(  # durations for the report, shown with -s
        f"NOT_SERVING after {to_not_serving:.2f} s; SERVING {to_serving:.2f} s and first receipt "
        f"{to_receipt:.2f} s after the database came back; {len(rows)} entries, "
        f"{sum(1 for a in load.answers if a[3] == 'UNAVAILABLE')} UNAVAILABLE answers"
    )
