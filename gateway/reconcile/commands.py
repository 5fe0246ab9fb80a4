"""``mrx reconcile run | report | list`` (docs/reconciliation.md). Client-side only."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli_common import add_client_tls_args, client_tls, gateway_failure
from gateway.crypto.suites import PrivateKey
from gateway.pb import reconcile_pb2
from gateway.reconcile.participant import CLASS_NAMES

if TYPE_CHECKING:
    from gateway.client import ReconcileClient
    from gateway.reconcile.participant import MappedLike

# Exit codes: 0 a clean run, 1 discrepancies or problem rows found (for cron and
# monitoring), 2 could not run (the gateway refused or could not be reached, bad input).
EXIT_CLEAN, EXIT_FOUND, EXIT_ERROR = 0, 1, 2

STATE_NAMES = {1: "VALID", 2: "SUSPENDED", 3: "REVOKED", 4: "WITHDRAWN", 5: "EXPIRED"}
STATUS_NAMES = {1: "running", 2: "complete", 3: "failed", 4: "abandoned"}


def _client(args: argparse.Namespace, principal: str) -> ReconcileClient:
    from gateway.client import ReconcileClient

    return ReconcileClient(
        args.address,
        sender=principal,
        signer=PrivateKey.load(args.key, keyid=args.keyid),
        tls=client_tls(args),
        timeout=args.timeout,
    )


def _time(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    when: datetime = ts.ToDatetime(tzinfo=UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _side(side: Any, present: bool, gateway: bool) -> str:
    if not present:
        return "(none)"
    text = f"v{side.version} {STATE_NAMES.get(side.state, side.state)} {side.content_sha256.hex()[:12]}"
    if gateway:
        text += f" {side.keyid} #{side.log_index}"
    return text


def report_lines(report: reconcile_pb2.ReconciliationReport, *, signed_by: str) -> list[str]:
    """The report as a readable table."""
    lines = [
        f"reconciliation run {report.run_id}  participant {report.participant}",
        f"  started   {_time(report.started_at)}",
        f"  finished  {_time(report.finished_at)}",
        f"  snapshot  {report.snapshot_size} rows; the gateway holds {report.gateway_records} records",
        f"  sent      {report.request_bytes:,} bytes of requests",
        f"  key ids recognised as the participant's: {', '.join(report.recognised_keyids) or '(none)'}",
        "",
        "summary",
    ]
    total = 0
    for c in report.summary:
        lines.append(f"  {CLASS_NAMES.get(c.category, str(c.category)):<24}{c.count:>8}")
        total += c.count
    lines.append(f"  {'total':<24}{total:>8}")
    if report.discrepancies:
        lines += ["", "discrepancies", f"  {'class':<22} {'record':<48} {'local':<32} gateway"]
        for d in report.discrepancies:
            local = _side(d.local, d.HasField("local"), False)
            theirs = _side(d.gateway, d.HasField("gateway"), True)
            name = CLASS_NAMES.get(d.category, str(d.category))
            lines.append(f"  {name:<22} {d.record_key:<48} {local:<32} {theirs}")
        if report.discrepancies_omitted:
            lines.append(f"  ... and {report.discrepancies_omitted} more (counted in the summary)")
    if report.problems:
        lines += ["", f"snapshot rows that could not be mapped ({len(report.problems)}; the run went on)"]
        for p in report.problems:
            lines.append(f"  {p.where:<14} {p.field or '-':<28} {p.why}")
    lines += ["", f"signed by the gateway key {signed_by} (verified)"]
    return lines


def report_json(report: reconcile_pb2.ReconciliationReport, *, signed_by: str) -> dict[str, Any]:
    def side(s: Any, gateway: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": s.version,
            "state": STATE_NAMES.get(s.state, s.state),
            "content_sha256": s.content_sha256.hex(),
        }
        if gateway:
            out |= {"keyid": s.keyid, "log_index": s.log_index}
        return out

    return {
        "run_id": report.run_id,
        "participant": report.participant,
        "started_at": _time(report.started_at),
        "finished_at": _time(report.finished_at),
        "snapshot_size": report.snapshot_size,
        "gateway_records": report.gateway_records,
        "request_bytes": report.request_bytes,
        "recognised_keyids": list(report.recognised_keyids),
        "summary": {CLASS_NAMES.get(c.category, str(c.category)): c.count for c in report.summary},
        "discrepancies": [
            {
                "class": CLASS_NAMES.get(d.category, str(d.category)),
                "record_key": d.record_key,
                "local": side(d.local, False) if d.HasField("local") else None,
                "gateway": side(d.gateway, True) if d.HasField("gateway") else None,
            }
            for d in report.discrepancies
        ],
        "discrepancies_omitted": report.discrepancies_omitted,
        "problems": [{"where": p.where, "field": p.field, "why": p.why} for p in report.problems],
        "signed_by": signed_by,
    }


def _print_report(report: reconcile_pb2.ReconciliationReport, envelope: Any, as_json: bool) -> None:
    signed_by = envelope.signatures[0].keyid
    if as_json:
        print(json.dumps(report_json(report, signed_by=signed_by), indent=2, ensure_ascii=False))
    else:
        print("\n".join(report_lines(report, signed_by=signed_by)))


def _found(report: reconcile_pb2.ReconciliationReport) -> bool:
    return bool(sum(c.count for c in report.summary) or report.problems)


def _snapshot(args: argparse.Namespace) -> Iterable[MappedLike]:
    from gateway.reconcile.participant import read_records_file

    if args.records is not None:
        if not args.records.exists() and not args.records.is_fifo():
            raise FileNotFoundError(f"no records file {args.records}")
        return read_records_file(args.records)
    try:
        from adapters import load_adapter  # type: ignore[attr-defined]
    except ImportError:
        raise ValueError(
            "this installation has no adapter runner (adapters.load_adapter); use --records"
        ) from None
    snapshot: Iterable[MappedLike] = load_adapter(args.adapter).snapshot()
    return snapshot


def _recognised(args: argparse.Namespace, federation_dir: Path) -> list[str]:
    if args.recognise:
        return list(args.recognise)
    from gateway.registry.federation import load_federation

    # The participant's own copy of the federation file says which keys are its own.
    federation = load_federation(args.federation or federation_dir)
    return sorted(k.keyid for k in federation.keys.values() if k.owner == args.participant)


def _progress(enabled: bool) -> tuple[Callable[[str, int], None], Callable[[], None]]:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, n: int) -> None:
        if stage.startswith("run "):
            print(stage, file=sys.stderr, flush=True)
            return
        if stage not in bars:
            unit = "rows" if stage == "read" else "buckets"
            label = "reading the snapshot" if stage == "read" else "comparing with the gateway"
            bars[stage] = tqdm(desc=label, unit=f" {unit}", disable=not enabled, file=sys.stderr)
        bars[stage].update(n)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return update, close


def cmd_run(
    args: argparse.Namespace,
    *,
    federation_dir: Path,
) -> int:
    import grpc

    from gateway.reconcile.participant import SnapshotFailed, reconcile

    recognised = _recognised(args, federation_dir)
    rows = _snapshot(args)
    update, close = _progress(sys.stderr.isatty() and not args.no_progress)
    try:
        with _client(args, args.participant) as client:
            try:
                result = reconcile(
                    client,
                    participant=args.participant,
                    rows=rows,
                    recognised_keyids=recognised,
                    progress=update,
                )
            finally:
                close()
            _print_report(result.report, result.envelope, args.json)
            if result.missing_at_gateway and not args.no_submit:
                if args.adapter is not None:
                    if not _offer_missing_via_adapter(args.adapter, result.missing_at_gateway, yes=args.yes):
                        return EXIT_ERROR
                else:
                    _offer_missing(client, result.missing_at_gateway, yes=args.yes)
    except grpc.RpcError as exc:
        return gateway_failure(exc, args.address)
    except SnapshotFailed as exc:
        print(f"mrx: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_FOUND if _found(result.report) else EXIT_CLEAN


def _confirmed(records: list[Any], sender: str, *, yes: bool) -> bool:
    out = sys.stderr
    print(f"\n{len(records)} record(s) missing at the gateway:", file=out)
    for r in records:
        print(f"  {r.key}  v{r.version} {r.state.name}", file=out)
    if yes:
        return True
    if not sys.stdin.isatty():
        print("not sent: no terminal to confirm on; run again with --yes to send them", file=out)
        return False
    answer = input(f"send these {len(records)} record(s), signed as {sender}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        print("not sent", file=out)
        return False
    return True


def _offer_missing_via_adapter(config: Path, records: list[Any], *, yes: bool) -> bool:
    """Send through the adapter runner's path (its key, outbox and receipts; adapters/nightly.py),
    so a record the runner sent, or will read later, is never sent twice."""
    from adapters import load_adapter
    from adapters.base import AdapterError
    from adapters.nightly import send_missing
    from adapters.runner import runner_for

    out = sys.stderr
    adapter = load_adapter(config)
    if not _confirmed(records, adapter.participant, yes=yes):
        return True
    try:
        runner = runner_for(adapter, dry_run=False, progress=False)
        try:
            done = send_missing(runner, records)
        finally:
            runner.close()
    except AdapterError as err:  # no key in the config, the gateway unreachable (outbox kept), ...
        print(f"mrx: not sent: {err}", file=out)
        return False
    for key, index in sorted(done.already.items()):
        print(f"  already sent {key}: original receipt, log #{index}", file=out)
    for key, reason in sorted(done.refused.items()):
        print(f"  refused {key}: {reason}", file=out)
    print(
        f"sent {len(done.sent)}, already sent earlier {len(done.already)}, refused {len(done.refused)}",
        file=out,
    )
    return True


def _offer_missing(client: ReconcileClient, records: list[Any], *, yes: bool) -> None:
    """Show what would be sent; send it (signed, the shared message ids) if confirmed."""
    from gateway.reconcile.digests import message_id

    out = sys.stderr
    if not _confirmed(records, client.sender or "", yes=yes):
        return
    outcomes = client.submit_batch(client.sign(r, message_id=message_id(r)) for r in records)
    sent = already = refused = 0
    for record, outcome in zip(records, outcomes, strict=True):
        if outcome.receipt is not None:
            sent += 1
        elif outcome.refusal is not None and outcome.refusal.reason == "MESSAGE_ID_REUSED":
            already += 1  # sent by an earlier run: the deterministic id makes it once only
        else:
            refused += 1
            print(f"  refused {record.key}: {outcome.refusal}", file=out)
    print(f"sent {sent}, already sent earlier {already}, refused {refused}", file=out)


def cmd_report(
    args: argparse.Namespace,
    *,
    federation_dir: Path,
) -> int:
    import grpc

    try:
        with _client(args, args.principal) as client:
            response = client.call("GetReport", reconcile_pb2.GetReportRequest(run_id=args.run_id))
            from gateway.client import verify_report

            report = verify_report(response.report, client.gateway_keys)
    except grpc.RpcError as exc:
        return gateway_failure(exc, args.address)
    _print_report(report, response.report, args.json)
    return EXIT_CLEAN


def _run_rows(items: Iterator[reconcile_pb2.ListRunsItem]) -> tuple[list[Any], list[Any]]:
    runs: list[Any] = []
    behind: list[Any] = []
    for item in items:
        (runs if item.WhichOneof("item") == "run" else behind).append(
            item.run if item.WhichOneof("item") == "run" else item.not_reconciled
        )
    return runs, behind


def cmd_list(
    args: argparse.Namespace,
    *,
    federation_dir: Path,
) -> int:
    import grpc

    try:
        with _client(args, args.principal) as client:
            runs, behind = _run_rows(client.list_runs(participant=args.participant or "", limit=args.limit))
    except grpc.RpcError as exc:
        return gateway_failure(exc, args.address)
    if args.json:
        print(
            json.dumps(
                {
                    "runs": [
                        {
                            "run_id": r.run_id,
                            "participant": r.participant,
                            "status": STATUS_NAMES.get(r.status, str(r.status)),
                            "started_at": _time(r.started_at),
                            "ended_at": _time(r.ended_at) if r.HasField("ended_at") else None,
                            "snapshot_size": r.snapshot_size,
                            "failure": r.failure or None,
                            "summary": {
                                CLASS_NAMES.get(c.category, str(c.category)): c.count for c in r.summary
                            },
                        }
                        for r in runs
                    ],
                    "not_reconciled": [
                        {
                            "participant": b.participant,
                            "last_complete": _time(b.last_complete) if b.HasField("last_complete") else None,
                        }
                        for b in behind
                    ],
                },
                indent=2,
            )
        )
        return EXIT_CLEAN
    head = ("run", "participant", "status", "started", "ended")
    print(f"{head[0]:<38} {head[1]:<12} {head[2]:<10} {head[3]:<24} {head[4]:<24} {'rows':>8} {'found':>6}")
    for r in runs:
        found = sum(c.count for c in r.summary)
        ended = _time(r.ended_at) if r.HasField("ended_at") else "-"
        status = STATUS_NAMES.get(r.status, "?")
        print(
            f"{r.run_id:<38} {r.participant:<12} {status:<10} {_time(r.started_at):<24} "
            f"{ended:<24} {r.snapshot_size:>8} {found if r.status == 2 else '-':>6}"
        )
    if not runs:
        print("(no runs)")
    for r in runs:
        if r.failure:
            print(f"  {r.run_id} failed: {r.failure}")
    print("\nnot reconciled in the last 24 hours")
    for b in behind:
        last = _time(b.last_complete) if b.HasField("last_complete") else "never"
        print(f"  {b.participant:<12} last complete run: {last}")
    if not behind:
        print("  (every member reconciled)")
    return EXIT_CLEAN


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    federation_dir: Callable[[], Path],
) -> None:
    reconcile = sub.add_parser(
        "reconcile", help="reconcile local records with the gateway's ledger (docs/reconciliation.md)"
    )
    rsub = reconcile.add_subparsers(dest="reconcile_command", required=True)

    def common(parser: argparse.ArgumentParser, who: str, help_who: str) -> None:
        parser.add_argument(
            "--address", default="127.0.0.1:7443", help="gateway host:port (default %(default)s)"
        )
        parser.add_argument(f"--{who}", required=True, help=help_who)
        parser.add_argument("--key", type=Path, required=True, help="its private key (PEM)")
        parser.add_argument("--keyid", required=True, help="its key id in the federation, e.g. CN-JS/2026-01")
        parser.add_argument("--timeout", type=float, default=60.0, help="per-call timeout in seconds")
        add_client_tls_args(parser)

    def bind(fn: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: fn(args, federation_dir=federation_dir())

    run = rsub.add_parser(
        "run", help="reconcile a participant's snapshot now; exit 1 if anything differs (0 clean, 2 error)"
    )
    common(run, "participant", "the participant whose records these are, e.g. CN-JS (signs the calls)")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--adapter", type=Path, help="adapter configuration whose snapshot to reconcile")
    source.add_argument(
        "--records", type=Path, help="JSON lines of records, one Submission record field per line"
    )
    run.add_argument(
        "--recognise",
        action="append",
        metavar="KEYID",
        help="a key id the participant recognises as its own (repeat; default: its keys in --federation)",
    )
    run.add_argument("--federation", type=Path, help="your copy of the federation directory (default: keys/)")
    run.add_argument(
        "--yes", action="store_true", help="send the records missing at the gateway without asking"
    )
    run.add_argument("--no-submit", action="store_true", help="never offer to send missing records")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    run.set_defaults(func=bind(cmd_run))

    report = rsub.add_parser("report", help="show a run's signed report")
    report.add_argument("run_id", metavar="ID", help="the run id")
    common(report, "principal", "who reads: the participant, its secretariat or the gateway")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.set_defaults(func=bind(cmd_report))

    runs = rsub.add_parser("list", help="runs you may see, and the members not reconciled in the last 24 h")
    common(runs, "principal", "who reads, e.g. YRD-SEC")
    runs.add_argument("--participant", help="only this participant's runs")
    runs.add_argument("--limit", type=int, default=100, help="at most this many runs (default %(default)s)")
    runs.add_argument("--json", action="store_true", help="print as JSON")
    runs.set_defaults(func=bind(cmd_list))
