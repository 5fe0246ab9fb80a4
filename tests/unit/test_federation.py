"""The federation file: the committed pilot federation, key lookups, load errors, keygen."""

from __future__ import annotations

import shutil
import stat
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.crypto import PrivateKey, Suite
from gateway.domain.errors import Unauthenticated
from gateway.domain.recognition import RECORD_KINDS
from gateway.registry import FederationError, Role, load_federation
from gateway.registry.keygen import (
    DEMO_ECDSA_ENTRY,
    demo_keyid,
    generate_participant_key,
    load_demo_signers,
    write_demo_federation,
)

REPO = Path(__file__).resolve().parents[2]
KEYS = REPO / "keys"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

PROVINCES = ["CN-SH", "CN-JS", "CN-ZJ", "CN-AH", "CN-BJ", "CN-TJ", "CN-HE", "CN-GD", "CN-HK", "CN-MO"]
ALL_CODES = {*PROVINCES, "CN-FJ", "CN-SN", "YRD-SEC", "BTH-SEC", "GBA-SEC", "MRX-GW"}


# --- the committed federation -----------------------------------------------------------


def test_committed_federation_loads() -> None:
    fed = load_federation(KEYS)
    assert set(fed.participants) == ALL_CODES
    assert fed.gateway_code == "MRX-GW"
    assert fed.participants["MRX-GW"].role is Role.GATEWAY
    assert fed.freshness_window == timedelta(seconds=300)
    assert {code: a.members for code, a in fed.alliances.items()} == {
        "YRD": ("CN-SH", "CN-JS", "CN-ZJ", "CN-AH"),
        "BTH": ("CN-BJ", "CN-TJ", "CN-HE"),
        "GBA": ("CN-GD", "CN-HK", "CN-MO"),
    }
    assert {code: a.secretariat for code, a in fed.alliances.items()} == {
        "YRD": "YRD-SEC",
        "BTH": "BTH-SEC",
        "GBA": "GBA-SEC",
    }
    assert fed.participants["CN-SH"].name == "上海市市场监督管理局"
    assert fed.participants["CN-TJ"].name == "天津市市场监督管理委员会"
    assert fed.participants["CN-HK"].alliances == ("GBA",)
    assert fed.participants["YRD-SEC"].role is Role.SECRETARIAT
    assert fed.participants["YRD-SEC"].alliances == ("YRD",)
    assert fed.participants["CN-FJ"].alliances == ()
    assert [p.code for p in fed.members_of("BTH")] == ["CN-BJ", "CN-TJ", "CN-HE"]
    assert fed.members_of("NOPE") == []
    assert fed.participant("CN-XX") is None


def test_committed_federation_has_a_pilot_key_for_everyone() -> None:
    fed = load_federation(KEYS)
    at = datetime(2026, 6, 1, tzinfo=UTC)
    for code in ALL_CODES:
        keys = fed.keys_of(code)
        assert keys, code
        assert fed.current_key(code, at=at) is not None, code
        record = fed.key_for_signature(f"{code}/2026-01", at=at)
        assert record.owner == code
        assert record.not_before == T0 and record.not_after == datetime(2028, 1, 1, tzinfo=UTC)


def test_no_private_key_is_in_the_repository() -> None:
    for path in KEYS.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path


# --- crafted federations ----------------------------------------------------------------

HEAD = """
[federation]
name = "test"
gateway = "GW"
freshness_window_seconds = 120

[[alliances]]
code = "AL"
name = "联盟"
name_en = "Alliance"
secretariat = "AL-SEC"
members = ["CN-A", "CN-B"]

[[participants]]
code = "CN-A"
name = "甲"
name_en = "A"
role = "member"

[[participants]]
code = "CN-B"
name = "乙"
name_en = "B"
role = "member"

[[participants]]
code = "AL-SEC"
name = "秘书处"
name_en = "Secretariat"
role = "secretariat"

[[participants]]
code = "GW"
name = "网关"
name_en = "Gateway"
role = "gateway"
"""


def write_key(directory: Path, name: str, suite: Suite = Suite.ED25519) -> PrivateKey:
    key = PrivateKey.generate(suite, name)
    (directory / "public").mkdir(exist_ok=True)
    (directory / "public" / f"{name}.pem").write_text(key.public_key().pem())
    return key


def key_toml(keyid: str, owner: str, file: str, *, suite: str = "ed25519", extra: str = "") -> str:
    return f"""
[[keys]]
keyid = "{keyid}"
owner = "{owner}"
suite = "{suite}"
public_key = "public/{file}.pem"
not_before = 2026-01-01T00:00:00Z
not_after = 2027-01-01T00:00:00Z
{extra}
"""


@pytest.fixture
def crafted(tmp_path: Path) -> Path:
    for name in ("a1", "a2", "a3", "a4", "b1"):
        write_key(tmp_path, name)
    write_key(tmp_path, "b2", Suite.ECDSA_P256_SHA256)
    text = HEAD
    text += key_toml("CN-A/ok", "CN-A", "a1")
    text += key_toml("CN-A/revoked", "CN-A", "a2", extra="revoked = true\nrevoked_at = 2026-03-01T00:00:00Z")
    text += key_toml("CN-A/revoked-undated", "CN-A", "a3", extra="revoked = true")
    text += key_toml("CN-A/open", "CN-A", "a4").replace("not_after = 2027-01-01T00:00:00Z\n", "")
    text += key_toml("CN-B/ok", "CN-B", "b1")
    text += key_toml("CN-B/p256", "CN-B", "b2", suite="ecdsa-p256-sha256").replace(
        "not_before = 2026-01-01T00:00:00Z", "not_before = 2026-06-01T00:00:00+08:00"
    )
    (tmp_path / "federation.toml").write_text(text)
    return tmp_path


def test_crafted_federation_loads(crafted: Path) -> None:
    fed = load_federation(crafted)
    assert fed.freshness_window == timedelta(seconds=120)
    assert fed.keys["CN-B/p256"].suite is Suite.ECDSA_P256_SHA256
    assert fed.keys["CN-B/p256"].not_before == datetime(2026, 5, 31, 16, tzinfo=UTC)
    assert fed.keys["CN-A/open"].not_after is None
    assert [k.keyid for k in fed.keys_of("CN-B")] == ["CN-B/ok", "CN-B/p256"]
    assert fed.keys_of("CN-X") == []
    assert fed.participants["AL-SEC"].alliances == ("AL",)


def test_key_for_signature_valid(crafted: Path) -> None:
    fed = load_federation(crafted)
    assert fed.key_for_signature("CN-A/ok", at=T0).keyid == "CN-A/ok"
    last = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert fed.key_for_signature("CN-A/ok", at=last).owner == "CN-A"
    assert fed.key_for_signature("CN-A/open", at=datetime(2099, 1, 1, tzinfo=UTC)).keyid == "CN-A/open"


@pytest.mark.parametrize(
    ("keyid", "at", "reason", "message"),
    [
        ("CN-A/nope", T0, "UNKNOWN_KEY", "'CN-A/nope' is not in the federation"),
        (
            "CN-A/revoked",
            datetime(2026, 2, 1, tzinfo=UTC),
            "KEY_REVOKED",
            "key CN-A/revoked was revoked on 2026-03-01",
        ),
        ("CN-A/revoked", datetime(2026, 4, 1, tzinfo=UTC), "KEY_REVOKED", "was revoked on 2026-03-01"),
        (
            "CN-A/revoked-undated",
            datetime(2026, 4, 1, tzinfo=UTC),
            "KEY_REVOKED",
            "key CN-A/revoked-undated was revoked",
        ),
        ("CN-A/ok", T0 - timedelta(seconds=1), "KEY_NOT_YET_VALID", "not valid before 2026-01-01"),
        ("CN-A/ok", datetime(2027, 1, 1, tzinfo=UTC), "KEY_EXPIRED", "key CN-A/ok expired on 2027-01-01"),
        (
            "CN-B/p256",
            datetime(2026, 5, 31, 15, 59, 59, tzinfo=UTC),
            "KEY_NOT_YET_VALID",
            "2026-05-31T16:00:00Z",
        ),
    ],
)
def test_key_for_signature_refusals(
    crafted: Path, keyid: str, at: datetime, reason: str, message: str
) -> None:
    fed = load_federation(crafted)
    with pytest.raises(Unauthenticated) as err:
        fed.key_for_signature(keyid, at=at)
    assert err.value.reason == reason
    assert err.value.metadata["keyid"] == keyid
    assert message in err.value.message


def test_key_for_signature_needs_aware_time(crafted: Path) -> None:
    fed = load_federation(crafted)
    with pytest.raises(ValueError, match="timezone"):
        fed.key_for_signature("CN-A/ok", at=datetime(2026, 6, 1))


def test_current_key_prefers_newest_usable(crafted: Path) -> None:
    fed = load_federation(crafted)
    assert fed.current_key("CN-B", at=datetime(2026, 2, 1, tzinfo=UTC)).keyid == "CN-B/ok"  # type: ignore[union-attr]
    assert fed.current_key("CN-B", at=datetime(2026, 7, 1, tzinfo=UTC)).keyid == "CN-B/p256"  # type: ignore[union-attr]
    assert fed.current_key("CN-B", at=datetime(2030, 1, 1, tzinfo=UTC)) is None


def test_federation_is_read_only(crafted: Path) -> None:
    fed = load_federation(crafted)
    with pytest.raises(TypeError):
        fed.keys["x"] = fed.keys["CN-A/ok"]  # type: ignore[index]


# --- load errors ------------------------------------------------------------------------


def load_error(directory: Path, text: str) -> str:
    (directory / "federation.toml").write_text(text)
    with pytest.raises(FederationError) as err:
        load_federation(directory)
    assert str(directory / "federation.toml") in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.replace('code = "CN-B"', 'code = "CN-A"'), "duplicate participant code CN-A"),
        (
            lambda t: t.replace('members = ["CN-A", "CN-B"]', 'members = ["CN-A", "CN-Q"]'),
            "member CN-Q is not a participant",
        ),
        (
            lambda t: t.replace('members = ["CN-A", "CN-B"]', 'members = ["CN-A", "GW"]'),
            "member GW has role 'gateway'",
        ),
        (
            lambda t: t.replace('secretariat = "AL-SEC"', 'secretariat = "CN-B"'),
            "secretariat CN-B has role 'member'",
        ),
        (
            lambda t: t.replace('role = "gateway"', 'role = "member"'),
            "exactly one participant must have role",
        ),
        (lambda t: t.replace('role = "secretariat"', 'role = "gateway"'), "found 2"),
        (lambda t: t.replace('role = "secretariat"', 'role = "admin"'), "role must be one of"),
        (lambda t: t.replace('gateway = "GW"', 'gateway = "CN-A"'), "is not the participant with role"),
        (lambda t: t.replace('name_en = "A"', 'name_en = "A"\nemail = "a@b"'), "unknown field 'email'"),
        (
            lambda t: t.replace("freshness_window_seconds = 120", "freshness_window_seconds = 0"),
            "freshness_window",
        ),
        (lambda t: t.replace('code = "CN-A"', 'code = "cn a"'), "code must be upper-case"),
        (
            lambda t: (
                t + '\n[[alliances]]\ncode = "AL"\nname = "x"\nname_en = "x"\nsecretariat = "AL-SEC"\n'
                'members = ["CN-A"]\n'
            ),
            "duplicate alliance code AL",
        ),
        (lambda t: t + "\n[extra]\n", "unknown section"),
        (lambda t: t + "\n[[keys]\n", "not valid TOML"),
    ],
)
def test_structure_errors(tmp_path: Path, mutate: object, expected: str) -> None:
    text = mutate(HEAD)  # type: ignore[operator]
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (key_toml("CN-A/1", "CN-A", "k") + key_toml("CN-A/1", "CN-A", "k2"), "duplicate keyid CN-A/1"),
        (key_toml("CN-Q/1", "CN-Q", "k"), "owner CN-Q is not a participant"),
        (key_toml("CN-B/1", "CN-A", "k"), "keyid must start with its owner, CN-A/"),
        (key_toml("CN-A/1", "CN-A", "missing"), "public key file public/missing.pem not found"),
        (key_toml("CN-A/1", "CN-A", "k", suite="ecdsa-p256-sha256"), "key is ed25519, not ecdsa-p256-sha256"),
        (key_toml("CN-A/1", "CN-A", "k", suite="rsa"), "suite must be one of"),
        (key_toml("CN-A/1", "CN-A", "junk"), "public key file public/junk.pem"),
        (
            key_toml("CN-A/1", "CN-A", "k").replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00"),
            "UTC offset",
        ),
        (key_toml("CN-A/1", "CN-A", "k").replace("2026-01-01T00:00:00Z", "2026-01-01"), "UTC offset"),
        (
            key_toml("CN-A/1", "CN-A", "k").replace("2027-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
            "not_after must be later",
        ),
        (
            key_toml("CN-A/1", "CN-A", "k", extra="revoked_at = 2026-02-01T00:00:00Z"),
            "revoked_at is set but revoked",
        ),
        (key_toml("CN-A/1", "CN-A", "k", extra='revoked = "yes"'), "revoked must be true or false"),
        (
            key_toml("CN-A/1", "CN-A", "k").replace("not_before = 2026-01-01T00:00:00Z\n", ""),
            "missing not_before",
        ),
        (key_toml("CN-A/1", "CN-A", "k") + key_toml("CN-B/1", "CN-B", "k"), "same public key as CN-A/1"),
        (key_toml("CN-A/1", "CN-A", "k").replace('"public/k.pem"', '"/etc/k.pem"'), "must be relative"),
    ],
)
def test_key_errors(tmp_path: Path, keys: str, expected: str) -> None:
    write_key(tmp_path, "k")
    write_key(tmp_path, "k2")
    (tmp_path / "public" / "junk.pem").write_text("not a key")
    message = load_error(tmp_path, HEAD + keys)
    assert expected in message
    assert "[[keys]] #" in message  # names the entry


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = HEAD.replace('members = ["CN-A", "CN-B"]', 'members = ["CN-Q"]') + key_toml("CN-Z/1", "CN-Z", "x")
    message = load_error(tmp_path, text)
    assert "member CN-Q is not a participant" in message
    assert "owner CN-Z is not a participant" in message
    assert "problems" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="file not found"):
        load_federation(tmp_path)


# --- keygen -----------------------------------------------------------------------------


def test_generate_participant_key_appends_a_loadable_key(tmp_path: Path) -> None:
    fed_dir = tmp_path / "keys"
    fed_dir.mkdir()
    original = HEAD + "\n# a comment that must survive\n"
    (fed_dir / "federation.toml").write_text(original)
    private_dir = tmp_path / "private"

    private_path, public_path = generate_participant_key(
        federation_dir=fed_dir, owner="CN-A", private_dir=private_dir, not_before=T0, not_after=None
    )
    assert private_path == private_dir / "CN-A_2026-01.key.pem"
    assert public_path == fed_dir / "public" / "CN-A_2026-01.pem"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(private_dir.stat().st_mode) == 0o700
    assert (fed_dir / "federation.toml").read_text().startswith(original)

    # Same month again: the key id gets a suffix; an ECDSA key works the same way.
    second, _ = generate_participant_key(
        federation_dir=fed_dir,
        owner="CN-A",
        private_dir=private_dir,
        suite=Suite.ECDSA_P256_SHA256,
        not_before=T0 + timedelta(days=3),
        not_after=T0 + timedelta(days=400),
    )
    assert second.name == "CN-A_2026-01-2.key.pem"

    fed = load_federation(fed_dir)
    assert [k.keyid for k in fed.keys_of("CN-A")] == ["CN-A/2026-01", "CN-A/2026-01-2"]
    signer = PrivateKey.load(private_path, "CN-A/2026-01")
    record = fed.key_for_signature(signer.keyid, at=T0)
    assert record.public_key.verify(b"m", signer.sign(b"m"))
    assert fed.keys["CN-A/2026-01-2"].suite is Suite.ECDSA_P256_SHA256


def test_generate_participant_key_refusals(tmp_path: Path) -> None:
    (tmp_path / "federation.toml").write_text(HEAD)
    with pytest.raises(ValueError, match="CN-Q is not a participant"):
        generate_participant_key(
            federation_dir=tmp_path, owner="CN-Q", private_dir=tmp_path / "p", not_before=T0, not_after=None
        )
    with pytest.raises(ValueError, match="timezone"):
        generate_participant_key(
            federation_dir=tmp_path,
            owner="CN-A",
            private_dir=tmp_path / "p",
            not_before=datetime(2026, 1, 1),
            not_after=None,
        )
    generate_participant_key(
        federation_dir=tmp_path,
        owner="CN-A",
        private_dir=tmp_path / "p",
        keyid="CN-A/x",
        not_before=T0,
        not_after=None,
    )
    with pytest.raises(ValueError, match="already in"):
        generate_participant_key(
            federation_dir=tmp_path,
            owner="CN-A",
            private_dir=tmp_path / "p",
            keyid="CN-A/x",
            not_before=T0,
            not_after=None,
        )


def test_generate_participant_key_rolls_back_a_bad_key(tmp_path: Path) -> None:
    (tmp_path / "federation.toml").write_text(HEAD)
    with pytest.raises(FederationError, match="keyid must start with its owner"):
        generate_participant_key(
            federation_dir=tmp_path,
            owner="CN-A",
            private_dir=tmp_path / "p",
            keyid="CN-B/x",
            not_before=T0,
            not_after=None,
        )
    assert (tmp_path / "federation.toml").read_text() == HEAD
    assert list((tmp_path / "p").iterdir()) == []
    assert list((tmp_path / "public").iterdir()) == []


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_generate_participant_key_refuses_unignored_dir_in_git_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("secret/\n")
    (repo / "federation.toml").write_text(HEAD)
    with pytest.raises(PermissionError, match="not git-ignored"):
        generate_participant_key(
            federation_dir=repo, owner="CN-A", private_dir=repo / "keys-here", not_before=T0, not_after=None
        )
    assert not (repo / "keys-here").exists()
    private_path, _ = generate_participant_key(
        federation_dir=repo, owner="CN-A", private_dir=repo / "secret", not_before=T0, not_after=None
    )
    assert private_path.parent == repo / "secret"


def test_write_demo_federation(tmp_path: Path) -> None:
    now = datetime(2026, 11, 1, 8, 0, 0, 123456, tzinfo=UTC)
    start = time.perf_counter()
    paths = write_demo_federation(template_dir=KEYS, dest=tmp_path / "demo", now=now)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, elapsed  # the brief asks for <0.2 s; leave room for a slow CI box

    fed = load_federation(tmp_path / "demo")
    assert set(fed.participants) == ALL_CODES
    assert set(paths) == ALL_CODES | {DEMO_ECDSA_ENTRY}
    signers = load_demo_signers(paths)
    for entry, signer in signers.items():
        assert stat.S_IMODE(paths[entry].stat().st_mode) == 0o600
        record = fed.key_for_signature(signer.keyid, at=now)
        assert record.keyid == demo_keyid(entry)
        assert record.public_key == signer.public_key()
        assert record.not_before == datetime(2026, 10, 31, 8, tzinfo=UTC)
        assert record.not_after == datetime(2027, 11, 1, 8, tzinfo=UTC)
    assert signers["CN-GD"].suite is Suite.ED25519
    assert signers[DEMO_ECDSA_ENTRY].suite is Suite.ECDSA_P256_SHA256
    assert {k.suite for k in fed.keys_of("CN-GD")} == {Suite.ED25519, Suite.ECDSA_P256_SHA256}
    # CN-TJ signs with SM2 only, as a province with an SM2 hardware module would.
    assert signers["CN-TJ"].suite is Suite.SM2_SM3
    assert [k.suite for k in fed.keys_of("CN-TJ")] == [Suite.SM2_SM3]
    assert {k.suite for k in fed.keys.values()} == set(Suite)
    # Demo keys are fresh each time.
    again = write_demo_federation(template_dir=KEYS, dest=tmp_path / "demo2", now=now)
    assert again["CN-SH"].read_bytes() != paths["CN-SH"].read_bytes()
    with pytest.raises(FileExistsError):
        write_demo_federation(template_dir=KEYS, dest=tmp_path / "demo", now=now)


# --- agreements -------------------------------------------------------------------------

YRD = frozenset({"CN-SH", "CN-JS", "CN-ZJ", "CN-AH"})
BTH = frozenset({"CN-BJ", "CN-TJ", "CN-HE"})
GBA = frozenset({"CN-GD", "CN-HK", "CN-MO"})


def test_committed_federation_agreements() -> None:
    fed = load_federation(KEYS)
    agreements = fed.agreements
    assert list(agreements) == [
        "YRD-2026-RESULTS",
        "BTH-2026-RESULTS",
        "GBA-2026-CEPA",
        "YRD-BTH-2026-CROSS",
        "JS-GD-2024-PILOT",
        "SN-BJ-HE-2026-ASSESSORS",
    ]
    yrd = agreements["YRD-2026-RESULTS"]
    assert (yrd.parties, yrd.alliance, yrd.kinds) == (YRD, "YRD", RECORD_KINDS)
    assert yrd.name == "长三角认证检验检测结果互认协议"
    assert {"CCC", "CMA", "QMS", "EMS", "OHSMS"} <= yrd.schemes
    assert (yrd.effective_from, yrd.effective_until) == (date(2026, 1, 1), None)

    bth = agreements["BTH-2026-RESULTS"]
    assert (bth.parties, bth.alliance, bth.schemes) == (BTH, "BTH", frozenset())
    assert bth.kinds == {"certificate_status", "test_report", "pt_result", "assessor"}
    assert bth.effective_from == date(2026, 3, 1)

    gba = agreements["GBA-2026-CEPA"]
    assert (gba.parties, gba.alliance) == (GBA, "GBA")
    assert (gba.kinds, gba.schemes) == ({"certificate_status", "test_report"}, {"CCC", "QMS"})

    cross = agreements["YRD-BTH-2026-CROSS"]
    assert (cross.parties, cross.alliance) == (YRD | BTH, None)
    assert (cross.kinds, cross.schemes) == ({"certificate_status", "test_report"}, {"CCC"})
    assert cross.effective_from == date(2026, 7, 1)

    pilot = agreements["JS-GD-2024-PILOT"]
    assert pilot.parties == {"CN-JS", "CN-GD"} and pilot.kinds == {"test_report"}
    assert pilot.in_force(date(2025, 12, 31)) and not pilot.in_force(date(2026, 1, 1))

    assessors = agreements["SN-BJ-HE-2026-ASSESSORS"]
    assert assessors.parties == {"CN-SN", "CN-BJ", "CN-HE"} and assessors.kinds == {"assessor"}
    assert assessors.fields == {"电子电器", "食品", "建筑材料"}

    # No secretariat, the gateway or an outsider is bound by anything.
    bound = frozenset().union(*(a.parties for a in agreements.values()))
    assert bound == YRD | BTH | GBA | {"CN-SN"}
    assert [a.id for a in fed.agreements_between("CN-SH", "CN-BJ")] == ["YRD-BTH-2026-CROSS"]
    assert [a.id for a in fed.agreements_between("CN-JS", "CN-GD")] == ["JS-GD-2024-PILOT"]
    assert [a.id for a in fed.agreements_between("CN-BJ", "CN-SN")] == ["SN-BJ-HE-2026-ASSESSORS"]
    assert fed.agreements_between("CN-FJ", "CN-SH") == []


def test_write_demo_federation_keeps_the_agreements(tmp_path: Path) -> None:
    template = load_federation(KEYS)
    write_demo_federation(template_dir=KEYS, dest=tmp_path / "demo", now=T0)
    demo = load_federation(tmp_path / "demo")
    assert list(demo.agreements) == list(template.agreements)
    assert dict(demo.agreements) == dict(template.agreements)
