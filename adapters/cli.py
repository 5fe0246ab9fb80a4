"""``mrx adapter run`` and ``mrx adapter check`` (wired into gateway.cli by one call)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import AdapterError, SourceError
from adapters.state import State

if TYPE_CHECKING:
    from adapters import Adapter
    from adapters.config import AdapterConfig
    from adapters.inbound import InboundSummary
    from adapters.runner import Runner

EXIT_OK, EXIT_ROWS, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3
log = logging.getLogger("mrx.adapter")


def add_adapter_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    adapter = sub.add_parser(
        "adapter", help="publish a local system's changes through an adapter (docs/adapters.md)"
    )
    adapter_sub = adapter.add_subparsers(dest="adapter_command", required=True)

    run = adapter_sub.add_parser(
        "run", help="poll the local source, sign and submit changes in batches, keep the cursor"
    )
    run.add_argument("config", type=Path, metavar="CONFIG", help="the adapter config file (TOML)")
    run.add_argument("--once", action="store_true", help="one pass, then exit")
    run.add_argument("--dry-run", action="store_true", help="show what would be sent; send and save nothing")
    run.add_argument(
        "--interval", type=float, help="seconds between polls (default: poll_interval in CONFIG)"
    )
    run.add_argument(
        "--progress", action="store_true", help="show a progress bar even when stderr is not a terminal"
    )
    run.set_defaults(func=cmd_adapter_run)

    check = adapter_sub.add_parser(
        "check", help="map every local row and report the ones that cannot be mapped (no gateway needed)"
    )
    check.add_argument("config", type=Path, metavar="CONFIG", help="the adapter config file (TOML)")
    check.set_defaults(func=cmd_adapter_check)


def cmd_adapter_check(args: argparse.Namespace) -> int:
    from adapters import load_adapter

    try:
        adapter = load_adapter(args.config)
        good = bad = 0
        for mapped in adapter.snapshot():
            if mapped.record is not None:
                good += 1
                for warning in mapped.warnings:
                    print(f"warning {mapped.where}: {warning}")
                continue
            bad += 1
            for problem in mapped.problems:
                print(f"cannot map {mapped.where}: {problem.field}: {problem.why}")
    except AdapterError as err:
        print(f"mrx adapter: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.config}: {good + bad} rows, {good} mapped, {bad} cannot be mapped")
    return EXIT_OK if bad == 0 else EXIT_ROWS


def cmd_adapter_run(args: argparse.Namespace) -> int:
    from adapters import load_adapter
    from adapters.inbound import InboundUnavailable
    from adapters.runner import GatewayUnavailable, runner_for

    try:
        adapter = load_adapter(args.config)
        config = adapter.config
        assert config is not None
        runner = runner_for(adapter, dry_run=args.dry_run, progress=args.progress or sys.stderr.isatty())
    except AdapterError as err:
        print(f"mrx adapter: {err}", file=sys.stderr)
        return EXIT_CONFIG
    inbound = None if args.dry_run else _inbound(adapter, runner)
    try:
        if args.once or args.dry_run:
            summary = runner.run_once(dry_run=args.dry_run)
            prefix = "dry run (nothing sent): " if args.dry_run else ""
            lines = summary.lines()
            print(prefix + lines[0])
            for line in lines[1:]:
                print(line)
            if (summary.unmappable or summary.refused) and not args.dry_run:
                print(f"details: {config.state_dir / 'rejects.jsonl'}")
            if inbound is not None:
                print(inbound(until_caught_up=True).line())
            return EXIT_OK if summary.clean else EXIT_ROWS
        nightly = _start_nightly(config)
        try:
            with _inbound_thread(inbound):
                runner.run_loop(interval=args.interval or config.poll_interval)
        finally:
            if nightly is not None:
                nightly.shutdown(wait=False)
        return EXIT_OK
    except (GatewayUnavailable, InboundUnavailable) as err:
        print(f"mrx adapter: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (AdapterError, SourceError) as err:
        print(f"mrx adapter: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        runner.close()


def _start_nightly(config: AdapterConfig) -> Any:
    """The nightly reconciliation beside the polling loop ([reconcile]; adapters/nightly.py)."""
    from adapters.nightly import start_nightly

    return start_nightly(config)


# --- the inbound direction (docs/adapters.md, section 5) -----------------------------------


class _Inbound:
    """The inbound direction of one adapter: follows the change feed into its sink."""

    def __init__(self, follow: Callable[[bool, threading.Event], InboundSummary]):
        self._follow = follow
        self.stop = threading.Event()

    def __call__(self, *, until_caught_up: bool) -> InboundSummary:
        return self._follow(until_caught_up, self.stop)


def _inbound(adapter: Adapter, runner: Runner) -> _Inbound | None:
    """With a [sink]: a function that follows the change feed into the sink, else None."""
    import grpc

    from adapters.inbound import InboundUnavailable, federation_keys, follow
    from gateway.registry.federation import load_federation

    config = adapter.config
    sink = adapter.sink
    if config is None or sink is None:
        return None
    mapping = getattr(sink, "mapping", None)
    kinds = [mapping.kind] if mapping is not None else []
    pinned = (
        # The province's own copy: a gateway cannot slip in a key to pass off a forgery.
        federation_keys(load_federation(config.gateway.federation))
        if config.gateway.federation is not None
        else None
    )

    def run(until_caught_up: bool, stop: threading.Event) -> InboundSummary:
        keys_of = pinned
        if keys_of is None:  # asked when the feed starts, so an unreachable gateway is retried
            try:
                listed = runner.client.federation_keys()
            except grpc.RpcError as err:
                raise InboundUnavailable(
                    f"cannot list the federation's keys at {runner.client.target} ({err.code().name}); "
                    "nothing applied, the inbound cursor is unchanged"
                ) from None
            keys_of = {}
            for keyid, (owner, key) in listed.items():
                keys_of.setdefault(owner, {})[keyid] = key
        return follow(
            runner.client,
            sink,
            State(config.state_dir),
            participant=adapter.participant,
            keys_of=keys_of,
            kinds=kinds,
            until_caught_up=until_caught_up,
            retry_seconds=config.gateway.retry_seconds,
            stop=stop,
        )

    return _Inbound(run)


@contextlib.contextmanager
def _inbound_thread(inbound: _Inbound | None) -> Iterator[None]:
    """Follow the change feed live in a thread while the outbound loop polls."""
    if inbound is None:
        yield
        return

    import grpc

    def follow_forever() -> None:
        stop = inbound.stop
        while not stop.is_set():
            try:
                summary = inbound(until_caught_up=False)
                log.info("%s", summary.line())
            except (AdapterError, grpc.RpcError) as err:
                # Refused or unreachable: the cursor stays before the change; try again later.
                if stop.is_set():
                    return
                why = err if isinstance(err, AdapterError) else f"gateway: {err.code().name}"
                log.error("inbound: %s", why)
                print(f"mrx adapter: inbound: {why}", file=sys.stderr, flush=True)
                stop.wait(30)

    thread = threading.Thread(target=follow_forever, name="mrx-adapter-inbound", daemon=True)
    thread.start()
    try:
        yield
    finally:
        inbound.stop.set()


def runner_and_inbound(adapter: Adapter) -> tuple[Runner, _Inbound | None]:
    """What `mrx adapter run` builds for an adapter: its runner and (with a [sink]) its
    inbound direction. For ``mrx demo --adapters``, which runs three adapters in-process."""
    from adapters.runner import runner_for

    runner = runner_for(adapter, dry_run=False, progress=False)
    return runner, _inbound(adapter, runner)
