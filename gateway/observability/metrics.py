"""Every Prometheus metric the gateway exports, declared once (docs/operations.md lists them).

Names and labels are part of the operator's contract: alert rules and dashboards use them,
so they change only with a note in docs/operations.md. Label values are bounded sets
(RPC method names, status codes, refusal reasons from errors.proto, federation
participants), never caller-supplied text, so a caller cannot blow up the series count.

Several front processes (``mrx serve --fronts N``) each count their own calls. They use
prometheus-client's multiprocess mode: ``mrx serve`` sets PROMETHEUS_MULTIPROC_DIR before
this module is first imported, every process writes its values to memory-mapped files
there, and the process serving /metrics merges them. Gauges say how they merge
(``multiprocess_mode``). Why not one process aggregating over a pipe: that is a second
protocol to keep correct across process deaths, where the library's mode is tested and
costs one mmap write per observation.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as _multiprocess

from gateway.observability.multiproc import MULTIPROC_ENV

log = logging.getLogger(__name__)


# Unary calls answer in well under a millisecond to tens of milliseconds; streams last
# seconds to minutes, so the buckets reach past a minute.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
# Records per writer transaction: 1 under light unary load, up to 1,000 (max_items).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
LAG_BUCKETS = (0, 1, 10, 100, 1000, 10_000, 100_000, 1_000_000)

RPC_REQUESTS = Counter(
    "mrx_rpc_requests_total", "RPCs answered, by full method name and gRPC status code", ["method", "code"]
)
RPC_LATENCY = Histogram(
    "mrx_rpc_latency_seconds",
    "Time from a call's arrival to its status, by method (streams: the whole stream)",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
SUBMISSIONS = Counter(
    "mrx_submissions_total",
    "Submitted envelopes by outcome (accepted, refused, in_doubt) and refusal reason (empty if accepted)",
    ["outcome", "reason"],
)
GROUP_COMMIT_RECORDS = Histogram(
    "mrx_group_commit_records", "Submissions committed per writer transaction", buckets=BATCH_BUCKETS
)
LOG_SIZE = Gauge("mrx_log_size", "Entries in the audit log", multiprocess_mode="livemax")
CHECKPOINT_AGE = Gauge(
    "mrx_checkpoint_age_seconds",
    "Seconds since the newest signed checkpoint, while the log holds entries it does not cover "
    "(0 when it covers the whole log)",
    multiprocess_mode="livemax",
)
CHECKPOINT_SIZE = Gauge(
    "mrx_checkpoint_size", "Tree size of the newest signed checkpoint", multiprocess_mode="livemax"
)
SUBSCRIBERS = Gauge("mrx_subscribers", "Open Subscribe change-feed streams", multiprocess_mode="livesum")
SUBSCRIBER_LAG = Histogram(
    "mrx_subscriber_lag_entries",
    "Log entries between the head and what a subscriber was last sent, sampled per send",
    buckets=LAG_BUCKETS,
)
RECONCILIATION_RUNS = Counter(
    "mrx_reconciliation_runs_total",
    "Reconciliation runs by participant and status",
    ["participant", "status"],
)
RECONCILIATION_DISCREPANCIES = Counter(
    "mrx_reconciliation_discrepancies_total",
    "Discrepancies found by reconciliation, by participant and class",
    ["participant", "class"],
)
PARTICIPANT_LAST_RECONCILED = Gauge(
    "mrx_participant_last_reconciled_timestamp_seconds",
    "Unix time of the participant's last completed reconciliation",
    ["participant"],
    multiprocess_mode="max",
)
PARTICIPANTS_UNRECONCILED = Gauge(
    "mrx_participants_unreconciled",
    "Members the nightly check found with no complete reconciliation in the last 24 hours",
    multiprocess_mode="mostrecent",
)
SELF_AUDIT_OK = Gauge(
    "mrx_self_audit_ok",
    "1 if the last self-audit found the log consistent, else 0",
    multiprocess_mode="mostrecent",
)
SELF_AUDIT_LAST_RUN = Gauge(
    "mrx_self_audit_last_run_timestamp_seconds",
    "Unix time the last self-audit finished",
    multiprocess_mode="max",
)
GATEWAY_KEY_NOT_AFTER = Gauge(
    "mrx_gateway_key_not_after_timestamp_seconds",
    "Unix time the gateway's signing key stops being valid (its not_after); absent for a key without one",
    multiprocess_mode="min",
)
SIGNATURE_FAILURES = Counter(
    "mrx_signature_failures_total",
    "Submissions whose signature could not be tied to a valid key, by claimed participant and reason",
    ["participant", "reason"],
)
STORE_UP = Gauge(
    "mrx_store_up", "1 while the database answers the health probe, else 0", multiprocess_mode="livemin"
)
WRITER_UP = Gauge(
    "mrx_writer_up", "1 while the writer process accepts submissions, else 0", multiprocess_mode="livemin"
)

# The reasons that mean "this signature is not a valid federation signature", as opposed
# to a well-signed message the rules refuse.
SIGNATURE_REASONS = frozenset(
    {
        "UNKNOWN_KEY",
        "KEY_REVOKED",
        "KEY_NOT_YET_VALID",
        "KEY_EXPIRED",
        "SUITE_MISMATCH",
        "BAD_SIGNATURE",
        "SENDER_NOT_KEY_OWNER",
    }
)
# Refusals after which the submission may or may not have been committed (the writer
# or the database went away mid-commit): the caller retries the same bytes.
IN_DOUBT_REASONS = frozenset({"WRITER_UNAVAILABLE", "STORE_UNAVAILABLE"})


def note_submission(reason: str | None, *, after_commit_attempt: bool = False) -> None:
    """One submission's outcome: ``reason`` None means accepted."""
    if reason is None:
        SUBMISSIONS.labels("accepted", "").inc()
    elif after_commit_attempt and reason in IN_DOUBT_REASONS:
        SUBMISSIONS.labels("in_doubt", reason).inc()
    else:
        SUBMISSIONS.labels("refused", reason).inc()


def note_signature_failure(participant: str, reason: str) -> None:
    if reason in SIGNATURE_REASONS:
        SIGNATURE_FAILURES.labels(participant, reason).inc()


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def process_exited(pid: int) -> None:
    """Drop a dead front's live gauges (its counters stay in the totals)."""
    if multiprocess_enabled():
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class MetricsServer:
    """The /metrics HTTP endpoint, on its own port so that it is never exposed with the gRPC one."""

    def __init__(self, host: str, port: int):
        registry: CollectorRegistry | None = None
        if multiprocess_enabled():
            registry = CollectorRegistry()
            _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        kwargs: dict[str, Any] = {"addr": host}
        if registry is not None:
            kwargs["registry"] = registry
        self._server, self._thread = start_http_server(port, **kwargs)
        self.host = host
        self.port: int = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if isinstance(self._thread, threading.Thread):
            self._thread.join(5)
