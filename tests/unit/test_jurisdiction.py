"""Jurisdiction: the pure rules (gateway.domain.jurisdiction) and [[jurisdictions]] in the federation file."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.demo_fixtures import (
    DEMO_PARTICIPANTS,
    demo_assessors,
    demo_certificates,
    demo_hk_accreditations,
    demo_hk_pt_results,
    demo_hk_test_reports,
    demo_lab_cma_certificates,
    demo_test_reports,
)
from gateway.domain.errors import PermissionDenied
from gateway.domain.jurisdiction import (
    NO_DECLARED_JURISDICTION,
    OUTSIDE_DECLARED_JURISDICTION,
    OUTSIDE_JURISDICTION,
    CertificateBlock,
    Jurisdiction,
    Jurisdictions,
    cma_authority_code,
    lab_pattern_matches,
    lab_patterns_overlap,
)
from gateway.registry import FederationError, load_federation
from gateway.registry.federation import jurisdiction_tables
from gateway.registry.keygen import write_demo_federation

REPO = Path(__file__).resolve().parents[2]
KEYS = REPO / "keys"

CCC_JS = CertificateBlock(
    schemes=frozenset({"CCC"}), serial_at=11, serial_digits=6, first=80001, last=160000, length=16
)
CCC_SH = CertificateBlock(
    schemes=frozenset({"CCC"}), serial_at=11, serial_digits=6, first=1, last=80000, length=16
)
RULES = Jurisdictions(
    {
        "CN-SH": Jurisdiction(
            cma_authorities=("09",),
            labs=("????09000100",),
            assessor_prefixes=("CMA-SH-",),
            certificate_blocks=(CCC_SH,),
        ),
        "CN-JS": Jurisdiction(
            certification_bodies=("CNCA-R-2003-117",),
            cma_authorities=("10",),
            labs=("????10000102", "CNAS L0326"),
            assessor_prefixes=("CMA-JS-",),
            certificate_blocks=(CCC_JS,),
        ),
    }
)
JS_CCC = "2025010901080007"  # serial 080007: Jiangsu's block
SH_CCC = "2025010901000007"


def codes(warnings: list[str]) -> list[str]:
    return [w.split(":", 1)[0] for w in warnings]


# --- building blocks ------------------------------------------------------------------------


def test_block_reads_its_serial_only_from_numbers_of_its_shape() -> None:
    assert CCC_JS.serial(JS_CCC) == 80007
    assert CCC_JS.contains("CCC", JS_CCC) and not CCC_SH.contains("CCC", JS_CCC)
    assert not CCC_JS.contains("QMS", JS_CCC)  # another scheme
    assert CCC_JS.serial(JS_CCC + "0") is None  # another length
    assert CCC_JS.serial("20250109010800X7") is None  # not digits
    assert CCC_JS.overlaps(CCC_JS) and not CCC_JS.overlaps(CCC_SH)


def test_lab_patterns() -> None:
    assert lab_pattern_matches("????10000102", "202410000102")
    assert not lab_pattern_matches("????10000102", "202410000103")
    assert not lab_pattern_matches("????10000102", "2024100001020")
    assert lab_patterns_overlap("????10000102", "2024????0102")
    assert not lab_patterns_overlap("????10000102", "????11000102")
    # Accreditation numbers are compared without spaces or case.
    assert RULES.lab_owner("cnas  l0326") is not None
    assert cma_authority_code("202410000102") == "10"
    assert cma_authority_code("CNAS L0326") is None and cma_authority_code("20241000010") is None


# --- the rules per kind ---------------------------------------------------------------------


def test_certificate_in_another_block_is_refused_naming_the_owner() -> None:
    with pytest.raises(PermissionDenied) as err:
        RULES.check_certificate(sender="CN-SH", scheme="CCC", number=JS_CCC, issuing_body="CNCA-R-2002-001")
    assert err.value.reason == OUTSIDE_JURISDICTION
    assert err.value.metadata["field"] == "certificate_status.certificate_number"
    assert err.value.metadata["declared_for"] == "CN-JS"
    assert err.value.metadata["sender"] == "CN-SH"
    assert RULES.check_certificate(sender="CN-JS", scheme="CCC", number=JS_CCC, issuing_body="X") == []


def test_certificate_outside_the_senders_blocks_is_flagged() -> None:
    warnings = RULES.check_certificate(
        sender="CN-JS", scheme="CCC", number="2025010901999999", issuing_body="CNCA-R-2002-001"
    )
    assert codes(warnings) == [OUTSIDE_DECLARED_JURISDICTION]
    # A scheme the sender declares no block for is not flagged.
    assert RULES.check_certificate(sender="CN-JS", scheme="ISMS", number="X1", issuing_body="Y") == []


def test_certificate_of_a_body_supervised_elsewhere_is_flagged_not_refused() -> None:
    warnings = RULES.check_certificate(
        sender="CN-SH", scheme="CCC", number=SH_CCC, issuing_body="CNCA-R-2003-117"
    )
    assert codes(warnings) == [OUTSIDE_DECLARED_JURISDICTION]
    assert "certificate_status.issuing_body" in warnings[0] and "CN-JS" in warnings[0]


def test_cma_certificate_is_judged_as_its_lab() -> None:
    with pytest.raises(PermissionDenied) as err:
        RULES.check_certificate(sender="CN-SH", scheme="CMA", number="202410000102", issuing_body="江苏省")
    assert err.value.metadata["declared_for"] == "CN-JS"
    flagged = RULES.check_certificate(sender="CN-SH", scheme="CMA", number="202410009999", issuing_body="x")
    assert codes(flagged) == [OUTSIDE_DECLARED_JURISDICTION]


def test_assessor_under_another_prefix_is_refused() -> None:
    with pytest.raises(PermissionDenied) as err:
        RULES.check_assessor(sender="CN-JS", registration_number="CMA-SH-2024-0301")
    assert (err.value.reason, err.value.metadata["declared_for"]) == (OUTSIDE_JURISDICTION, "CN-SH")
    assert RULES.check_assessor(sender="CN-JS", registration_number="CMA-JS-2024-0301") == []
    assert codes(RULES.check_assessor(sender="CN-JS", registration_number="CCAA-2024-1")) == [
        OUTSIDE_DECLARED_JURISDICTION
    ]


def test_test_report_lab_rules() -> None:
    check = RULES.check_test_report
    with pytest.raises(PermissionDenied) as err:
        check(sender="CN-SH", lab_cma_number="202410000102", accreditation_number="")
    assert err.value.metadata["field"] == "test_report.lab_cma_number"
    with pytest.raises(PermissionDenied) as err:
        check(sender="CN-SH", lab_cma_number="202409000100", accreditation_number="CNAS L0326")
    assert err.value.metadata["field"] == "test_report.accreditation_number"
    assert check(sender="CN-JS", lab_cma_number="202510000102", accreditation_number="CNAS L0326") == []
    # Low confidence: the authority code read from the number's shape.
    flagged = check(sender="CN-SH", lab_cma_number="202410009999", accreditation_number="")
    assert codes(flagged) == [OUTSIDE_DECLARED_JURISDICTION] and "code 10" in flagged[0]
    # National (00) labs belong to nobody.
    assert check(sender="CN-SH", lab_cma_number="202400009999", accreditation_number="") == []
    # Neither the sender's lab nor its authority.
    assert codes(check(sender="CN-SH", lab_cma_number="202427009999", accreditation_number="")) == [
        OUTSIDE_DECLARED_JURISDICTION
    ]


def test_pt_result_naming_another_lab_is_flagged() -> None:
    warnings = RULES.check_pt_result(sender="CN-SH", lab_cma_number="202410000102")
    assert codes(warnings) == [OUTSIDE_DECLARED_JURISDICTION] and "CN-JS" in warnings[0]


def test_sender_without_a_declaration_is_flagged_yet_cannot_squat() -> None:
    assert codes(RULES.check_other(sender="CN-FJ")) == [NO_DECLARED_JURISDICTION]
    assert codes(RULES.check_assessor(sender="CN-FJ", registration_number="CMA-FJ-1")) == [
        NO_DECLARED_JURISDICTION
    ]
    with pytest.raises(PermissionDenied):
        RULES.check_certificate(sender="CN-FJ", scheme="CCC", number=JS_CCC, issuing_body="x")
    # A federation that declares nothing has not taken the feature up: no flags at all.
    assert Jurisdictions({}).check_other(sender="CN-FJ") == []


def test_conflicts_name_both_participants() -> None:
    clash = Jurisdictions(
        {
            "CN-SH": Jurisdiction(labs=("????10000102",), assessor_prefixes=("CMA-",)),
            "CN-JS": Jurisdiction(labs=("2024????????",), assessor_prefixes=("CMA-JS-",)),
        }
    )
    problems = clash.conflicts()
    assert [p for p, _ in problems] == ["CN-JS", "CN-JS"]
    assert all("CN-SH" in text for _, text in problems)


# --- the committed federation ---------------------------------------------------------------


def test_committed_federation_declares_a_jurisdiction_for_every_member() -> None:
    fed = load_federation(KEYS)
    members = {c for c, p in fed.participants.items() if p.role.value == "member"}
    assert set(fed.jurisdictions.declared) == members == set(DEMO_PARTICIPANTS)
    assert fed.participants["YRD-SEC"].jurisdiction is None
    assert fed.participants["CN-JS"].jurisdiction is not None
    assert fed.participants["CN-JS"].jurisdiction.cma_authorities == ("10",)


@pytest.mark.parametrize("today", [date(2026, 11, 1), date(2027, 6, 30), date(2031, 1, 2)])
def test_demo_data_lies_inside_the_committed_jurisdictions(today: date) -> None:
    # The lab declarations leave the year of issue open ("????"), so this holds whatever
    # the date the demo data is generated for.
    rules = load_federation(KEYS).jurisdictions
    for code in DEMO_PARTICIPANTS:
        warnings: list[str] = []
        for cert in [
            *demo_certificates(code, count=200, today=today),
            *demo_lab_cma_certificates(code, today=today),
        ]:
            warnings += rules.check_certificate(
                sender=code,
                scheme=cert.scheme.name,
                number=cert.certificate_number,
                issuing_body=cert.issuing_body,
            )
        for a in demo_assessors(code, count=30, today=today):
            warnings += rules.check_assessor(sender=code, registration_number=a.registration_number)
        for r in demo_test_reports(code, count=10, today=today):
            warnings += rules.check_test_report(
                sender=code, lab_cma_number=r.lab_cma_number, accreditation_number=r.accreditation_number
            )
        assert warnings == [], code


def test_each_squatting_case_is_refused_under_the_committed_file() -> None:
    rules = load_federation(KEYS).jurisdictions
    today = date(2026, 11, 1)
    js_cert = demo_certificates("CN-JS", count=1, today=today)[0]
    with pytest.raises(PermissionDenied, match="CN-JS"):
        rules.check_certificate(
            sender="CN-SH", scheme="CCC", number=js_cert.certificate_number, issuing_body=js_cert.issuing_body
        )
    js_report = demo_test_reports("CN-JS", count=1, today=today)[0]
    with pytest.raises(PermissionDenied, match="CN-JS"):
        rules.check_test_report(
            sender="CN-SH", lab_cma_number=js_report.lab_cma_number, accreditation_number=""
        )
    sn = demo_assessors("CN-SN", count=1, today=today)[0]
    with pytest.raises(PermissionDenied, match="CN-SN"):
        rules.check_assessor(sender="CN-JS", registration_number=sn.registration_number)


def test_demo_federation_keeps_the_jurisdictions(tmp_path: Path) -> None:
    template = load_federation(KEYS)
    write_demo_federation(template_dir=KEYS, dest=tmp_path / "demo", now=datetime(2026, 6, 1, tzinfo=UTC))
    copy = load_federation(tmp_path / "demo")
    assert {c: p.jurisdiction for c, p in copy.participants.items()} == {
        c: p.jurisdiction for c, p in template.participants.items()
    }
    assert jurisdiction_tables(copy.participants) == jurisdiction_tables(template.participants)


# --- load errors ----------------------------------------------------------------------------


def _without_jurisdictions() -> str:
    text = (KEYS / "federation.toml").read_text(encoding="utf-8")
    return re.sub(r"\n\[\[jurisdictions\]\]\n.*?\n\]\n", "\n", text, flags=re.S)


def load_error(tmp_path: Path, extra: str) -> str:
    shutil.copytree(KEYS / "public", tmp_path / "public")
    (tmp_path / "federation.toml").write_text(_without_jurisdictions() + "\n" + extra, encoding="utf-8")
    with pytest.raises(FederationError) as err:
        load_federation(tmp_path)
    return str(err.value)


def test_the_file_without_its_jurisdictions_still_loads(tmp_path: Path) -> None:
    shutil.copytree(KEYS / "public", tmp_path / "public")
    (tmp_path / "federation.toml").write_text(_without_jurisdictions(), encoding="utf-8")
    fed = load_federation(tmp_path)
    assert not fed.jurisdictions and fed.participants["CN-JS"].jurisdiction is None


JS = '[[jurisdictions]]\nparticipant = "CN-JS"\n'
BLOCK = "{ schemes = ['CCC'], serial_at = 11, serial_digits = 6, first = 1, last = 10 }"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[[jurisdictions]]\nparticipant = "CN-XX"\n',
            "[[jurisdictions]] #1 'CN-XX': participant CN-XX is not a",
        ),
        ('[[jurisdictions]]\nparticipant = "YRD-SEC"\n', "has role 'secretariat'; only members publish"),
        ('[[jurisdictions]]\nparticipant = "CN-JS"\nlab = []\n', "unknown field 'lab'"),
        (
            '[[jurisdictions]]\nparticipant = "CN-JS"\n' * 2,
            "#2 'CN-JS': second [[jurisdictions]] entry for CN-JS",
        ),
        (
            '[[jurisdictions]]\nparticipant = "CN-JS"\ncma_authorities = ["1"]\n',
            "does not look like a two-digit",
        ),
        ('[[jurisdictions]]\nparticipant = "CN-JS"\ncma_authorities = ["00"]\n', '"00" is national'),
        (
            '[[jurisdictions]]\nparticipant = "CN-JS"\nlabs = ["CNAS L1", "CNAS L1"]\n',
            "labs: CNAS L1 listed twice",
        ),
        (
            JS + 'certificate_blocks = [{ schemes = ["CMA"], serial_at = 1, '
            "serial_digits = 2, first = 1, last = 2 }]\n",
            "certificate_blocks #1: CMA numbers are labs' qualifications",
        ),
        (
            JS + 'certificate_blocks = [{ schemes = ["CCC"], serial_at = 1, '
            "serial_digits = 2, first = 5, last = 100 }]\n",
            "last 100 has more than serial_digits = 2 digits",
        ),
        (
            JS + 'certificate_blocks = [{ schemes = ["CCC"], serial_at = 1, '
            "serial_digits = 2, first = 9, last = 5 }]\n",
            "first 9 is greater than last 5",
        ),
        (
            f'[[jurisdictions]]\nparticipant = "CN-JS"\ncertificate_blocks = [{BLOCK}, {BLOCK}]\n',
            "certificate_blocks #2 overlaps another block of CN-JS",
        ),
    ],
)
def test_jurisdiction_errors_name_the_entry(tmp_path: Path, extra: str, expected: str) -> None:
    assert expected in load_error(tmp_path, extra)


@pytest.mark.parametrize(
    ("field", "a", "b", "expected"),
    [
        (
            "labs",
            "????10000102",
            "2024????0102",
            "lab 2024????0102 overlaps lab ????10000102 declared for CN-SH",
        ),
        ("assessor_prefixes", "CMA-JS-", "CMA-", "assessor prefix CMA- overlaps CMA-JS- declared for CN-SH"),
        ("cma_authorities", "10", "10", "CMA issuing-authority code 10 is also declared for CN-SH"),
        ("certification_bodies", "CNCA-R-2003-117", "CNCA-R-2003-117", "also declared for CN-SH"),
    ],
)
def test_an_identifier_belongs_to_one_participant(
    tmp_path: Path, field: str, a: str, b: str, expected: str
) -> None:
    extra = (
        f'[[jurisdictions]]\nparticipant = "CN-SH"\n{field} = ["{a}"]\n\n'
        f'[[jurisdictions]]\nparticipant = "CN-JS"\n{field} = ["{b}"]\n'
    )
    message = load_error(tmp_path, extra)
    assert "[[jurisdictions]] #2 'CN-JS'" in message and expected in message


def test_overlapping_blocks_of_two_participants(tmp_path: Path) -> None:
    extra = (
        f'[[jurisdictions]]\nparticipant = "CN-SH"\ncertificate_blocks = [{BLOCK}]\n\n'
        f'[[jurisdictions]]\nparticipant = "CN-JS"\ncertificate_blocks = [{BLOCK}]\n'
    )
    assert "overlaps CCC serial (characters 11-16) 1..10 declared for CN-SH" in load_error(tmp_path, extra)


def test_hong_kong_labs_named_by_accreditation_only() -> None:
    # No CMA number: no issuing-authority code to read, so no shape-based flag; the
    # declared HOKLAS labs are CN-HK's, and another member may not report in their name.
    rules = load_federation(KEYS).jurisdictions
    today = date(2026, 11, 1)
    warnings: list[str] = []
    for cert in demo_hk_accreditations(today=today):
        warnings += rules.check_certificate(
            sender="CN-HK",
            scheme=cert.scheme.name,
            number=cert.certificate_number,
            issuing_body=cert.issuing_body,
        )
    for r in demo_hk_test_reports(count=2, today=today):
        warnings += rules.check_test_report(
            sender="CN-HK", lab_cma_number="", accreditation_number=r.accreditation_number
        )
    for p in demo_hk_pt_results(count=2, today=today):
        warnings += rules.check_pt_result(
            sender="CN-HK", lab_cma_number="", accreditation_number=p.accreditation_number
        )
    assert warnings == []
    with pytest.raises(PermissionDenied, match=r"test_report\.accreditation_number 'HOKLAS 058'"):
        rules.check_test_report(sender="CN-GD", lab_cma_number="", accreditation_number="HOKLAS 058")
    # A PT scheme elsewhere may enrol the Hong Kong lab: flagged, not refused.
    flagged = rules.check_pt_result(sender="CN-GD", lab_cma_number="", accreditation_number="HOKLAS 058")
    assert len(flagged) == 1 and "pt_result.accreditation_number" in flagged[0]
