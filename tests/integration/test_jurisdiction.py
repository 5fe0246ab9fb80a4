"""Jurisdiction through a real gateway, under the committed federation's [[jurisdictions]].

Each squatting case an outside reviewer found has a test here that fails if it comes
back: a Shanghai key publishing a number from Jiangsu's block (and then Jiangsu refused
its own certificate), a Shanghai test report naming a Jiangsu lab (then RECOGNISED), a
Shaanxi assessor under a Jiangsu home.
"""

from __future__ import annotations

import dataclasses

import pytest
from grpc import StatusCode as Code

from gateway.demo_fixtures import (
    DEMO_PARTICIPANTS,
    demo_assessors,
    demo_lab_cma_certificates,
    demo_pt_results,
    demo_spot_checks,
    demo_status_change,
    demo_test_reports,
)
from gateway.domain.certificates import CertState, Scheme
from gateway.domain.jurisdiction import OUTSIDE_DECLARED_JURISDICTION
from gateway.pb import recognition_pb2

RECOGNISED = recognition_pb2.VERDICT_RECOGNISED


def test_demo_federation_carries_the_committed_jurisdictions(federation):
    # write_demo_federation copies [[jurisdictions]]; without it every test below would
    # run against a federation that declares nothing.
    js = federation.participants["CN-JS"].jurisdiction
    assert js is not None and "10" in js.cma_authorities and "CMA-JS-" in js.assessor_prefixes
    assert set(federation.jurisdictions.declared) == set(DEMO_PARTICIPANTS)


# --- case 1: a certificate number from another's block --------------------------------------


def test_number_from_another_block_is_refused_and_the_owner_keeps_it(
    client_for, certs_of, make_env, refused, store, clock
):
    js_cert = certs_of("CN-JS")[0]
    squatted = dataclasses.replace(js_cert, issuer="CN-SH")
    r = refused(client_for("CN-SH"), make_env(squatted), Code.PERMISSION_DENIED, "OUTSIDE_JURISDICTION")
    assert r.metadata["field"] == "certificate_status.certificate_number"
    assert r.metadata["declared_for"] == "CN-JS"
    assert r.metadata["sender"] == "CN-SH"
    assert r.metadata["log_index"] == "0"  # a late refusal: in the audit log
    assert store.certificate_count() == 0

    # Jiangsu publishes its own certificate (it was NOT_ISSUER while Shanghai held it)...
    receipt = client_for("CN-JS").publish(js_cert)
    assert receipt.log_index == 1 and list(receipt.warnings) == []
    # ...and Shanghai cannot revoke it either.
    revoked = demo_status_change(
        squatted, state=CertState.REVOKED, reason="产品存在严重缺陷，撤销证书", effective_at=clock.now
    )
    refused(client_for("CN-SH"), make_env(revoked), Code.PERMISSION_DENIED, "OUTSIDE_JURISDICTION")
    view = client_for("CN-AH").get_certificate(js_cert.scheme, js_cert.certificate_number)
    assert (view.certificate.issuer, view.certificate.state) == ("CN-JS", CertState.VALID)


def test_management_system_block_is_enforced_too(client_for, certs_of, make_env, refused):
    ms = next(c for c in certs_of("CN-JS", 8) if c.scheme is not Scheme.CCC)
    r = refused(
        client_for("CN-ZJ"),
        make_env(dataclasses.replace(ms, issuer="CN-ZJ")),
        Code.PERMISSION_DENIED,
        "OUTSIDE_JURISDICTION",
    )
    assert r.metadata["declared_for"] == "CN-JS"


def test_jurisdiction_is_judged_before_field_validation(client_for, certs_of, make_env, refused):
    squatted = dataclasses.replace(certs_of("CN-JS")[0], issuer="CN-SH")

    def break_credit_code(s):
        s.certificate_status.holder.credit_code = "not a code"

    refused(
        client_for("CN-SH"),
        make_env(squatted, mutate=break_credit_code),
        Code.PERMISSION_DENIED,
        "OUTSIDE_JURISDICTION",
    )


def test_number_outside_every_block_is_flagged_and_first_come_still_holds(
    client_for, certs_of, make_env, refused
):
    # No block covers serial 999999: the sender is flagged, and the stored issuer decides
    # (the writer's NOT_ISSUER) as before jurisdictions existed.
    cert = certs_of("CN-JS")[0]
    number = cert.certificate_number[:10] + "999999"
    own = dataclasses.replace(cert, certificate_number=number)
    receipt = client_for("CN-JS").publish(own)
    assert [w.split(":")[0] for w in receipt.warnings] == [OUTSIDE_DECLARED_JURISDICTION]
    assert "certificate_status.certificate_number" in receipt.warnings[0]
    claimed = dataclasses.replace(own, issuer="CN-SH", version=2)
    r = refused(client_for("CN-SH"), make_env(claimed), Code.PERMISSION_DENIED, "NOT_ISSUER")
    assert r.metadata["issuer"] == "CN-JS"


# --- case 2: a test report naming another's lab ---------------------------------------------


def test_report_naming_another_lab_is_refused_and_never_recognised(client_for, clock, refused):
    today = clock.today()
    js, sh = client_for("CN-JS"), client_for("CN-SH")
    for lab in demo_lab_cma_certificates("CN-JS", today=today):
        js.publish(lab)
    report = demo_test_reports("CN-JS", count=1, today=today)[0]
    squatted = dataclasses.replace(report, issuer="CN-SH")
    r = refused(sh, sh.sign(squatted), Code.PERMISSION_DENIED, "OUTSIDE_JURISDICTION")
    assert r.metadata["field"] == "test_report.lab_cma_number"
    assert r.metadata["declared_for"] == "CN-JS"

    # Under the YRD agreement this report would be RECOGNISED had it been accepted.
    decision = client_for("CN-ZJ").check_recognition(record_key=squatted.key)
    assert decision.verdict != RECOGNISED
    assert [x.code for x in decision.reasons] == ["RECORD_NOT_FOUND"]
    # The lab's own province publishes the same report, and it is recognised.
    js.publish(report)
    assert client_for("CN-ZJ").check_recognition(record_key=report.key).verdict == RECOGNISED


def test_report_naming_another_lab_by_accreditation_number_alone(client_for, clock, refused):
    today = clock.today()
    js_lab = next(lab for lab in demo_test_reports("CN-JS", count=4, today=today) if lab.accreditation_number)
    report = dataclasses.replace(
        demo_test_reports("CN-SH", count=1, today=today)[0], accreditation_number=js_lab.accreditation_number
    )
    sh = client_for("CN-SH")
    r = refused(sh, sh.sign(report), Code.PERMISSION_DENIED, "OUTSIDE_JURISDICTION")
    assert r.metadata["field"] == "test_report.accreditation_number"
    assert r.metadata["declared_for"] == "CN-JS"


def test_lab_cma_qualification_of_another_lab_is_refused(client_for, clock, refused, make_env):
    lab = demo_lab_cma_certificates("CN-JS", today=clock.today())[0]
    r = refused(
        client_for("CN-SH"),
        make_env(dataclasses.replace(lab, issuer="CN-SH")),
        Code.PERMISSION_DENIED,
        "OUTSIDE_JURISDICTION",
    )
    assert (r.metadata["field"], r.metadata["declared_for"]) == (
        "certificate_status.certificate_number",
        "CN-JS",
    )


def test_undeclared_lab_with_another_authority_code_is_flagged_not_refused(client_for, clock):
    # The authority code is read from the CMA number's shape, which DOMAIN.md rates low
    # confidence: accepted, flagged.
    report = demo_test_reports("CN-SH", count=1, today=clock.today())[0]
    foreign = dataclasses.replace(report, lab_cma_number="202410009999", accreditation_number="")
    receipt = client_for("CN-SH").publish(foreign)
    assert len(receipt.warnings) == 1
    assert receipt.warnings[0].startswith(f"{OUTSIDE_DECLARED_JURISDICTION}: test_report.lab_cma_number:")
    assert "CN-JS" in receipt.warnings[0]


def test_pt_result_naming_another_lab_is_flagged_not_refused(client_for, clock):
    # PT schemes enrol labs from other provinces; the first demo result names a CN-SH lab.
    result = demo_pt_results("CN-JS", count=1, today=clock.today())[0]
    receipt = client_for("CN-JS").publish(result)
    assert len(receipt.warnings) == 1
    assert receipt.warnings[0].startswith(f"{OUTSIDE_DECLARED_JURISDICTION}: pt_result.lab_cma_number:")
    assert "declared for CN-SH" in receipt.warnings[0]


# --- case 3: an assessor under another's registration prefix --------------------------------


def test_assessor_with_another_prefix_is_refused_under_this_home(client_for, clock, refused):
    shaanxi = demo_assessors("CN-SN", count=1, today=clock.today())[0]
    squatted = dataclasses.replace(shaanxi, home="CN-JS")
    js = client_for("CN-JS")
    r = refused(js, js.sign(squatted), Code.PERMISSION_DENIED, "OUTSIDE_JURISDICTION")
    assert r.metadata["field"] == "assessor.registration_number"
    assert r.metadata["declared_for"] == "CN-SN"
    assert r.metadata["declared_as"] == shaanxi.registration_number[: len("CMA-SN-")]
    # Its own home publishes it.
    assert client_for("CN-SN").publish(shaanxi).record_key == shaanxi.key


# --- nothing legitimate is refused or flagged -----------------------------------------------


@pytest.mark.parametrize("code", DEMO_PARTICIPANTS)
def test_every_demo_record_of_a_member_is_accepted_without_a_flag(code, client_for, certs_of, clock):
    today = clock.today()
    records = [
        *certs_of(code, 24),
        *demo_lab_cma_certificates(code, today=today),
        *demo_test_reports(code, count=6, today=today),
        *demo_assessors(code, count=6, today=today),
        *demo_spot_checks(code, count=2, today=today),
    ]
    outcomes = client_for(code).publish_batch(records)
    refusals = [o.refusal for o in outcomes if o.receipt is None]
    assert refusals == []
    flagged = [
        w for o in outcomes if o.receipt is not None for w in o.receipt.warnings if "JURISDICTION" in w
    ]
    assert flagged == []


def test_undeclared_lab_qualification_is_still_guarded_by_its_stored_issuer(
    client_for, clock, refused, make_env
):
    # What the stored-issuer rule protected before jurisdictions, it still protects where
    # nobody declared the identifier: a CMA number of no declared lab, in CN-JS's code.
    lab = demo_lab_cma_certificates("CN-JS", today=clock.today())[0]
    undeclared = dataclasses.replace(lab, certificate_number=lab.certificate_number[:6] + "009999")
    receipt = client_for("CN-JS").publish(undeclared)
    assert [w for w in receipt.warnings if "JURISDICTION" in w] == []  # its own CMA code: no flag
    claimed = dataclasses.replace(undeclared, issuer="CN-SH", version=2)
    r = refused(client_for("CN-SH"), make_env(claimed), Code.PERMISSION_DENIED, "NOT_ISSUER")
    assert (r.metadata["issuer"], r.metadata["sender"]) == ("CN-JS", "CN-SH")


def test_same_report_number_under_another_issuer_with_its_own_lab_is_another_record(client_for, clock):
    today = clock.today()
    js_report = demo_test_reports("CN-JS", count=1, today=today)[0]
    client_for("CN-JS").publish(js_report)
    sh_lab = demo_test_reports("CN-SH", count=1, today=today)[0]
    own = dataclasses.replace(
        js_report,
        issuer="CN-SH",
        lab_name=sh_lab.lab_name,
        lab_cma_number=sh_lab.lab_cma_number,
        accreditation_number=sh_lab.accreditation_number,
    )
    receipt = client_for("CN-SH").publish(own)
    assert receipt.record_key == f"test_report/CN-SH/{js_report.report_number}" != js_report.key
    assert list(receipt.warnings) == []
