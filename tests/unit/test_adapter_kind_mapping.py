"""Every record kind is mappable from a flat local row, from the one kinds registry."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from adapters import AdapterError
from adapters.base import SourceRow
from adapters.mapping import (
    canonical_values,
    kind_fields,
    load_mapping,
    mapping_from_dict,
    reference_markdown,
)
from gateway.domain.kinds import kind_names
from gateway.domain.records import Assessor, PtClass, PtResult, QualificationKind, SpotCheck

ROOT = Path(__file__).resolve().parents[2]

ASSESSOR_MAPPING: dict[str, Any] = {
    "record": {"kind": "assessor", "cursor": "序号"},
    "constants": {"home": "CN-JS"},
    "fields": {
        "registration_number": "注册编号",
        "name": "姓名",
        "state": "状态",
        "reason": "说明",
        "effective_at": "变更时间",
        "version": "序号",
        "qualifications_1_kind": "资格1类别",
        "qualifications_1_grade": "资格1级别",
        "qualifications_1_fields": "资格1专业",
        "qualifications_1_valid_from": "资格1起",
        "qualifications_1_valid_until": "资格1止",
        "qualifications_2_kind": "资格2类别",
        "qualifications_2_grade": "资格2级别",
        "qualifications_2_fields": "资格2专业",
        "qualifications_2_valid_from": "资格2起",
        "qualifications_2_valid_until": "资格2止",
    },
    "values": {
        "state": {"有效": "VALID", "暂停": "SUSPENDED", "过期": "EXPIRED"},
        "qualifications_kind": {"评审员": "CMA_ASSESSOR", "审核员": "CERTIFICATION_AUDITOR"},
    },
    "formats": {"date": ["%Y-%m-%d"]},
}


def _assessor_row(**over: str) -> SourceRow:
    values = {
        "序号": "7",
        "注册编号": "JS-A-0042",
        "姓名": "王晓明",
        "状态": "有效",
        "说明": "",
        "变更时间": "2026-03-01 09:00:00",
        "资格1类别": "评审员",
        "资格1级别": "高级评审员",
        "资格1专业": "食品；化学",
        "资格1起": "2024-01-01",
        "资格1止": "2028-12-31",
        "资格2类别": "审核员",
        "资格2级别": "审核员",
        "资格2专业": "QMS",
        "资格2起": "2025-01-01",
        "资格2止": "2027-12-31",
    }
    return SourceRow("line 2", {**values, **over})


def test_an_assessor_with_numbered_qualification_columns_maps_and_maps_back() -> None:
    mapping = mapping_from_dict(ASSESSOR_MAPPING)
    mapped = mapping.map_row(_assessor_row())
    assert mapped.problems == () and isinstance(mapped.record, Assessor)
    a = mapped.record
    assert a.key == "assessor/CN-JS/JS-A-0042" and a.issuer == "CN-JS"
    assert [(q.kind, q.fields) for q in a.qualifications] == [
        (QualificationKind.CMA_ASSESSOR, ("食品", "化学")),
        (QualificationKind.CERTIFICATION_AUDITOR, ("QMS",)),
    ]
    row = mapping.to_row(a)
    assert (row["资格1类别"], row["资格1专业"], row["资格2止"]) == ("评审员", "食品;化学", "2027-12-31")
    assert mapping.map_row(SourceRow("again", {**row, "序号": "7"})).record == a


def test_an_empty_qualification_group_is_left_out_and_problems_name_its_own_columns() -> None:
    mapping = mapping_from_dict(ASSESSOR_MAPPING)
    empty_first = {c: "" for c in ("资格1类别", "资格1级别", "资格1专业", "资格1起", "资格1止")}
    one = mapping.map_row(_assessor_row(**empty_first))
    assert isinstance(one.record, Assessor) and len(one.record.qualifications) == 1
    # The second group becomes the record's first qualification; a problem in it still
    # names the second group's column, not the first's.
    bad = mapping.map_row(_assessor_row(**empty_first, 资格2止="2020-01-01"))
    assert [(p.field, p.why) for p in bad.problems] == [
        ("资格2止", "must not be before valid_from (2025-01-01)")
    ]
    none = mapping.map_row(_assessor_row(**empty_first, **{c.replace("1", "2"): "" for c in empty_first}))
    assert [p.field for p in none.problems] == ["资格1类别"]
    assert "at least one qualification" in none.problems[0].why


def test_an_expired_assessor_is_sent_valid_only_when_its_qualifications_have_lapsed() -> None:
    mapping = mapping_from_dict(ASSESSOR_MAPPING)
    lapsed = mapping.map_row(_assessor_row(状态="过期", 资格1止="2025-12-31", 资格2止="2025-12-31"))
    assert lapsed.record is not None and lapsed.record.state.name == "VALID"
    current = mapping.map_row(_assessor_row(状态="过期"))
    assert [(p.field, p.why) for p in current.problems] == [
        ("状态", "says expired, but the valid until 2028-12-31 has not passed")
    ]


def test_required_columns_follow_the_domain_rules_given_the_constants() -> None:
    broken = {**ASSESSOR_MAPPING, "fields": dict(ASSESSOR_MAPPING["fields"])}
    del broken["fields"]["qualifications_1_grade"]
    del broken["fields"]["qualifications_2_grade"]
    with pytest.raises(AdapterError, match=r"no column or constant for \['qualifications_1_grade'\]"):
        mapping_from_dict(broken)
    # A Hong Kong PT provider (issuer constant CN-HK) needs no CMA number column; a
    # mainland one does.
    pt = load_mapping(ROOT / "adapters/mappings/jiangsu_pt_csv.toml")
    data: dict[str, Any] = {
        "record": {"kind": "pt_result", "cursor": "Seq"},
        "constants": {"issuer": "CN-HK"},
        "fields": {n: s.column for n, s in pt.fields.items() if n != "lab_cma_number"},
    }
    data["fields"]["accreditation_number"] = "HOKLAS No."
    assert mapping_from_dict(data).kind == "pt_result"
    data["constants"]["issuer"] = "CN-JS"
    with pytest.raises(AdapterError, match=r"no column or constant for \['lab_cma_number'\]"):
        mapping_from_dict(data)


def test_pt_results_and_spot_checks_round_trip_through_the_reverse_mapping() -> None:
    for name, cls in (("jiangsu_pt", PtResult), ("jiangsu_spot_checks", SpotCheck)):
        mapping = load_mapping(ROOT / f"adapters/mappings/{name}_csv.toml")

        with (ROOT / f"tests/fixtures/adapters/{name}.csv").open(encoding="utf-8") as f:
            first = next(csv.DictReader(f))
        record = mapping.map_row(SourceRow("line 2", first)).record
        assert isinstance(record, cls), name
        again = mapping.map_row(SourceRow("back", mapping.to_row(record))).record
        assert again == record, name
    assert isinstance(record, SpotCheck) and record.items == ("产品标识", "安全性能")


def test_a_pt_z_score_is_classified_by_the_domain_not_taken_from_the_row() -> None:
    mapping = load_mapping(ROOT / "adapters/mappings/jiangsu_pt_csv.toml")

    with (ROOT / "tests/fixtures/adapters/jiangsu_pt.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    record = mapping.map_row(SourceRow("x", {**rows[0], "报告值": "0.270", "Z比分数": "3.5"})).record
    assert isinstance(record, PtResult) and record.classification is PtClass.UNSATISFACTORY
    # Not in the submitted message, but written to a local system receiving the result.
    assert canonical_values(record)["classification"] == "UNSATISFACTORY"


def test_every_kind_has_mappable_fields_derived_from_its_message() -> None:
    for kind in kind_names():
        fields = kind_fields(kind)
        assert fields.kind.name == kind
        assert {"state", "reason", "effective_at", "version"} <= set(fields.flat), kind
        # Every key part the registry names is a field a mapping can fill (a result's
        # "lab" is derived from lab_cma_number / accreditation_number).
        for part in fields.kind.key_parts:
            assert part in fields.flat or part == "lab", (kind, part)


def test_the_mapping_reference_in_the_docs_is_the_one_the_code_derives() -> None:
    text = (ROOT / "docs/adapters.md").read_text("utf-8")
    found = re.search(r"<!-- fields:begin -->\n(.*?)<!-- fields:end -->", text, re.S)
    assert found, "docs/adapters.md lost its generated field reference"
    assert found.group(1).strip() == reference_markdown().strip(), (
        "regenerate: python -c 'from adapters.mapping import reference_markdown; print(reference_markdown())'"
    )
