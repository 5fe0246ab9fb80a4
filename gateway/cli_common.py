"""What the client-side commands share: the gateway address, the reader's key, TLS and
how a gateway failure is reported (``mrx audit``, ``mrx subscribe``, ``mrx reconcile``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from gateway.tls import ClientTls, TlsConfigError


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        if args.tls_server_name:
            raise TlsConfigError("--tls-server-name needs --tls-ca (or --tls-cert and --tls-key)")
        return None
    return ClientTls(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key, server_name=args.tls_server_name)


def gateway_failure(exc: grpc.RpcError, address: str) -> int:
    from gateway.client import Refusal

    refusal = Refusal.from_rpc_error(exc)
    if refusal.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        print(f"mrx: cannot reach the gateway at {address}: {refusal.message}", file=sys.stderr)
    else:
        print(f"mrx: the gateway refused: {refusal}", file=sys.stderr)
    return 2


def add_read_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="127.0.0.1:7443", help="gateway host:port (default %(default)s)")
    parser.add_argument("--principal", required=True, help="who reads, e.g. YRD-SEC")
    parser.add_argument("--key", type=Path, required=True, help="the principal's private key (PEM)")
    parser.add_argument("--keyid", required=True, help="its key id in the federation, e.g. YRD-SEC/2026-01")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-call timeout in seconds")
    add_client_tls_args(parser)


def add_client_tls_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-ca",
        type=Path,
        help="CA certificate(s) that issued the gateway's certificate (PEM); enables TLS",
    )
    parser.add_argument(
        "--tls-cert", type=Path, help="your participant's client certificate (PEM), for mutual TLS"
    )
    parser.add_argument("--tls-key", type=Path, help="the client certificate's private key (PEM)")
    parser.add_argument(
        "--tls-server-name", help="name to check the gateway's certificate against, if not the --address host"
    )
