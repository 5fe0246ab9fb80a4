"""The ``mrx`` command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from gateway.cli_common import add_read_client_args as _add_audit_client_args
from gateway.cli_common import client_tls as _client_tls
from gateway.cli_common import gateway_failure as _gateway_failure
from gateway.crypto.suites import PrivateKey, Suite
from gateway.registry.federation import FederationError, load_federation
from gateway.registry.keygen import generate_participant_key
from gateway.store.engine import StoreError, open_engines, resolve_database_url
from gateway.tls.transport import PeerIdentityError, ServerTls

if TYPE_CHECKING:
    from gateway.client import AuditClient
    from gateway.tls.issue import Issued

ENV_FEDERATION_DIR = "MRX_FEDERATION_DIR"
REPO_KEYS = Path(__file__).resolve().parent.parent / "keys"


def default_federation_dir() -> Path:
    return Path(os.environ.get(ENV_FEDERATION_DIR) or REPO_KEYS)


def default_private_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mrx" / "keys"


# Settings of `mrx serve` by their config key, and the argparse dest of each flag.
SERVE_FLAGS = {
    "serve.address": "address",
    "serve.database": "database",
    "serve.federation": "federation",
    "serve.gateway_key": "gateway_key",
    "serve.gateway_keyid": "gateway_keyid",
    "serve.workers": "workers",
    "serve.fronts": "fronts",
    "serve.checkpoint_interval": "checkpoint_interval",
    "serve.commit_delay": "commit_delay",
    "serve.tls.cert": "tls_cert",
    "serve.tls.key": "tls_key",
    "serve.tls.client_ca": "tls_client_ca",
    "serve.metrics.port": "metrics_port",
    "serve.metrics.host": "metrics_host",
    "serve.jobs.enabled": "jobs",
    "serve.jobs.self_audit_at": "self_audit_at",
    "serve.jobs.schedules": "job_schedules",
    "serve.jobs.lease": "job_lease",
    "serve.jobs.grace": "job_grace",
    "serve.reconcile.lease": "reconcile_lease",
    "serve.log.format": "log_format",
    "serve.log.level": "log_level",
}


def _serve_config(args: argparse.Namespace, config: Path | None) -> Any:
    from gateway.config import load_serve_config

    flags = {key: getattr(args, dest, None) for key, dest in SERVE_FLAGS.items()}
    return load_serve_config(config, flags=flags, default_federation=default_federation_dir)


def _apply_serve_config(args: argparse.Namespace, cfg: Any) -> None:
    """Put the merged settings back on ``args``: the rest of serve reads them there."""
    for key, dest in SERVE_FLAGS.items():
        setattr(args, dest, cfg[key])


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.observability import logs

    cfg = _serve_config(args, args.config)
    _apply_serve_config(args, cfg)
    level = logging.DEBUG if args.verbose else getattr(logging, args.log_level.upper())
    logs.configure(level, args.log_format)
    metrics_dir = None
    if args.metrics_port is not None and args.fronts > 1:
        # Before anything imports prometheus_client: it picks its value store at import,
        # and the writer and fronts inherit the variable (gateway/observability/metrics.py).
        from gateway.observability.multiproc import prepare_multiprocess_dir

        metrics_dir = prepare_multiprocess_dir()
    try:
        return _serve(args)
    finally:
        if metrics_dir is not None:
            from gateway.observability.multiproc import remove_multiprocess_dir

            remove_multiprocess_dir(metrics_dir)


def _serve(args: argparse.Namespace) -> int:
    from gateway.ledger.writer import WriterOptions
    from gateway.server import start_gateway

    jobs = _job_settings(args)  # first: a bad flag is named before any file is read
    fronts: list[Any] = []
    # Everything logged while starting (at --log-level info, the schema check's lines too)
    # follows the address line.
    with _address_line_first():
        federation = load_federation(args.federation)
        key = PrivateKey.load(args.gateway_key, keyid=args.gateway_keyid)
        tls = _server_tls(args)
        url = resolve_database_url(args.database)
        engines = open_engines(url)
        gateway = start_gateway(
            federation=federation,
            engines=engines,
            gateway_key=key,
            address=args.address,
            workers=args.workers,
            tls=tls,
            checkpoint_interval=args.checkpoint_interval,
            writer_options=WriterOptions(
                delay=max(args.commit_delay, 0.0) / 1000, log_json=args.log_format == "json"
            ),
            extra_fronts=args.fronts - 1,
            metrics_address=(args.metrics_host, args.metrics_port) if args.metrics_port is not None else None,
            jobs=jobs,
            reconcile_lease=timedelta(seconds=args.reconcile_lease),
        )
        host = args.address.rsplit(":", 1)[0]
        fronts = _start_fronts(args, url, f"{host}:{gateway.port}", gateway)

        stopping = threading.Event()

        def _drain() -> None:
            for front in fronts:
                front.terminate()  # SIGTERM: each drains like this one
            gateway.stop(grace=10.0)
            for front in fronts:
                front.join(15)

        def _stop(signum: int, frame: FrameType | None) -> None:
            # Once, and off the signal handler: a second Ctrl-C or SIGTERM while draining
            # must not re-enter stop() on the thread that is already inside it.
            if stopping.is_set():
                return
            stopping.set()
            # Further SIGTERM/SIGINT are ignored from here on, through interpreter exit
            # (which would otherwise restore the default action and die by the signal);
            # a stuck drain is for SIGKILL, as systemd escalates.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            print("stopping: draining in-flight submissions", flush=True)
            threading.Thread(target=_drain, name="mrx-stop").start()

        # In place before the address line announces readiness: a SIGTERM right after it drains.
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        print(
            f"mrx gateway serving on {host}:{gateway.port} ({engines.dialect}, federation "
            f"{federation.name!r}, {len(federation.participants)} participants, writer pid "
            f"{gateway.writer.pid}, {tls.describe() if tls else 'plaintext'}, {args.fronts} front "
            f"process{'es' if args.fronts > 1 else ''}"
            + (f" (more: pids {', '.join(str(f.pid) for f in fronts)})" if fronts else "")
            + (
                f", metrics on http://{args.metrics_host}:{gateway.metrics_server.port}/metrics"
                if gateway.metrics_server is not None
                else ""
            )
            + "); Ctrl-C to stop",
            flush=True,
        )
    gateway.wait()
    engines.dispose()
    if gateway.failure is not None:
        print(f"mrx serve: {gateway.failure}; stopped", file=sys.stderr, flush=True)
        return 1
    return 0


def _job_settings(args: argparse.Namespace) -> Any:
    """The scheduled jobs' settings from the flags (docs/jobs.md), or None (--jobs off).

    Every flag is one scalar value (a `[serve]` setting can mirror each)."""
    from gateway.jobs.scheduler import SELF_AUDIT, JobSettings, ScheduleError, at_time

    if args.jobs == "off":
        return None
    for name in ("job_lease", "job_grace"):
        if getattr(args, name) <= 0:
            raise ScheduleError(f"--{name.replace('_', '-')} must be positive")
    settings = JobSettings(
        lease=timedelta(seconds=args.job_lease),
        grace=timedelta(seconds=args.job_grace),
        sweep=timedelta(seconds=min(30.0, max(args.job_lease / 2, 1.0))),
    )
    settings = settings.with_schedule(SELF_AUDIT, at_time(args.self_audit_at, what="--self-audit-at"))
    for item in (part.strip() for part in args.job_schedules.split(";")):
        if not item:
            continue
        job, sep, spec = item.partition("=")
        if not sep:
            raise ScheduleError(
                f"--job-schedules {item!r}: expected JOB=CRON, several separated by ';', "
                f"e.g. 'self-audit=0 3 * * *; prune-job-runs=30 4 * * *'"
            )
        settings = settings.with_schedule(job.strip(), spec.strip())
    return settings


def _start_fronts(args: argparse.Namespace, url: str, address: str, gateway: Any) -> list[Any]:
    """Start ``--fronts`` - 1 more front processes on the same port and writer, and watch
    them: if one dies, the gateway stops and says why (its supervisor restarts it)."""
    from gateway.ledger.writer import front_context
    from gateway.server import FrontSpec, run_front

    spec = FrontSpec(
        federation_dir=args.federation,
        gateway_key=args.gateway_key,
        gateway_keyid=args.gateway_keyid,
        database_url=url,
        address=address,
        workers=args.workers,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        log_level=logging.getLogger().getEffectiveLevel(),
        log_format=args.log_format,
    )
    fronts = []
    for conn in gateway.writer.extra:
        front = front_context().Process(target=run_front, args=(conn, spec), name="mrx-front", daemon=True)
        front.start()
        conn.close()  # the front holds it now
        fronts.append(front)

    def watch() -> None:
        ended = multiprocessing.connection.wait([f.sentinel for f in fronts])
        if not ended or gateway.stopping:
            return
        dead = next(f for f in fronts if f.sentinel in ended)
        dead.join(1)
        if dead.pid is not None:
            from gateway.observability.metrics import process_exited

            process_exited(dead.pid)
        gateway.front_died(f"front process {dead.pid} exited with code {dead.exitcode}")
        for front in fronts:
            front.terminate()

    if fronts:
        threading.Thread(target=watch, name="mrx-fronts", daemon=True).start()
    return fronts


@contextlib.contextmanager
def _address_line_first() -> Iterator[None]:
    """Hold log records (e.g. the plaintext warning) until the "serving on" line is printed.

    Supervisors and tests read the first line of output for the bound address; what the
    gateway logs while starting follows it, in order, through the usual handlers.
    """
    held: list[logging.LogRecord] = []

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)

    root = logging.getLogger()
    handlers = root.handlers[:]
    root.handlers = [Hold()]
    try:
        yield
    finally:
        try:
            root.handlers = handlers
            for record in held:
                for handler in handlers:
                    if record.levelno >= handler.level:
                        handler.handle(record)
                        handler.flush()
        finally:
            # Signals held since just before the address line (see _cmd_serve) are
            # delivered now, after the records: a SIGTERM sent as soon as the line appears
            # drains the gateway and loses none of them.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})


def _server_tls(args: argparse.Namespace) -> ServerTls | None:
    from gateway.server import ConfigError

    if not (args.tls_cert or args.tls_key):
        if args.tls_client_ca:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (the server's own certificate)")
        return None
    if not (args.tls_cert and args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    return ServerTls(cert_chain=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    not_before = (
        datetime.fromisoformat(args.not_before).astimezone(UTC) if args.not_before else datetime.now(UTC)
    ).replace(microsecond=0)
    private, public = generate_participant_key(
        federation_dir=args.federation,
        owner=args.participant,
        private_dir=args.private_dir,
        suite=Suite(args.suite),
        keyid=args.keyid,
        not_before=not_before,
        not_after=not_before + timedelta(days=args.valid_days),
    )
    print(f"private key: {private} (mode 0600; keep it off shared disks, never commit it)")
    print(f"public key:  {public} (registered in {args.federation / 'federation.toml'})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_adapters_demo, run_demo

    if args.adapters:
        return run_adapters_demo(
            database=args.database, template=args.federation, keep=args.keep, out=sys.stdout
        )
    return run_demo(database=args.database, template=args.federation, keep=args.keep, out=sys.stdout)


# --- mrx audit ---------------------------------------------------------------------------


def _when(text: str) -> datetime:
    """--from/--to: an RFC 3339 time with an offset, or a date (midnight in China)."""
    # A bare date is a calendar day in China, the gateway's "today" for certificate dates.
    from gateway.domain.records import CHINA

    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), CHINA).astimezone(UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a date nor an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset; write e.g. {text}+08:00 or {text}Z (a bare date means China time)"
        )
    return parsed.astimezone(UTC)


def _audit_client(args: argparse.Namespace) -> AuditClient:
    from gateway.client import AuditClient

    return AuditClient(
        args.address,
        principal=args.principal,
        signer=PrivateKey.load(args.key, keyid=args.keyid),
        tls=_client_tls(args),
        timeout=args.timeout,
    )


def _cmd_audit_export(args: argparse.Namespace) -> int:
    import grpc

    from gateway.audit.bundle import export_bundle, verify_bundle

    if args.output.exists() and not args.force:
        raise FileExistsError(f"refusing to overwrite {args.output} (use --force)")
    try:
        with _audit_client(args) as client:
            data, notes = export_bundle(
                client,
                gateway=args.address,
                alliance=args.alliance or "",
                participant=args.participant or "",
                received_from=args.received_from,
                received_to=args.received_to,
            )
    except grpc.RpcError as exc:
        return _gateway_failure(exc, args.address)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, args.output)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    # The self-check is what a recipient will run; a bundle that fails it is still written,
    # because a gateway serving data that does not verify is exactly what auditors need kept.
    result = verify_bundle(data)
    print(f"wrote {args.output} ({len(data)} bytes)")
    for line in result.summary_lines():
        print(f"  {line}")
    for problem in result.problems:
        print(f"FAIL {problem}")
    return 0 if result.ok else 1


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from gateway.audit.bundle import TrustedKey, load_public_key_pem, trusted_from_federation, verify_bundle

    gateway_keys = None
    signer_keys = None
    if args.gateway_key is not None:
        gateway_keys = [TrustedKey(None, load_public_key_pem(args.gateway_key.read_bytes()))]
    elif args.federation is not None:
        gateway_keys, signer_keys = trusted_from_federation(load_federation(args.federation))
    result = verify_bundle(args.bundle.read_bytes(), gateway_keys=gateway_keys, signer_keys=signer_keys)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in result.problems:
        print(f"FAIL {problem}")
    print(f"{args.bundle}:")
    for line in result.summary_lines():
        print(f"  {line}")
    return 0 if result.ok else 1


def _cmd_audit_watch(args: argparse.Namespace) -> int:
    import grpc

    from gateway.audit.watch import EXIT_ERROR, WatchStateError, watch_loop, watch_once

    pinned = None
    if args.federation is not None:
        federation = load_federation(args.federation)
        # Revoked ones are not pinned on a later run (first runs keep their old behaviour).
        pinned = {
            k.keyid: k.public_key
            for k in federation.keys_of(federation.gateway_code)
            if not (k.revoked and args.state.exists())
        }
    try:
        with _audit_client(args) as client:

            def one_round() -> int:
                return watch_once(
                    client,
                    args.state,
                    gateway=args.address,
                    out=sys.stdout,
                    err=sys.stderr,
                    pinned_keys=pinned,
                )

            if args.once:
                return one_round()
            return watch_loop(one_round, interval=args.interval, err=sys.stderr)
    except WatchStateError as exc:
        print(
            f"mrx: {exc}; fix or move the file (starting over would forget the pinned history)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except grpc.RpcError as exc:
        return _gateway_failure(exc, args.address)
    except KeyboardInterrupt:
        return 0


def _cmd_audit_verify_restore(args: argparse.Namespace) -> int:
    import grpc

    from gateway.audit.restore import verify_restore
    from gateway.audit.watch import EXIT_ERROR, WatchStateError

    extra = None
    if args.federation is not None:
        federation = load_federation(args.federation)
        extra = {k.keyid: k.public_key for k in federation.keys_of(federation.gateway_code) if not k.revoked}
    try:
        with _audit_client(args) as client:
            check = verify_restore(client, args.state, extra_keys=extra)
    except WatchStateError as exc:
        print(f"mrx: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except grpc.RpcError as exc:
        return _gateway_failure(exc, args.address)
    for line in check.lines:
        print(line)
    return 0 if check.ok else 1


def _cmd_audit_self_check(args: argparse.Namespace) -> int:
    from gateway.jobs.selfaudit import run_self_audit
    from gateway.store.engine import connect, display_url
    from gateway.store.migrate import read_state

    federation = load_federation(args.federation)
    keys = {k.keyid: k.public_key for k in federation.keys_of(federation.gateway_code)}
    url = resolve_database_url(args.database)
    sqlite_path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_path is not None and not Path(sqlite_path).exists():
        print(f"mrx: no database at {sqlite_path}", file=sys.stderr)
        return 2
    # No schema check and no schema creation: the tables read here are the first release's,
    # and a restored database should be checked before anything (an upgrade) writes to it.
    engines = connect(url)
    try:
        with engines.reader.connect() as conn:
            if read_state(conn).empty:
                print(f"mrx: {display_url(url)} holds no mrx tables", file=sys.stderr)
                return 2
        result = run_self_audit(engines, gateway_keys=keys, origin=f"{federation.name}/exchange-log")
    finally:
        engines.dispose()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in result.problems:
        print(f"FAIL {problem}")
    print(f"{display_url(url)}: {result.summary()}")
    return 0 if result.ok else 1


def _add_audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="export, verify and watch the audit log (docs/audit.md)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)

    export = audit_sub.add_parser(
        "export", help="write a self-contained bundle of the exchanges you may see, with proofs"
    )
    _add_audit_client_args(export)
    scope = export.add_mutually_exclusive_group()
    scope.add_argument("--alliance", help="exchanges involving members of this alliance, e.g. YRD")
    scope.add_argument("--participant", help="exchanges sent by or about this participant, e.g. CN-JS")
    export.add_argument(
        "--from",
        dest="received_from",
        type=_when,
        help="received at or after (ISO time with offset, or date)",
    )
    export.add_argument("--to", dest="received_to", type=_when, help="received before (exclusive)")
    export.add_argument("-o", "--output", type=Path, required=True, help="bundle file to write")
    export.add_argument("--force", action="store_true", help="overwrite an existing bundle file")
    export.set_defaults(func=_cmd_audit_export)

    verify = audit_sub.add_parser(
        "verify", help="check a bundle offline: signatures and proofs (exit 1 on failure)"
    )
    verify.add_argument("bundle", type=Path)
    pin = verify.add_mutually_exclusive_group()
    pin.add_argument(
        "--gateway-key", type=Path, help="the gateway's public key (PEM) to check the checkpoint with"
    )
    pin.add_argument("--federation", type=Path, help="federation directory whose keys to trust")
    verify.set_defaults(func=_cmd_audit_verify)

    watch = audit_sub.add_parser(
        "watch", help="check that each new checkpoint extends the last one (exit 3: history rewritten)"
    )
    _add_audit_client_args(watch)
    watch.add_argument("--state", type=Path, required=True, help="file keeping the last verified checkpoint")
    watch.add_argument(
        "--interval", type=float, default=60.0, help="seconds between rounds (default %(default)s)"
    )
    watch.add_argument("--once", action="store_true", help="one round, then exit (for cron and tests)")
    watch.add_argument(
        "--federation",
        type=Path,
        help="pin this federation directory's gateway keys (first run), or add its new ones (later runs)",
    )
    watch.set_defaults(func=_cmd_audit_watch)

    restore = audit_sub.add_parser(
        "verify-restore",
        help="after a database restore: does the restored log extend the checkpoint a watch state "
        "file saved before the backup? (exit 0 yes, 1 no)",
    )
    _add_audit_client_args(restore)
    restore.add_argument(
        "--state", type=Path, required=True, help="a `mrx audit watch` state file (only read)"
    )
    restore.add_argument(
        "--federation",
        type=Path,
        help="also trust this federation's unrevoked gateway keys (after a rotation)",
    )
    restore.set_defaults(func=_cmd_audit_verify_restore)

    check = audit_sub.add_parser(
        "self-check",
        help="recompute the audit tree from the database and check every checkpoint (exit 1 on a problem)",
    )
    check.add_argument(
        "--database",
        help="SQLAlchemy URL or SQLite path (default: $MRX_DATABASE_URL, else ~/.local/share/mrx/mrx.db)",
    )
    check.add_argument(
        "--federation",
        type=Path,
        default=default_federation_dir(),
        help="federation directory whose gateway keys signed the checkpoints (default: keys/)",
    )
    check.set_defaults(func=_cmd_audit_self_check)


def _add_reconcile_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gateway.reconcile.commands import add_parser

    add_parser(sub, federation_dir=default_federation_dir)


# --- mrx db ----------------------------------------------------------------------------


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from gateway.store.engine import connect, display_url
    from gateway.store.migrate import upgrade

    url = resolve_database_url(args.database)
    engines = connect(url)
    try:
        done = upgrade(engines)
    finally:
        engines.dispose()
    print(f"database: {display_url(url)} ({engines.dialect})")
    print(f"before:   {done.before.describe()}")
    if done.stamped:
        print("          its tables are revision 0001's: stamped 0001")
    print(f"now:      {done.after.describe()}")
    return 0


def _cmd_db_current(args: argparse.Namespace) -> int:
    from gateway.store.engine import connect, display_url
    from gateway.store.migrate import read_state, upgrade_command

    url = resolve_database_url(args.database)
    sqlite_path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_path is not None and not Path(sqlite_path).exists():
        print(f"mrx: no database at {sqlite_path}", file=sys.stderr)
        return 1
    engines = connect(url)
    try:
        with engines.reader.connect() as conn:
            state = read_state(conn)
    finally:
        engines.dispose()
    print(f"{display_url(url)}: {state.describe()}")
    if state.at_head:
        return 0
    if state.known and (state.empty or state.revision or state.first_release_version is not None):
        print(f"to upgrade: {upgrade_command(engines)}")
    return 1


def _add_db_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="the database schema: upgrade it, show its revision (docs/operations.md)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    database_help = (
        "SQLAlchemy URL or SQLite path (default: $MRX_DATABASE_URL, else ~/.local/share/mrx/mrx.db)"
    )
    upgrade = db_sub.add_parser(
        "upgrade", help="bring the schema to this release's head (creates it on an empty database)"
    )
    upgrade.add_argument("--database", help=database_help)
    upgrade.set_defaults(func=_cmd_db_upgrade)
    current = db_sub.add_parser(
        "current", help="print the schema revision and whether it is the head (exit 0 only at head)"
    )
    current.add_argument("--database", help=database_help)
    current.set_defaults(func=_cmd_db_current)


# --- mrx config ------------------------------------------------------------------------


def _cmd_config_check(args: argparse.Namespace) -> int:
    from gateway.config import ConfigFileError, load_serve_config
    from gateway.server import ConfigError, check_gateway_key

    try:
        cfg = load_serve_config(args.file, default_federation=default_federation_dir)
        # What start would refuse next: the key must be the federation's gateway key.
        try:
            federation = load_federation(cfg["serve.federation"])
        except FederationError as exc:
            raise ConfigFileError(f"{cfg.values['serve.federation'].source}: {exc}") from None
        where = cfg.values["serve.gateway_key"].source
        try:
            key = PrivateKey.load(cfg["serve.gateway_key"], keyid=cfg["serve.gateway_keyid"])
            check_gateway_key(federation, key)
        except (ConfigError, ValueError, OSError) as exc:
            raise ConfigFileError(f"{where}: {exc}") from None
    except ConfigFileError as exc:
        print(f"mrx config check: {exc}", file=sys.stderr)
        return 1
    print(f"# {args.file}: valid; the effective configuration (secrets masked):")
    print(cfg.render(), end="")
    return 0


def _add_config_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="check a `mrx serve` settings file (docs/operations.md)")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser(
        "check", help="validate FILE with the MRX_SERVE_* variables, print the result (exit 0 valid, 1 not)"
    )
    check.add_argument("file", type=Path)
    check.set_defaults(func=_cmd_config_check)


# --- mrx tls ---------------------------------------------------------------------------


def _write_issued(issued: Issued, cert_path: Path, key_path: Path, force: bool) -> None:
    from gateway.registry.keygen import _ensure_not_committable
    from gateway.tls.issue import write_pair

    _ensure_not_committable(key_path.parent)
    write_pair(issued, cert_path, key_path, force=force)
    cert = issued.cert
    until = f"{cert.not_valid_after_utc:%Y-%m-%d}"
    print(f"certificate: {cert_path} ({cert.subject.rfc4514_string()}, until {until})")
    print(f"private key: {key_path} (mode 0600; keep it off shared disks, never commit it)")


def _cmd_tls_init_ca(args: argparse.Namespace) -> int:
    from gateway.tls.issue import init_ca

    ca = init_ca(name=args.name, organization=args.organization, days=args.days)
    _write_issued(ca, args.dir / "ca.crt", args.dir / "ca.key", args.force)
    return 0


def _load_ca(args: argparse.Namespace) -> Issued:
    from gateway.tls.issue import load_issued

    return load_issued(args.ca_dir / "ca.crt", args.ca_dir / "ca.key")


def _cmd_tls_issue_server(args: argparse.Namespace) -> int:
    from gateway.tls.issue import issue_server

    issued = issue_server(_load_ca(args), hosts=args.host, days=args.days)
    _write_issued(issued, args.out_dir / f"{args.name}.crt", args.out_dir / f"{args.name}.key", args.force)
    return 0


def _cmd_tls_issue_client(args: argparse.Namespace) -> int:
    from gateway.tls.issue import issue_client

    federation = load_federation(args.federation)
    if federation.participant(args.participant) is None:
        raise ValueError(f"{args.participant} is not a participant of {args.federation}")
    issued = issue_client(_load_ca(args), participant=args.participant, days=args.days)
    stem = args.out_dir / args.participant
    _write_issued(issued, stem.with_suffix(".crt"), stem.with_suffix(".key"), args.force)
    return 0


def _cmd_tls_show(args: argparse.Namespace) -> int:
    from cryptography import x509

    from gateway.tls.transport import certificate_participant

    kinds: dict[type, str] = {
        x509.DNSName: "DNS",
        x509.IPAddress: "IP",
        x509.UniformResourceIdentifier: "URI",
    }
    for path in args.certificate:
        for cert in x509.load_pem_x509_certificates(path.read_bytes()):
            try:
                names = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
            except x509.ExtensionNotFound:
                names = []
            sans = ", ".join(f"{kinds.get(type(n), type(n).__name__)}:{n.value}" for n in names)
            print(f"{path}: {cert.subject.rfc4514_string()}")
            print(f"  issuer:      {cert.issuer.rfc4514_string()}")
            print(f"  valid:       {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} .. ", end="")
            print(f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
            print(f"  SANs:        {sans or '(none)'}")
            print(f"  participant: {certificate_participant(cert) or '(none)'}")
    return 0


def _add_tls_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tls = sub.add_parser("tls", help="issue the TLS CA and certificates (docs/operations.md, Mutual TLS)")
    tls_sub = tls.add_subparsers(dest="tls_command", required=True)

    ca = tls_sub.add_parser("init-ca", help="make a CA: DIR/ca.crt and DIR/ca.key (0600)")
    ca.add_argument("--dir", type=Path, required=True, help="where the CA goes (outside any git work tree)")
    ca.add_argument("--name", default="mrx federation TLS CA", help="the CA's common name")
    ca.add_argument("--organization", help="the CA's organisation name (O=)")
    ca.add_argument("--days", type=int, default=3650, help="validity in days (default %(default)s)")
    ca.add_argument("--force", action="store_true", help="overwrite existing files")
    ca.set_defaults(func=_cmd_tls_init_ca)

    def leaf_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ca-dir", type=Path, required=True, help="the CA made by init-ca")
        parser.add_argument("--out-dir", type=Path, required=True, help="where the certificate and key go")
        parser.add_argument("--days", type=int, default=397, help="validity in days (default %(default)s)")
        parser.add_argument("--force", action="store_true", help="overwrite existing files")

    server = tls_sub.add_parser(
        "issue-server", help="a gateway server certificate: OUT/NAME.crt and OUT/NAME.key (0600)"
    )
    leaf_args(server)
    server.add_argument(
        "--host",
        action="append",
        required=True,
        help="a DNS name or IP address clients connect to (repeat for each)",
    )
    server.add_argument("--name", default="server", help="file name stem (default %(default)s)")
    server.set_defaults(func=_cmd_tls_issue_server)

    client = tls_sub.add_parser(
        "issue-client",
        help="a participant's client certificate: OUT/<participant>.crt and OUT/<participant>.key (0600)",
    )
    leaf_args(client)
    client.add_argument("--participant", required=True, help="the participant it names, e.g. CN-JS")
    client.add_argument(
        "--federation",
        type=Path,
        default=default_federation_dir(),
        help="federation directory the participant must be listed in (default: keys/)",
    )
    client.set_defaults(func=_cmd_tls_issue_client)

    show = tls_sub.add_parser("show", help="print a certificate's subject, SANs, validity and participant")
    show.add_argument("certificate", type=Path, nargs="+")
    show.set_defaults(func=_cmd_tls_show)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrx", description="mutual-recognition exchange gateway")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a gateway with demo keys and show a day of exchanges")
    demo.add_argument(
        "--database", help="database URL or SQLite path (default: a fresh temporary SQLite file)"
    )
    demo.add_argument("--federation", type=Path, default=REPO_KEYS, help="federation template (participants)")
    demo.add_argument("--keep", action="store_true", help="keep the temporary keys and database")
    demo.add_argument(
        "--adapters",
        action="store_true",
        help="instead: adapters of three regions' local systems exchanging both ways (docs/adapters.md)",
    )
    demo.set_defaults(func=_cmd_demo)

    serve = sub.add_parser(
        "serve",
        help="run the gateway (settings: --config FILE, MRX_SERVE_* variables, flags; docs/operations.md)",
    )
    serve.add_argument(
        "--config",
        type=Path,
        help="TOML settings file (docs/mrx.example.toml); variables and flags override it",
    )
    serve.add_argument("--address", help="host:port to listen on (default 127.0.0.1:7443)")
    serve.add_argument(
        "--database",
        help="SQLAlchemy URL or SQLite path (default: $MRX_DATABASE_URL, else ~/.local/share/mrx/mrx.db)",
    )
    serve.add_argument(
        "--federation", type=Path, help="federation directory (default: $MRX_FEDERATION_DIR, else keys/)"
    )
    serve.add_argument("--gateway-key", type=Path, help="the gateway's private key (PEM); required")
    serve.add_argument("--gateway-keyid", help="its key id in the federation, e.g. MRX-GW/2026-01; required")
    serve.add_argument("--workers", type=int, help="threads for reads and for verifying batches (default 8)")
    serve.add_argument(
        "--fronts",
        type=int,
        help="front processes sharing the port and one writer (default 1; more where cores allow)",
    )
    serve.add_argument(
        "--checkpoint-interval",
        type=float,
        help="seconds between signed checkpoints while the log grows (default 10)",
    )
    serve.add_argument(
        "--commit-delay",
        type=float,
        help="milliseconds the writer waits for more submissions to share a commit (default 1)",
    )
    serve.add_argument(
        "--self-audit-at",
        help="daily self-audit time, HH:MM Asia/Shanghai (default 03:00; docs/jobs.md)",
    )
    serve.add_argument(
        "--job-schedules",
        metavar="JOB=CRON[;JOB=CRON...]",
        help="jobs' cron schedules in Asia/Shanghai, 5 fields or 6 with seconds first, separated by ';' "
        "(jobs: self-audit, reconciliation-check, prune-job-runs)",
    )
    serve.add_argument(
        "--job-lease",
        type=float,
        help="seconds a job's claim lasts unless renewed; a dead runner's claim is taken over after it "
        "(default 60)",
    )
    serve.add_argument(
        "--job-grace",
        type=float,
        help="seconds after its time a missed run still runs, once (default 3600)",
    )
    serve.add_argument(
        "--reconcile-lease",
        type=float,
        help="seconds a reconciliation run lives without a call from its participant; then it is "
        "abandoned, at the participant's next start or the gateway's (default 300)",
    )
    serve.add_argument(
        "--jobs",
        choices=("on", "off"),
        help="run the scheduled jobs in this replica (default on; off: another replica must)",
    )
    serve.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM); enables TLS")
    serve.add_argument("--tls-key", type=Path, help="server TLS private key (PEM)")
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        help="CA of participant client certificates (PEM); requires and verifies them (mutual TLS)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (0: any free port; default: off)",
    )
    serve.add_argument("--metrics-host", help="address the metrics port binds to (default 127.0.0.1)")
    serve.add_argument(
        "--log-format", choices=["text", "json"], help="log lines as text or JSON (default text)"
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="lowest level logged (default warning)",
    )
    serve.set_defaults(func=_cmd_serve)

    keys = sub.add_parser("keys", help="manage participant keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="make a key pair and register its public half")
    gen.add_argument("--participant", required=True, help="owner, e.g. CN-SH")
    gen.add_argument("--suite", choices=[s.value for s in Suite], default=Suite.ED25519.value)
    gen.add_argument("--keyid", help="default <participant>/<yyyy-mm>")
    gen.add_argument("--federation", type=Path, default=default_federation_dir())
    gen.add_argument(
        "--private-dir",
        type=Path,
        default=default_private_dir(),
        help="where the private key goes (default %(default)s)",
    )
    gen.add_argument("--not-before", help="ISO time the key becomes valid (default now)")
    gen.add_argument("--valid-days", type=int, default=730)
    gen.set_defaults(func=_cmd_keys_generate)

    _add_audit_parser(sub)
    from gateway.cli_subscribe import add_subscribe_parser

    add_subscribe_parser(sub)
    _add_tls_parser(sub)
    _add_db_parser(sub)
    _add_config_parser(sub)
    from adapters.cli import add_adapter_parser

    add_adapter_parser(sub)
    _add_reconcile_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (
        FederationError,
        StoreError,
        ValueError,
        FileExistsError,
        FileNotFoundError,
        PermissionError,
        PeerIdentityError,
    ) as exc:
        print(f"mrx: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from gateway.server import ConfigError

        if isinstance(exc, ConfigError):
            print(f"mrx: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
