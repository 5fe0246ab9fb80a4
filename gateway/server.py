"""Builds and runs the gateway server: interceptors, servicers, health, reflection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.audit.checkpoints import Checkpointer
from gateway.crypto.suites import PrivateKey

# Certificates expire on a calendar date in China; "today" is judged there.
from gateway.domain.records import CHINA, DEFAULT_PT_BOUNDARIES, PtBoundaries
from gateway.pb import (
    audit_pb2,
    audit_pb2_grpc,
    exchange_pb2,
    exchange_pb2_grpc,
    recognition_pb2,
    recognition_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from gateway.pipeline import Limits, Pipeline
from gateway.registry.federation import Federation, Role
from gateway.services.audit import AuditServicer
from gateway.services.auth import ReadAuthenticator
from gateway.services.errors import ErrorInterceptor
from gateway.services.exchange import ExchangeServicer
from gateway.services.recognition import RecognitionServicer
from gateway.services.registry import RegistryServicer
from gateway.store.audit_reads import AuditStore
from gateway.store.engine import Engines
from gateway.store.reads import ReadStore
from gateway.store.record_reads import RecordReads
from gateway.store.sequencer import Sequencer

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    exchange_pb2.DESCRIPTOR.services_by_name["ExchangeService"].full_name,
    registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    recognition_pb2.DESCRIPTOR.services_by_name["RecognitionService"].full_name,
)
# Above our own envelope limit so an oversized envelope gets a precise
# INVALID_ARGUMENT from the pipeline instead of gRPC's bare RESOURCE_EXHAUSTED.
MAX_RECEIVE_BYTES = 4 * 1024 * 1024


class ConfigError(RuntimeError):
    """The gateway cannot start with this configuration; the message says why."""


def check_gateway_key(federation: Federation, key: PrivateKey) -> None:
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


@dataclass
class Gateway:
    server: grpc.Server
    port: int
    sequencer: Sequencer
    pipeline: Pipeline
    checkpointer: Checkpointer
    health: health.HealthServicer
    verify_pool: ThreadPoolExecutor
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        """Drain: stop accepting, let in-flight calls finish, commit what is queued."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.sequencer.stop()
        self.checkpointer.stop()
        try:
            self.checkpointer.checkpoint_now()  # a last checkpoint covering everything committed
        except Exception:
            log.exception("final checkpoint failed")
        self.verify_pool.shutdown(wait=False)

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_gateway(
    *,
    federation: Federation,
    engines: Engines,
    gateway_key: PrivateKey,
    address: str = "127.0.0.1:0",
    workers: int = 16,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    limits: Limits | None = None,
    tls: tuple[bytes, bytes] | None = None,
    checkpoint_interval: float = 10.0,
    pt_boundaries: PtBoundaries = DEFAULT_PT_BOUNDARIES,
) -> Gateway:
    """Start serving; ``tls`` is (certificate chain PEM, private key PEM) or None for plaintext."""
    check_gateway_key(federation, gateway_key)
    sequencer = Sequencer(engines, clock=clock)
    sequencer.start()
    pipeline = Pipeline(
        federation=federation,
        sequencer=sequencer,
        gateway_key=gateway_key,
        clock=clock,
        limits=limits,
        pt_boundaries=pt_boundaries,
    )
    verify_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mrx-verify")

    def today() -> date:
        return clock().astimezone(CHINA).date()

    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mrx-rpc"),
        interceptors=[ErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    exchange_pb2_grpc.add_ExchangeServiceServicer_to_server(
        ExchangeServicer(
            pipeline=pipeline,
            store=ReadStore(engines),
            today=today,
            verify_pool=verify_pool,
            records=RecordReads(engines),
        ),
        server,
    )
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(federation), server)
    checkpointer = Checkpointer(
        engines,
        key=gateway_key,
        origin=f"{federation.name}/exchange-log",
        clock=clock,
        interval=checkpoint_interval,
    )
    recognition_pb2_grpc.add_RecognitionServiceServicer_to_server(
        RecognitionServicer(
            federation=federation,
            records=RecordReads(engines),
            auth=ReadAuthenticator(federation, clock=clock),
            gateway_key=gateway_key,
            clock=clock,
            today=today,
        ),
        server,
    )
    audit_pb2_grpc.add_AuditServiceServicer_to_server(
        AuditServicer(
            store=AuditStore(engines), auth=ReadAuthenticator(federation, clock=clock), federation=federation
        ),
        server,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if tls is not None:
        port = server.add_secure_port(address, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        sequencer.stop()
        raise ConfigError(f"cannot listen on {address}")
    server.start()
    checkpointer.start()
    log.info("mrx gateway listening on port %d (%s)", port, engines.dialect)
    return Gateway(
        server=server,
        port=port,
        sequencer=sequencer,
        pipeline=pipeline,
        checkpointer=checkpointer,
        health=health_servicer,
        verify_pool=verify_pool,
    )
