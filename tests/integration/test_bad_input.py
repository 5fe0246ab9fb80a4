"""Bad input answered precisely: out-of-range indexes, forged page tokens, hidden entries."""

from __future__ import annotations

import base64
import hashlib
import json

import grpc
import pytest

from gateway.client import AuditClient
from gateway.pb import exchange_pb2

Code = grpc.StatusCode


@pytest.fixture
def auditor(gateway, signers):
    opened = []

    def _open(code):
        client = AuditClient(gateway.address, principal=code, signer=signers[code])
        opened.append(client)
        return client

    yield _open
    for client in opened:
        client.close()


def test_indexes_from_2_63_are_out_of_range(gateway, auditor, rpc_refusal):
    yrd = auditor("YRD-SEC")
    for index in (2**63, 2**64 - 1):
        rpc_refusal(lambda index=index: yrd.envelope(log_index=index), Code.OUT_OF_RANGE, "INDEX_BEYOND_LOG")


def test_out_of_range_does_not_reveal_where_a_hidden_exchange_is(
    gateway, client_for, auditor, make_env, certs_of, rpc_refusal
):
    js = client_for("CN-JS")
    js.publish(certs_of("CN-JS")[0])
    gd_env = make_env(certs_of("CN-GD")[0])
    client_for("CN-GD").submit(gd_env)  # log index 1, outside the YRD secretariat's scope
    digest = hashlib.sha256(gd_env.SerializeToString(deterministic=True)).digest()
    yrd = auditor("YRD-SEC")
    refusal = rpc_refusal(
        lambda: yrd.inclusion_proof(envelope_sha256=digest, tree_size=1),
        Code.PERMISSION_DENIED,
        "OUTSIDE_SCOPE",
    )
    assert "log_index" not in refusal.metadata and "1" not in refusal.message
    # Its own province's auditor may see it, and learns it is beyond that tree.
    gba = auditor("GBA-SEC")
    refusal = rpc_refusal(
        lambda: gba.inclusion_proof(envelope_sha256=digest, tree_size=1),
        Code.OUT_OF_RANGE,
        "INDEX_BEYOND_TREE",
    )
    assert "log_index" not in refusal.metadata


@pytest.mark.parametrize(
    "token",
    [
        base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(),  # nested far beyond a cursor
        "A" * 100_000,  # far beyond any token issued
        base64.urlsafe_b64encode(json.dumps({"a": [1, [2, [3]]]}).encode()).decode(),
    ],
)
def test_forged_page_tokens_are_bad_page_tokens(gateway, client_for, token, rpc_refusal):
    reader = client_for("CN-SH")
    request = exchange_pb2.QueryCertificatesRequest(page_token=token)
    rpc_refusal(
        lambda: reader.signed_read("ExchangeService", "QueryCertificates", request),
        Code.INVALID_ARGUMENT,
        "BAD_PAGE_TOKEN",
        ("page_token",),
    )
