"""RegistryService on pytest-grpc's module-scoped server, behind the gateway's SyncErrorInterceptor."""

from __future__ import annotations

from datetime import UTC

import grpc
import pytest

from gateway.crypto.suites import PublicKey, Suite
from gateway.pb import envelope_pb2, registry_pb2, registry_pb2_grpc
from gateway.services.errors import SyncErrorInterceptor
from gateway.services.registry import RegistryServicer

MEMBERS = {
    "CN-SH": ["YRD"],
    "CN-JS": ["YRD"],
    "CN-ZJ": ["YRD"],
    "CN-AH": ["YRD"],
    "CN-BJ": ["BTH"],
    "CN-TJ": ["BTH"],
    "CN-HE": ["BTH"],
    "CN-GD": ["GBA"],
    "CN-HK": ["GBA"],
    "CN-MO": ["GBA"],
    "CN-FJ": [],
    "CN-SN": [],
}


@pytest.fixture(scope="module")
def grpc_add_to_server():
    return registry_pb2_grpc.add_RegistryServiceServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer(federation):
    return RegistryServicer(federation)


@pytest.fixture(scope="module")
def grpc_stub_cls():
    return registry_pb2_grpc.RegistryServiceStub


@pytest.fixture(scope="module")
def grpc_interceptors():
    return [SyncErrorInterceptor()]


def test_list_participants(grpc_stub):
    participants = grpc_stub.ListParticipants(registry_pb2.ListParticipantsRequest()).participants
    assert len(participants) == 16
    roles = {p.code: p.role for p in participants}
    assert {c for c, r in roles.items() if r == registry_pb2.PARTICIPANT_ROLE_MEMBER} == set(MEMBERS)
    assert {c for c, r in roles.items() if r == registry_pb2.PARTICIPANT_ROLE_SECRETARIAT} == {
        "YRD-SEC",
        "BTH-SEC",
        "GBA-SEC",
    }
    assert [c for c, r in roles.items() if r == registry_pb2.PARTICIPANT_ROLE_GATEWAY] == ["MRX-GW"]
    by_code = {p.code: p for p in participants}
    for code, alliances in MEMBERS.items():
        assert list(by_code[code].alliances) == alliances
    assert list(by_code["YRD-SEC"].alliances) == ["YRD"]
    assert by_code["CN-SH"].name == "上海市市场监督管理局"
    assert by_code["CN-SH"].name_en == "Shanghai Administration for Market Regulation"


def test_list_alliances(grpc_stub):
    alliances = {a.code: a for a in grpc_stub.ListAlliances(registry_pb2.ListAlliancesRequest()).alliances}
    assert set(alliances) == {"YRD", "BTH", "GBA"}
    yrd = alliances["YRD"]
    assert list(yrd.members) == ["CN-SH", "CN-JS", "CN-ZJ", "CN-AH"]
    assert (yrd.secretariat, yrd.name, yrd.name_en) == ("YRD-SEC", "长三角", "Yangtze River Delta")
    assert list(alliances["GBA"].members) == ["CN-GD", "CN-HK", "CN-MO"]


def test_list_keys_of_one_owner(grpc_stub, federation, signers):
    keys = {k.keyid: k for k in grpc_stub.ListKeys(registry_pb2.ListKeysRequest(owner="CN-GD")).keys}
    assert set(keys) == {"CN-GD/demo", "CN-GD/demo-p256"}
    assert keys["CN-GD/demo"].suite == envelope_pb2.SIGNATURE_SUITE_ED25519
    p256 = keys["CN-GD/demo-p256"]
    assert p256.suite == envelope_pb2.SIGNATURE_SUITE_ECDSA_P256_SHA256
    public = PublicKey.from_pem(p256.public_key_pem, Suite.from_proto(p256.suite))
    assert public == signers["CN-GD#ecdsa"].public_key()
    record = federation.keys["CN-GD/demo-p256"]
    assert p256.not_before.ToDatetime(tzinfo=UTC) == record.not_before
    assert p256.not_after.ToDatetime(tzinfo=UTC) == record.not_after
    assert not p256.revoked and not p256.HasField("revoked_at")


def test_list_keys_includes_revoked_and_expired_keys_flagged(grpc_stub, federation):
    keys = {k.keyid: k for k in grpc_stub.ListKeys(registry_pb2.ListKeysRequest(owner="CN-JS")).keys}
    assert {"CN-JS/demo", "CN-JS/revoked", "CN-JS/expired", "CN-JS/future"} <= set(keys)
    revoked = keys["CN-JS/revoked"]
    assert revoked.revoked
    assert revoked.revoked_at.ToDatetime(tzinfo=UTC) == federation.keys["CN-JS/revoked"].revoked_at
    assert not revoked.HasField("not_after")  # no end date
    assert not keys["CN-JS/expired"].revoked
    assert all(k.owner == "CN-JS" for k in keys.values())


def test_list_all_keys(grpc_stub, federation):
    keys = grpc_stub.ListKeys(registry_pb2.ListKeysRequest()).keys
    assert sorted(k.keyid for k in keys) == sorted(federation.keys)
    assert {k.owner for k in keys} == set(federation.participants)


def test_list_keys_of_an_unknown_participant(grpc_stub, rpc_refusal):
    refusal = rpc_refusal(
        lambda: grpc_stub.ListKeys(registry_pb2.ListKeysRequest(owner="CN-XX")),
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_PARTICIPANT",
    )
    assert "CN-XX" in refusal.message


def test_list_agreements(grpc_stub, base_federation):
    agreements = grpc_stub.ListAgreements(registry_pb2.ListAgreementsRequest()).agreements
    assert [a.id for a in agreements] == sorted(base_federation.agreements)
    by_id = {a.id: a for a in agreements}
    assert set(by_id) == {
        "YRD-2026-RESULTS",
        "BTH-2026-RESULTS",
        "GBA-2026-CEPA",
        "YRD-BTH-2026-CROSS",
        "JS-GD-2024-PILOT",
        "SN-BJ-HE-2026-ASSESSORS",
    }
    yrd = by_id["YRD-2026-RESULTS"]
    assert yrd.name == "长三角认证检验检测结果互认协议"
    assert (yrd.alliance, list(yrd.parties)) == ("YRD", ["CN-AH", "CN-JS", "CN-SH", "CN-ZJ"])
    assert list(yrd.kinds) == ["assessor", "certificate_status", "pt_result", "spot_check", "test_report"]
    assert (yrd.effective_from, yrd.effective_until) == ("2026-01-01", "")
    gba = by_id["GBA-2026-CEPA"]
    assert (list(gba.kinds), list(gba.schemes)) == (["certificate_status", "test_report"], ["CCC", "QMS"])
    cross = by_id["YRD-BTH-2026-CROSS"]
    assert cross.alliance == ""
    assert list(cross.parties) == sorted(c for c, a in MEMBERS.items() if a in (["YRD"], ["BTH"]))
    pilot = by_id["JS-GD-2024-PILOT"]
    assert (pilot.effective_from, pilot.effective_until) == ("2024-01-01", "2025-12-31")
    assessors = by_id["SN-BJ-HE-2026-ASSESSORS"]
    assert list(assessors.parties) == ["CN-BJ", "CN-HE", "CN-SN"]
    assert list(assessors.fields) == sorted(["电子电器", "食品", "建筑材料"])
    assert list(assessors.schemes) == []
