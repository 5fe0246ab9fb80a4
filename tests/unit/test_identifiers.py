from __future__ import annotations

import pytest

from gateway.domain import identifiers as ids
from gateway.domain.identifiers import (
    USCC_ALPHABET,
    certificate_number_warning,
    check_certificate_number,
    check_credit_code,
    is_message_id,
    is_participant_code,
    issuing_body_warning,
    make_credit_code,
    org_code_check_char,
    uscc_check_char,
)

# Codes as published for large listed companies (e.g. Huawei Technologies,
# 914403001922038216). Both their check characters (GB 32100 and the embedded
# GB 11714 one) compute, which a misremembered code would do by chance about once in
# 340 times.
PUBLISHED_CODES = [
    "914403001922038216",
    "91440300708461136T",
    "91330100799655058B",
    "91110108558521630L",
    "91110000802100433B",
]


def test_alphabet_excludes_ambiguous_letters() -> None:
    assert len(USCC_ALPHABET) == 31
    assert not set("IOSVZ") & set(USCC_ALPHABET)


@pytest.mark.parametrize("code", PUBLISHED_CODES)
def test_published_codes_pass_both_checks(code: str) -> None:
    assert uscc_check_char(code[:17]) == code[17]
    assert org_code_check_char(code[8:16]) == code[16]
    assert check_credit_code(code) == ids.CreditCodeCheck(code=code, warning=None)


def test_check_char_hand_computed() -> None:
    # Weighted sum 831; 831 mod 31 = 25; 31 - 25 = 6.
    assert uscc_check_char("91440300192203821") == "6"


def test_check_char_wraps_31_to_zero() -> None:
    # Find a prefix whose weighted sum is a multiple of 31 by varying position 17.
    base = "9144030019220382"
    hits = [base + ch for ch in USCC_ALPHABET if uscc_check_char(base + ch) == "0"]
    assert len(hits) == 1
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(hits[0], ids.USCC_WEIGHTS, strict=True))
    assert total % 31 == 0


def test_check_char_rejects_outside_alphabet() -> None:
    with pytest.raises(ValueError, match="position 3"):
        uscc_check_char("91I40300192203821")
    with pytest.raises(ValueError, match="17 characters"):
        uscc_check_char("9144")


@pytest.mark.parametrize(
    ("first8", "expected"),
    [
        ("19220382", "1"),  # embedded in 914403001922038216
        ("70846113", "6"),
        ("80210043", "3"),
        ("00000001", "9"),  # sum 2: 11 - 2
        ("00000000", "0"),  # sum 0: 11 -> '0'
        ("00010000", "1"),  # sum 10: 11 - 10
        ("00000030", "X"),  # sum 12, remainder 1: 10 -> 'X'
    ],
)
def test_org_code_check_char(first8: str, expected: str) -> None:
    assert org_code_check_char(first8) == expected


def test_org_code_letters_count_from_ten() -> None:
    # 'A' = 10 at weight 3 -> 30; 30 mod 11 = 8; 11 - 8 = 3
    assert org_code_check_char("A0000000") == "3"


def test_constructed_codes_are_fully_regular() -> None:
    code = make_credit_code(division="320505", org_code8="MA1MXP4D")
    assert code.startswith("91320505MA1MXP4D")
    assert code[16] == org_code_check_char("MA1MXP4D")
    assert check_credit_code(code).warning is None
    other = make_credit_code(registering_authority="5", org_type="2", division="110108", org_code8="10211635")
    assert other[:2] == "52"
    assert check_credit_code(other).warning is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"division": "32050", "org_code8": "MA1MXP4D"}, "division"),
        ({"division": "32050A", "org_code8": "MA1MXP4D"}, "division"),
        ({"division": "320505", "org_code8": "MA1MXP4"}, "org_code8"),
        ({"division": "320505", "org_code8": "MA1MXPOD"}, "org_code8"),
        ({"division": "320505", "org_code8": "MA1MXP4D", "registering_authority": "Z"}, "registering"),
        ({"division": "320505", "org_code8": "MA1MXP4D", "org_type": "12"}, "org_type"),
    ],
)
def test_make_credit_code_refuses_bad_parts(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_credit_code(**kwargs)


def test_wrong_length() -> None:
    with pytest.raises(ValueError, match="must be 18 characters, got 17"):
        check_credit_code(PUBLISHED_CODES[0][:17])
    with pytest.raises(ValueError, match="got 19"):
        check_credit_code(PUBLISHED_CODES[0] + "0")


def test_lowercase_refused_not_folded() -> None:
    with pytest.raises(ValueError, match=r"'t' at position 18 must be upper case"):
        check_credit_code("91440300708461136t")


def test_excluded_letter_refused_with_position() -> None:
    with pytest.raises(ValueError, match=r"'O' at position 9 is not used"):
        check_credit_code("91440300O92203821" + "6")


def test_other_character_refused_with_code_point() -> None:
    # Full-width digit one, as pasted from a Chinese document.
    with pytest.raises(ValueError, match=r"U\+FF11 FULLWIDTH DIGIT ONE at position 1"):
        check_credit_code("\uff11" + PUBLISHED_CODES[0][1:])
    with pytest.raises(ValueError, match=r"U\+0020 SPACE at position 18"):
        check_credit_code(PUBLISHED_CODES[0][:17] + " ")


def test_bad_check_char_refused_without_revealing_expected() -> None:
    code = "914403001922038217"
    with pytest.raises(ValueError, match="check character") as exc:
        check_credit_code(code)
    assert "'6'" not in str(exc.value)


def test_single_typo_is_caught() -> None:
    good = PUBLISHED_CODES[0]
    for pos in range(17):
        for ch in USCC_ALPHABET:
            if ch == good[pos]:
                continue
            typo = good[:pos] + ch + good[pos + 1 :]
            with pytest.raises(ValueError, match="check character"):
                check_credit_code(typo)


def _legacy_code() -> str:
    first17 = "91350100M000100Y4"
    right = uscc_check_char(first17)
    wrong = next(c for c in USCC_ALPHABET if c != right)
    return first17 + wrong


def test_m000_legacy_code_accepted_with_warning() -> None:
    code = _legacy_code()
    result = check_credit_code(code)
    assert result.code == code
    assert result.warning is not None
    assert code in result.warning
    assert "known legacy form" in result.warning
    assert "GB 32100-2015" in result.warning


def test_m000_code_with_right_check_char_has_no_warning() -> None:
    first17 = "91350100M000100Y4"
    assert check_credit_code(first17 + uscc_check_char(first17)).warning is None


@pytest.mark.parametrize("prefix", ["M001", "N000", "0000", "MA00"])
def test_legacy_rule_is_narrow(prefix: str) -> None:
    first17 = f"91350100{prefix}100Y4"
    wrong = next(c for c in USCC_ALPHABET if c != uscc_check_char(first17))
    with pytest.raises(ValueError, match="check character"):
        check_credit_code(first17 + wrong)


def test_legacy_rule_does_not_excuse_other_defects() -> None:
    with pytest.raises(ValueError, match="upper case"):
        check_credit_code(_legacy_code().lower())
    with pytest.raises(ValueError, match="18 characters"):
        check_credit_code(_legacy_code()[:-1])


@pytest.mark.parametrize("code", ["CN-SH", "CN-HK", "YRD-SEC", "MRX-GW", "GBA-SEC"])
def test_participant_codes_accepted(code: str) -> None:
    assert is_participant_code(code)


@pytest.mark.parametrize(
    "code", ["", "cn-sh", "CN_SH", "CNSH", "C-SH", "CN-S", "CNSHJS-SH", "CN-SH\n", " CN-SH"]
)
def test_participant_codes_refused(code: str) -> None:
    assert not is_participant_code(code)


def test_message_id() -> None:
    assert is_message_id("6f1c2a9e-4b1d-4a7e-9c1e-2b7c3f0a9d11")
    assert is_message_id("js:2025.06.01_0001")
    assert is_message_id("x" * 128)
    assert not is_message_id("x" * 129)
    assert not is_message_id("")
    assert not is_message_id("a b")
    assert not is_message_id("abc\n")
    assert not is_message_id("消息")


@pytest.mark.parametrize("number", ["2025010901000001", "00125Q31234R1M", "CNCA/2019/1", "x" * 64])
def test_certificate_number_accepted(number: str) -> None:
    check_certificate_number(number)


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("", "required"),
        ("1" * 65, "at most 64 characters, got 65"),
        ("2025 0109", "U+0020 SPACE at position 5"),
        ("2025010901000001\n", "position 17"),
        ("\t2025", "position 1"),
        ("2025\u200b01", "U+200B ZERO WIDTH SPACE"),
    ],
)
def test_certificate_number_refused(number: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        check_certificate_number(number)


def test_ccc_number_shape_warns_only() -> None:
    assert certificate_number_warning("CCC", "2025010901000001") is None
    warning = certificate_number_warning("CCC", "2003010901012345A")
    assert warning is not None and "16-digit" in warning and "2003010901012345A" in warning
    # Full-width digits are not the 16-digit form.
    assert certificate_number_warning("CCC", "\uff12" + "025010901000001") is not None
    # Other schemes have no reliable shape.
    assert certificate_number_warning("CMA", "x") is None
    assert certificate_number_warning("QMS", "00125Q31234R1M") is None


@pytest.mark.parametrize(
    "body", ["CNCA-R-2002-001", "CNAS C001-M", "CNAS L1234", "HKCAS 003", "HOKLAS 058", "HKIAS 850S"]
)
def test_recognised_issuing_bodies(body: str) -> None:
    assert issuing_body_warning(body) is None


@pytest.mark.parametrize(
    "body", ["CNCA-R-02-001", "中国质量认证中心", "cnca-r-2002-001", "CNCA-R-2002-001\n"]
)
def test_other_issuing_bodies_warn(body: str) -> None:
    warning = issuing_body_warning(body)
    assert warning is not None
    assert "CNCA-R-YYYY-NNN" in warning
