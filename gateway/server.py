"""Builds and runs the gateway server: interceptors, servicers, health, reflection."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import _async as aio_health
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.crypto.suites import PrivateKey

# Certificates expire on a calendar date in China; "today" is judged there.
from gateway.domain.records import CHINA, DEFAULT_PT_BOUNDARIES, PtBoundaries
from gateway.jobs.scheduler import GatewayJobs, JobSettings, JobState, ReconciliationProvider
from gateway.ledger.checkpointer import Checkpointer
from gateway.ledger.feed import ChangeFeed, FeedLimits
from gateway.ledger.front import MAX_BATCH_BYTES, StreamLimits, Submitter
from gateway.ledger.verify import Limits, Verifier
from gateway.ledger.writer import Writer, WriterClient, WriterOptions
from gateway.observability import metrics
from gateway.observability.interceptor import ObservabilityInterceptor
from gateway.pb import (
    audit_pb2,
    audit_pb2_grpc,
    exchange_pb2,
    exchange_pb2_grpc,
    recognition_pb2,
    recognition_pb2_grpc,
    reconcile_pb2,
    reconcile_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from gateway.reconcile.engine import DEFAULT_LEASE, CompleteRuns, Reconciler, RunEnded
from gateway.registry.federation import Federation, Role
from gateway.services.audit import AuditServicer
from gateway.services.auth import ReadAuthenticator, ReadLimits
from gateway.services.bursts import STORE_FAILURES
from gateway.services.errors import ErrorInterceptor
from gateway.services.exchange import ExchangeServicer
from gateway.services.recognition import RecognitionServicer
from gateway.services.reconcile import ReconciliationServicer
from gateway.services.registry import RegistryServicer
from gateway.services.subscribe import Subscriptions
from gateway.store.audit_reads import AuditStore
from gateway.store.checkpoints import CheckpointStore
from gateway.store.engine import Engines
from gateway.store.feed_reads import FeedReads
from gateway.store.reads import ReadStore
from gateway.store.reconcile import ReconcileStore
from gateway.store.record_reads import RecordReads
from gateway.tls.transport import PLAINTEXT_FLAGS, ServerTls, is_loopback

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    exchange_pb2.DESCRIPTOR.services_by_name["ExchangeService"].full_name,
    registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    recognition_pb2.DESCRIPTOR.services_by_name["RecognitionService"].full_name,
    reconcile_pb2.DESCRIPTOR.services_by_name["ReconciliationService"].full_name,
)
# A SubmitBatch of up to 16 MiB of envelopes plus framing. Above the envelope limit, so
# an oversized envelope gets a precise INVALID_ARGUMENT instead of a bare
# RESOURCE_EXHAUSTED.
MAX_RECEIVE_BYTES = MAX_BATCH_BYTES + 64 * 1024


# Health service name of the nightly self-audit: NOT_SERVING while the latest self-audit
# failed. Separate from "" and the RPC services on purpose: a damaged audit log is an alarm
# for people, not a reason for load balancers to stop routing (docs/jobs.md).
AUDIT_HEALTH_SERVICE = "mrx.audit"

# Seconds a gateway whose writer died keeps answering UNAVAILABLE (health NOT_SERVING)
# before it closes its port and exits.
WRITER_DEATH_DRAIN = 2.0


class ConfigError(RuntimeError):
    """The gateway cannot start with this configuration; the message says why."""


# A gateway key this close to its not_after is logged at start (and alerted on through
# mrx_gateway_key_not_after_timestamp_seconds): rotation takes the watchers a few days.
KEY_EXPIRY_WARNING = timedelta(days=30)


def check_gateway_key(federation: Federation, key: PrivateKey, *, now: datetime | None = None) -> None:
    """Refuse to sign with a key the federation does not list as the gateway's, or one not
    valid now: every receipt and checkpoint it made would fail verification."""
    now = now or datetime.now(UTC)
    record = federation.keys.get(key.keyid)
    if record is None:
        raise ConfigError(f"gateway key id {key.keyid!r} is not listed in the federation file")
    owner = federation.participant(record.owner)
    if owner is None or owner.role is not Role.GATEWAY:
        raise ConfigError(f"key {key.keyid} belongs to {record.owner}, not to the gateway principal")
    if record.public_key != key.public_key():
        raise ConfigError(f"the private key does not match the public key registered as {key.keyid}")
    if record.revoked:
        raise ConfigError(f"gateway key {key.keyid} is revoked")
    if now < record.not_before:
        raise ConfigError(
            f"gateway key {key.keyid} is not valid before {record.not_before.isoformat()}; "
            "sign with the current key until then"
        )
    if record.not_after is not None and now >= record.not_after:
        raise ConfigError(
            f"gateway key {key.keyid} expired at {record.not_after.isoformat()}; "
            "rotate to a new gateway key (docs/operations.md, Keys)"
        )
    if record.not_after is not None and record.not_after - now < KEY_EXPIRY_WARNING:
        log.warning(
            "gateway key %s expires at %s (in %d days): rotate it (docs/operations.md, Keys)",
            key.keyid,
            record.not_after.isoformat(),
            (record.not_after - now).days,
        )


@dataclass
class Gateway:
    """A running gateway: an asyncio gRPC server on a loop thread, and its writer."""

    server: grpc.aio.Server
    port: int
    loop: asyncio.AbstractEventLoop
    writer: Writer
    verifier: Verifier
    submitter: Submitter
    checkpointer: Checkpointer
    health: aio_health.HealthServicer
    executor: ThreadPoolExecutor
    _loop_thread: threading.Thread
    # The scheduled jobs (None: this process runs none, e.g. a further front).
    jobs: GatewayJobs | None = None
    # Why the gateway stopped accepting submissions on its own (its writer died), or None.
    failure: str | None = None
    _stopping: bool = False
    _monitor: Any = None
    # The /metrics endpoint, when this process serves one (the first front only).
    metrics_server: metrics.MetricsServer | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock)
    # The Subscribe change feed of this process.
    feed: ChangeFeed | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def writer_client(self) -> WriterClient:
        assert self.writer.client is not None
        return self.writer.client

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def monitor_store(self, store: ReadStore, interval: float) -> None:
        """Health follows the database: NOT_SERVING while it cannot be reached, SERVING again
        by itself when it can (the writer reconnects on its next commit)."""
        serving = True
        # Its own thread, one probe at a time: a probe stuck on an unanswering database
        # must not take the pool that serves reads, nor pile up behind itself.
        prober = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrx-health")
        probe: asyncio.Future[None] | None = None
        try:
            while True:
                await asyncio.sleep(interval)
                if self.failure is not None or self._stopping:
                    return
                if probe is None or probe.done():
                    probe = asyncio.wrap_future(prober.submit(store.ping))
                try:
                    await asyncio.wait_for(asyncio.shield(probe), timeout=5)
                    ok = True
                except Exception as exc:
                    ok = False
                    STORE_FAILURES.note(type(exc).__name__)
                metrics.STORE_UP.set(1 if ok else 0)
                await self._health_changed(ok, serving)
                serving = ok
        finally:
            prober.shutdown(wait=False)

    async def _health_changed(self, ok: bool, serving: bool) -> None:
        if ok == serving:
            return
        if ok:
            STORE_FAILURES.recovered()
            log.warning("the database is reachable again: SERVING")
        else:
            log.error("the database cannot be reached: health is NOT_SERVING until it can")
        await self._set_health(ok)

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    def set_serving(self, serving: bool) -> None:
        self._call(self._set_health(serving), timeout=5)

    @property
    def stopping(self) -> bool:
        return self._stopping or self._stopped.is_set()

    def front_died(self, why: str) -> None:
        """Another front process of this gateway died: stop, and say why."""
        self._fail(why)

    def writer_died(self, why: str) -> None:
        """The writer is gone: stop accepting, say why, and (by default) stop serving."""
        self._fail(f"the gateway's writer stopped: {why}")

    def _fail(self, failure: str) -> None:
        if self._stopped.is_set() or self.failure is not None:
            return
        self.failure = failure
        metrics.WRITER_UP.set(0)
        log.error(
            "%s; health is NOT_SERVING and the gateway stops (its supervisor should restart it)", self.failure
        )
        try:
            self.set_serving(False)
        except Exception:
            log.warning("could not update the health service", exc_info=True)

        def drain_then_stop() -> None:
            # Answer UNAVAILABLE for a moment before closing the port: calls racing the
            # close would otherwise see CANCELLED, which clients do not read as "retry".
            time.sleep(WRITER_DEATH_DRAIN)
            self.stop(grace=5.0)

        threading.Thread(target=drain_then_stop, name="mrx-stop", daemon=True).start()

    def stop(self, grace: float = 5.0) -> None:
        """Drain: stop accepting, let in-flight calls finish, commit what is queued."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopping = True
            if self._monitor is not None:
                self._monitor.cancel()
            try:
                self._call(self.health.enter_graceful_shutdown(), timeout=5)
                if self.feed is not None:  # subscriptions never end by themselves
                    self._call(self.feed.shutdown(), timeout=5)
                self._call(self.server.stop(grace), timeout=grace + 10)
            except Exception:
                log.warning("server stop did not complete cleanly", exc_info=True)
            if self.jobs is not None:
                self.jobs.stop()
            self.writer.stop()
            self.checkpointer.stop()
            try:
                self.checkpointer.checkpoint_now()  # a last checkpoint covering everything committed
            except Exception:
                log.warning("final checkpoint failed", exc_info=True)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join(10)
            self.executor.shutdown(wait=False)
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self._stopped.set()

    def wait(self) -> None:
        # In slices: a signal (SIGTERM) is handled between them whatever thread it hit.
        while not self._stopped.wait(0.5):
            pass


# A server certificate closer than this to its end is reported at start.
CERT_RENEWAL_WARNING = timedelta(days=30)


def _server_tls(address: str, tls: ServerTls | tuple[bytes, bytes] | None) -> ServerTls | None:
    """The port's TLS; plaintext only on loopback (a signed envelope is not a secret one)."""
    if isinstance(tls, tuple):
        tls = ServerTls(cert_chain=tls[0], key=tls[1])
    if tls is None:
        if not is_loopback(address):
            raise ConfigError(
                f"refusing to serve plaintext on {address}: without TLS the gateway listens only on "
                f"loopback (127.0.0.0/8, ::1, localhost); {PLAINTEXT_FLAGS}, or listen on 127.0.0.1"
            )
        log.warning(
            "serving PLAINTEXT on %s: no TLS, only this machine can connect; to serve a network, %s",
            address,
            PLAINTEXT_FLAGS,
        )
        return None
    left = tls.leaf.not_valid_after_utc - datetime.now(UTC)
    if left < CERT_RENEWAL_WARNING:
        log.warning(
            "the server certificate expires on %s (in %d days): issue a new one "
            "(docs/operations.md, 'Mutual TLS', Rotating)",
            f"{tls.leaf.not_valid_after_utc:%Y-%m-%d}",
            left.days,
        )
    if not tls.mutual:
        log.warning(
            "serving TLS on %s without a client CA: callers present no certificate and are known by "
            "their signatures alone (add --tls-client-ca for mutual TLS)",
            address,
        )
    return tls


def start_gateway(
    *,
    federation: Federation,
    engines: Engines,
    gateway_key: PrivateKey,
    address: str = "127.0.0.1:0",
    workers: int = 8,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    limits: Limits | None = None,
    tls: ServerTls | tuple[bytes, bytes] | None = None,
    checkpoint_interval: float = 10.0,
    pt_boundaries: PtBoundaries = DEFAULT_PT_BOUNDARIES,
    writer_mode: str = "process",
    writer_options: WriterOptions | None = None,
    read_limits: ReadLimits | None = None,
    health_interval: float = 1.0,
    stream_limits: StreamLimits | None = None,
    extra_fronts: int = 0,
    writer_conn: Connection | None = None,
    metrics_address: tuple[str, int] | None = None,
    feed_limits: FeedLimits | None = None,
    jobs: JobSettings | None = None,
    reconciliation: ReconciliationProvider | None = None,
    reconcile_lease: timedelta = DEFAULT_LEASE,
) -> Gateway:
    """Start serving; ``tls`` is a ``ServerTls`` (with ``client_ca``: mutual TLS), or the
    older (certificate chain PEM, private key PEM) pair for server-only TLS, or None for
    plaintext, which only a loopback ``address`` may use (ConfigError otherwise).

    ``workers`` threads run the reads and verify batches and streams; submissions are
    served on the asyncio loop. ``writer_mode`` "process" (the default and production
    setting) runs the writer in its own process; "thread" runs the same loop in a thread.
    ``extra_fronts``: pipes for that many more front processes (``run_front``), which
    share the port (SO_REUSEPORT) and this writer; ``writer_conn``: serve as such a front,
    attached to another process's writer (no checkpoint job of its own).
    ``metrics_address``: (host, port) to serve Prometheus /metrics on (port 0: any free
    port, see ``Gateway.metrics_server.port``); None serves none. ``jobs``: run the
    scheduled jobs with these settings (gateway/jobs/scheduler.py; not in further fronts);
    ``reconciliation``: where the reconciliation runs are, for the reconciliation check.
    """
    check_gateway_key(federation, gateway_key, now=clock())
    not_after = federation.keys[gateway_key.keyid].not_after
    if not_after is not None:
        metrics.GATEWAY_KEY_NOT_AFTER.set(not_after.timestamp())
    server_tls = _server_tls(address, tls)
    holder: list[Gateway] = []

    def on_death(why: str) -> None:
        if holder:
            holder[0].writer_died(why)

    writer = Writer(
        engines.url,
        options=writer_options,
        mode="attached" if writer_conn is not None else writer_mode,
        on_death=on_death,
        extra_pipes=extra_fronts,
        conn=writer_conn,
        on_commit=metrics.GROUP_COMMIT_RECORDS.observe,
    )
    client = writer.start()
    verifier = Verifier(federation=federation, clock=clock, limits=limits, pt_boundaries=pt_boundaries)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mrx-rpc")
    submitter = Submitter(
        verifier=verifier,
        writer=lambda: client,
        gateway_key=gateway_key,
        executor=executor,
        stream_limits=stream_limits,
    )
    checkpointer = Checkpointer(
        CheckpointStore(engines),
        key=gateway_key,
        origin=f"{federation.name}/exchange-log",
        clock=clock,
        interval=checkpoint_interval,
    )

    def today() -> date:
        return clock().astimezone(CHINA).date()

    # One authenticator for every read: one nonce cache and one rate limit per principal.
    auth = ReadAuthenticator(federation, clock=clock, limits=read_limits)
    feed = ChangeFeed(FeedReads(engines), limits=feed_limits)
    client.add_commit_listener(feed.committed)

    reconciler = Reconciler(
        ReconcileStore(engines),
        gateway_key=gateway_key,
        clock=clock,
        lease=reconcile_lease,
        observer=_count_reconciliation,
    )
    if reconciliation is None:
        # The nightly check reads the same runs table the servicer writes (docs/jobs.md).
        reconciliation = CompleteRuns(ReconcileStore(engines), _members(federation))
    # Runs left "running" by a gateway that died are abandoned once their lease lapses
    # (again at each participant's next start and at each listing, so a failure here
    # only delays it).
    try:
        reconciler.abandon_stale()
    except Exception as exc:  # the schema check is the store's job; serving must not wait on this
        log.warning("could not mark stale reconciliation runs abandoned at start: %s", type(exc).__name__)

    async def build() -> tuple[grpc.aio.Server, int, aio_health.HealthServicer]:
        server = grpc.aio.server(
            # Outermost first: it counts and ids the status ErrorInterceptor settles on.
            interceptors=[ObservabilityInterceptor(), ErrorInterceptor(executor)],
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.so_reuseport", 1 if extra_fronts or writer_conn is not None else 0),
            ],
        )
        exchange_pb2_grpc.add_ExchangeServiceServicer_to_server(
            ExchangeServicer(
                submitter=submitter,
                store=ReadStore(engines),
                today=today,
                records=RecordReads(engines),
                auth=auth,
                subscriptions=Subscriptions(feed=feed, auth=auth, federation=federation, today=today),
            ),
            server,
        )
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(federation), server)
        recognition_pb2_grpc.add_RecognitionServiceServicer_to_server(
            RecognitionServicer(
                federation=federation,
                records=RecordReads(engines),
                auth=auth,
                gateway_key=gateway_key,
                clock=clock,
                today=today,
            ),
            server,
        )
        audit_pb2_grpc.add_AuditServiceServicer_to_server(
            AuditServicer(
                store=AuditStore(engines),
                auth=auth,
                federation=federation,
            ),
            server,
        )
        reconcile_pb2_grpc.add_ReconciliationServiceServicer_to_server(
            ReconciliationServicer(federation=federation, auth=auth, reconciler=reconciler), server
        )
        health_servicer = aio_health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in ("", *SERVICE_NAMES, AUDIT_HEALTH_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if server_tls is not None:
            port = server.add_secure_port(address, server_tls.credentials())
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise ConfigError(f"cannot listen on {address}")
        await server.start()
        return server, port, health_servicer

    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="mrx-loop", daemon=True)
    loop_thread.start()
    try:
        server, port, health_servicer = asyncio.run_coroutine_threadsafe(build(), loop).result(30)
    except BaseException:
        writer.stop()
        loop.call_soon_threadsafe(loop.stop)
        executor.shutdown(wait=False)
        raise
    if writer_conn is None:  # one checkpoint job per gateway, in its first front
        checkpointer.start()
    metrics.STORE_UP.set(1)
    metrics.WRITER_UP.set(1)
    metrics_server = None
    if metrics_address is not None:
        try:
            metrics_server = metrics.MetricsServer(*metrics_address)
        except OSError as exc:
            writer.stop()
            checkpointer.stop()
            asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            executor.shutdown(wait=False)
            raise ConfigError(
                f"cannot serve metrics on {metrics_address[0]}:{metrics_address[1]}: {exc.strerror}"
            ) from None
    log.info(
        "mrx gateway listening on port %d (%s, writer %s, %s)",
        port,
        engines.dialect,
        writer.mode,
        server_tls.describe() if server_tls is not None else "plaintext",
    )
    gateway = Gateway(
        server=server,
        port=port,
        loop=loop,
        writer=writer,
        verifier=verifier,
        submitter=submitter,
        checkpointer=checkpointer,
        health=health_servicer,
        executor=executor,
        _loop_thread=loop_thread,
        metrics_server=metrics_server,
        feed=feed,
    )
    holder.append(gateway)
    if jobs is not None and writer_conn is None:  # one scheduler per gateway process group
        gateway.jobs = _start_jobs(gateway, engines, federation, jobs, reconciliation, clock)
    gateway._monitor = asyncio.run_coroutine_threadsafe(
        gateway.monitor_store(ReadStore(engines), health_interval), loop
    )
    if writer.client is not None and writer.client.closed_reason is not None:
        gateway.writer_died(writer.client.closed_reason)
    return gateway


def _members(federation: Federation) -> list[str]:
    return [p.code for p in federation.participants.values() if p.role is Role.MEMBER]


def _count_reconciliation(ended: RunEnded) -> None:
    metrics.RECONCILIATION_RUNS.labels(ended.participant, ended.status).inc()
    for name, n in ended.summary.items():
        if n:
            metrics.RECONCILIATION_DISCREPANCIES.labels(ended.participant, name).inc(n)
    if ended.status == "complete":
        metrics.PARTICIPANT_LAST_RECONCILED.labels(ended.participant).set(ended.at.timestamp())


def _start_jobs(
    gateway: Gateway,
    engines: Engines,
    federation: Federation,
    settings: JobSettings,
    reconciliation: ReconciliationProvider | None,
    clock: Callable[[], datetime],
) -> GatewayJobs:
    state = JobState()

    def follow(state: JobState) -> None:
        # Unknown (no self-audit yet) counts as SERVING: the alarm for "it did not run" is
        # the age of the last run (mrx_self_audit_last_run_timestamp_seconds).
        serving = state.self_audit_ok is not False
        if state.self_audit_ok is not None:
            metrics.SELF_AUDIT_OK.set(1 if state.self_audit_ok else 0)
        if state.self_audit_finished_at is not None:
            metrics.SELF_AUDIT_LAST_RUN.set(state.self_audit_finished_at.timestamp())
        if state.unreconciled is not None:
            metrics.PARTICIPANTS_UNRECONCILED.set(len(state.unreconciled))
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if not gateway.stopping:
            gateway._call(gateway.health.set(AUDIT_HEALTH_SERVICE, status), timeout=5)

    state.subscribe(follow)
    jobs = GatewayJobs(
        engines,
        settings=settings,
        gateway_keys={k.keyid: k.public_key for k in federation.keys_of(federation.gateway_code)},
        origin=f"{federation.name}/exchange-log",
        participants=_members(federation),
        reconciliation=reconciliation,
        clock=clock,
        state=state,
    )
    jobs.start()
    return jobs


@dataclass(frozen=True)
class FrontSpec:
    """What a further front process needs to serve (``mrx serve --fronts N``): paths and
    plain values only, so it crosses the process boundary."""

    federation_dir: Path
    gateway_key: Path
    gateway_keyid: str
    database_url: str
    address: str  # host:port already bound by the first front (SO_REUSEPORT)
    workers: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    log_level: int = logging.INFO
    log_format: str = "text"


def run_front(conn: Connection, spec: FrontSpec) -> None:
    """Entry point of a further front process: the same server, attached to the writer of
    the first front's process through ``conn``; stops on SIGTERM or when the writer goes."""
    from gateway.observability.logs import configure
    from gateway.registry.federation import load_federation
    from gateway.store.engine import open_engines

    configure(spec.log_level, spec.log_format, process_name="mrx-front")
    tls = (
        ServerTls(cert_chain=spec.tls_cert, key=spec.tls_key, client_ca=spec.tls_client_ca)
        if spec.tls_cert is not None and spec.tls_key is not None
        else None
    )
    engines = open_engines(spec.database_url)
    gateway = start_gateway(
        federation=load_federation(spec.federation_dir),
        engines=engines,
        gateway_key=PrivateKey.load(spec.gateway_key, keyid=spec.gateway_keyid),
        address=spec.address,
        workers=spec.workers,
        tls=tls,
        writer_conn=conn,
    )
    stopping = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        if not stopping.is_set():  # once, and off the handler (see mrx serve)
            stopping.set()
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            threading.Thread(target=gateway.stop, kwargs={"grace": 10.0}, name="mrx-stop").start()

    signal.signal(signal.SIGTERM, _stop)
    gateway.wait()
    engines.dispose()
