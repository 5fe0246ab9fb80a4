"""``mrx subscribe``: follow the changes a participant may see, one JSON line per change."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli_common import add_read_client_args, client_tls, gateway_failure
from gateway.convert import KIND_NUMBERS
from gateway.crypto.suites import PrivateKey
from gateway.domain.certificates import Scheme
from gateway.registry.federation import load_federation

# The record kinds by name, as record-key prefixes; one list, the converter's.
KINDS = tuple(sorted(KIND_NUMBERS))


def add_subscribe_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "subscribe",
        help="follow accepted record changes you may see, one JSON line each (docs/signing.md)",
    )
    add_read_client_args(parser)
    parser.add_argument(
        "--from",
        dest="start_index",
        type=int,
        default=0,
        help="first log index wanted (resume with the last printed log_index + 1; default 0)",
    )
    parser.add_argument("--kind", action="append", choices=KINDS, default=[], help="record kind (repeatable)")
    parser.add_argument("--issuer", action="append", default=[], help="issuer, e.g. CN-JS (repeatable)")
    parser.add_argument(
        "--scheme", action="append", choices=[s.name for s in Scheme], default=[], help="certificate scheme"
    )
    parser.add_argument("--certificate-number", action="append", default=[], help="certificate number")
    parser.add_argument("--holder", action="append", default=[], help="holder's credit code (repeatable)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="stop when caught up with the log")
    mode.add_argument("--follow", action="store_true", help="keep following live changes (the default)")
    parser.add_argument(
        "--federation", type=Path, help="verify issuer signatures with this federation directory's keys"
    )
    parser.set_defaults(func=cmd_subscribe)


def _line(change: Any) -> str:
    record = change.record
    issuer = getattr(record, "issuer", None) or getattr(record, "home", "")
    state = getattr(record, "state", None)
    return json.dumps(
        {
            "log_index": change.log_index,
            "key": change.record_key,
            "issuer": issuer,
            "state": state.name if state is not None else None,
            "version": getattr(record, "version", None),
            "verified": True,
        },
        ensure_ascii=False,
    )


def cmd_subscribe(args: argparse.Namespace) -> int:
    import grpc

    from gateway.client import ChangeVerificationError, GatewayClient

    if args.start_index < 0:
        raise ValueError("--from must be 0 or more")
    pinned = None
    if args.federation is not None:
        federation = load_federation(args.federation)
        pinned = {k.keyid: (k.owner, k.public_key) for k in federation.keys.values()}

    def caught_up(next_index: int) -> None:
        if not args.once:
            print(
                f"mrx: caught up at log index {next_index}; following live changes",
                file=sys.stderr,
                flush=True,
            )

    last = None
    try:
        with GatewayClient(
            args.address,
            sender=args.principal,
            signer=PrivateKey.load(args.key, keyid=args.keyid),
            tls=client_tls(args),
            timeout=args.timeout,
            federation_keys=pinned,
        ) as client:
            for change in client.subscribe(
                start_index=args.start_index,
                kinds=args.kind,
                issuers=args.issuer,
                schemes=[Scheme[s] for s in args.scheme],
                certificate_numbers=args.certificate_number,
                holder_credit_codes=args.holder,
                until_caught_up=args.once,
                on_caught_up=caught_up,
            ):
                print(_line(change), flush=True)
                last = change.log_index
    except ChangeVerificationError as exc:
        print(f"mrx: NOT VERIFIED: {exc}; stopped (resume with --from {exc.log_index})", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        code = gateway_failure(exc, args.address)
        if last is not None:
            print(f"mrx: resume with --from {last + 1}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 0
    return 0
