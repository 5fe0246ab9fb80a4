"""GetCertificate and QueryCertificates: filters, keyset paging, tokens, derived expiry."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, time, timedelta

import grpc
import pytest

from gateway.demo_fixtures import CQC, demo_status_change
from gateway.domain.certificates import CertState, Scheme
from gateway.pb import exchange_pb2, records_pb2

Code = grpc.StatusCode


@pytest.fixture
def published(client_for, certs_of, clock):
    """40 CN-JS and 12 CN-SH certificates, the first two CN-JS ones then suspended."""
    js = client_for("CN-JS")
    js_certs = certs_of("CN-JS", 40)
    sh_certs = certs_of("CN-SH", 12)
    assert all(o.receipt for o in js.publish_many(js_certs))
    assert all(o.receipt for o in client_for("CN-SH").publish_many(sh_certs))
    suspended = [
        demo_status_change(c, state=CertState.SUSPENDED, reason="监督抽查不合格", effective_at=clock.now)
        for c in js_certs[:2]
    ]
    for c in suspended:
        js.publish(c)
    return {"CN-JS": js_certs, "CN-SH": sh_certs, "suspended": suspended}


def keys(certs):
    return sorted((int(c.scheme), c.certificate_number) for c in certs)


def view_keys(views):
    return [(v.certificate.scheme, v.certificate.certificate_number) for v in views]


def query(client, **kw):
    return client.signed_read(
        "ExchangeService", "QueryCertificates", exchange_pb2.QueryCertificatesRequest(**kw)
    )


def all_pages(client, **kw):
    views, pages = [], 0
    request = exchange_pb2.QueryCertificatesRequest(**kw)
    while True:
        page = client.signed_read("ExchangeService", "QueryCertificates", request)
        pages += 1
        views.extend(page.certificates)
        if not page.next_page_token:
            return views, pages
        request.page_token = page.next_page_token


# --- GetCertificate -------------------------------------------------------------------------


def test_get_certificate_returns_the_issuers_signed_envelope(client_for, certs_of, issuer_verifies, clock):
    cert = certs_of("CN-ZJ")[0]
    receipt = client_for("CN-ZJ").publish(cert)
    view = client_for("CN-AH").get_certificate(cert.scheme, cert.certificate_number)
    assert issuer_verifies(view.envelope)
    assert view.envelope.signatures[0].keyid == "CN-ZJ/demo"
    submission = records_pb2.Submission.FromString(view.envelope.payload)
    assert submission.certificate_status == view.certificate
    assert submission.header.message_id == receipt.message_id
    assert view.certificate.certificate_number == cert.certificate_number
    assert view.certificate.holder.credit_code == cert.holder.credit_code
    assert view.effective_state == CertState.VALID
    assert view.log_index == receipt.log_index
    assert view.received_at.ToDatetime(tzinfo=UTC) == clock.now


def test_get_certificate_not_found(client_for, rpc_refusal, published):
    cert = published["CN-JS"][0]
    reader = client_for("CN-AH")
    other_scheme = Scheme.ORGANIC
    rpc_refusal(
        lambda: reader.get_certificate(other_scheme, cert.certificate_number),
        Code.NOT_FOUND,
        "CERTIFICATE_NOT_FOUND",
    )
    rpc_refusal(
        lambda: reader.get_certificate(Scheme.CCC, "2099010000000000"),
        Code.NOT_FOUND,
        "CERTIFICATE_NOT_FOUND",
    )


@pytest.mark.parametrize(
    ("scheme", "number", "fields"),
    [
        (0, "2024010901000123", ("scheme",)),
        (99, "2024010901000123", ("scheme",)),
        (1, "", ("certificate_number",)),
        (1, "9" * 65, ("certificate_number",)),
        (0, "", ("scheme", "certificate_number")),
    ],
)
def test_get_certificate_invalid_request(scheme, number, fields, client_for, rpc_refusal):
    reader = client_for("CN-AH")
    request = exchange_pb2.GetCertificateRequest(scheme=scheme, certificate_number=number)
    rpc_refusal(
        lambda: reader.signed_read("ExchangeService", "GetCertificate", request),
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        fields,
    )


def test_get_certificate_with_a_nul_in_the_number(client_for, rpc_refusal):
    # PostgreSQL refuses NUL in text; the gateway must say which field, not fail inside.
    reader = client_for("CN-AH")
    request_pb = exchange_pb2.GetCertificateRequest(scheme=1, certificate_number="2024\x000100")
    rpc_refusal(
        lambda: reader.signed_read("ExchangeService", "GetCertificate", request_pb),
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        ("certificate_number",),
    )


@pytest.mark.parametrize("field", ["holder_credit_code", "issuer", "issuing_body"])
def test_query_with_a_nul_in_a_filter(field, client_for, rpc_refusal):
    reader = client_for("CN-AH")
    rpc_refusal(
        lambda: query(reader, **{field: "CN\x00JS"}), Code.INVALID_ARGUMENT, "INVALID_FIELDS", (field,)
    )


# --- QueryCertificates filters ---------------------------------------------------------------


def test_filters(client_for, published, clock):
    reader = client_for("CN-AH")
    js, sh = published["CN-JS"], published["CN-SH"]
    everything = js + sh
    holder = js[0].holder.credit_code
    suspended_numbers = {c.certificate_number for c in published["suspended"]}
    cases = {
        "holder": (
            dict(holder_credit_code=holder),
            [c for c in everything if c.holder.credit_code == holder],
        ),
        "issuing body": (
            dict(issuing_body=CQC.approval_number),
            [c for c in everything if c.issuing_body == CQC.approval_number],
        ),
        "issuer": (dict(issuer="CN-SH"), sh),
        "scheme": (dict(scheme=Scheme.QMS), [c for c in everything if c.scheme is Scheme.QMS]),
        "state suspended": (dict(state=CertState.SUSPENDED), published["suspended"]),
        "state valid": (
            dict(state=CertState.VALID),
            [c for c in everything if c.certificate_number not in suspended_numbers],
        ),
        "state revoked": (dict(state=CertState.REVOKED), []),
        "issuer and scheme": (
            dict(issuer="CN-JS", scheme=Scheme.CCC),
            [c for c in js if c.scheme is Scheme.CCC],
        ),
        "issuer and holder of another issuer": (dict(issuer="CN-SH", holder_credit_code=holder), []),
    }
    for name, (flt, expected) in cases.items():
        views, _ = all_pages(reader, page_size=500, **flt)
        assert view_keys(views) == keys(expected), name
    # Sanity: the filters really partition the data differently.
    assert 0 < len(cases["holder"][1]) < len(js)
    assert 0 < len(cases["scheme"][1]) < len(everything)
    assert 0 < len(cases["issuing body"][1]) < len(everything)


def test_sdk_query_follows_pages(client_for, published):
    views = list(client_for("CN-AH").query_certificates(issuer="CN-JS", page_size=3))
    assert view_keys(views) == keys(published["CN-JS"])
    states = {v.certificate.certificate_number: v.effective_state for v in views}
    assert [states[c.certificate_number] for c in published["suspended"]] == [CertState.SUSPENDED] * 2


def test_paging_7_over_40_yields_every_certificate_once(client_for, published):
    reader = client_for("CN-AH")
    request = exchange_pb2.QueryCertificatesRequest(issuer="CN-JS", page_size=7)
    sizes, seen = [], []
    while True:
        page = reader.signed_read("ExchangeService", "QueryCertificates", request)
        sizes.append(len(page.certificates))
        seen.extend(view_keys(page.certificates))
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert sizes == [7, 7, 7, 7, 7, 5]
    assert seen == keys(published["CN-JS"])
    assert len(set(seen)) == 40


def test_paging_is_stable_under_inserts_between_pages(client_for, published, certs_of):
    # Keyset paging: a certificate published mid-scan before the cursor is not
    # returned and shifts nothing; nothing is skipped or repeated.
    reader = client_for("CN-AH")
    first = query(reader, issuer="CN-JS", page_size=7)
    cursor = view_keys(first.certificates)[-1]
    extra = certs_of("CN-JS", 8, start_serial=41)
    assert all(o.receipt for o in client_for("CN-JS").publish_many(extra))
    after = [k for k in keys(extra) if k > cursor]
    assert 0 < len(after) < len(extra)  # some land behind the cursor, some ahead
    rest, _ = all_pages(reader, issuer="CN-JS", page_size=7, page_token=first.next_page_token)
    seen = view_keys(first.certificates) + view_keys(rest)
    assert seen == sorted(keys(published["CN-JS"]) + after)


def test_page_size_may_change_between_pages(client_for, published):
    reader = client_for("CN-AH")
    first = query(reader, issuer="CN-JS", page_size=10)
    rest, _ = all_pages(reader, issuer="CN-JS", page_size=25, page_token=first.next_page_token)
    assert view_keys(first.certificates) + view_keys(rest) == keys(published["CN-JS"])


def test_default_page_size_is_50(client_for, certs_of):
    js = client_for("CN-JS")
    assert all(o.receipt for o in js.publish_many(certs_of("CN-JS", 51)))
    page = query(js, issuer="CN-JS")
    assert len(page.certificates) == 50 and page.next_page_token
    assert len(query(js, issuer="CN-JS", page_token=page.next_page_token).certificates) == 1


@pytest.mark.parametrize(
    "other_filters",
    [
        dict(issuer="CN-SH"),
        dict(issuer="CN-JS", scheme=Scheme.CCC),
        dict(issuer="CN-JS", state=CertState.VALID),
    ],
)
def test_page_token_is_bound_to_its_filters(other_filters, client_for, published, rpc_refusal):
    reader = client_for("CN-AH")
    token = query(reader, issuer="CN-JS", page_size=7).next_page_token
    assert token
    rpc_refusal(
        lambda: query(reader, page_token=token, page_size=7, **other_filters),
        Code.INVALID_ARGUMENT,
        "BAD_PAGE_TOKEN",
        ("page_token",),
    )


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "bm90IGpzb24",  # "not json"
        base64.urlsafe_b64encode(b'["s", "n", "f"]').decode(),
        base64.urlsafe_b64encode(b'{"s": 1, "n": "x"}').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_garbage_page_token(token, client_for, rpc_refusal):
    reader = client_for("CN-AH")
    rpc_refusal(
        lambda: query(reader, issuer="CN-JS", page_token=token), Code.INVALID_ARGUMENT, "BAD_PAGE_TOKEN"
    )


def test_forged_page_token_with_out_of_range_cursor(client_for, rpc_refusal):
    digest = hashlib.sha256(json.dumps(["", "", "CN-JS", 0, 0]).encode()).hexdigest()[:16]
    token = base64.urlsafe_b64encode(json.dumps([digest, 2**64, "x"]).encode()).decode()
    reader = client_for("CN-AH")
    rpc_refusal(
        lambda: query(reader, issuer="CN-JS", page_token=token), Code.INVALID_ARGUMENT, "BAD_PAGE_TOKEN"
    )


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        (dict(page_size=-1), ("page_size",)),
        (dict(scheme=99), ("scheme",)),
        (dict(state=9), ("state",)),
        (dict(scheme=99, state=9, page_size=-5), ("page_size", "scheme", "state")),
    ],
)
def test_query_invalid_request(request_fields, fields, client_for, rpc_refusal):
    reader = client_for("CN-AH")
    rpc_refusal(
        lambda: query(reader, issuer="CN-JS", **request_fields),
        Code.INVALID_ARGUMENT,
        "INVALID_FIELDS",
        fields,
    )


def test_query_without_any_filter_lists_every_certificate(client_for, published):
    # exchange.proto: "matching every given filter (none: all)" -- reconciliation pages
    # through everything.
    reader = client_for("CN-AH")
    seen = [
        (v.certificate.scheme, v.certificate.certificate_number)
        for v in reader.query_certificates(page_size=9)
    ]
    expected = {(int(c.scheme), c.certificate_number) for certs in published.values() for c in certs}
    assert len(seen) == len(set(seen))
    assert set(seen) == expected


# --- derived expiry -------------------------------------------------------------------------


def test_expired_is_derived_from_the_expiry_date_in_china(client_for, certs_of, clock, issuer_verifies):
    js = client_for("CN-JS")
    expiry = clock.today() + timedelta(days=3)
    cert, other = certs_of("CN-JS", 2)
    cert = dataclasses.replace(cert, expiry_date=expiry)
    js.publish(cert)
    js.publish(other)

    def state():
        return js.get_certificate(cert.scheme, cert.certificate_number).effective_state

    def found(state_filter):
        return [
            v.certificate.certificate_number
            for v in js.query_certificates(issuer="CN-JS", state=state_filter, page_size=500)
        ]

    assert state() == CertState.VALID
    assert cert.certificate_number in found(CertState.VALID)
    assert found(CertState.EXPIRED) == []

    # 23:59 in Beijing on the expiry date (15:59 UTC): the expiry date is still in force.
    clock.now = datetime.combine(expiry, time(15, 59), tzinfo=UTC)
    assert state() == CertState.VALID
    assert cert.certificate_number in found(CertState.VALID)

    # 00:00 in Beijing the next day, though still the expiry date in UTC.
    clock.now = datetime.combine(expiry, time(16, 0), tzinfo=UTC)
    view = js.get_certificate(cert.scheme, cert.certificate_number)
    assert view.effective_state == CertState.EXPIRED
    assert view.certificate.state == CertState.VALID  # as published; only the derived state moves
    assert issuer_verifies(view.envelope)
    assert found(CertState.EXPIRED) == [cert.certificate_number]
    assert cert.certificate_number not in found(CertState.VALID)
    assert other.certificate_number in found(CertState.VALID)


def test_revoked_certificate_stays_revoked_after_its_expiry(client_for, certs_of, clock):
    js = client_for("CN-JS")
    cert = dataclasses.replace(certs_of("CN-JS")[0], expiry_date=clock.today() + timedelta(days=1))
    js.publish(cert)
    js.publish(demo_status_change(cert, state=CertState.REVOKED, reason="撤销", effective_at=clock.now))
    clock.advance(timedelta(days=5))
    assert js.get_certificate(cert.scheme, cert.certificate_number).effective_state == CertState.REVOKED
    assert [v.effective_state for v in js.query_certificates(issuer="CN-JS", state=CertState.REVOKED)] == [
        CertState.REVOKED
    ]
    assert list(js.query_certificates(issuer="CN-JS", state=CertState.EXPIRED)) == []
