"""Shared fixtures: demo federation and keys, a controllable clock, databases, real gateways.

Test modules are imported with --import-mode=importlib and cannot import each other or
this file, so every shared helper is a fixture here.

Databases: ``database_url`` runs a test once on SQLite (a file in tmp_path) and once on
PostgreSQL (``MRX_TEST_POSTGRES_URL``, each test in its own schema reached through the
libpq ``options=-csearch_path=...`` parameter, dropped afterwards). Without the variable
the PostgreSQL runs are skipped, except under CI=true, where they must run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from gateway.client import GatewayClient, Refusal
from gateway.convert import certificate_to_proto
from gateway.crypto.dsse import SUBMISSION_PAYLOAD_TYPE, sign_envelope
from gateway.crypto.suites import PrivateKey, Suite, pae
from gateway.demo_fixtures import demo_certificates
from gateway.domain.certificates import Certificate
from gateway.pb import envelope_pb2, exchange_pb2, records_pb2
from gateway.registry.federation import Federation, KeyRecord, load_federation
from gateway.registry.keygen import load_demo_signers, write_demo_federation
from gateway.server import CHINA, Gateway, start_gateway
from gateway.store.engine import Engines, open_engines
from gateway.store.reads import ReadStore

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ENV = "MRX_TEST_POSTGRES_URL"
POSTGRES_SKIP_REASON = f"{POSTGRES_ENV} not set: PostgreSQL tests skipped (CI sets it)"
ERROR_DOMAIN = "mrx.gateway"
# The writer runs in its own process, as in production; MRX_TEST_WRITER=thread runs the
# same loop in a thread of the test process (quicker to start, easier to debug).
WRITER_MODE = os.environ.get("MRX_TEST_WRITER", "process")

# Keys added to the demo federation for key-validity tests, relative to the session start:
# (keyid, owner, not_before offset, not_after offset or None, revoked).
EXTRA_KEYS: tuple[tuple[str, str, timedelta, timedelta | None, bool], ...] = (
    ("CN-JS/revoked", "CN-JS", timedelta(days=-30), None, True),
    ("CN-JS/future", "CN-JS", timedelta(days=1), timedelta(days=400), False),
    ("CN-JS/expired", "CN-JS", timedelta(days=-400), timedelta(days=-1), False),
    # Expires ten days into the session; used to probe the edge of a key's validity.
    ("CN-JS/edge", "CN-JS", timedelta(days=-1), timedelta(days=10), False),
)


class Clock:
    """An injectable clock: the gateway reads ``now``; tests move it, nobody sleeps."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def today(self) -> date:
        """The gateway's "today": the calendar date in China."""
        return self.now.astimezone(CHINA).date()


# --- federation and keys ----------------------------------------------------------------


@pytest.fixture(scope="session")
def session_start() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="session")
def federation_paths(tmp_path_factory: pytest.TempPathFactory, session_start: datetime) -> dict[str, Path]:
    dest = tmp_path_factory.mktemp("federation")
    return write_demo_federation(template_dir=ROOT / "keys", dest=dest, now=session_start)


@pytest.fixture(scope="session")
def federation_dir(federation_paths: dict[str, Path]) -> Path:
    return next(iter(federation_paths.values())).parent.parent


@pytest.fixture(scope="session")
def base_federation(federation_dir: Path) -> Federation:
    """The demo federation exactly as written: one Ed25519 key per participant (+ CN-GD P-256)."""
    return load_federation(federation_dir)


@pytest.fixture(scope="session")
def signers(federation_paths: dict[str, Path]) -> dict[str, PrivateKey]:
    """Private keys by participant code (and "CN-GD#ecdsa"), plus the EXTRA_KEYS by key id."""
    keys = load_demo_signers(federation_paths)
    for keyid, *_ in EXTRA_KEYS:
        keys[keyid] = PrivateKey.generate(Suite.ED25519, keyid)
    return keys


@pytest.fixture(scope="session")
def federation(
    base_federation: Federation, signers: dict[str, PrivateKey], session_start: datetime
) -> Federation:
    """The demo federation plus CN-JS keys that are revoked, not yet valid, expired, expiring."""
    keys = dict(base_federation.keys)
    for keyid, owner, before, after, revoked in EXTRA_KEYS:
        keys[keyid] = KeyRecord(
            keyid=keyid,
            owner=owner,
            suite=Suite.ED25519,
            public_key=signers[keyid].public_key(),
            not_before=session_start + before,
            not_after=session_start + after if after is not None else None,
            revoked=revoked,
            revoked_at=session_start - timedelta(days=2) if revoked else None,
        )
    return Federation(
        name=base_federation.name,
        freshness_window=base_federation.freshness_window,
        gateway_code=base_federation.gateway_code,
        participants=base_federation.participants,
        alliances=base_federation.alliances,
        keys=keys,
        agreements=base_federation.agreements,
        source=base_federation.source,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


# --- databases --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine | None]:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        yield None
        return
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _schema_url(base: str, schema: str, *extra_options: str) -> str:
    url = make_url(base)
    options = " ".join(
        o for o in (url.query.get("options", ""), f"-csearch_path={schema}", *extra_options) if o
    )
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mrx.db'}"
        return
    if not os.environ.get(POSTGRES_ENV):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{POSTGRES_ENV} must be set when CI=true: the PostgreSQL tests may not be skipped")
        pytest.skip(POSTGRES_SKIP_REASON)
    admin = request.getfixturevalue("postgres_admin")
    schema = f"mrx_t_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _schema_url(os.environ[POSTGRES_ENV], schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def backend(database_url: str) -> str:
    return make_url(database_url).get_backend_name()


@pytest.fixture
def open_store() -> Iterator[Callable[[str], Engines]]:
    """open_engines, disposed at teardown."""
    opened: list[Engines] = []

    def _open(url: str) -> Engines:
        engines = open_engines(url)
        opened.append(engines)
        return engines

    yield _open
    for engines in opened:
        engines.dispose()


@pytest.fixture
def first_release_database() -> Callable[[str], None]:
    """``first_release_database(url)``: make ``url`` a database as the first release
    (757f7fd, before migrations) created it: its frozen tables (tests/fixtures), created
    and stamped in mrx_schema exactly as its ensure_schema did, and no alembic_version."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("schema_757f7fd", ROOT / "tests/fixtures/schema_757f7fd.py")
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)

    def _create(url: str) -> None:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                old.metadata.create_all(conn)
                conn.execute(
                    old.schema_info.insert().values(id=1, version=old.SCHEMA_VERSION, note="created by mrx")
                )
        finally:
            engine.dispose()

    return _create


# --- gateways and clients ---------------------------------------------------------------


@dataclasses.dataclass
class RunningGateway:
    """A started gateway with the engines it writes to."""

    gateway: Gateway
    engines: Engines
    store: ReadStore

    @property
    def address(self) -> str:
        return self.gateway.address

    @property
    def writer(self) -> Any:
        """The front end's side of the writer (commits, committed, submit)."""
        return self.gateway.writer_client

    @property
    def verifier(self) -> Any:
        return self.gateway.verifier

    def stop(self) -> None:
        self.gateway.stop()


@pytest.fixture
def gateway_factory(
    database_url: str,
    federation: Federation,
    signers: dict[str, PrivateKey],
    clock: Clock,
    open_store: Callable[[str], Engines],
) -> Iterator[Callable[..., RunningGateway]]:
    """Start a gateway on port 0 (on ``database_url`` unless another is given)."""
    started: list[RunningGateway] = []

    def _start(url: str | None = None, **kwargs: Any) -> RunningGateway:
        engines = open_store(url or database_url)
        gw = start_gateway(
            federation=federation,
            engines=engines,
            gateway_key=signers[federation.gateway_code],
            address="127.0.0.1:0",
            clock=clock,
            **{"writer_mode": WRITER_MODE, **kwargs},
        )
        running = RunningGateway(gateway=gw, engines=engines, store=ReadStore(engines))
        started.append(running)
        return running

    yield _start
    for running in started:
        running.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory()


@pytest.fixture
def store(gateway: RunningGateway) -> ReadStore:
    return gateway.store


class ClockedClient(GatewayClient):
    """The SDK client, signing with created_at taken from the test clock."""

    def __init__(self, target: str, *, clock: Clock, **kwargs: Any):
        super().__init__(target, **kwargs)
        self._clock = clock

    def sign(self, certificate: Certificate, **kwargs: Any) -> envelope_pb2.Envelope:
        kwargs.setdefault("created_at", self._clock.now)
        return super().sign(certificate, **kwargs)

    def now(self) -> datetime:
        return self._clock.now


@pytest.fixture
def client_for(
    gateway: RunningGateway, signers: dict[str, PrivateKey], clock: Clock
) -> Iterator[Callable[..., ClockedClient]]:
    """``client_for(code)``: a client of the gateway signing as ``code`` (closed at teardown).

    ``signer`` overrides the key (e.g. ``signers["CN-GD#ecdsa"]``); ``target`` another gateway.
    """
    clients: list[ClockedClient] = []

    def _client(code: str, *, signer: PrivateKey | None = None, target: str | None = None) -> ClockedClient:
        client = ClockedClient(
            target or gateway.address,
            clock=clock,
            sender=code,
            signer=signer or signers.get(code),
        )
        clients.append(client)
        return client

    yield _client
    for client in clients:
        client.close()


@pytest.fixture
def certs_of(clock: Clock) -> Callable[..., list[Certificate]]:
    """``certs_of(code, count, start_serial=1)``: demo VALID v1 certificates unexpired today."""

    def _certs(code: str, count: int = 1, start_serial: int = 1) -> list[Certificate]:
        return demo_certificates(code, count=count, start_serial=start_serial, today=clock.today())

    return _certs


def _submission(
    cert: Certificate,
    *,
    sender: str,
    message_id: str | None,
    created_at: datetime,
    nonce: bytes | None,
) -> records_pb2.Submission:
    submission = records_pb2.Submission(
        header=records_pb2.SubmissionHeader(
            message_id=message_id or str(uuid.uuid4()),
            sender=sender,
            nonce=nonce if nonce is not None else os.urandom(16),
            kind=records_pb2.RECORD_KIND_CERTIFICATE_STATUS,
        ),
        certificate_status=certificate_to_proto(cert),
    )
    submission.header.created_at.FromDatetime(created_at)
    return submission


@pytest.fixture
def make_env(signers: dict[str, PrivateKey], clock: Clock) -> Callable[..., envelope_pb2.Envelope]:
    """Sign ``cert`` as a submission envelope, optionally mutating the Submission first.

    ``make_env(cert, sender=..., signer=..., message_id=..., created_at=..., nonce=...,
    mutate=lambda submission: ...)``; sender defaults to the issuer, signer to the
    sender's demo key, created_at to the test clock.
    """

    def _make(
        cert: Certificate,
        *,
        sender: str | None = None,
        signer: PrivateKey | None = None,
        message_id: str | None = None,
        created_at: datetime | None = None,
        nonce: bytes | None = None,
        mutate: Callable[[records_pb2.Submission], None] | None = None,
    ) -> envelope_pb2.Envelope:
        sender = sender or cert.issuer
        submission = _submission(
            cert,
            sender=sender,
            message_id=message_id,
            created_at=created_at or clock.now,
            nonce=nonce,
        )
        if mutate is not None:
            mutate(submission)
        return sign_envelope(
            payload_type=SUBMISSION_PAYLOAD_TYPE,
            payload=submission.SerializeToString(),
            signer=signer or signers[sender],
        )

    return _make


def _decode_refusal(err: grpc.RpcError) -> Refusal:
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status details on {err.code()}: {err.details()}"
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1, f"expected exactly one ErrorInfo, got {status.details}"
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert info.domain == ERROR_DOMAIN
    refusal = Refusal.from_status(status)
    assert refusal.code == err.code()
    return refusal


def _check(refusal: Refusal, code: grpc.StatusCode, reason: str, fields: tuple[str, ...] | None) -> Refusal:
    assert (refusal.code, refusal.reason) == (code, reason), str(refusal)
    violated = tuple(f for f, _ in refusal.field_violations)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert violated, f"INVALID_ARGUMENT without BadRequest field violations: {refusal}"
    if fields is not None:
        assert sorted(violated) == sorted(fields), refusal.field_violations
    return refusal


@pytest.fixture
def rpc_refusal() -> Callable[..., Refusal]:
    """``rpc_refusal(call, code, reason, fields=None)``: run ``call()``, which must fail so."""

    def _expect(
        call: Callable[[], Any],
        code: grpc.StatusCode,
        reason: str,
        fields: tuple[str, ...] | None = None,
    ) -> Refusal:
        with pytest.raises(grpc.RpcError) as info:
            call()
        return _check(_decode_refusal(info.value), code, reason, fields)

    return _expect


@pytest.fixture
def refused(rpc_refusal: Callable[..., Refusal]) -> Callable[..., Refusal]:
    """``refused(client, envelope, code, reason, fields=None)``: Submit must be refused so.

    ``fields`` (the BadRequest field paths, any order) is checked when given.
    """

    def _expect(
        client: GatewayClient,
        envelope: envelope_pb2.Envelope,
        code: grpc.StatusCode,
        reason: str,
        fields: tuple[str, ...] | None = None,
    ) -> Refusal:
        return rpc_refusal(
            lambda: client.exchange.Submit(exchange_pb2.SubmitRequest(envelope=envelope), timeout=30),
            code,
            reason,
            fields,
        )

    return _expect


@pytest.fixture
def status_refusal() -> Callable[..., Refusal]:
    """Check a streamed item's google.rpc.Status like ``refused`` checks a unary error."""

    def _expect(
        status: Any, code: grpc.StatusCode, reason: str, fields: tuple[str, ...] | None = None
    ) -> Refusal:
        infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
        assert len(infos) == 1
        info = error_details_pb2.ErrorInfo()
        infos[0].Unpack(info)
        assert info.domain == ERROR_DOMAIN
        return _check(Refusal.from_status(status), code, reason, fields)

    return _expect


@pytest.fixture
def issuer_verifies(federation: Federation) -> Callable[[envelope_pb2.Envelope], bool]:
    """True if a stored submission envelope verifies with its signer's federation key."""

    def _verify(envelope: envelope_pb2.Envelope) -> bool:
        sig = envelope.signatures[0]
        key = federation.keys[sig.keyid]
        return key.public_key.verify(pae(envelope.payload_type, envelope.payload), sig.sig)

    return _verify


# --- a throw-away PostgreSQL for outage tests ---------------------------------------------


class ThrowawayPostgres:
    """A PostgreSQL server of the test's own (initdb + pg_ctl), never the machine's service."""

    def __init__(self, bindir: Path, datadir: Path, port: int):
        self.bindir = bindir
        self.datadir = datadir
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-w", "-l", str(self.datadir / "log"),
            "-o", f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-m", "immediate", "stop")


@pytest.fixture(scope="session")
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs the PostgreSQL server package (initdb, pg_ctl) for the outage tests")
        pytest.skip("PostgreSQL server binaries (initdb) not installed: outage tests skipped")
    # Not under pytest's temp root: that is private to root, and postgres must reach it.
    base = Path(tempfile.mkdtemp(prefix="mrx-pg-"))
    datadir = base / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(datadir, "postgres")
        base.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pg = ThrowawayPostgres(found[-1].parent, datadir, port)
    try:
        pg._run("initdb", "-D", str(datadir), "-A", "trust", "-U", "postgres", "--no-sync")
        pg.start()
    except subprocess.CalledProcessError as err:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start a throw-away PostgreSQL: {err.stderr.decode(errors='replace')[-500:]}")
    try:
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
        shutil.rmtree(base, ignore_errors=True)


class ServeProcess:
    """A real `mrx serve` process (the tests that need real processes: replicas, jobs, the
    change feed across replicas). Its output is drained by a thread: a full pipe would stall
    it. ``verbose`` adds -v, which logs lines (the schema check) before the address line."""

    def __init__(
        self,
        federation_dir: Path,
        database: str,
        gw_key: Path,
        *extra: str,
        verbose: bool = False,
        env: dict[str, str] | None = None,
    ):
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *(["-v"] if verbose else []), "serve",
             "--address", "127.0.0.1:0", "--federation", str(federation_dir), "--database", database,
             "--gateway-key", str(gw_key), "--gateway-keyid", "MRX-GW/demo", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.lines: list[str] = []
        self._drain: threading.Thread | None = None

    def ready(self) -> str:
        """The address it serves on, once it says so."""
        import re

        stdout = self.proc.stdout
        assert stdout is not None
        match = None
        while match is None:
            line = stdout.readline()
            self.lines.append(line)
            match = re.search(r"serving on (\S+:\d+) ", line)
            if not line:
                self.proc.kill()
                pytest.fail(f"mrx serve did not start: {''.join(self.lines)}")
        self._drain = threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True)
        self._drain.start()
        return match.group(1)

    def stop(self) -> int:
        """SIGTERM (a drain), then the exit code; killed if it does not end within 60 s."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        if self._drain is not None:
            self._drain.join(10)
        return code

    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def serve_process() -> type[ServeProcess]:
    return ServeProcess
