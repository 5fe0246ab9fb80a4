"""Seeded fuzzing of every RPC: no input a caller can send makes the gateway answer
INTERNAL (or UNKNOWN), crash, or stop answering.

Each case is a request body (random bytes, a valid request cut or with bytes flipped, or
a valid request with hostile field values: huge numbers, long strings, control
characters, deep nesting) sent as raw bytes. Reads are signed over the exact fuzzed
bytes, so the cases get past authentication into the handlers. Bounded: a fixed number
of cases, a fixed seed, and a time budget.
"""

from __future__ import annotations

import base64
import random
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.client import ReconcileClient
from gateway.crypto.reads import sign_read
from gateway.pb import audit_pb2, exchange_pb2, recognition_pb2, reconcile_pb2, registry_pb2
from gateway.services.auth import ReadLimits

CASES = 2400
BUDGET_SECONDS = 60
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

SIGNED = {
    "/mrx.v1.ExchangeService/GetCertificate": exchange_pb2.GetCertificateRequest(
        scheme=1, certificate_number="X"
    ),
    "/mrx.v1.ExchangeService/QueryCertificates": exchange_pb2.QueryCertificatesRequest(
        page_size=3, page_token="abc"
    ),
    "/mrx.v1.ExchangeService/GetRecord": exchange_pb2.GetRecordRequest(record_key="assessor/CN-JS/A"),
    "/mrx.v1.AuditService/GetCheckpoint": audit_pb2.GetCheckpointRequest(),
    "/mrx.v1.AuditService/GetInclusionProof": audit_pb2.GetInclusionProofRequest(log_index=1, tree_size=2),
    "/mrx.v1.AuditService/GetConsistencyProof": audit_pb2.GetConsistencyProofRequest(old_size=1, new_size=2),
    "/mrx.v1.AuditService/ListExchanges": audit_pb2.ListExchangesRequest(page_size=2),
    "/mrx.v1.AuditService/GetEnvelope": audit_pb2.GetEnvelopeRequest(log_index=0),
    "/mrx.v1.RecognitionService/CheckRecognition": recognition_pb2.CheckRecognitionRequest(
        record_key="test_report/CN-JS/R1", as_of="2026-11-23"
    ),
    # Reconciliation: run_id filled below with a real run of the signer (CN-SH).
    "/mrx.v1.ReconciliationService/StartRun": reconcile_pb2.StartRunRequest(
        participant="CN-SH", recognised_keyids=["CN-SH/demo"]
    ),
    "/mrx.v1.ReconciliationService/Heartbeat": reconcile_pb2.HeartbeatRequest(),
    "/mrx.v1.ReconciliationService/CompareBuckets": reconcile_pb2.CompareBucketsRequest(
        bits=4, parent_bits=0, buckets=[reconcile_pb2.BucketDigest(prefix=3, count=2, digest=bytes(16))]
    ),
    "/mrx.v1.ReconciliationService/CompareRecords": reconcile_pb2.CompareRecordsRequest(
        bits=0,
        prefixes=[0],
        entries=[
            reconcile_pb2.RecordDigest(
                record_key="test_report/CN-SH/R1", version=1, state=1, content_sha256=bytes(32)
            )
        ],
    ),
    "/mrx.v1.ReconciliationService/FinishRun": reconcile_pb2.FinishRunRequest(
        snapshot_size=3, problems=[reconcile_pb2.RowProblem(where="line 1", field="x", why="y")]
    ),
    "/mrx.v1.ReconciliationService/GetReport": reconcile_pb2.GetReportRequest(),
}
RUN_SCOPED = [m for m in SIGNED if "Reconciliation" in m and "StartRun" not in m]
OPEN = {
    "/mrx.v1.ExchangeService/Submit": None,  # filled with a real envelope below
    "/mrx.v1.ExchangeService/SubmitBatch": None,
    "/mrx.v1.RegistryService/ListKeys": registry_pb2.ListKeysRequest(owner="CN-JS"),
    "/mrx.v1.RegistryService/ListParticipants": registry_pb2.ListParticipantsRequest(),
}
HOSTILE_STRINGS = ["", "\x00", "A" * 5000, "../../etc", "assessor/CN-JS/" + "\x7f" * 10, "[" * 300, "é" * 300]
HOSTILE_INTS = [0, 1, -1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]


def _mutate(rng: random.Random, body: bytes) -> bytes:
    choice = rng.randrange(5)
    data = bytearray(body)
    if choice == 0 or not data:
        return rng.randbytes(rng.randrange(0, 64))
    if choice == 1:
        return bytes(data[: rng.randrange(len(data))])
    if choice == 2:
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if choice == 3:  # an unknown or repeated field appended
        return (
            bytes(data) + bytes([rng.randrange(1, 255), rng.randrange(256)]) + rng.randbytes(rng.randrange(8))
        )
    return bytes(data) + bytes(data)  # fields repeated: last one wins, lists grow


def _hostile(rng: random.Random, message):
    msg = type(message)()
    msg.CopyFrom(message)
    # One member of each oneof, or setting the next would clear it.
    chosen = {o.name: rng.choice(o.fields).name for o in msg.DESCRIPTOR.oneofs}
    for field in msg.DESCRIPTOR.fields:
        if field.message_type is not None or field.is_repeated:
            continue
        if field.containing_oneof is not None and chosen[field.containing_oneof.name] != field.name:
            continue
        try:
            if field.type == field.TYPE_STRING:
                value = rng.choice(HOSTILE_STRINGS)
                if rng.random() < 0.2:
                    value = base64.urlsafe_b64encode(value.encode()).decode()
                setattr(msg, field.name, value)
            elif field.type == field.TYPE_BYTES:
                setattr(msg, field.name, rng.randbytes(rng.choice([0, 1, 31, 32, 33, 300])))
            elif field.cpp_type in (
                field.CPPTYPE_INT32,
                field.CPPTYPE_INT64,
                field.CPPTYPE_UINT32,
                field.CPPTYPE_UINT64,
            ):
                setattr(msg, field.name, rng.choice(HOSTILE_INTS))
            elif field.cpp_type == field.CPPTYPE_ENUM:
                setattr(msg, field.name, rng.choice([0, 1, 99, 2**31 - 1]))
        except (ValueError, TypeError):
            continue  # out of the field's own range: the library refuses to encode it
    return msg.SerializeToString()


def _principal(method: str) -> str:
    if "Audit" in method:
        return "YRD-SEC"
    return "CN-ZJ" if method.endswith("/FinishRun") else "CN-SH"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_input_makes_the_gateway_answer_internal(
    gateway_factory, client_for, certs_of, make_env, signers, clock
):
    running = gateway_factory(read_limits=ReadLimits(rate=1e6, burst=1e6))
    js = client_for("CN-JS", target=running.address)
    cert = certs_of("CN-JS")[0]
    js.publish(cert)
    OPEN["/mrx.v1.ExchangeService/Submit"] = exchange_pb2.SubmitRequest(
        envelope=make_env(certs_of("CN-JS", 1, 2)[0])
    )
    OPEN["/mrx.v1.ExchangeService/SubmitBatch"] = exchange_pb2.SubmitBatchRequest(
        envelopes=[make_env(c) for c in certs_of("CN-JS", 2, 3)]
    )
    # Running runs, so the cases reach the comparison, not only RUN_NOT_FOUND. One run per
    # participant at a time: FinishRun (which may end its run) gets CN-ZJ's own.
    for code in ("CN-SH", "CN-ZJ"):
        with ReconcileClient(running.address, sender=code, signer=signers[code], clock=clock) as rc:
            run_id = rc.call("StartRun", reconcile_pb2.StartRunRequest(participant=code)).run_id
        for method in RUN_SCOPED:
            if _principal(method) == code:
                SIGNED[method].run_id = run_id
    rng = random.Random(20261123)
    methods = [*SIGNED.items(), *OPEN.items()]
    seen: dict[str, int] = {}
    failures: list[str] = []
    started = time.monotonic()
    with grpc.insecure_channel(running.address) as channel:
        for case in range(CASES):
            if time.monotonic() - started > BUDGET_SECONDS:
                break
            method, template = methods[case % len(methods)]
            assert template is not None
            body = (
                _hostile(rng, template) if rng.random() < 0.5 else _mutate(rng, template.SerializeToString())
            )
            metadata = []
            if method in SIGNED and rng.random() < 0.9:
                who = _principal(method)
                metadata = sign_read(
                    signer=signers[who], principal=who, method=method, request=body, now=clock.now
                )
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                call(body, metadata=metadata, timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as err:
                code = err.code()
                if code in BAD:
                    failures.append(f"{method} {body[:80]!r}: {code} {err.details()}")
            seen[code.name] = seen.get(code.name, 0) + 1
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    assert not failures, "\n".join(failures[:20])
    assert sum(seen.values()) >= CASES // 2, seen  # the budget was not eaten by a hang
    # The cases reached the handlers, not only the decoder and the signature check.
    assert seen.get("OK", 0) > 50 and seen.get("INVALID_ARGUMENT", 0) > 50, seen
