"""The adapter runner's own nightly reconciliation ([reconcile] in the adapter config,
adapters/nightly.py): the section checked, and a real APScheduler with a short schedule
reconciling the Jiangsu CSV system against a real gateway."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import load_adapter
from adapters.base import AdapterError
from adapters.nightly import RUNS, nightly_config, start_nightly
from gateway.client import ReconcileClient
from gateway.crypto.suites import PrivateKey
from gateway.pb import reconcile_pb2
from gateway.registry.federation import Federation
from gateway.server import Gateway, start_gateway
from gateway.store.engine import Engines

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("adapter_systems", ROOT / "tests/fixtures/adapters/systems.py")
assert _spec is not None and _spec.loader is not None
systems = sys.modules.setdefault("adapter_systems", importlib.util.module_from_spec(_spec))
if not hasattr(systems, "start"):
    _spec.loader.exec_module(systems)


@pytest.fixture
def jiangsu(tmp_path: Path) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:
        yield systems.start("jiangsu_ccc", tmp_path, stack)


def configure(system: Any, gateway: str, federation_paths: dict[str, Path], section: str) -> None:
    fed = federation_paths["CN-JS"].parent.parent
    text = system.config.read_text("utf-8").replace(
        '[gateway]\naddress = "127.0.0.1:1"',
        f'[gateway]\naddress = "{gateway}"\nkey = "{federation_paths["CN-JS"]}"\nkeyid = "CN-JS/demo"\n'
        f'federation = "{fed}"',
    )
    system.config.write_text(text + "\n" + section, "utf-8")


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ('[reconcile]\nat = "25:00"\n', "at"),
        ("[reconcile]\njitter = -1\n", "jitter"),
        ("[reconcile]\ngrace = 0\n", "grace"),
        ('[reconcile]\nenabled = "yes"\n', "enabled"),
        ('[reconcile]\nwhen = "02:00"\n', "when"),
        ('[reconcile]\nschedule = "not cron"\n', "schedule"),
    ],
)
def test_a_bad_reconcile_section_is_refused_naming_the_key(
    jiangsu: Any, federation_paths: dict[str, Path], section: str, named: str
) -> None:
    configure(jiangsu, "127.0.0.1:1", federation_paths, section)
    with pytest.raises(AdapterError, match=named):
        nightly_config(load_adapter(jiangsu.config).config)  # type: ignore[arg-type]


def test_defaults_and_disabling(jiangsu: Any, federation_paths: dict[str, Path]) -> None:
    config = load_adapter(jiangsu.config).config
    assert config is not None
    default = nightly_config(config)
    assert (default.enabled, default.at, default.jitter, default.grace) == (True, "02:00", 600, 21600.0)
    configure(jiangsu, "127.0.0.1:1", federation_paths, "[reconcile]\nenabled = false\n")
    off = load_adapter(jiangsu.config).config
    assert off is not None and start_nightly(off) is None
    assert not (off.state_dir / "schedule.db").exists()


@pytest.fixture
def live(
    database_url: str,
    base_federation: Federation,
    signers: dict[str, PrivateKey],
    open_store: Callable[[str], Engines],
) -> Iterator[Gateway]:
    # On the real clock: the scheduled job signs its requests with the real time.
    gw = start_gateway(
        federation=base_federation,
        engines=open_store(database_url),
        gateway_key=signers["MRX-GW"],
        checkpoint_interval=3600,
    )
    yield gw
    gw.stop()


def test_the_scheduled_job_reconciles_the_adapter_snapshot(
    live: Gateway, jiangsu: Any, federation_paths: dict[str, Path], signers: dict[str, PrivateKey]
) -> None:
    configure(
        jiangsu, live.address, federation_paths, '[reconcile]\nschedule = "*/1 * * * * *"\njitter = 0\n'
    )
    config = load_adapter(jiangsu.config).config
    assert config is not None
    scheduler = start_nightly(config)
    assert scheduler is not None
    runs = config.state_dir / RUNS
    try:
        deadline = time.monotonic() + 60
        while not (runs.exists() and runs.read_text("utf-8").strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        scheduler.shutdown(wait=True)
    assert (config.state_dir / "schedule.db").exists()  # the persistent job store
    first = json.loads(runs.read_text("utf-8").splitlines()[0])
    assert first["status"] == "complete", first
    # Nothing was ever sent: every good row is missing at the gateway, and the bad rows are counted.
    assert first["summary"]["MISSING_AT_GATEWAY"] > 0
    assert first["problems"] >= len(jiangsu.expected["bad"]) - 1
    with ReconcileClient(live.address, sender="CN-JS", signer=signers["CN-JS"]) as js:
        statuses = {i.run.run_id: i.run.status for i in js.list_runs() if i.WhichOneof("item") == "run"}
    assert statuses[first["run_id"]] == reconcile_pb2.RUN_STATUS_COMPLETE


def test_nights_missed_while_the_runner_was_down_reconcile_once_on_its_return(
    live: Gateway, jiangsu: Any, federation_paths: dict[str, Path]
) -> None:
    from datetime import datetime, timedelta

    from gateway.jobs.cron import CHINA

    # Three coming seconds of every minute stand in for three nights at 02:00.
    now = datetime.now(CHINA).replace(microsecond=0)
    times = [now + timedelta(seconds=n) for n in (3, 4, 5)]
    spec = f"{','.join(str(t.second) for t in times)} * * * * *"
    configure(jiangsu, live.address, federation_paths, f'[reconcile]\nschedule = "{spec}"\njitter = 0\n')
    config = load_adapter(jiangsu.config).config
    assert config is not None
    start_nightly(config).shutdown(wait=True)  # the runner stops before the first time
    while datetime.now(CHINA) < times[-1] + timedelta(seconds=0.6):  # down across all three
        time.sleep(0.1)
    runs = config.state_dir / RUNS
    assert not runs.exists()
    back = start_nightly(config)  # the runner comes back: the stored next run time is past
    try:
        deadline = time.monotonic() + 60
        while not (runs.exists() and runs.read_text("utf-8").strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # room for a second (wrong) run to show up
    finally:
        back.shutdown(wait=True)
    lines = runs.read_text("utf-8").splitlines()
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["status"] == "complete"
