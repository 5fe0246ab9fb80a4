"""``mrx reconcile run / report / list`` as a province and a secretariat run them, and a
participant killed with SIGKILL half-way through a run.

The gateway runs in-process on the real clock (the command line signs with the real
time) with a short lease, so a killed run lapses within seconds; the command line runs
as a separate process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.client import GatewayClient, ReconcileClient
from gateway.crypto.suites import PrivateKey
from gateway.demo_fixtures import demo_certificates
from gateway.domain.certificates import CertState
from gateway.pb import reconcile_pb2
from gateway.reconcile.digests import message_id
from gateway.reconcile.participant import record_line
from gateway.registry.federation import Federation
from gateway.server import CHINA, Gateway, start_gateway
from gateway.store.engine import Engines

pytestmark = pytest.mark.e2e

MRX = [sys.executable, "-m", "gateway.cli"]
LEASE = timedelta(seconds=4)


def mrx(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MRX, *args], capture_output=True, text=True, timeout=120, check=False, input=stdin or ""
    )


@pytest.fixture
def live(
    database_url: str,
    base_federation: Federation,
    signers: dict[str, PrivateKey],
    open_store: Callable[[str], Engines],
) -> Iterator[Gateway]:
    gw = start_gateway(
        federation=base_federation,
        engines=open_store(database_url),
        gateway_key=signers["MRX-GW"],
        checkpoint_interval=3600,
        reconcile_lease=LEASE,
    )
    yield gw
    gw.stop()


def who(code: str, federation_paths: dict[str, Path], flag: str = "--principal") -> list[str]:
    return [flag, code, "--key", str(federation_paths[code]), "--keyid", f"{code}/demo"]


def today() -> Any:
    return datetime.now(UTC).astimezone(CHINA).date()


def test_a_province_reconciles_reads_the_report_and_sends_what_is_missing_once(
    live: Gateway,
    signers: dict[str, PrivateKey],
    federation_paths: dict[str, Path],
    federation_dir: Path,
    tmp_path: Path,
) -> None:
    certs = demo_certificates("CN-JS", count=4, today=today())
    with GatewayClient(live.address, sender="CN-JS", signer=signers["CN-JS"]) as js:
        assert all(o.receipt is not None for o in js.publish_batch(certs[:3]))
    suspended = dataclasses.replace(certs[1], state=CertState.SUSPENDED, reason="监督抽查不合格")
    bad_code = record_line(certs[2]).replace(certs[2].holder.credit_code, "91320000XXXXXXXXXX")
    records = tmp_path / "cn-js.jsonl"
    records.write_text(
        "\n".join(
            [record_line(certs[0]), record_line(suspended), record_line(certs[3]), "{not json", bad_code]
        )
        + "\n",
        encoding="utf-8",
    )
    base = ["reconcile", "run", "--address", live.address, *who("CN-JS", federation_paths, "--participant")]
    base += ["--records", str(records), "--federation", str(federation_dir), "--no-progress"]

    first = mrx(*base)
    assert first.returncode == 1, first.stderr  # differences found
    out = first.stdout
    assert "MISSING_AT_GATEWAY             1" in out and "STATE_DIFFERS                  1" in out
    assert "MISSING_LOCALLY                1" in out  # certs[2]: its only local row was malformed
    assert f"STATE_DIFFERS          {certs[1].key}" in out
    assert "v1 SUSPENDED" in out and "v1 VALID" in out and "CN-JS/demo #" in out
    assert "line 4" in out and "line 5" in out and "the run went on" in out
    assert "signed by the gateway key MRX-GW/demo (verified)" in out
    assert f"{certs[3].key}  v1 VALID" in first.stderr
    assert "not sent: no terminal to confirm on; run again with --yes" in first.stderr
    run_id = out.split()[2]

    sent = mrx(*base, "--yes", "--json")
    assert sent.returncode == 1, sent.stderr
    report = json.loads(sent.stdout)
    assert report["summary"]["MISSING_AT_GATEWAY"] == 1
    assert [d["record_key"] for d in report["discrepancies"] if d["class"] == "MISSING_AT_GATEWAY"] == [
        certs[3].key
    ]
    assert "sent 1, already sent earlier 0, refused 0" in sent.stderr

    # The record is now at the gateway; sending it again under its deterministic id is
    # refused as a reused message id, so it can never land twice.
    after = json.loads(mrx(*base, "--json").stdout)
    assert after["summary"]["MISSING_AT_GATEWAY"] == 0
    with GatewayClient(live.address, sender="CN-JS", signer=signers["CN-JS"]) as js:
        outcome = js.submit_batch([js.sign(certs[3], message_id=message_id(certs[3]))])[0]
        assert outcome.refusal is not None and outcome.refusal.reason == "MESSAGE_ID_REUSED"

    # The secretariat reads the report and the list, with who did not reconcile.
    shown = mrx("reconcile", "report", run_id, "--address", live.address, *who("YRD-SEC", federation_paths))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"reconciliation run {run_id}  participant CN-JS")
    as_json = json.loads(
        mrx(
            "reconcile",
            "report",
            run_id,
            "--json",
            "--address",
            live.address,
            *who("CN-JS", federation_paths),
        ).stdout
    )
    assert (as_json["run_id"], as_json["summary"]["STATE_DIFFERS"]) == (run_id, 1)
    listed = mrx("reconcile", "list", "--address", live.address, *who("YRD-SEC", federation_paths))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert sum(1 for line in lines if " CN-JS " in line and " complete " in line) == 3
    behind = lines[lines.index("not reconciled in the last 24 hours") + 1 :]
    assert sorted(line.split()[0] for line in behind) == ["CN-AH", "CN-SH", "CN-ZJ"]
    assert all("never" in line for line in behind)
    # Another alliance's secretariat does not see the run.
    other = mrx("reconcile", "report", run_id, "--address", live.address, *who("BTH-SEC", federation_paths))
    assert other.returncode == 2 and "RUN_NOT_FOUND" in other.stderr


def test_a_participant_killed_half_way_leaves_an_abandoned_run_and_the_next_run_completes(
    live: Gateway,
    signers: dict[str, PrivateKey],
    federation_paths: dict[str, Path],
    federation_dir: Path,
    tmp_path: Path,
) -> None:
    certs = demo_certificates("CN-ZJ", count=3, today=today())
    with GatewayClient(live.address, sender="CN-ZJ", signer=signers["CN-ZJ"]) as zj:
        zj.publish_batch(certs)
    fifo = tmp_path / "snapshot.fifo"
    os.mkfifo(fifo)
    base = ["reconcile", "run", "--address", live.address, *who("CN-ZJ", federation_paths, "--participant")]
    base += ["--federation", str(federation_dir), "--no-progress"]
    proc = subprocess.Popen([*MRX, *base, "--records", str(fifo)], stderr=subprocess.PIPE, text=True)
    started: list[str] = []
    reader = threading.Thread(target=lambda: started.append(proc.stderr.readline() if proc.stderr else ""))
    reader.start()
    reader.join(60)
    assert started and started[0].startswith("run "), started
    killed_run = started[0].split()[1]
    # The run is under way, reading its snapshot: kill the participant mid-read.
    with fifo.open("w", encoding="utf-8") as feed:
        feed.write(record_line(certs[0]) + "\n")
        feed.flush()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    with ReconcileClient(live.address, sender="CN-ZJ", signer=signers["CN-ZJ"]) as client:
        runs = {i.run.run_id: i.run.status for i in client.list_runs() if i.WhichOneof("item") == "run"}
        assert runs == {killed_run: reconcile_pb2.RUN_STATUS_RUNNING}
        time.sleep(LEASE.total_seconds() + 0.5)  # the lease lapses
        records = tmp_path / "cn-zj.jsonl"
        records.write_text("".join(record_line(c) + "\n" for c in certs), encoding="utf-8")
        done = mrx(*base, "--records", str(records))
        assert done.returncode == 0, done.stdout + done.stderr  # clean: nothing differs
        runs = {i.run.run_id: i.run.status for i in client.list_runs() if i.WhichOneof("item") == "run"}
        assert runs.pop(killed_run) == reconcile_pb2.RUN_STATUS_ABANDONED
        assert list(runs.values()) == [reconcile_pb2.RUN_STATUS_COMPLETE]
        # The abandoned run never gets a report, even if its participant came back.
        for call in (
            lambda: client.call("FinishRun", reconcile_pb2.FinishRunRequest(run_id=killed_run)),
            lambda: client.get_report(killed_run),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
