"""RecognitionService: gather the facts, let the domain decide, sign the decision."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date, datetime

import grpc

from gateway.convert import record_from_proto, us_to_datetime
from gateway.crypto.dsse import DECISION_PAYLOAD_TYPE, sign_envelope
from gateway.crypto.suites import PrivateKey
from gateway.domain.certificates import CertState, Scheme
from gateway.domain.errors import FieldViolation, InvalidArgument, PermissionDenied
from gateway.domain.identifiers import hkas_accreditation
from gateway.domain.kinds import ASSESSOR_KIND, CERTIFICATE, TEST_REPORT_KIND, kind_of_key
from gateway.domain.recognition import (
    AssessorFacts,
    LabFacts,
    Outcome,
    RecordFacts,
    decide_assessor,
    decide_record,
)
from gateway.domain.records import CHINA, Assessor, QualificationKind, StateOn, state_on
from gateway.pb import envelope_pb2, recognition_pb2, recognition_pb2_grpc, records_pb2
from gateway.registry.federation import Federation, Role
from gateway.services.auth import ReadAuthenticator
from gateway.services.exchange import check_record_key
from gateway.store.record_reads import RecordReads, RecordSnapshot

METHOD = "/mrx.v1.RecognitionService/CheckRecognition"


class RecognitionServicer(recognition_pb2_grpc.RecognitionServiceServicer):
    def __init__(
        self,
        *,
        federation: Federation,
        records: RecordReads,
        auth: ReadAuthenticator,
        gateway_key: PrivateKey,
        clock: Callable[[], datetime],
        today: Callable[[], date],
    ):
        self._federation = federation
        self._records = records
        self._auth = auth
        self._key = gateway_key
        self._clock = clock
        self._today = today

    def CheckRecognition(
        self, request: recognition_pb2.CheckRecognitionRequest, context: grpc.ServicerContext
    ) -> recognition_pb2.CheckRecognitionResponse:
        principal = self._auth.authenticate(context, METHOD, request)
        if principal.participant.role is not Role.MEMBER:
            raise PermissionDenied(
                f"{principal.code} is not a party to any agreement; ask as a member participant",
                reason="READ_ONLY_PRINCIPAL",
            )
        as_of = _parse_as_of(request.as_of) if request.as_of else self._today()
        decision = recognition_pb2.Decision(
            decision_id=str(uuid.uuid4()), asked_by=principal.code, as_of=as_of.isoformat()
        )
        which = request.WhichOneof("question")
        if which == "record_key":
            key = check_record_key(request.record_key, field="record_key")
            snap = self._records.snapshot(key)
            outcome = self._record(principal.code, key, snap, as_of)
            decision.record_key = key
        elif which == "assessor":
            q = request.assessor
            _check_question(q)
            key = check_record_key(
                ASSESSOR_KIND.format_key(home=q.home, registration_number=q.registration_number),
                field="assessor",
            )
            snap = self._records.snapshot(key)
            outcome = self._assessor(principal.code, q, snap, as_of)
            decision.record_key = key
            decision.assessor.CopyFrom(q)
        else:
            raise InvalidArgument(
                "ask about a record_key or an assessor",
                violations=[FieldViolation("question", "record_key or assessor required")],
            )
        if snap is not None:
            decision.record_version = snap.version
            decision.record_log_index = snap.log_index
            decision.record_envelope_sha256 = snap.envelope_sha256
        _fill(decision, outcome)
        decision.decided_at.FromDatetime(self._clock())
        envelope = sign_envelope(
            payload_type=DECISION_PAYLOAD_TYPE,
            payload=decision.SerializeToString(deterministic=True),
            signer=self._key,
        )
        return recognition_pb2.CheckRecognitionResponse(decision=envelope)

    # -- facts ---------------------------------------------------------------------------

    def _record(self, asker: str, key: str, snap: RecordSnapshot | None, as_of: date) -> Outcome:
        agreements = list(self._federation.agreements.values())
        if snap is None:
            return decide_record(asker=asker, facts=None, agreements=agreements, as_of=as_of)
        kind = kind_of_key(key)
        submission, envelope = _decode(snap)
        on = _state_on(snap, as_of)
        revoked, revoked_at = self._key_revoked(envelope)
        lab = self._lab(submission.test_report) if kind is TEST_REPORT_KIND else None
        facts = RecordFacts(
            kind=kind.name,
            key=key,
            issuer=snap.issuer,
            scheme=kind.parse_key(key)["scheme"] if kind is CERTIFICATE else None,
            state=on.state,
            state_since=on.since,
            issuer_key_revoked=revoked,
            issuer_key_revoked_at=revoked_at,
            lab=lab,
        )
        return decide_record(asker=asker, facts=facts, agreements=agreements, as_of=as_of)

    def _lab(self, report: records_pb2.TestReport) -> LabFacts:
        """The facts of what the lab's right to issue rests on: its CMA qualification, or
        for a Hong Kong or Macau lab without one, its HKAS accreditation."""
        issued = date.fromisoformat(report.issue_date)
        lab_key: str | None
        if report.lab_cma_number:
            lab_key = CERTIFICATE.format_key(scheme=Scheme.CMA.name, certificate_number=report.lab_cma_number)
        else:
            # Validation made the accreditation the lab's identity; only HKAS ones are
            # published here (a CNAS or foreign one cannot be looked up: UNKNOWN).
            hkas = hkas_accreditation(report.accreditation_number)
            lab_key = (
                None if hkas is None else CERTIFICATE.format_key(scheme=hkas[0], certificate_number=hkas[1])
            )
        lab_snap = self._records.snapshot(lab_key) if lab_key is not None else None
        if lab_snap is None:
            return LabFacts(
                cma_number=report.lab_cma_number,
                accreditation_number=report.accreditation_number,
                found=False,
                state_on_issue_date=None,
                since=None,
            )
        lab_on = _state_on(lab_snap, issued)
        return LabFacts(
            cma_number=report.lab_cma_number,
            accreditation_number=report.accreditation_number,
            found=True,
            state_on_issue_date=lab_on.state,
            since=lab_on.since,
            issue_date=issued,
        )

    def _assessor(
        self, asker: str, q: recognition_pb2.AssessorQuestion, snap: RecordSnapshot | None, as_of: date
    ) -> Outcome:
        agreements = list(self._federation.agreements.values())
        kind = QualificationKind(q.kind) if q.kind in QualificationKind._value2member_map_ else None
        facts = None
        if snap is not None:
            submission, envelope = _decode(snap)
            assessor, _ = record_from_proto(submission.assessor)
            assert isinstance(assessor, Assessor)  # the stored record was validated on the way in
            on = _state_on(snap, as_of)
            revoked, revoked_at = self._key_revoked(envelope)
            facts = AssessorFacts(
                registration_number=assessor.registration_number,
                home=assessor.home,
                state=on.state,
                state_since=on.since,
                qualifications=assessor.qualifications,
                issuer_key_revoked=revoked,
                issuer_key_revoked_at=revoked_at,
            )
        return decide_assessor(
            asker=asker, facts=facts, field=q.field, kind=kind, agreements=agreements, as_of=as_of
        )

    def _key_revoked(self, envelope: envelope_pb2.Envelope) -> tuple[bool, date | None]:
        record = self._federation.keys.get(envelope.signatures[0].keyid) if envelope.signatures else None
        if record is None or not record.revoked:
            return False, None
        # Every date in a decision is a calendar day in China, as in the domain rules.
        return True, record.revoked_at.astimezone(CHINA).date() if record.revoked_at else None


def _check_question(q: recognition_pb2.AssessorQuestion) -> None:
    violations = [
        FieldViolation(f"assessor.{name}", "required")
        for name in ("registration_number", "home", "field")
        if not getattr(q, name).strip()
    ]
    if q.kind and q.kind not in QualificationKind._value2member_map_:
        violations.append(FieldViolation("assessor.kind", f"unknown qualification kind {q.kind}"))
    if violations:
        raise InvalidArgument(
            f"invalid assessor question: {violations[0].field}: {violations[0].description}",
            violations=violations,
        )


def _decode(snap: RecordSnapshot) -> tuple[records_pb2.Submission, envelope_pb2.Envelope]:
    envelope = envelope_pb2.Envelope.FromString(snap.envelope)
    return records_pb2.Submission.FromString(envelope.payload), envelope


def _state_on(snap: RecordSnapshot, on: date) -> StateOn:
    history = [(us_to_datetime(v.effective_at_us), CertState(v.state)) for v in snap.history]
    return state_on(history, on, snap.valid_until)


_DATE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


def _parse_as_of(value: str) -> date:
    # Strictly YYYY-MM-DD: fromisoformat alone also takes 20260401 and week dates.
    try:
        if not _DATE.match(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(
            "as_of must be a date YYYY-MM-DD", violations=[FieldViolation("as_of", "not a YYYY-MM-DD date")]
        ) from None


def _fill(decision: recognition_pb2.Decision, outcome: Outcome) -> None:
    decision.verdict = int(outcome.verdict)  # type: ignore[assignment]
    decision.agreement_id = outcome.agreement_id or ""
    for reason in outcome.reasons:
        decision.reasons.add(code=str(reason.code), message=reason.message, metadata=dict(reason.metadata))
