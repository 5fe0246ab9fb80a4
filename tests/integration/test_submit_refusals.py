"""Unary Submit through a real gateway: every refusal reason, receipts, replay, logging.

Each refusal is checked for its exact gRPC status code, its ErrorInfo reason (domain
mrx.gateway) and, for INVALID_ARGUMENT, the BadRequest field paths. Runs on SQLite and
PostgreSQL (see tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import func, select

from gateway.crypto.dsse import RECEIPT_PAYLOAD_TYPE, SUBMISSION_PAYLOAD_TYPE, sign_envelope
from gateway.crypto.suites import PrivateKey, PublicKey, Suite, pae
from gateway.demo_fixtures import demo_status_change
from gateway.domain.certificates import CertState, Scheme
from gateway.domain.identifiers import make_credit_code, uscc_check_char
from gateway.pb import envelope_pb2, exchange_pb2, records_pb2, registry_pb2
from gateway.store.schema import exchanges, record_versions

Code = grpc.StatusCode
WINDOW = timedelta(seconds=300)  # freshness_window_seconds of the demo federation


def submit(client, envelope):
    """Raw Submit: the receipt *envelope* as the gateway signed it."""
    return client.exchange.Submit(exchange_pb2.SubmitRequest(envelope=envelope), timeout=30).receipt


def wrong_check_char(code: str) -> str:
    return code[:17] + ("0" if code[17] != "0" else "1")


def logged(gateway) -> list[tuple[int, int, str]]:
    """(log_index, outcome, reason) of every exchange-log row, in log order."""
    with gateway.engines.reader.connect() as conn:
        rows = conn.execute(
            select(exchanges.c.log_index, exchanges.c.outcome, exchanges.c.reason).order_by(
                exchanges.c.log_index
            )
        )
        return [tuple(r) for r in rows]


# --- authentication: the key, the signature, the sender ----------------------------------


def test_unknown_key_is_refused_and_not_logged(client_for, certs_of, make_env, refused, gateway, store):
    cert = certs_of("CN-JS")[0]
    rogue = PrivateKey.generate(Suite.ED25519, "CN-JS/rogue")
    r = refused(client_for("CN-JS"), make_env(cert, signer=rogue), Code.UNAUTHENTICATED, "UNKNOWN_KEY")
    assert r.metadata["keyid"] == "CN-JS/rogue"
    assert store.exchange_count() == 0
    assert gateway.verifier.unlogged_refusals["UNKNOWN_KEY"] == 1


@pytest.mark.parametrize(
    ("keyid", "reason", "meta"),
    [
        ("CN-JS/revoked", "KEY_REVOKED", "revoked_at"),
        ("CN-JS/future", "KEY_NOT_YET_VALID", "not_before"),
        ("CN-JS/expired", "KEY_EXPIRED", "not_after"),
    ],
)
def test_unusable_keys_are_refused(
    keyid, reason, meta, client_for, certs_of, make_env, refused, signers, store
):
    cert = certs_of("CN-JS")[0]
    r = refused(client_for("CN-JS"), make_env(cert, signer=signers[keyid]), Code.UNAUTHENTICATED, reason)
    assert r.metadata["keyid"] == keyid
    assert meta in r.metadata
    assert store.exchange_count() == 0
    assert store.certificate_count() == 0


def test_revoked_key_is_refused_even_for_a_message_dated_before_the_revocation(
    client_for, certs_of, make_env, refused, signers, clock, federation, gateway
):
    # Backdating is what a thief of the key would do; the gateway clock is moved back too,
    # so freshness alone would let the message through.
    revoked_at = federation.keys["CN-JS/revoked"].revoked_at
    clock.now = revoked_at - timedelta(days=1)
    cert = certs_of("CN-JS")[0]
    env = make_env(cert, signer=signers["CN-JS/revoked"])
    refused(client_for("CN-JS"), env, Code.UNAUTHENTICATED, "KEY_REVOKED")


def test_ed25519_and_ecdsa_keys_are_both_accepted(client_for, certs_of, signers):
    a, b = certs_of("CN-GD", 2)
    assert client_for("CN-GD").publish(a).record_version == 1
    receipt = client_for("CN-GD", signer=signers["CN-GD#ecdsa"]).publish(b)
    assert receipt.record_key == f"certificate_status/{b.scheme.name}/{b.certificate_number}"


def test_key_validity_is_judged_at_created_at(client_for, certs_of, make_env, signers, federation, clock):
    not_after = federation.keys["CN-JS/edge"].not_after
    cert = certs_of("CN-JS")[0]
    env = make_env(cert, signer=signers["CN-JS/edge"], created_at=not_after - timedelta(seconds=60))
    clock.now = not_after + timedelta(seconds=60)  # well inside the freshness window
    receipt = client_for("CN-JS").submit(env)
    assert receipt.record_version == 1


def _flip_payload(env):
    payload = bytearray(env.payload)
    payload[len(payload) // 2] ^= 0x01
    env.payload = bytes(payload)


def _flip_signature(env):
    sig = bytearray(env.signatures[0].sig)
    sig[5] ^= 0x80
    env.signatures[0].sig = bytes(sig)


@pytest.mark.parametrize(
    ("case", "signer_name"),
    [
        ("payload byte flipped", "CN-JS"),
        ("signature byte flipped", "CN-JS"),
        ("signature byte flipped", "CN-GD#ecdsa"),
        ("signed as another payload type", "CN-JS"),
        ("signature truncated", "CN-JS"),
        ("signature of another participant's key under this keyid", "CN-JS"),
    ],
)
def test_bad_signature(case, signer_name, client_for, certs_of, make_env, refused, signers, store):
    issuer = "CN-GD" if signer_name.startswith("CN-GD") else "CN-JS"
    cert = certs_of(issuer)[0]
    env = make_env(cert, signer=signers[signer_name])
    if case == "payload byte flipped":
        _flip_payload(env)
    elif case == "signature byte flipped":
        _flip_signature(env)
    elif case == "signed as another payload type":
        # PAE binds the type: a signature over the same bytes as a receipt is not a
        # signature over a submission.
        other = sign_envelope(payload_type=RECEIPT_PAYLOAD_TYPE, payload=env.payload, signer=signers["CN-JS"])
        env.signatures[0].sig = other.signatures[0].sig
        assert env.payload_type == SUBMISSION_PAYLOAD_TYPE
    elif case == "signature truncated":
        env.signatures[0].sig = env.signatures[0].sig[:32]
    else:
        env.signatures[0].sig = signers["CN-SH"].sign(pae(env.payload_type, env.payload))
    r = refused(client_for(issuer), env, Code.UNAUTHENTICATED, "BAD_SIGNATURE")
    assert r.metadata["keyid"] == signers[signer_name].keyid
    assert store.exchange_count() == 0


@pytest.mark.parametrize(
    ("signer_name", "declared"),
    [
        ("CN-JS", envelope_pb2.SIGNATURE_SUITE_ECDSA_P256_SHA256),
        ("CN-JS", envelope_pb2.SIGNATURE_SUITE_UNSPECIFIED),
        ("CN-JS", 7),
        ("CN-GD#ecdsa", envelope_pb2.SIGNATURE_SUITE_ED25519),
    ],
)
def test_suite_mismatch(signer_name, declared, client_for, certs_of, make_env, refused, signers, store):
    issuer = "CN-GD" if signer_name.startswith("CN-GD") else "CN-JS"
    env = make_env(certs_of(issuer)[0], signer=signers[signer_name])
    env.signatures[0].suite = declared
    r = refused(client_for(issuer), env, Code.UNAUTHENTICATED, "SUITE_MISMATCH")
    assert r.metadata["keyid"] == signers[signer_name].keyid
    assert store.exchange_count() == 0


def test_sender_must_own_the_key(client_for, certs_of, make_env, refused, signers, store):
    cert = certs_of("CN-SH")[0]
    env = make_env(cert, sender="CN-SH", signer=signers["CN-JS"])
    r = refused(client_for("CN-SH"), env, Code.UNAUTHENTICATED, "SENDER_NOT_KEY_OWNER")
    assert r.metadata == {"keyid": "CN-JS/demo", "owner": "CN-JS"}
    assert store.exchange_count() == 0


# --- authorization ---------------------------------------------------------------------


def test_record_issuer_must_be_the_sender(client_for, certs_of, make_env, refused, store, gateway):
    js_cert = certs_of("CN-JS")[0]
    env = make_env(js_cert, sender="CN-SH")  # signed by CN-SH, record says issuer CN-JS
    r = refused(client_for("CN-SH"), env, Code.PERMISSION_DENIED, "NOT_ISSUER")
    assert r.metadata["issuer"] == "CN-JS" and r.metadata["sender"] == "CN-SH"
    assert store.certificate_count() == 0
    assert logged(gateway) == [(0, envelope_pb2.OUTCOME_REFUSED, "NOT_ISSUER")]


def test_stored_issuer_decides_who_may_publish(client_for, certs_of, make_env, refused):
    cert = certs_of("CN-JS")[0]
    client_for("CN-JS").publish(cert)
    claimed = dataclasses.replace(cert, issuer="CN-SH", version=2, state=CertState.SUSPENDED, reason="越权")
    # The number is in Jiangsu's declared block: refused before the stored issuer is even
    # consulted (keys/federation.toml [[jurisdictions]]).
    r = refused(client_for("CN-SH"), make_env(claimed), Code.PERMISSION_DENIED, "OUTSIDE_JURISDICTION")
    assert r.metadata["declared_for"] == "CN-JS" and r.metadata["sender"] == "CN-SH"
    view = client_for("CN-AH").get_certificate(cert.scheme, cert.certificate_number)
    assert (view.certificate.issuer, view.certificate.version) == ("CN-JS", 1)
    assert view.effective_state == CertState.VALID


@pytest.mark.parametrize("principal", ["YRD-SEC", "MRX-GW"])
def test_read_only_principals_may_not_publish(principal, client_for, certs_of, make_env, refused, store):
    cert = dataclasses.replace(certs_of("CN-SH")[0], issuer=principal)
    r = refused(client_for(principal), make_env(cert), Code.PERMISSION_DENIED, "READ_ONLY_PRINCIPAL")
    assert r.metadata["sender"] == principal
    assert store.certificate_count() == 0


# --- freshness ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset", [-(WINDOW + timedelta(seconds=1)), WINDOW + timedelta(seconds=1), timedelta(days=-1)]
)
def test_stale_or_future_created_at_is_refused(offset, client_for, certs_of, make_env, refused, clock, store):
    cert = certs_of("CN-JS")[0]
    env = make_env(cert, created_at=clock.now + offset)
    r = refused(client_for("CN-JS"), env, Code.FAILED_PRECONDITION, "STALE_MESSAGE")
    assert r.metadata["window_seconds"] == "300"
    assert r.metadata["log_index"] == "0"  # authenticated, so it is in the log
    assert store.certificate_count() == 0


@pytest.mark.parametrize("offset", [-WINDOW, WINDOW, timedelta(seconds=-299), timedelta(seconds=42)])
def test_created_at_within_the_window_is_accepted(offset, client_for, certs_of, make_env, clock):
    env = make_env(certs_of("CN-JS")[0], created_at=clock.now + offset)
    assert client_for("CN-JS").submit(env).record_version == 1


# --- replay ------------------------------------------------------------------------------


def test_message_id_reused_with_different_bytes(client_for, certs_of, make_env, refused, store, gateway):
    a, b = certs_of("CN-JS", 2)
    js = client_for("CN-JS")
    js.submit(make_env(a, message_id="js-0001"))
    suspended = demo_status_change(
        a, state=CertState.SUSPENDED, reason="监督抽查不合格", effective_at=a.effective_at
    )
    for cert in (suspended, b):
        r = refused(js, make_env(cert, message_id="js-0001"), Code.ALREADY_EXISTS, "MESSAGE_ID_REUSED")
        assert r.metadata["message_id"] == "js-0001"
    view = js.get_certificate(a.scheme, a.certificate_number)
    assert (view.certificate.version, view.effective_state) == (1, CertState.VALID)
    assert store.certificate_count() == 1
    assert [reason for _, _, reason in logged(gateway)] == ["", "MESSAGE_ID_REUSED", "MESSAGE_ID_REUSED"]


def test_message_ids_are_unique_per_sender_only(client_for, certs_of, make_env):
    client_for("CN-JS").submit(make_env(certs_of("CN-JS")[0], message_id="shared-id"))
    assert client_for("CN-SH").submit(make_env(certs_of("CN-SH")[0], message_id="shared-id")).log_index == 1


def test_identical_resend_returns_the_original_receipt(client_for, certs_of, make_env, store, clock, gateway):
    js = client_for("CN-JS")
    env = make_env(certs_of("CN-JS")[0])
    first = submit(js, env)
    clock.advance(timedelta(seconds=5))
    again = submit(js, env)
    assert again.SerializeToString() == first.SerializeToString()
    assert store.exchange_count() == 1
    assert store.certificate_count() == 1
    with gateway.engines.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(record_versions)).scalar_one() == 1


def test_identical_resend_after_the_window_still_gets_the_original_receipt(
    client_for, certs_of, make_env, refused, store, clock, gateway
):
    js = client_for("CN-JS")
    a, b = certs_of("CN-JS", 2)
    sent_at = clock.now
    env = make_env(a, created_at=sent_at)
    first = submit(js, env)
    clock.advance(timedelta(hours=1))
    # The window really has passed: a new message dated then is stale...
    refused(js, make_env(b, created_at=sent_at), Code.FAILED_PRECONDITION, "STALE_MESSAGE")
    # ...but the lost-reply retry is answered with the original receipt.
    assert submit(js, env).SerializeToString() == first.SerializeToString()
    assert [reason for _, _, reason in logged(gateway)] == ["", "STALE_MESSAGE"]


def test_a_refused_message_id_may_be_reused(client_for, certs_of, make_env, refused, store, gateway):
    cert = certs_of("CN-JS")[0]
    js = client_for("CN-JS")
    bad = dataclasses.replace(
        cert, holder=dataclasses.replace(cert.holder, credit_code=wrong_check_char(cert.holder.credit_code))
    )
    refused(js, make_env(bad, message_id="fix-me-1"), Code.INVALID_ARGUMENT, "INVALID_FIELDS")
    receipt = js.submit(make_env(cert, message_id="fix-me-1"))
    assert (receipt.message_id, receipt.log_index) == ("fix-me-1", 1)
    assert [o for _, o, _ in logged(gateway)] == [envelope_pb2.OUTCOME_REFUSED, envelope_pb2.OUTCOME_ACCEPTED]


# --- field validation ---------------------------------------------------------------------


def _bad_credit_code(s):
    h = s.certificate_status.holder
    h.credit_code = wrong_check_char(h.credit_code)


def _suspend_without_reason(s):
    s.certificate_status.state = records_pb2.CERTIFICATE_STATE_SUSPENDED
    s.certificate_status.reason = ""


def _many(s):
    _bad_credit_code(s)
    s.certificate_status.expiry_date = "2000-01-01"
    s.certificate_status.version = 0
    s.certificate_status.scope = "x" * 2001


CS = "certificate_status"
FIELD_CASES = {
    "credit code check character": (_bad_credit_code, (f"{CS}.holder.credit_code",)),
    "lower-case credit code": (
        lambda s: setattr(
            s.certificate_status.holder,
            "credit_code",
            make_credit_code(division="320505", org_code8="MA1MXP4D").lower(),
        ),
        (f"{CS}.holder.credit_code",),
    ),
    "impossible date": (
        lambda s: setattr(s.certificate_status, "issue_date", "2024-02-30"),
        (f"{CS}.issue_date",),
    ),
    "date not ISO": (
        lambda s: setattr(s.certificate_status, "expiry_date", "2030/01/01"),
        (f"{CS}.expiry_date",),
    ),
    "expiry before issue": (
        lambda s: setattr(s.certificate_status, "expiry_date", "2000-01-01"),
        (f"{CS}.expiry_date",),
    ),
    "unknown scheme 99": (lambda s: setattr(s.certificate_status, "scheme", 99), (f"{CS}.scheme",)),
    "EXPIRED submitted": (
        lambda s: setattr(s.certificate_status, "state", records_pb2.CERTIFICATE_STATE_EXPIRED),
        (f"{CS}.state",),
    ),
    "oversized scope": (lambda s: setattr(s.certificate_status, "scope", "范" * 2001), (f"{CS}.scope",)),
    "version 0": (lambda s: setattr(s.certificate_status, "version", 0), (f"{CS}.version",)),
    "suspended without reason": (_suspend_without_reason, (f"{CS}.reason",)),
    "missing effective_at": (
        lambda s: s.certificate_status.ClearField("effective_at"),
        (f"{CS}.effective_at",),
    ),
    "missing created_at": (lambda s: s.header.ClearField("created_at"), ("header.created_at",)),
    "short nonce": (lambda s: setattr(s.header, "nonce", b"\x01" * 15), ("header.nonce",)),
    "long nonce": (lambda s: setattr(s.header, "nonce", b"\x01" * 65), ("header.nonce",)),
    "no record": (lambda s: s.ClearField("certificate_status"), ("record",)),
    "several at once": (
        _many,
        (
            f"{CS}.holder.credit_code",
            f"{CS}.expiry_date",
            f"{CS}.version",
            f"{CS}.scope",
        ),
    ),
}


@pytest.mark.parametrize("case", list(FIELD_CASES))
def test_invalid_fields(case, client_for, certs_of, make_env, refused, store):
    mutate, fields = FIELD_CASES[case]
    env = make_env(certs_of("CN-JS")[0], mutate=mutate)
    r = refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "INVALID_FIELDS", fields)
    assert r.metadata["log_index"] == "0"
    assert store.certificate_count() == 0


def test_header_problems_are_reported_before_record_problems(client_for, certs_of, make_env, refused):
    # The header is checked first; its violations are reported together.
    def mutate(s):
        s.header.ClearField("created_at")
        s.header.nonce = b""

    env = make_env(certs_of("CN-JS")[0], mutate=mutate)
    refused(
        client_for("CN-JS"),
        env,
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("header.created_at", "header.nonce"),
    )


def test_legacy_credit_code_is_accepted_with_a_warning(client_for, certs_of):
    first17 = "91350102M00012345"  # M000 in positions 9-12: the known legacy family
    legacy = first17 + ("0" if uscc_check_char(first17) != "0" else "1")
    cert = certs_of("CN-FJ")[0]
    cert = dataclasses.replace(cert, holder=dataclasses.replace(cert.holder, credit_code=legacy))
    receipt = client_for("CN-FJ").publish(cert)
    assert len(receipt.warnings) == 1
    assert receipt.warnings[0].startswith("certificate_status.holder.credit_code:")
    assert "legacy" in receipt.warnings[0]
    view = client_for("CN-FJ").get_certificate(cert.scheme, cert.certificate_number)
    assert view.certificate.holder.credit_code == legacy


def test_oversized_envelope(client_for, certs_of, make_env, refused, store, gateway):
    env = make_env(
        certs_of("CN-JS")[0], mutate=lambda s: setattr(s.certificate_status, "scope", "x" * 300_000)
    )
    r = refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "MESSAGE_TOO_LARGE", ("envelope",))
    assert r.metadata["limit"] == str(256 * 1024)
    assert int(r.metadata["size"]) > 256 * 1024
    assert store.exchange_count() == 0
    assert gateway.verifier.unlogged_refusals["MESSAGE_TOO_LARGE"] == 1


def _two_signatures(env, signers):
    env.signatures.append(env.signatures[0])


def _other_type(env, signers):
    env.payload_type = "application/json"


def _no_signature(env, signers):
    del env.signatures[:]


def _empty_payload(env, signers):
    env.payload = b""


def _type_and_signatures(env, signers):
    _other_type(env, signers)
    _no_signature(env, signers)


@pytest.mark.parametrize(
    ("shape", "fields"),
    [
        (_other_type, ("envelope.payload_type",)),
        (_two_signatures, ("envelope.signatures",)),
        (_no_signature, ("envelope.signatures",)),
        (_empty_payload, ("envelope.payload",)),
        (_type_and_signatures, ("envelope.payload_type", "envelope.signatures")),
    ],
)
def test_malformed_envelope(shape, fields, client_for, certs_of, make_env, refused, signers, store):
    env = make_env(certs_of("CN-JS")[0])
    shape(env, signers)
    refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "MALFORMED_ENVELOPE", fields)
    assert store.exchange_count() == 0


def test_garbage_payload_with_a_valid_signature(client_for, signers, refused, store):
    env = sign_envelope(
        payload_type=SUBMISSION_PAYLOAD_TYPE, payload=b"\xff\xff\xff\xff", signer=signers["CN-JS"]
    )
    refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "MALFORMED_PAYLOAD", ("envelope.payload",))


@pytest.mark.parametrize("message_id", ["has space", "x" * 129, "id\n", "引号", "a/b"])
def test_bad_message_id(message_id, client_for, certs_of, make_env, refused):
    env = make_env(certs_of("CN-JS")[0], mutate=lambda s: setattr(s.header, "message_id", message_id))
    refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "INVALID_FIELDS", ("header.message_id",))


def test_empty_message_id_is_refused(client_for, certs_of, make_env, refused):
    env = make_env(certs_of("CN-JS")[0], mutate=lambda s: s.header.ClearField("message_id"))
    refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "INVALID_FIELDS", ("header.message_id",))


@pytest.mark.parametrize(
    ("target", "field"),
    [("created_at", "header.created_at"), ("effective_at", "certificate_status.effective_at")],
)
def test_out_of_range_timestamps_are_invalid_arguments(
    target, field, client_for, certs_of, make_env, refused
):
    def mutate(s):
        ts = s.header.created_at if target == "created_at" else s.certificate_status.effective_at
        ts.seconds = 10**15

    env = make_env(certs_of("CN-JS")[0], mutate=mutate)
    refused(client_for("CN-JS"), env, Code.INVALID_ARGUMENT, "INVALID_FIELDS", (field,))


# --- the life cycle -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final", "attempt"),
    [(CertState.REVOKED, CertState.VALID), (CertState.WITHDRAWN, CertState.SUSPENDED)],
)
def test_final_states_cannot_be_left(final, attempt, client_for, certs_of, make_env, refused, clock):
    js = client_for("CN-JS")
    v1 = certs_of("CN-JS")[0]
    v2 = demo_status_change(v1, state=final, reason="产品存在严重缺陷", effective_at=clock.now)
    js.publish(v1)
    js.publish(v2)
    v3 = demo_status_change(v2, state=attempt, reason="恢复", effective_at=clock.now)
    r = refused(js, make_env(v3), Code.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert (r.metadata["from_state"], r.metadata["to_state"]) == (final.name, attempt.name)
    view = js.get_certificate(v1.scheme, v1.certificate_number)
    assert (view.certificate.version, view.certificate.state, view.effective_state) == (2, final, final)
    # A final state may be republished as itself, e.g. to correct its reason.
    fixed = demo_status_change(v2, state=final, reason="更正：产品存在严重缺陷", effective_at=clock.now)
    assert js.publish(fixed).record_version == 3


@pytest.mark.parametrize("submitted", [1, 2])
def test_older_or_equal_version_is_stale(submitted, client_for, certs_of, make_env, refused, clock):
    js = client_for("CN-JS")
    v1 = certs_of("CN-JS")[0]
    v2 = demo_status_change(v1, state=CertState.SUSPENDED, reason="监督抽查不合格", effective_at=clock.now)
    js.publish(v1)
    js.publish(v2)
    attempt = dataclasses.replace(v1, version=submitted, scope=v1.scope + "（修订）")
    r = refused(js, make_env(attempt), Code.FAILED_PRECONDITION, "STALE_VERSION")
    assert (r.metadata["stored_version"], r.metadata["submitted_version"]) == ("2", str(submitted))
    view = js.get_certificate(v1.scheme, v1.certificate_number)
    assert (view.certificate.version, view.certificate.scope) == (2, v1.scope)


def test_suspended_certificate_may_return_to_valid(client_for, certs_of, clock, store, gateway):
    js = client_for("CN-JS")
    v1 = certs_of("CN-JS")[0]
    v2 = demo_status_change(v1, state=CertState.SUSPENDED, reason="监督抽查不合格", effective_at=clock.now)
    v3 = demo_status_change(v2, state=CertState.VALID, reason="整改完成，恢复证书", effective_at=clock.now)
    assert [js.publish(c).record_version for c in (v1, v2, v3)] == [1, 2, 3]
    view = js.get_certificate(v1.scheme, v1.certificate_number)
    assert (view.certificate.version, view.effective_state) == (3, CertState.VALID)
    assert view.certificate.reason == "整改完成，恢复证书"
    with gateway.engines.reader.connect() as conn:
        states = conn.execute(
            select(record_versions.c.version, record_versions.c.state).order_by(record_versions.c.version)
        ).all()
    assert [tuple(s) for s in states] == [
        (1, CertState.VALID),
        (2, CertState.SUSPENDED),
        (3, CertState.VALID),
    ]


# --- what enters the exchange log ------------------------------------------------------------


def test_refusals_after_the_signature_are_logged_densely(
    client_for, certs_of, make_env, refused, store, clock, signers, gateway
):
    js, sh = client_for("CN-JS"), client_for("CN-SH")
    a, b, c = certs_of("CN-JS", 3)
    js.submit(make_env(a, message_id="m-1"))  # 0 accepted
    attempts = [
        (
            js,
            make_env(b, created_at=clock.now - timedelta(hours=1)),
            Code.FAILED_PRECONDITION,
            "STALE_MESSAGE",
        ),
        (sh, make_env(b, sender="CN-SH"), Code.PERMISSION_DENIED, "NOT_ISSUER"),
        (js, make_env(b, mutate=_bad_credit_code), Code.INVALID_ARGUMENT, "INVALID_FIELDS"),
        (js, make_env(b, message_id="m-1"), Code.ALREADY_EXISTS, "MESSAGE_ID_REUSED"),
        (js, make_env(dataclasses.replace(a, scope="改")), Code.FAILED_PRECONDITION, "STALE_VERSION"),
    ]
    for expected_index, (client, env, code, reason) in enumerate(attempts, start=1):
        r = refused(client, env, code, reason)
        assert r.metadata["log_index"] == str(expected_index)
        assert store.exchange_count() == expected_index + 1
    assert js.publish(c).log_index == len(attempts) + 1
    assert logged(gateway) == [
        (0, envelope_pb2.OUTCOME_ACCEPTED, ""),
        *((i, envelope_pb2.OUTCOME_REFUSED, reason) for i, (_, _, _, reason) in enumerate(attempts, start=1)),
        (len(attempts) + 1, envelope_pb2.OUTCOME_ACCEPTED, ""),
    ]


def test_refusals_before_the_signature_is_proven_are_not_logged(
    client_for, certs_of, make_env, refused, store, signers, gateway
):
    js = client_for("CN-JS")
    cert = certs_of("CN-JS")[0]
    rogue = PrivateKey.generate(Suite.ED25519, "CN-JS/rogue")
    forged = make_env(cert)
    _flip_payload(forged)
    refused(js, make_env(cert, signer=rogue), Code.UNAUTHENTICATED, "UNKNOWN_KEY")
    refused(js, forged, Code.UNAUTHENTICATED, "BAD_SIGNATURE")
    refused(js, make_env(cert, signer=signers["CN-JS/revoked"]), Code.UNAUTHENTICATED, "KEY_REVOKED")
    refused(
        js,
        make_env(cert, sender="CN-SH", signer=signers["CN-JS"]),
        Code.UNAUTHENTICATED,
        "SENDER_NOT_KEY_OWNER",
    )
    assert store.exchange_count() == 0
    counts = gateway.verifier.unlogged_refusals
    assert (counts["UNKNOWN_KEY"], counts["BAD_SIGNATURE"], counts["KEY_REVOKED"]) == (1, 1, 1)
    # The log starts at 0 with the first authenticated attempt.
    assert js.publish(cert).log_index == 0


# --- receipts ------------------------------------------------------------------------------


def test_receipt_is_signed_by_the_gateway_and_names_the_submission(client_for, certs_of, make_env, clock):
    js = client_for("CN-JS")
    keys = js.registry.ListKeys(registry_pb2.ListKeysRequest(owner="MRX-GW")).keys
    assert len(keys) == 1
    gw_key = PublicKey.from_pem(keys[0].public_key_pem, Suite.from_proto(keys[0].suite))

    cert = certs_of("CN-JS")[0]
    for expected_index, message_id in enumerate(["r-1", "r-2"]):
        if expected_index:
            cert = demo_status_change(cert, state=CertState.SUSPENDED, reason="暂停", effective_at=clock.now)
        env = make_env(cert, message_id=message_id)
        receipt_env = submit(js, env)
        assert receipt_env.payload_type == RECEIPT_PAYLOAD_TYPE
        assert len(receipt_env.signatures) == 1
        sig = receipt_env.signatures[0]
        assert sig.keyid == keys[0].keyid
        assert gw_key.verify(pae(receipt_env.payload_type, receipt_env.payload), sig.sig)
        # ...and not with a participant's key, nor over altered bytes.
        assert not gw_key.verify(pae(receipt_env.payload_type, receipt_env.payload + b"\x00"), sig.sig)

        receipt = envelope_pb2.Receipt.FromString(receipt_env.payload)
        assert receipt.message_id == message_id
        assert receipt.sender == "CN-JS"
        assert receipt.outcome == envelope_pb2.OUTCOME_ACCEPTED
        assert receipt.envelope_sha256 == hashlib.sha256(env.SerializeToString(deterministic=True)).digest()
        assert receipt.log_index == expected_index
        assert (
            receipt.record_key == f"certificate_status/{Scheme(cert.scheme).name}/{cert.certificate_number}"
        )
        assert receipt.record_version == cert.version
        assert receipt.received_at.ToDatetime().replace(tzinfo=clock.now.tzinfo) == clock.now
        assert list(receipt.warnings) == []
