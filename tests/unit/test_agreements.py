"""[[agreements]] in the federation file: loading, validation, lookups, demo copies, protos."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.registry import Federation, FederationError, load_federation
from gateway.registry.keygen import write_demo_federation
from gateway.services.registry import agreement_to_proto

HEAD = """
[federation]
name = "test"
gateway = "GW"

[[alliances]]
code = "AL"
name = "甲联盟"
name_en = "Alliance A"
secretariat = "AL-SEC"
members = ["CN-A", "CN-B"]

[[alliances]]
code = "BL"
name = "乙联盟"
name_en = "Alliance B"
secretariat = "BL-SEC"
members = ["CN-C"]

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
code = "CN-C"
name = "丙"
name_en = "C"
role = "member"

[[participants]]
code = "CN-D"
name = "丁"
name_en = "D"
role = "member"

[[participants]]
code = "AL-SEC"
name = "甲秘书处"
name_en = "Secretariat A"
role = "secretariat"

[[participants]]
code = "BL-SEC"
name = "乙秘书处"
name_en = "Secretariat B"
role = "secretariat"

[[participants]]
code = "GW"
name = "网关"
name_en = "Gateway"
role = "gateway"
"""

AGREEMENTS = """
[[agreements]]
id = "AL-2026"
name = "甲联盟互认协议"
alliance = "AL"
kinds = ["certificate_status", "test_report", "pt_result", "spot_check", "assessor"]
schemes = ["CCC", "QMS"]
effective_from = 2026-01-01

[[agreements]]
id = "AL-BL-2026"
name = "甲乙跨联盟协议"
parties = ["alliance:AL", "alliance:BL"]
kinds = ["test_report"]
effective_from = 2026-07-01

[[agreements]]
id = "AD-2024"
name = "甲丁试点"
parties = ["CN-D", "CN-A"]
kinds = ["assessor"]
fields = ["食品", "建筑材料"]
effective_from = 2024-01-01
effective_until = 2025-12-31
"""

# One valid agreement for the validation tests to break, one thing at a time.
ONE = """
[[agreements]]
id = "AG-1"
name = "协议"
parties = ["CN-A", "CN-B"]
kinds = ["certificate_status", "assessor"]
schemes = ["CCC"]
fields = ["食品"]
effective_from = 2026-01-01
effective_until = 2026-12-31
"""


def write(directory: Path, text: str) -> Path:
    (directory / "federation.toml").write_text(text, encoding="utf-8")
    return directory


def load_error(directory: Path, text: str) -> str:
    write(directory, text)
    with pytest.raises(FederationError) as err:
        load_federation(directory)
    return str(err.value)


def test_crafted_agreements_load(tmp_path: Path) -> None:
    fed = load_federation(write(tmp_path, HEAD + AGREEMENTS))
    assert list(fed.agreements) == ["AL-2026", "AL-BL-2026", "AD-2024"]

    alliance_wide = fed.agreements["AL-2026"]
    assert alliance_wide.name == "甲联盟互认协议"
    assert (alliance_wide.parties, alliance_wide.alliance) == ({"CN-A", "CN-B"}, "AL")
    assert alliance_wide.schemes == {"CCC", "QMS"} and alliance_wide.fields == frozenset()
    assert (alliance_wide.effective_from, alliance_wide.effective_until) == (date(2026, 1, 1), None)

    cross = fed.agreements["AL-BL-2026"]
    # "alliance:" references expand to members; the secretariats are not parties.
    assert (cross.parties, cross.alliance) == ({"CN-A", "CN-B", "CN-C"}, None)
    assert cross.schemes == frozenset()

    pilot = fed.agreements["AD-2024"]
    assert pilot.parties == {"CN-A", "CN-D"} and pilot.fields == {"食品", "建筑材料"}
    assert pilot.effective_until == date(2025, 12, 31)
    assert "3 agreements" in repr(fed)


def test_a_federation_without_agreements(tmp_path: Path) -> None:
    fed = load_federation(write(tmp_path, HEAD))
    assert dict(fed.agreements) == {}
    assert fed.agreements_between("CN-A", "CN-B") == []
    built = Federation(
        name="x",
        freshness_window=timedelta(seconds=300),
        gateway_code="GW",
        participants={},
        alliances={},
        keys={},
    )
    assert dict(built.agreements) == {}


def test_agreements_are_read_only(tmp_path: Path) -> None:
    fed = load_federation(write(tmp_path, HEAD + AGREEMENTS))
    with pytest.raises(TypeError):
        fed.agreements["X"] = fed.agreements["AL-2026"]  # type: ignore[index]


def test_agreements_between(tmp_path: Path) -> None:
    fed = load_federation(write(tmp_path, HEAD + AGREEMENTS))
    # Sorted by id, expired ones included: the caller decides by date.
    assert [a.id for a in fed.agreements_between("CN-A", "CN-D")] == ["AD-2024"]
    assert [a.id for a in fed.agreements_between("CN-B", "CN-A")] == ["AL-2026", "AL-BL-2026"]
    assert [a.id for a in fed.agreements_between("CN-A", "CN-B")] == ["AL-2026", "AL-BL-2026"]
    assert [a.id for a in fed.agreements_between("CN-C", "CN-B")] == ["AL-BL-2026"]
    assert fed.agreements_between("CN-C", "CN-D") == []
    assert fed.agreements_between("AL-SEC", "CN-A") == []
    assert fed.agreements_between("CN-A", "CN-Q") == []


Mutation = Callable[[str], str]


def swap(old: str, new: str) -> Mutation:
    def mutate(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return mutate


PARTIES = 'parties = ["CN-A", "CN-B"]'


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (swap(PARTIES, 'alliance = "ZZ"'), "alliance 'ZZ' is not an alliance"),
        (swap(PARTIES, 'parties = ["CN-A", "CN-Q"]'), "party CN-Q is not a participant"),
        (swap(PARTIES, 'parties = ["CN-A", "alliance:ZZ"]'), "party alliance:ZZ: ZZ is not an alliance"),
        (
            swap(PARTIES, 'parties = ["CN-A", "AL-SEC"]'),
            "party AL-SEC has role 'secretariat'; only members can be parties",
        ),
        (swap(PARTIES, 'parties = ["CN-A", "GW"]'), "party GW has role 'gateway'; only members"),
        (swap(PARTIES, 'parties = ["CN-A"]'), "an agreement needs at least 2 parties, found 1"),
        (swap(PARTIES, 'alliance = "BL"'), "an agreement needs at least 2 parties, found 1"),
        (swap(PARTIES, 'parties = ["CN-A", "CN-A", "CN-B"]'), "parties: CN-A listed twice"),
        (
            swap(PARTIES, 'parties = ["alliance:AL", "CN-A"]'),
            "party CN-A listed twice (as alliance:AL and as CN-A)",
        ),
        (swap(PARTIES, 'parties = "CN-A"'), "parties must be an array of non-empty strings"),
        (swap(PARTIES, 'alliance = "AL"\n' + PARTIES), "give either alliance or parties, not both"),
        (swap(PARTIES + "\n", ""), "missing parties"),
        (
            swap(
                'kinds = ["certificate_status", "assessor"]',
                'kinds = ["certificate_status", "assessor", "audit"]',
            ),
            "unknown kind 'audit'",
        ),
        (swap('kinds = ["certificate_status", "assessor"]', "kinds = []"), "kinds must not be empty"),
        (swap('kinds = ["certificate_status", "assessor"]\n', ""), "missing kinds"),
        (swap('schemes = ["CCC"]', 'schemes = ["CCC", "ISO9001"]'), "unknown scheme 'ISO9001'"),
        (
            swap('kinds = ["certificate_status", "assessor"]', 'kinds = ["assessor"]'),
            "schemes restrict certificate_status records, but kinds does not include it",
        ),
        (
            swap('kinds = ["certificate_status", "assessor"]', 'kinds = ["certificate_status"]'),
            "fields restrict assessor records, but kinds does not include assessor",
        ),
        (
            swap("effective_until = 2026-12-31", "effective_until = 2025-12-31"),
            "effective_until 2025-12-31 is before effective_from 2026-01-01",
        ),
        (
            swap("effective_from = 2026-01-01", "effective_from = 2026-01-01T00:00:00Z"),
            "effective_from must be a date, e.g. 2026-01-01",
        ),
        (
            swap("effective_from = 2026-01-01", 'effective_from = "2026-01-01"'),
            "effective_from must be a date",
        ),
        (swap("effective_from = 2026-01-01\n", ""), "missing effective_from"),
        (swap('name = "协议"', 'name = "协议"\nnote = "x"'), "unknown field 'note'"),
        (swap('name = "协议"\n', ""), "missing name"),
    ],
)
def test_agreement_problems_name_the_entry(tmp_path: Path, mutate: Mutation, expected: str) -> None:
    message = load_error(tmp_path, HEAD + mutate(ONE))
    assert f"[[agreements]] #1 'AG-1': {expected}" in message


def test_agreement_id_problems(tmp_path: Path) -> None:
    message = load_error(tmp_path, HEAD + ONE + ONE)
    assert "[[agreements]] #2 'AG-1': duplicate agreement id AG-1" in message
    message = load_error(tmp_path, HEAD + ONE.replace('id = "AG-1"', 'id = "ag 1"'))
    assert "[[agreements]] #1 'ag 1': id must be upper-case" in message
    message = load_error(tmp_path, HEAD + ONE.replace('id = "AG-1"\n', ""))
    assert "[[agreements]] #1: missing id" in message


def test_agreements_must_be_an_array_of_tables(tmp_path: Path) -> None:
    message = load_error(tmp_path, HEAD + '\n[agreements]\nid = "AG-1"\n')
    assert "agreements: must be an array of tables, written [[agreements]]" in message


def test_every_agreement_problem_is_reported_at_once(tmp_path: Path) -> None:
    second = ONE.replace('id = "AG-1"', 'id = "AG-2"').replace(PARTIES, 'parties = ["CN-A", "BL-SEC"]')
    first = ONE.replace('schemes = ["CCC"]', 'schemes = ["XYZ"]').replace(
        "effective_until = 2026-12-31", "effective_until = 2025-01-01"
    )
    message = load_error(tmp_path, HEAD + first + second)
    assert "3 problems" in message
    assert "[[agreements]] #1 'AG-1': unknown scheme 'XYZ'" in message
    assert "[[agreements]] #1 'AG-1': effective_until 2025-01-01 is before" in message
    assert "[[agreements]] #2 'AG-2': party BL-SEC has role 'secretariat'" in message


def test_demo_federation_copies_the_agreements(tmp_path: Path) -> None:
    template = tmp_path / "template"
    template.mkdir()
    write(template, HEAD + AGREEMENTS)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    write_demo_federation(template_dir=template, dest=tmp_path / "demo", now=now)
    demo = load_federation(tmp_path / "demo")
    assert dict(demo.agreements) == dict(load_federation(template).agreements)
    text = (tmp_path / "demo" / "federation.toml").read_text(encoding="utf-8")
    assert 'alliance = "AL"' in text
    # An "alliance:" reference is written out as the members it stood for.
    assert 'parties = ["CN-A", "CN-B", "CN-C"]' in text
    assert "effective_until = 2025-12-31" in text


def test_agreement_to_proto(tmp_path: Path) -> None:
    fed = load_federation(write(tmp_path, HEAD + AGREEMENTS))
    msg = agreement_to_proto(fed.agreements["AD-2024"])
    assert (msg.id, msg.name, msg.alliance) == ("AD-2024", "甲丁试点", "")
    assert list(msg.parties) == ["CN-A", "CN-D"]
    assert list(msg.kinds) == ["assessor"]
    assert list(msg.schemes) == []
    assert list(msg.fields) == sorted(["食品", "建筑材料"])
    assert (msg.effective_from, msg.effective_until) == ("2024-01-01", "2025-12-31")
    wide = agreement_to_proto(fed.agreements["AL-2026"])
    assert wide.alliance == "AL" and wide.effective_until == ""
    assert list(wide.kinds) == sorted(wide.kinds) and len(wide.kinds) == 5
    assert list(wide.schemes) == ["CCC", "QMS"]
