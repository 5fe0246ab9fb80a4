"""Every record kind through a real gateway: publish, read back, versions, refusals.

Assessors, test reports, PT results and spot checks are signed by their issuer, stored,
and returned by GetRecord with the issuer's own envelope, which must still verify with
the issuer's key. Refusals are checked for their exact gRPC code, ErrorInfo reason and,
for INVALID_ARGUMENT, the BadRequest field paths. Runs on SQLite and PostgreSQL (see
tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import uuid
from datetime import UTC, date, datetime, time, timedelta

import grpc
import pytest

from gateway.client import GatewayClient
from gateway.convert import KIND_NUMBERS, record_from_proto, record_to_proto
from gateway.crypto.dsse import SUBMISSION_PAYLOAD_TYPE, sign_envelope
from gateway.demo_fixtures import (
    demo_assessors,
    demo_lab_cma_certificates,
    demo_pt_results,
    demo_spot_checks,
    demo_test_reports,
)
from gateway.domain.certificates import CertState
from gateway.domain.records import PtBoundaries, PtClass, Qualification, QualificationKind
from gateway.pb import envelope_pb2, exchange_pb2, records_pb2

Code = grpc.StatusCode
# Demo records are generated for this fixed day, so keys and dates do not drift.
REF = date(2026, 11, 1)
KINDS = ("assessor", "test_report", "pt_result", "spot_check")
REASONS = {
    CertState.SUSPENDED: "复检申请待处理，暂停",
    CertState.REVOKED: "数据造假，撤销",
    CertState.WITHDRAWN: "发布错误，撤回",
    CertState.VALID: "复核完成，恢复",
}


def sample(kind: str, issuer: str = "CN-JS"):
    """A VALID version-1 record of ``kind`` published by ``issuer``."""
    if kind == "assessor":
        return demo_assessors(issuer, count=1, today=REF)[0]
    if kind == "test_report":
        return demo_test_reports(issuer, count=1, today=REF)[0]
    if kind == "pt_result":
        return demo_pt_results(issuer, count=1, today=REF)[0]
    return demo_spot_checks(issuer, count=1, today=REF)[0]


def next_version(record, state: CertState, **changes):
    """The next version of ``record`` in ``state``, effective a day after the previous one."""
    return dataclasses.replace(
        record,
        version=record.version + 1,
        state=state,
        reason=REASONS[state],
        effective_at=record.effective_at + timedelta(days=1),
        **changes,
    )


def submit(client, envelope):
    """Raw Submit: the receipt envelope exactly as the gateway signed it."""
    return client.exchange.Submit(exchange_pb2.SubmitRequest(envelope=envelope), timeout=30).receipt


def decode(view: exchange_pb2.RecordView) -> records_pb2.Submission:
    return records_pb2.Submission.FromString(view.envelope.payload)


@pytest.fixture
def sign(signers, clock):
    """``sign(record, sender=..., signer=..., message_id=..., mutate=...)``: any kind as a submission.

    The sender defaults to the record's issuer (an assessor's home), the signer to the
    sender's demo key, created_at to the test clock; ``mutate`` edits the Submission
    before it is signed.
    """

    def _sign(record, *, sender=None, signer=None, message_id=None, mutate=None):
        sender = sender or record.issuer
        field, msg = record_to_proto(record)
        submission = records_pb2.Submission(
            header=records_pb2.SubmissionHeader(
                message_id=message_id or str(uuid.uuid4()),
                sender=sender,
                nonce=os.urandom(16),
                kind=KIND_NUMBERS[field],
            )
        )
        getattr(submission, field).CopyFrom(msg)
        submission.header.created_at.FromDatetime(clock.now)
        if mutate is not None:
            mutate(submission)
        return sign_envelope(
            payload_type=SUBMISSION_PAYLOAD_TYPE,
            payload=submission.SerializeToString(),
            signer=signer or signers[sender],
        )

    return _sign


# --- round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_round_trips_signed(kind, client_for, sign, issuer_verifies):
    record = sample(kind)
    env = sign(record)
    receipt = client_for("CN-JS").submit(env)
    assert receipt.outcome == envelope_pb2.OUTCOME_ACCEPTED
    assert (receipt.record_key, receipt.record_version) == (record.key, 1)
    assert receipt.record_key.startswith(f"{kind}/CN-JS/")
    assert receipt.envelope_sha256 == hashlib.sha256(env.SerializeToString(deterministic=True)).digest()

    view = client_for("CN-SH").get_record(record.key)  # any participant may read
    assert (view.record_key, view.version, view.log_index) == (record.key, 1, receipt.log_index)
    assert view.received_at == receipt.received_at
    assert view.effective_state == CertState.VALID
    # The issuer's envelope, byte for byte, and its signature still verifies.
    assert view.envelope.SerializeToString(deterministic=True) == env.SerializeToString(deterministic=True)
    assert view.envelope.signatures[0].keyid == "CN-JS/demo"
    assert issuer_verifies(view.envelope)
    submission = decode(view)
    assert submission.WhichOneof("record") == kind
    assert submission.header.kind == KIND_NUMBERS[kind]
    stored = getattr(submission, kind)
    assert stored == record_to_proto(record)[1]
    decoded, warnings = record_from_proto(stored)
    assert decoded == record
    assert warnings == []
    expected_class = int(record.classification) if kind == "pt_result" else 0
    assert view.pt_classification == expected_class


@pytest.mark.parametrize("kind", KINDS)
def test_identical_resubmission_returns_the_original_receipt(kind, client_for, sign, clock, store):
    js = client_for("CN-JS")
    env = sign(sample(kind))
    first = submit(js, env)
    clock.advance(timedelta(seconds=30))
    assert submit(js, env).SerializeToString() == first.SerializeToString()
    assert store.exchange_count() == 1


@pytest.mark.parametrize("kind", KINDS)
def test_message_id_reuse_is_refused(kind, client_for, sign, refused):
    js = client_for("CN-JS")
    v1 = sample(kind)
    js.submit(sign(v1, message_id=f"{kind}-0001"))
    v2 = next_version(v1, CertState.SUSPENDED)
    r = refused(js, sign(v2, message_id=f"{kind}-0001"), Code.ALREADY_EXISTS, "MESSAGE_ID_REUSED")
    assert r.metadata["message_id"] == f"{kind}-0001"
    assert js.get_record(v1.key).version == 1


@pytest.mark.parametrize("kind", KINDS)
def test_versions_and_transitions(kind, client_for, sign, refused):
    js = client_for("CN-JS")
    v1 = sample(kind)
    v2 = next_version(v1, CertState.SUSPENDED)
    assert js.publish(v1).record_version == 1
    receipt = js.publish(v2)
    assert (receipt.record_key, receipt.record_version) == (v1.key, 2)
    view = js.get_record(v1.key)
    assert (view.version, view.effective_state, view.log_index) == (2, CertState.SUSPENDED, receipt.log_index)
    assert getattr(decode(view), kind).reason == REASONS[CertState.SUSPENDED]

    # Older and equal versions with other content are stale; nothing is overwritten.
    for version in (1, 2):
        attempt = dataclasses.replace(v2, version=version, reason="更正原因")
        r = refused(js, sign(attempt), Code.FAILED_PRECONDITION, "STALE_VERSION")
        assert (r.metadata["stored_version"], r.metadata["submitted_version"]) == ("2", str(version))
    assert js.get_record(v1.key).version == 2

    v3 = next_version(v2, CertState.REVOKED)
    assert js.publish(v3).record_version == 3
    v4 = next_version(v3, CertState.VALID)
    r = refused(js, sign(v4), Code.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert (r.metadata["from_state"], r.metadata["to_state"]) == ("REVOKED", "VALID")
    view = js.get_record(v1.key)
    assert (view.version, view.effective_state) == (3, CertState.REVOKED)


def test_a_record_may_be_first_published_in_a_final_state(client_for):
    withdrawn = dataclasses.replace(sample("spot_check"), state=CertState.WITHDRAWN, reason="发布错误")
    assert client_for("CN-JS").publish(withdrawn).record_version == 1
    assert client_for("CN-JS").get_record(withdrawn.key).effective_state == CertState.WITHDRAWN


# --- who may publish -------------------------------------------------------------------------


def test_assessor_may_be_published_only_by_its_home(client_for, sign, refused, store):
    assessor = sample("assessor", "CN-JS")
    r = refused(client_for("CN-SH"), sign(assessor, sender="CN-SH"), Code.PERMISSION_DENIED, "NOT_ISSUER")
    assert r.metadata == {"issuer": "CN-JS", "sender": "CN-SH", "log_index": "0"}
    assert store.exchange_count() == 1  # logged as a refusal


@pytest.mark.parametrize("kind", ["test_report", "pt_result", "spot_check"])
def test_result_may_be_published_only_by_its_issuer(kind, client_for, sign, refused, rpc_refusal):
    record = sample(kind, "CN-JS")
    r = refused(client_for("CN-ZJ"), sign(record, sender="CN-ZJ"), Code.PERMISSION_DENIED, "NOT_ISSUER")
    assert (r.metadata["issuer"], r.metadata["sender"]) == ("CN-JS", "CN-ZJ")
    rpc_refusal(lambda: client_for("CN-JS").get_record(record.key), Code.NOT_FOUND, "RECORD_NOT_FOUND")


def test_stored_record_republished_under_another_issuer(client_for, sign, refused):
    # A CMA qualification's key names no issuer.
    lab = demo_lab_cma_certificates("CN-JS", today=REF)[0]
    client_for("CN-JS").publish(lab)
    key = f"certificate_status/CMA/{lab.certificate_number}"
    claimed = dataclasses.replace(
        lab,
        issuer="CN-SH",
        version=2,
        state=CertState.SUSPENDED,
        reason="越权暂停",
        effective_at=lab.effective_at,
    )
    # The lab is declared for CN-JS in the federation file: refused before the stored
    # issuer is consulted (an undeclared lab is still guarded by its stored issuer:
    # tests/integration/test_jurisdiction.py).
    r = refused(client_for("CN-SH"), sign(claimed), Code.PERMISSION_DENIED, "OUTSIDE_JURISDICTION")
    assert (r.metadata["declared_for"], r.metadata["sender"]) == ("CN-JS", "CN-SH")
    view = client_for("CN-SH").get_record(key)
    assert (view.version, view.effective_state) == (1, CertState.VALID)

    # Every other kind carries its issuer in the key, but a report naming a lab declared
    # for another member is squatting: refused, and the original stays untouched.
    # (tests/integration/test_jurisdiction.py: the same number with one's own lab is
    # another record.)
    report = sample("test_report", "CN-JS")
    client_for("CN-JS").publish(report)
    own = dataclasses.replace(report, issuer="CN-SH")
    refused(client_for("CN-SH"), sign(own), Code.PERMISSION_DENIED, "OUTSIDE_JURISDICTION")
    assert decode(client_for("CN-SH").get_record(report.key)).header.sender == "CN-JS"


@pytest.mark.parametrize("kind", KINDS)
def test_header_kind_must_match_the_record(kind, client_for, sign, refused):
    other = "spot_check" if kind != "spot_check" else "assessor"

    def wrong_kind(s):
        s.header.kind = KIND_NUMBERS[other]

    r = refused(
        client_for("CN-JS"), sign(sample(kind), mutate=wrong_kind), Code.INVALID_ARGUMENT, "INVALID_FIELDS"
    )
    assert r.field_violations == ((("header.kind", f"says {other} but the record is a {kind}")),)


def test_header_kind_unspecified(client_for, sign, refused):
    def unspecified(s):
        s.header.kind = records_pb2.RECORD_KIND_UNSPECIFIED

    env = sign(sample("assessor"), mutate=unspecified)
    refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "INVALID_FIELDS", ("header.kind",))


@pytest.mark.parametrize("kind", KINDS)
def test_missing_record(kind, client_for, sign, refused):
    env = sign(sample(kind), mutate=lambda s: s.ClearField(kind))
    refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "INVALID_FIELDS", ("record",))


# --- proficiency testing ---------------------------------------------------------------------


def pt(
    reported: float,
    z: float,
    *,
    assigned: float | None = 10.0,
    sigma: float | None = 2.0,
    analyte="铅 (Pb) in 大米",
):
    return dataclasses.replace(
        sample("pt_result"),
        analyte=analyte,
        assigned_value=assigned,
        sigma=sigma,
        reported_value=reported,
        z_score=z,
    )


@pytest.mark.parametrize(
    ("reported", "z", "expected"),
    [
        (13.0, 1.5, PtClass.SATISFACTORY),
        (14.0, 2.0, PtClass.SATISFACTORY),  # the default boundary is inclusive
        (15.0, 2.5, PtClass.QUESTIONABLE),
        (5.0, -2.5, PtClass.QUESTIONABLE),
        (16.0, 3.0, PtClass.UNSATISFACTORY),
        (4.0, -3.0, PtClass.UNSATISFACTORY),
    ],
)
def test_pt_classification_is_stored_and_returned(reported, z, expected, client_for, sign):
    result = pt(reported, z)
    receipt = client_for("CN-JS").publish(result)
    view = client_for("CN-BJ").get_record(receipt.record_key)
    assert view.pt_classification == expected
    # The class is the gateway's: the submitted envelope carries none.
    assert decode(view).pt_result.classification == records_pb2.PT_CLASS_UNSPECIFIED


def test_pt_class_held_by_the_submitter_is_ignored(client_for, sign):
    def claim_satisfactory(s):
        s.pt_result.classification = records_pb2.PT_CLASS_SATISFACTORY

    result = pt(16.0, 3.0)
    client_for("CN-JS").submit(sign(result, mutate=claim_satisfactory))
    assert client_for("CN-JS").get_record(result.key).pt_classification == PtClass.UNSATISFACTORY


def test_pt_z_published_alone_is_classified(client_for):
    result = pt(16.0, 3.2, assigned=None, sigma=None, analyte="抗压强度 (N/mm²) in 混凝土试块")
    receipt = client_for("CN-JS").publish(result)
    assert receipt.record_key.endswith("/抗压强度 (N/mm²) in 混凝土试块")
    view = client_for("CN-JS").get_record(receipt.record_key)
    assert view.pt_classification == PtClass.UNSATISFACTORY
    assert not decode(view).pt_result.HasField("sigma")


def _set(**values):
    def mutate(s):
        for name, value in values.items():
            setattr(s.pt_result, name, value)

    return mutate


PT_VIOLATIONS = {
    "z does not match (reported - assigned) / sigma": (_set(z_score=1.0), ("pt_result.z_score",)),
    "z off by more than the rounding tolerance": (_set(z_score=1.52), ("pt_result.z_score",)),
    "sigma zero": (_set(sigma=0.0), ("pt_result.sigma",)),
    "sigma negative": (_set(sigma=-2.0), ("pt_result.sigma",)),
    "z NaN": (_set(z_score=math.nan), ("pt_result.z_score",)),
    "z infinite": (_set(z_score=math.inf), ("pt_result.z_score",)),
    "reported NaN": (_set(reported_value=math.nan), ("pt_result.reported_value",)),
    "assigned NaN": (_set(assigned_value=math.nan), ("pt_result.assigned_value",)),
    "sigma NaN": (_set(sigma=math.nan), ("pt_result.sigma",)),
    "sigma without assigned value": (
        lambda s: s.pt_result.ClearField("assigned_value"),
        ("pt_result.assigned_value",),
    ),
    "assigned value without sigma": (lambda s: s.pt_result.ClearField("sigma"), ("pt_result.sigma",)),
}


@pytest.mark.parametrize("case", PT_VIOLATIONS)
def test_pt_violations(case, client_for, sign, refused, store):
    mutate, fields = PT_VIOLATIONS[case]
    env = sign(pt(13.0, 1.5), mutate=mutate)
    refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "INVALID_FIELDS", fields)
    assert store.exchange_count() == 1  # the refusal, nothing stored


def test_pt_z_within_rounding_tolerance_is_accepted(client_for):
    # (13.333 - 10) / 2 = 1.6665, published rounded to 1.67
    assert client_for("CN-JS").publish(pt(13.333, 1.67)).record_version == 1


def test_pt_boundaries_are_configurable(gateway_factory, signers, clock):
    # Only this gateway runs on the database: the boundaries differ, not the records.
    strict = gateway_factory(
        pt_boundaries=PtBoundaries(
            satisfactory_max=2.0,
            unsatisfactory_min=3.0,
            satisfactory_inclusive=False,
            unsatisfactory_inclusive=True,
        )
    )
    expected = [
        (14.0, 2.0, PtClass.QUESTIONABLE),  # SATISFACTORY under the defaults
        (6.0, -2.0, PtClass.QUESTIONABLE),
        (13.98, 1.99, PtClass.SATISFACTORY),
        (16.0, 3.0, PtClass.UNSATISFACTORY),
        (15.98, 2.99, PtClass.QUESTIONABLE),
    ]
    with GatewayClient(strict.address, sender="CN-JS", signer=signers["CN-JS"]) as js:
        for reported, z, want in expected:
            receipt = js.publish(pt(reported, z, analyte=f"z={z}"), created_at=clock.now)
            assert js.get_record(receipt.record_key).pt_classification == want, z


# --- field validation per kind ----------------------------------------------------------------


def _qualification_ends_before_it_starts(s):
    q = s.assessor.qualifications[0]
    q.valid_from, q.valid_until = "2026-05-01", "2026-04-30"


def _no_fields(s):
    del s.assessor.qualifications[0].fields[:]


def _bad_check_char(s):
    code = s.spot_check.target_credit_code
    s.spot_check.target_credit_code = code[:17] + ("0" if code[17] != "0" else "1")


def _suspended_without_reason(kind):
    def mutate(s):
        msg = getattr(s, kind)
        msg.state = records_pb2.CERTIFICATE_STATE_SUSPENDED
        msg.reason = ""

    return mutate


VIOLATIONS = {
    "assessor without qualifications": (
        "assessor",
        lambda s: s.assessor.ClearField("qualifications"),
        ("assessor.qualifications",),
    ),
    "qualification ends before it starts": (
        "assessor",
        _qualification_ends_before_it_starts,
        ("assessor.qualifications[0].valid_until",),
    ),
    "qualification without fields": ("assessor", _no_fields, ("assessor.qualifications[0].fields",)),
    "qualification kind unknown": (
        "assessor",
        lambda s: setattr(s.assessor.qualifications[0], "kind", 9),
        ("assessor.qualifications[0].kind",),
    ),
    "technical field with padding": (
        "assessor",
        lambda s: s.assessor.qualifications[0].fields.append(" 食品"),
        ("assessor.qualifications[0].fields[2]",),
    ),
    "assessor published as EXPIRED": (
        "assessor",
        lambda s: setattr(s.assessor, "state", records_pb2.CERTIFICATE_STATE_EXPIRED),
        ("assessor.state",),
    ),
    "assessor home not a participant code": (
        "assessor",
        lambda s: setattr(s.assessor, "home", "Jiangsu"),
        None,  # refused as NOT_ISSUER first: see below
    ),
    "report issue date impossible": (
        "test_report",
        lambda s: setattr(s.test_report, "issue_date", "2026-02-30"),
        ("test_report.issue_date",),
    ),
    "report issue date not ISO": (
        "test_report",
        lambda s: setattr(s.test_report, "issue_date", "2026/03/01"),
        ("test_report.issue_date",),
    ),
    "report without lab CMA number": (
        "test_report",
        lambda s: setattr(s.test_report, "lab_cma_number", ""),
        ("test_report.lab_cma_number",),
    ),
    "report suspended without reason": (
        "test_report",
        _suspended_without_reason("test_report"),
        ("test_report.reason",),
    ),
    "spot check target credit code check character": (
        "spot_check",
        _bad_check_char,
        ("spot_check.target_credit_code",),
    ),
    "spot check without items": (
        "spot_check",
        lambda s: s.spot_check.ClearField("items"),
        ("spot_check.items",),
    ),
    "spot check outcome unspecified": (
        "spot_check",
        lambda s: setattr(s.spot_check, "outcome", 0),
        ("spot_check.outcome",),
    ),
    "PT version 0 and no effective_at": (
        "pt_result",
        lambda s: (setattr(s.pt_result, "version", 0), s.pt_result.ClearField("effective_at")),
        ("pt_result.version", "pt_result.effective_at"),
    ),
}


@pytest.mark.parametrize("case", [c for c, (_, _, fields) in VIOLATIONS.items() if fields is not None])
def test_invalid_fields(case, client_for, sign, refused):
    kind, mutate, fields = VIOLATIONS[case]
    record = sample(kind)
    r = refused(
        client_for("CN-JS"), sign(record, mutate=mutate), Code.INVALID_ARGUMENT, "INVALID_FIELDS", fields
    )
    assert r.metadata["log_index"] == "0"
    with pytest.raises(grpc.RpcError) as info:
        client_for("CN-JS").get_record(record.key)
    assert info.value.code() == Code.NOT_FOUND


def test_assessor_home_is_checked_as_the_issuer_before_its_shape(client_for, sign, refused):
    _, mutate, _ = VIOLATIONS["assessor home not a participant code"]
    r = refused(
        client_for("CN-JS"), sign(sample("assessor"), mutate=mutate), Code.PERMISSION_DENIED, "NOT_ISSUER"
    )
    assert r.metadata["issuer"] == "Jiangsu"


# --- reads -------------------------------------------------------------------------------------


def _assessor_until(until: date, *, also: date | None = None):
    quals = [
        Qualification(
            kind=QualificationKind.CMA_ASSESSOR,
            grade="评审员",
            fields=("电子电器",),
            valid_from=until - timedelta(days=1000),
            valid_until=until,
        )
    ]
    if also is not None:
        quals.append(dataclasses.replace(quals[0], fields=("食品",), valid_until=also))
    return dataclasses.replace(
        sample("assessor"),
        qualifications=tuple(quals),
        effective_at=datetime.combine(until - timedelta(days=1000), time(), tzinfo=UTC),
    )


def test_assessor_reads_expired_once_its_last_qualification_ends(client_for, clock):
    js = client_for("CN-JS")
    assessor = _assessor_until(clock.today() + timedelta(days=1))
    js.publish(assessor)
    assert js.get_record(assessor.key).effective_state == CertState.VALID
    clock.advance(timedelta(days=1))  # the last day of validity is still in force
    assert js.get_record(assessor.key).effective_state == CertState.VALID
    clock.advance(timedelta(days=1))
    view = js.get_record(assessor.key)
    assert view.effective_state == CertState.EXPIRED
    assert decode(view).assessor.state == records_pb2.CERTIFICATE_STATE_VALID  # as published


def test_assessor_with_one_ended_and_one_current_qualification_is_valid(client_for, clock):
    js = client_for("CN-JS")
    past = _assessor_until(clock.today() - timedelta(days=10))
    mixed = dataclasses.replace(
        _assessor_until(clock.today() - timedelta(days=10), also=clock.today() + timedelta(days=100)),
        registration_number="CMA-JS-2024-0999",
    )
    js.publish(past)
    js.publish(mixed)
    assert js.get_record(past.key).effective_state == CertState.EXPIRED
    assert js.get_record(mixed.key).effective_state == CertState.VALID


def test_suspended_assessor_reads_expired_after_its_qualifications_end(client_for, clock):
    js = client_for("CN-JS")
    v1 = _assessor_until(clock.today() - timedelta(days=1))
    v2 = next_version(v1, CertState.SUSPENDED)
    js.publish(v1)
    js.publish(v2)
    assert js.get_record(v1.key).effective_state == CertState.EXPIRED
    js.publish(next_version(v2, CertState.REVOKED))
    assert js.get_record(v1.key).effective_state == CertState.REVOKED  # final states stay


@pytest.mark.parametrize(
    ("key", "fields"),
    [
        ("", ("record_key",)),
        ("assessor", ("record_key",)),
        ("assessor/CN-JS", ("record_key",)),
        ("license/CN-JS/123", ("record_key",)),
        ("test_report/CN-JS/\x00", ("record_key",)),
        ("test_report/CN-JS/" + "9" * 200, ("record_key",)),
    ],
)
def test_get_record_refuses_malformed_keys(key, fields, client_for, rpc_refusal):
    rpc_refusal(lambda: client_for("CN-JS").get_record(key), Code.INVALID_ARGUMENT, "INVALID_FIELDS", fields)


def test_get_record_of_an_unknown_record(client_for, rpc_refusal):
    rpc_refusal(
        lambda: client_for("CN-JS").get_record("spot_check/CN-JS/JS-SC-2026-9999"),
        Code.NOT_FOUND,
        "RECORD_NOT_FOUND",
    )
