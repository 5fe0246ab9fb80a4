"""The ``mrx`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from gateway.crypto.suites import PrivateKey, Suite
from gateway.registry.federation import FederationError, load_federation
from gateway.registry.keygen import generate_participant_key
from gateway.store.engine import StoreError, open_engines, resolve_database_url

ENV_FEDERATION_DIR = "MRX_FEDERATION_DIR"
REPO_KEYS = Path(__file__).resolve().parent.parent / "keys"


def default_federation_dir() -> Path:
    return Path(os.environ.get(ENV_FEDERATION_DIR) or REPO_KEYS)


def default_private_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mrx" / "keys"


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import ConfigError, start_gateway

    federation = load_federation(args.federation)
    key = PrivateKey.load(args.gateway_key, keyid=args.gateway_keyid)
    url = resolve_database_url(args.database)
    engines = open_engines(url)
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        tls = (args.tls_cert.read_bytes(), args.tls_key.read_bytes())
    gateway = start_gateway(
        federation=federation,
        engines=engines,
        gateway_key=key,
        address=args.address,
        workers=args.workers,
        tls=tls,
    )
    host = args.address.rsplit(":", 1)[0]
    print(
        f"mrx gateway serving on {host}:{gateway.port} ({engines.dialect}, federation {federation.name!r}, "
        f"{len(federation.participants)} participants); Ctrl-C to stop",
        flush=True,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        print("stopping: draining in-flight submissions", flush=True)
        gateway.stop(grace=10.0)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    gateway.wait()
    engines.dispose()
    return 0


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
    from gateway.demo import run_demo

    return run_demo(database=args.database, template=args.federation, keep=args.keep, out=sys.stdout)


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
    demo.set_defaults(func=_cmd_demo)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--address", default="127.0.0.1:7443", help="host:port to listen on (default %(default)s)"
    )
    serve.add_argument(
        "--database",
        help="SQLAlchemy URL or SQLite path (default: $MRX_DATABASE_URL, else ~/.local/share/mrx/mrx.db)",
    )
    serve.add_argument(
        "--federation",
        type=Path,
        default=default_federation_dir(),
        help="federation directory (default: keys/)",
    )
    serve.add_argument("--gateway-key", type=Path, required=True, help="the gateway's private key (PEM)")
    serve.add_argument(
        "--gateway-keyid", required=True, help="its key id in the federation, e.g. MRX-GW/2026-01"
    )
    serve.add_argument("--workers", type=int, default=16, help="RPC worker threads (default %(default)s)")
    serve.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM); enables TLS")
    serve.add_argument("--tls-key", type=Path, help="server TLS private key (PEM)")
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
