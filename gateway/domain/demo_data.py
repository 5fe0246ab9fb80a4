"""Deterministic demo and fixture data: holders, certification bodies, certificates.

Everything here is fictional but shaped like the real thing, so it exercises the same
validation paths real data does: company names are invented; credit codes use the real
administrative division code of a district in each participant's province and are
computed with both check characters (they may by chance equal a real code, so never
treat them as identifying anyone); CCC product category codes and every certification
body except 中国质量认证中心 (CNCA-R-2002-001) are illustrative.

Hong Kong and Macau companies have no unified social credit code, so the holders
listed for CN-HK and CN-MO are mainland-registered entities in Shenzhen and Zhuhai,
which is the case in which such a certificate carries a credit code at all.

Certificate numbers embed a per-participant serial block, so demo certificates of
different participants never share a key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from gateway.domain.certificates import Certificate, CertState, Holder, Scheme
from gateway.domain.identifiers import make_credit_code


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificationBody:
    approval_number: str
    name: str
    # Two-digit body code inside CCC numbers; only CQC issues CCC certificates here.
    ccc_code: str | None
    # Three-digit prefix of the body's management-system certificate numbers.
    ms_code: str


CERTIFICATION_BODIES: tuple[CertificationBody, ...] = (
    CertificationBody(
        approval_number="CNCA-R-2002-001", name="中国质量认证中心", ccc_code="01", ms_code="001"
    ),
    CertificationBody(
        approval_number="CNCA-R-2003-117", name="长三角示例认证有限公司（示例）", ccc_code=None, ms_code="117"
    ),
    CertificationBody(
        approval_number="CNCA-R-2006-042", name="京津冀示例质量认证中心（示例）", ccc_code=None, ms_code="042"
    ),
    CertificationBody(
        approval_number="CNCA-R-2009-085", name="粤港澳示例认证有限公司（示例）", ccc_code=None, ms_code="085"
    ),
)
CQC = CERTIFICATION_BODIES[0]

# (participant, district division code, holder name, 8-character organisation code).
# "MA…" organisation codes are the post-2015 form; all-digit ones the older form.
_HOLDER_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("CN-SH", "310115", "上海浦江智能装备有限公司", "MA1FL2K7"),
    ("CN-SH", "310115", "上海申联照明电器有限公司", "60728415"),
    ("CN-JS", "320505", "苏州明德电子科技有限公司", "MA1MXP4D"),
    ("CN-JS", "320505", "苏州华锐精密电器有限公司", "73440962"),
    ("CN-ZJ", "330106", "杭州西溪数码科技有限公司", "MA2H3N8U"),
    ("CN-ZJ", "330106", "杭州之江电线电缆有限公司", "14310827"),
    ("CN-AH", "340104", "合肥蜀山照明电器有限公司", "MA2NK6E9"),
    ("CN-AH", "340104", "合肥科创汽车零部件有限公司", "MA2TP3G1"),
    ("CN-BJ", "110108", "北京清河数字科技有限公司", "MA01B7Q2"),
    ("CN-BJ", "110108", "北京海淀精密仪器有限公司", "10211635"),
    ("CN-TJ", "120116", "天津港城机电设备有限公司", "MA05L9W3"),
    ("CN-TJ", "120116", "天津临港重工装备有限公司", "MA06DR4X"),
    ("CN-HE", "130102", "石家庄长安医疗器械有限公司", "MA0CU2P8"),
    ("CN-HE", "130102", "河北燕赵电气设备有限公司", "10772319"),
    ("CN-GD", "440305", "深圳南山智联通信设备有限公司", "MA5EK8H2"),
    ("CN-GD", "440305", "深圳前海云端电子有限公司", "MA5FN3Y6"),
    ("CN-HK", "440305", "深圳港联检测设备有限公司", "MA5GQ1B7"),
    ("CN-HK", "440305", "深圳维港电子科技有限公司", "MA5HJ4T9"),
    ("CN-MO", "440402", "珠海横琴澳联电器有限公司", "MA4WC6D2"),
    ("CN-MO", "440402", "珠海濠江食品科技有限公司", "MA4XR8L5"),
    ("CN-FJ", "350102", "福州闽江电子有限公司", "MA2Y3K7P"),
    ("CN-FJ", "350102", "福州榕城五金制品有限公司", "15438026"),
    ("CN-SN", "610113", "西安雁塔光电科技有限公司", "MA6U8N2R"),
    ("CN-SN", "610113", "西安曲江电子仪器有限公司", "22063519"),
)

DEMO_HOLDERS: Mapping[str, tuple[Holder, ...]] = {
    participant: tuple(
        Holder(name=name, credit_code=make_credit_code(division=division, org_code8=org))
        for p, division, name, org in _HOLDER_ROWS
        if p == participant
    )
    for participant in dict.fromkeys(row[0] for row in _HOLDER_ROWS)
}
DEMO_PARTICIPANTS: tuple[str, ...] = tuple(DEMO_HOLDERS)

# (category code, product) for CCC numbers and scopes; codes are illustrative.
CCC_PRODUCTS: tuple[tuple[str, str], ...] = (
    ("0901", "微型计算机"),
    ("0902", "便携式计算机"),
    ("0201", "插头插座"),
    ("0701", "家用电冰箱和食品冷冻箱"),
    ("1001", "灯具"),
)
MS_SCOPES: tuple[str, ...] = (
    "电子产品的设计、生产和服务",
    "家用电器的生产及相关管理活动",
    "电线电缆的生产",
    "精密仪器的研发、生产和销售",
)
# Number letter and validity (years) per scheme; CCC certificates run five years.
_MS_FORMS: Mapping[Scheme, tuple[str, int]] = {
    Scheme.QMS: ("Q", 3),
    Scheme.EMS: ("E", 3),
    Scheme.OHSMS: ("S", 3),
}
_CCC_YEARS = 5
_SCHEME_CYCLE = (
    Scheme.CCC,
    Scheme.CCC,
    Scheme.QMS,
    Scheme.CCC,
    Scheme.EMS,
    Scheme.CCC,
    Scheme.QMS,
    Scheme.OHSMS,
)

# Each participant owns a block of the 6-digit serial space (12 x 80,000 < 10**6).
SERIAL_BLOCK = 80_000

# Reasons follow the CCC rules of CNCA announcement 2008 No. 19.
DEMO_REASONS: Mapping[CertState, tuple[str, ...]] = {
    CertState.SUSPENDED: (
        "监督抽查不合格，暂停证书",
        "获证后监督发现产品不符合认证要求，暂停证书",
        "证书持有人违规使用认证证书和认证标志，暂停证书",
        "工厂检查不通过，限期整改，暂停证书",
    ),
    CertState.VALID: ("暂停期间完成整改，经验证符合要求，恢复证书",),
    CertState.REVOKED: (
        "暂停期间未按期整改，撤销证书",
        "产品存在严重缺陷，撤销证书",
        "产品缺陷导致重大质量事故，撤销证书",
    ),
    CertState.WITHDRAWN: (
        "认证实施规则变更，产品无法满足新要求，注销证书",
        "获证产品不再生产，注销证书",
        "证书有效期届满未申请延续，注销证书",
        "证书持有人申请注销",
    ),
}


def _add_years(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February in a non-leap target year
        return d.replace(year=d.year + years, day=28)


def demo_certificates(issuer: str, *, count: int, start_serial: int = 1, today: date) -> list[Certificate]:
    """``count`` VALID version-1 certificates of ``issuer``, the same for the same arguments.

    Serials ``start_serial .. start_serial + count - 1`` must lie within 1..SERIAL_BLOCK;
    every certificate passes ``build_certificate`` with no warnings and is unexpired on
    ``today``.
    """
    if issuer not in DEMO_HOLDERS:
        raise ValueError(f"no demo holders for {issuer!r}; known: {', '.join(DEMO_PARTICIPANTS)}")
    if count < 0 or start_serial < 1 or start_serial + count - 1 > SERIAL_BLOCK:
        raise ValueError(f"serials must lie within 1..{SERIAL_BLOCK}")
    holders = DEMO_HOLDERS[issuer]
    block = DEMO_PARTICIPANTS.index(issuer) * SERIAL_BLOCK
    certs: list[Certificate] = []
    for serial in range(start_serial, start_serial + count):
        global_serial = block + serial
        scheme = _SCHEME_CYCLE[serial % len(_SCHEME_CYCLE)]
        # Spread issue dates over the past ~2.3 years, short of the 3-year validity.
        issue = today - timedelta(days=30 + (serial * 97) % 800)
        if scheme is Scheme.CCC:
            category, product = CCC_PRODUCTS[serial % len(CCC_PRODUCTS)]
            body = CQC
            number = f"{issue.year:04d}{CQC.ccc_code}{category}{global_serial:06d}"
            scope = product
            expiry = _add_years(issue, _CCC_YEARS)
        else:
            letter, years = _MS_FORMS[scheme]
            body = CERTIFICATION_BODIES[serial % len(CERTIFICATION_BODIES)]
            number = f"{body.ms_code}{issue.year % 100:02d}{letter}{global_serial:06d}R0M"
            scope = MS_SCOPES[serial % len(MS_SCOPES)]
            expiry = _add_years(issue, years)
        certs.append(
            Certificate(
                certificate_number=number,
                scheme=scheme,
                issuing_body=body.approval_number,
                issuer=issuer,
                holder=holders[serial % len(holders)],
                scope=scope,
                state=CertState.VALID,
                reason="",
                effective_at=datetime.combine(issue, time(), tzinfo=UTC),
                issue_date=issue,
                expiry_date=expiry,
                version=1,
            )
        )
    return certs


def demo_status_change(
    cert: Certificate, *, state: CertState, reason: str, effective_at: datetime
) -> Certificate:
    """The next version of ``cert`` in ``state``.

    Not checked against the transition rules, so demos can also show a refusal.
    """
    return dataclasses.replace(
        cert, state=state, reason=reason, effective_at=effective_at.astimezone(UTC), version=cert.version + 1
    )
