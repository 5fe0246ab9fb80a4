#!/usr/bin/env python
"""CPU the observability adds per submission: the metric updates one unary Submit makes.

    python bench/metrics_bench.py              # plain registry (mrx serve --fronts 1)
    python bench/metrics_bench.py --multiproc  # multiprocess mode (mrx serve --fronts N)

One unary Submit updates: mrx_rpc_requests_total (inc), mrx_rpc_latency_seconds
(observe), mrx_submissions_total (inc), and its share of mrx_group_commit_records
(observe, once per transaction); the interceptor also sets the request-id context
variable and checks the metadata. Timed here in one thread with process CPU time,
without gRPC, so the figure is the instrumentation's own cost per record.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--multiproc", action="store_true")
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    if args.multiproc:
        from gateway.observability.multiproc import prepare_multiprocess_dir, remove_multiprocess_dir

        path = prepare_multiprocess_dir()
    from gateway.observability import metrics
    from gateway.observability.logs import REQUEST_ID, request_id_from

    method = "/mrx.v1.ExchangeService/Submit"
    start = time.process_time()
    for i in range(args.records):
        REQUEST_ID.set(request_id_from("bench-request-1"))
        metrics.note_submission(None)
        metrics.RPC_REQUESTS.labels(method, "OK").inc()
        metrics.RPC_LATENCY.labels(method).observe(0.0012)
        if i % 16 == 0:  # a group commit of 16
            metrics.GROUP_COMMIT_RECORDS.observe(16)
    cpu = time.process_time() - start
    mode = "multiprocess" if args.multiproc else "plain registry"
    print(f"{mode}: {args.records} records, {cpu * 1e6 / args.records:.2f} us CPU per record")
    if args.multiproc:
        remove_multiprocess_dir(path)
    print(f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
