"""docs/operations.md and docs/mrx-alerts.yml name every metric there is, and only those."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from gateway.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def _exported() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name
            names.add(f"{name}_total" if isinstance(value, Counter) else name)
    return names


def test_every_metric_is_declared_with_the_agreed_names():
    assert _exported() == {
        "mrx_rpc_requests_total",
        "mrx_rpc_latency_seconds",
        "mrx_submissions_total",
        "mrx_group_commit_records",
        "mrx_log_size",
        "mrx_checkpoint_age_seconds",
        "mrx_checkpoint_size",
        "mrx_subscribers",
        "mrx_subscriber_lag_entries",
        "mrx_reconciliation_runs_total",
        "mrx_reconciliation_discrepancies_total",
        "mrx_participant_last_reconciled_timestamp_seconds",
        "mrx_participants_unreconciled",
        "mrx_self_audit_ok",
        "mrx_self_audit_last_run_timestamp_seconds",
        "mrx_gateway_key_not_after_timestamp_seconds",
        "mrx_signature_failures_total",
        "mrx_store_up",
        "mrx_writer_up",
    }


def test_every_metric_is_documented():
    for name in _exported():
        assert f"| `{name}` |" in GUIDE, name


def test_the_alert_rules_parse_and_use_only_real_metrics():
    doc = yaml.safe_load((ROOT / "docs" / "mrx-alerts.yml").read_text(encoding="utf-8"))
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len(rules) >= 10
    exported = _exported()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("page", "ticket")
        for used in re.findall(r"\bmrx_[a-z_]+", rule["expr"]):
            base = re.sub(r"_(bucket|count|sum)$", "", used)
            assert used in exported or base in exported, (rule["alert"], used)
        assert f"`{rule['alert']}`" in GUIDE, rule["alert"]
    names = {rule["alert"] for rule in rules}
    for needed in (
        "MrxCheckpointTooOld",
        "MrxSelfAuditFailed",
        "MrxParticipantNotReconciled",
        "MrxHighErrorRate",
    ):
        assert needed in names
    assert "MrxStoreDown" in names and "MrxWriterDown" in names


def test_the_guide_keeps_its_sections():
    for heading in (
        "## Mutual TLS",
        "## Database schema and upgrades",
        "## Configuration",
        "## A two-replica deployment",
        "## Metrics and alerts",
        "## Keys",
        "## Backup and restore",
        "## Upgrading",
        "## When the self-audit alarms",
    ):
        assert f"\n{heading}\n" in GUIDE, heading
