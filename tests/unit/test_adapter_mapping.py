"""Mapping files: local words, formats and columns -> canonical records, and back."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from adapters import AdapterError
from adapters.base import SourceRow
from adapters.mapping import load_mapping, mapping_from_dict, message_id
from gateway.domain.certificates import CertState, Scheme

ROOT = Path(__file__).resolve().parents[2]

# The fifth adapter's mapping, exactly as shipped: the HKAS register in English.
HONG_KONG: dict[str, Any] = tomllib.loads(
    (ROOT / "adapters/mappings/hong_kong_certificates_csv.toml").read_text("utf-8")
)


def _row(**over: str) -> SourceRow:
    values = {
        "Seq": "41",
        "Programme": "HOKLAS",
        "Reg. No.": "058",
        "Organisation": "Kowloon Testing Laboratory Limited",
        "BR No.": "30942650",
        "Scope of Accreditation": "Electrical and Electronic Products",
        "Status": "Accredited",
        "Remarks": "",
        "Status Date": "02/03/2026 09:15",
        "Date of Accreditation": "01/03/2025",
        "Valid Until": "28/02/2028",
    }
    return SourceRow("row 41", {**values, **over})


def test_hong_kong_english_words_and_dd_mm_yyyy_dates_map_with_a_mapping_file_alone() -> None:
    mapping = mapping_from_dict(HONG_KONG)
    mapped = mapping.map_row(_row(Status="VALID"))  # case does not matter for ASCII words
    assert mapped.problems == () and mapped.record is not None
    cert: Any = mapped.record
    assert (cert.scheme, cert.state, cert.issue_date) == (Scheme.HOKLAS, CertState.VALID, date(2025, 3, 1))
    assert (cert.key, cert.issuer, cert.issuing_body) == ("certificate_status/HOKLAS/058", "CN-HK", "HKAS")
    assert cert.effective_at.isoformat() == "2026-03-02T01:15:00+00:00"  # 09:15 in Hong Kong
    terminated = mapping.map_row(
        _row(Status="Terminated", Remarks="Terminated for failure to meet HKAS requirements")
    )
    assert terminated.record is not None and terminated.record.state is CertState.REVOKED


def test_expired_goes_out_as_valid_with_its_past_expiry_or_is_reported() -> None:
    mapping = mapping_from_dict(HONG_KONG)
    past = mapping.map_row(
        _row(Status="Expired", **{"Date of Accreditation": "01/03/2019", "Valid Until": "28/02/2022"})
    )
    assert past.record is not None and past.record.state is CertState.VALID
    future = mapping.map_row(_row(Status="Expired"))
    assert future.record is None
    assert [(p.field, p.why) for p in future.problems] == [
        ("Status", "says expired, but the expiry date 2028-02-28 has not passed")
    ]


def test_every_problem_of_a_row_is_reported_at_once_with_the_local_column() -> None:
    mapping = mapping_from_dict(HONG_KONG)
    mapped = mapping.map_row(
        _row(Status="Lapsed", **{"BR No.": "1234567", "Date of Accreditation": "2025-03-01"})
    )
    fields = {p.field for p in mapped.problems}
    assert fields == {"Status", "BR No.", "Date of Accreditation"}


def test_the_reverse_mapping_writes_local_words_and_formats() -> None:
    mapping = mapping_from_dict(HONG_KONG)
    record = mapping.map_row(_row(Status="Suspended", Remarks="Surveillance audit overdue")).record
    assert record is not None
    row = mapping.to_row(record)
    assert (row["Status"], row["Date of Accreditation"], row["Status Date"]) == (
        "Suspended",
        "01/03/2025",
        "02/03/2026 09:15",
    )
    assert mapping.map_row(SourceRow("again", row)).record == record


def test_message_ids_follow_the_change() -> None:
    mapping = mapping_from_dict(HONG_KONG)
    a = mapping.map_row(_row()).record
    b = mapping.map_row(_row(Seq="42")).record
    assert a is not None and b is not None
    assert message_id(a) == message_id(mapping.map_row(_row()).record)  # type: ignore[arg-type]
    assert message_id(a) != message_id(b)
    assert message_id(a).startswith("adp-") and len(message_id(a)) <= 128


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["record"].update(kind="licence"), "kind must be one of"),
        (lambda d: d["fields"].pop("holder_name"), r"no column or constant for \['holder_name'\]"),
        (lambda d: d["fields"].update(colour="Colour"), "'colour' is not a field of certificate_status"),
        (lambda d: d["values"]["state"].update(Lapsed="GONE"), r"'Lapsed' = 'GONE': not one of"),
        (lambda d: d.update(extras={}), "unknown section"),
    ],
)
def test_a_wrong_mapping_file_names_the_key(change: Any, message: str) -> None:
    import copy

    data = copy.deepcopy(HONG_KONG)
    change(data)
    with pytest.raises(AdapterError, match=message):
        mapping_from_dict(data)


def test_the_shipped_mapping_files_load() -> None:
    for path in sorted((ROOT / "adapters/mappings").glob("*.toml")):
        assert load_mapping(path).columns, path
