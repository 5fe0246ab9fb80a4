"""ReconciliationService: thin; authentication and who-may-do-what here, the rest in
gateway/reconcile/engine.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc

from gateway.convert import KIND_NUMBERS
from gateway.domain.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from gateway.pb import reconcile_pb2, reconcile_pb2_grpc
from gateway.reconcile.digests import entry
from gateway.reconcile.engine import CLASSES, Reconciler, from_us
from gateway.registry.federation import Federation, Role
from gateway.services.auth import Principal, ReadAuthenticator
from gateway.services.errors import REQUEST_BYTES
from gateway.services.paging import has_control_chars
from gateway.store.reconcile import Run

SERVICE = "/mrx.v1.ReconciliationService/"
MAX_KEYIDS = 64
MAX_BUCKETS = 65_536
MAX_ENTRIES = 10_000
MAX_PROBLEMS = 10_000
MAX_LIMIT = 1_000
NOT_RECONCILED_WITHIN = timedelta(hours=24)


def _too_many(what: str, limit: int) -> InvalidArgument:
    return InvalidArgument(
        f"at most {limit:,} {what} per call; split them",
        reason="TOO_MANY_ITEMS",
        violations=[FieldViolation(what, f"at most {limit}")],
    )


class ReconciliationServicer(reconcile_pb2_grpc.ReconciliationServiceServicer):
    def __init__(self, *, federation: Federation, auth: ReadAuthenticator, reconciler: Reconciler):
        self._federation = federation
        self._auth = auth
        self._engine = reconciler

    def _own_run(self, context: Any, name: str, request: Any) -> Run:
        principal = self._auth.authenticate(context, SERVICE + name, request)
        if not request.run_id:
            raise InvalidArgument("run_id: required", violations=[FieldViolation("run_id", "required")])
        run = self._engine.run(request.run_id)
        if run.participant != principal.code:
            raise PermissionDenied(
                f"{principal.code} may not take part in {run.participant}'s reconciliation run",
                reason="NOT_OWN_RECORDS",
                metadata={"principal": principal.code},
            )
        return run

    def StartRun(
        self, request: reconcile_pb2.StartRunRequest, context: grpc.ServicerContext
    ) -> reconcile_pb2.StartRunResponse:
        principal = self._auth.authenticate(context, SERVICE + "StartRun", request)
        if principal.participant.role is not Role.MEMBER:
            raise PermissionDenied(
                f"{principal.code} is not a member participant: it may list and read its members' runs, "
                "not run one for them",
                reason="READ_ONLY_PRINCIPAL",
            )
        if not request.participant:
            raise InvalidArgument(
                "participant: required", violations=[FieldViolation("participant", "required")]
            )
        if request.participant != principal.code:
            raise PermissionDenied(
                f"{principal.code} may reconcile only its own records, not {request.participant[:16]}'s",
                reason="NOT_OWN_RECORDS",
                metadata={"principal": principal.code, "participant": request.participant[:16]},
            )
        if len(request.recognised_keyids) > MAX_KEYIDS:
            raise _too_many("recognised_keyids", MAX_KEYIDS)
        bad = [k for k in request.recognised_keyids if not k or len(k) > 128 or has_control_chars(k)]
        if bad:
            raise InvalidArgument(
                "recognised_keyids: each 1-128 characters, no control characters",
                violations=[FieldViolation("recognised_keyids", "each 1-128 characters")],
            )
        started = self._engine.start(
            principal.code, list(request.recognised_keyids), request_bytes=len(REQUEST_BYTES.get())
        )
        response = reconcile_pb2.StartRunResponse(
            run_id=started.run_id,
            lease_seconds=int(self._engine.lease.total_seconds()),
            abandoned_runs=started.abandoned,
        )
        response.started_at.FromDatetime(started.started_at)
        return response

    def Heartbeat(
        self, request: reconcile_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> reconcile_pb2.HeartbeatResponse:
        run = self._own_run(context, "Heartbeat", request)
        response = reconcile_pb2.HeartbeatResponse()
        response.lease_until.FromDatetime(self._engine.touch(run, len(REQUEST_BYTES.get())))
        return response

    def CompareBuckets(
        self, request: reconcile_pb2.CompareBucketsRequest, context: grpc.ServicerContext
    ) -> reconcile_pb2.CompareBucketsResponse:
        run = self._own_run(context, "CompareBuckets", request)
        if len(request.buckets) > MAX_BUCKETS or len(request.parents) > MAX_BUCKETS:
            raise _too_many("buckets", MAX_BUCKETS)
        self._engine.touch(run, len(REQUEST_BYTES.get()))
        differing = self._engine.compare_buckets(
            run,
            bits=request.bits,
            parent_bits=request.parent_bits,
            parents=list(request.parents),
            buckets=[(b.prefix, b.count, b.digest) for b in request.buckets],
        )
        return reconcile_pb2.CompareBucketsResponse(
            differing=[
                reconcile_pb2.BucketDiff(prefix=p, participant_count=pc, gateway_count=gc)
                for p, pc, gc in differing
            ]
        )

    def CompareRecords(
        self, request: reconcile_pb2.CompareRecordsRequest, context: grpc.ServicerContext
    ) -> reconcile_pb2.CompareRecordsResponse:
        run = self._own_run(context, "CompareRecords", request)
        if len(request.entries) > MAX_ENTRIES or len(request.prefixes) > MAX_BUCKETS:
            raise _too_many("entries", MAX_ENTRIES)
        violations = []
        for i, e in enumerate(request.entries):
            where = f"entries[{i}]"
            if (
                not e.record_key
                or len(e.record_key) > 200
                # Refused before SQL: PostgreSQL refuses NUL in text.
                or has_control_chars(e.record_key)
                or e.record_key.split("/", 1)[0] not in KIND_NUMBERS
            ):
                violations.append(
                    FieldViolation(f"{where}.record_key", "not a record key (<kind>/.../<number>)")
                )
            if len(e.content_sha256) != 32:
                violations.append(FieldViolation(f"{where}.content_sha256", "must be 32 bytes (SHA-256)"))
            if len(violations) >= 50:
                break
        if violations:
            raise InvalidArgument(
                f"invalid entries: {violations[0].field}: {violations[0].description}", violations=violations
            )
        self._engine.touch(run, len(REQUEST_BYTES.get()))
        found = self._engine.compare_records(
            run,
            bits=request.bits,
            prefixes=list(request.prefixes),
            entries=[entry(e.record_key, e.version, e.state, e.content_sha256) for e in request.entries],
        )
        return reconcile_pb2.CompareRecordsResponse(discrepancies=found)

    def FinishRun(
        self, request: reconcile_pb2.FinishRunRequest, context: grpc.ServicerContext
    ) -> reconcile_pb2.FinishRunResponse:
        run = self._own_run(context, "FinishRun", request)
        if len(request.problems) > MAX_PROBLEMS:
            raise _too_many("problems", MAX_PROBLEMS)
        problems = [
            reconcile_pb2.RowProblem(where=p.where[:64], field=p.field[:64], why=p.why[:256])
            for p in request.problems
        ]
        self._engine.touch(run, len(REQUEST_BYTES.get()))
        if request.failure:
            self._engine.fail(run, snapshot_size=request.snapshot_size, failure=request.failure[:500])
            return reconcile_pb2.FinishRunResponse()
        envelope = self._engine.finish(run, snapshot_size=request.snapshot_size, problems=problems)
        return reconcile_pb2.FinishRunResponse(report=envelope)

    def GetReport(
        self, request: reconcile_pb2.GetReportRequest, context: grpc.ServicerContext
    ) -> reconcile_pb2.GetReportResponse:
        principal = self._auth.authenticate(context, SERVICE + "GetReport", request)
        if not request.run_id:
            raise InvalidArgument("run_id: required", violations=[FieldViolation("run_id", "required")])
        run = self._engine.run(request.run_id)
        if not principal.sees(run.participant):
            # The same answer as for a run that does not exist.
            raise NotFound(f"no reconciliation run {request.run_id[:40]}", reason="RUN_NOT_FOUND")
        return reconcile_pb2.GetReportResponse(report=self._engine.report(run))

    async def ListRuns(
        self, request: reconcile_pb2.ListRunsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[reconcile_pb2.ListRunsItem]:
        principal = await asyncio.to_thread(self._auth.authenticate, context, SERVICE + "ListRuns", request)
        if request.limit > MAX_LIMIT:
            raise InvalidArgument(
                f"limit: at most {MAX_LIMIT}", violations=[FieldViolation("limit", f"at most {MAX_LIMIT}")]
            )
        members = self._members(principal)
        if request.participant:
            principal.require_scope([request.participant[:16]], f"{request.participant[:16]}'s runs")
            members = [m for m in members if m == request.participant]
        scope = (
            [request.participant] if request.participant else (None if principal.parties is None else members)
        )
        runs = await asyncio.to_thread(self._engine.list_runs, scope, request.limit or 100)
        for run in runs:
            yield reconcile_pb2.ListRunsItem(run=_summary(run))
        last = await asyncio.to_thread(self._engine.last_complete, members)
        now = self._engine.now()
        for code in members:
            when = last.get(code)
            if when is None or when < now - NOT_RECONCILED_WITHIN:
                item = reconcile_pb2.NotReconciled(participant=code)
                if when is not None:
                    item.last_complete.FromDatetime(when)
                yield reconcile_pb2.ListRunsItem(not_reconciled=item)

    def _members(self, principal: Principal) -> list[str]:
        return [
            code
            for code, p in self._federation.participants.items()
            if p.role is Role.MEMBER and principal.sees(code)
        ]


def _summary(run: Run) -> reconcile_pb2.RunSummary:
    out = reconcile_pb2.RunSummary(
        run_id=run.run_id,
        participant=run.participant,
        status=run.status,  # type: ignore[arg-type]
        snapshot_size=run.snapshot_size or 0,
        failure=run.failure,
        summary=[reconcile_pb2.ClassCount(category=c, count=run.summary.get(int(c), 0)) for c in CLASSES]
        if run.summary
        else [],
    )
    out.started_at.FromDatetime(from_us(run.started_at_us))
    if run.ended_at_us is not None:
        out.ended_at.FromDatetime(from_us(run.ended_at_us))
    return out
