"""Deterministic demo and fixture data: holders, bodies, certificates, assessors, labs, results.

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

from gateway.domain import identifiers
from gateway.domain.certificates import Certificate, CertState, Holder, Scheme
from gateway.domain.identifiers import make_credit_code
from gateway.domain.records import (
    Assessor,
    Conclusion,
    Evaluation,
    PtResult,
    Qualification,
    QualificationKind,
    SpotCheck,
    SpotCheckOutcome,
    TestReport,
    classify_z,
)


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


# ---- assessors, labs and results -----------------------------------------------------
#
# Fields, grades, registration-number prefixes, lab names, CMA numbers and PT schemes are
# illustrative. CMA numbers follow one reported form (issue year + issuing-authority
# code + "00" + serial); the CMA certificates of the labs are issued by provincial
# market-regulation bureaus, which have no CNCA approval number, so build_certificate
# accepts them with an issuing-body warning (see identifiers). The CN-HK and CN-MO labs
# are mainland-registered labs in Shenzhen and Zhuhai, for the reason given above for
# holders, so their CMA qualifications come from Guangdong (authority code 19).

_PROVINCE_NAMES: Mapping[str, str] = {
    "CN-SH": "上海市",
    "CN-JS": "江苏省",
    "CN-ZJ": "浙江省",
    "CN-AH": "安徽省",
    "CN-BJ": "北京市",
    "CN-TJ": "天津市",
    "CN-HE": "河北省",
    "CN-GD": "广东省",
    "CN-HK": "香港特别行政区",
    "CN-MO": "澳门特别行政区",
    "CN-FJ": "福建省",
    "CN-SN": "陕西省",
}
# Who evaluates a participant's assessors.
_EVALUATORS: Mapping[str, str] = {
    **{p: f"{name}市场监督管理局" for p, name in _PROVINCE_NAMES.items()},
    "CN-HK": "香港认可处",
    "CN-MO": "澳门特别行政区经济及科技发展局",
}
# CMA issuing-authority codes (DOMAIN notes; 13 and 27 continue the same sequence).
_CMA_AUTHORITIES: Mapping[str, str] = {
    "01": "北京市市场监督管理局",
    "02": "天津市市场监督管理局",
    "03": "河北省市场监督管理局",
    "09": "上海市市场监督管理局",
    "10": "江苏省市场监督管理局",
    "11": "浙江省市场监督管理局",
    "12": "安徽省市场监督管理局",
    "13": "福建省市场监督管理局",
    "19": "广东省市场监督管理局",
    "27": "陕西省市场监督管理局",
}
_CMA_YEARS = 6
_DIVISIONS: Mapping[str, str] = {p: division for p, division, _, _ in _HOLDER_ROWS}


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoLab:
    participant: str
    name: str
    credit_code: str
    # Two-digit CMA issuing-authority code.
    authority: str
    accreditation_number: str  # "" when not CNAS-accredited
    # Position among all demo labs; makes CMA serials unique across participants.
    index: int

    def cma_issue_date(self, today: date) -> date:
        # 400+ days back: older than every demo report, and 6-year validity runs past today.
        return today - timedelta(days=400 + (self.index * 113) % 1400)

    def cma_number(self, today: date) -> str:
        return f"{self.cma_issue_date(today).year:04d}{self.authority}00{100 + self.index:04d}"


# (participant, lab name, registering authority + organisation type, organisation code,
# CMA authority, accreditation number). "12": 事业单位 (public institution); "91": company.
_LAB_ROWS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("CN-SH", "上海市质量监督检验技术研究院（示例）", "12", "42500127", "09", "CNAS L0158"),
    ("CN-SH", "上海浦江检测技术有限公司（示例）", "91", "MA1FQ7C3", "09", ""),
    ("CN-JS", "江苏省产品质量监督检验研究院（示例）", "12", "46601432", "10", "CNAS L0326"),
    ("CN-JS", "苏州明诚检测技术有限公司（示例）", "91", "MA1N2R8K", "10", "CNAS L8812"),
    ("CN-ZJ", "浙江省产品质量安全检测研究院（示例）", "12", "47003518", "11", "CNAS L0541"),
    ("CN-ZJ", "杭州之江检测技术有限公司（示例）", "91", "MA2J7D4W", "11", ""),
    ("CN-AH", "安徽省产品质量监督检验研究院（示例）", "12", "48500296", "12", "CNAS L0497"),
    ("CN-AH", "合肥科大检测技术有限公司（示例）", "91", "MA2Q4H6C", "12", ""),
    ("CN-BJ", "北京市产品质量监督检验研究院（示例）", "12", "40085316", "01", "CNAS L0035"),
    ("CN-BJ", "北京海淀检测技术有限公司（示例）", "91", "MA01K3T8", "01", "CNAS L9127"),
    ("CN-TJ", "天津市产品质量监督检测技术研究院（示例）", "12", "40135082", "02", "CNAS L0274"),
    ("CN-TJ", "天津滨海检测技术有限公司（示例）", "91", "MA06F2N5", "02", ""),
    ("CN-HE", "河北省产品质量监督检验研究院（示例）", "12", "40176433", "03", "CNAS L0412"),
    ("CN-HE", "石家庄燕赵检测技术有限公司（示例）", "91", "MA0D7K2Q", "03", ""),
    ("CN-GD", "广东产品质量监督检验研究院（示例）", "12", "45585721", "19", "CNAS L0195"),
    ("CN-GD", "深圳南山检测技术有限公司（示例）", "91", "MA5G2W7E", "19", "CNAS L7786"),
    ("CN-HK", "深圳港联检测技术有限公司（示例）", "91", "MA5J8C3R", "19", "CNAS L6612"),
    ("CN-HK", "深圳维港检测认证有限公司（示例）", "91", "MA5K3P9U", "19", ""),
    ("CN-MO", "珠海横琴澳联检测技术有限公司（示例）", "91", "MA4Y2T6H", "19", "CNAS L9054"),
    ("CN-MO", "珠海濠江食品检测有限公司（示例）", "91", "MA4Q7N3B", "19", ""),
    ("CN-FJ", "福建省产品质量检验研究院（示例）", "12", "48806514", "13", "CNAS L0603"),
    ("CN-FJ", "福州榕城检测技术有限公司（示例）", "91", "MA2Y8D4L", "13", ""),
    ("CN-SN", "陕西省产品质量监督检验研究院（示例）", "12", "43523710", "27", "CNAS L0688"),
    ("CN-SN", "西安雁塔检测技术有限公司（示例）", "91", "MA6W3F8K", "27", ""),
)
_ALL_LABS: tuple[DemoLab, ...] = tuple(
    DemoLab(
        participant=p,
        name=name,
        credit_code=make_credit_code(
            registering_authority=kind[0], org_type=kind[1], division=_DIVISIONS[p], org_code8=org
        ),
        authority=authority,
        accreditation_number=accreditation,
        index=i,
    )
    for i, (p, name, kind, org, authority, accreditation) in enumerate(_LAB_ROWS)
)
DEMO_LABS: Mapping[str, tuple[DemoLab, ...]] = {
    p: tuple(lab for lab in _ALL_LABS if lab.participant == p) for p in DEMO_PARTICIPANTS
}

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
_GIVEN_NAMES = (
    "建国",
    "丽华",
    "志强",
    "海燕",
    "明",
    "静",
    "晓东",
    "雪梅",
    "俊杰",
    "文博",
    "秀英",
    "浩然",
    "婷",
)
TECHNICAL_FIELDS: tuple[str, ...] = (
    "电子电器",
    "食品",
    "建筑材料",
    "机动车检测",
    "环境监测",
    "医疗器械",
    "纺织品",
    "化学品",
    "特种设备",
    "农产品",
)
# (kind, registration prefix, grades): 认证审核员 register with CCAA.
_QUALIFICATION_FORMS: Mapping[QualificationKind, tuple[str, tuple[str, ...]]] = {
    QualificationKind.CMA_ASSESSOR: ("CMA", ("高级评审员", "评审员", "实习评审员")),
    QualificationKind.CERTIFICATION_AUDITOR: ("CCAA", ("高级审核员", "审核员")),
    QualificationKind.TECHNICAL_EXPERT: ("TE", ("技术专家",)),
    QualificationKind.INSPECTOR: ("INS", ("检查员",)),
}
_KIND_CYCLE = (
    QualificationKind.CMA_ASSESSOR,
    QualificationKind.CMA_ASSESSOR,
    QualificationKind.CERTIFICATION_AUDITOR,
    QualificationKind.CMA_ASSESSOR,
    QualificationKind.TECHNICAL_EXPERT,
    QualificationKind.INSPECTOR,
)
_QUALIFICATION_YEARS = 5
# The assessor (by serial) of each home whose extra qualification has expired, so demos
# can show QUALIFICATION_EXPIRED next to a VALID record.
EXPIRED_QUALIFICATION_SERIAL = 2


def _abbr(participant: str) -> str:
    return participant.split("-", 1)[1]


def _check_participant(participant: str) -> None:
    if participant not in DEMO_HOLDERS:
        raise ValueError(f"no demo data for {participant!r}; known: {', '.join(DEMO_PARTICIPANTS)}")


def _midnight_utc(d: date) -> datetime:
    return datetime.combine(d, time(), tzinfo=UTC)


def demo_assessors(home: str, *, count: int, today: date) -> list[Assessor]:
    """``count`` VALID version-1 assessors of ``home``, the same for the same arguments.

    Each passes ``build_assessor`` with no warnings and holds at least one qualification
    valid on ``today``; assessor ``EXPIRED_QUALIFICATION_SERIAL`` also holds one that
    expired 30 days before ``today``, in a field none of its other qualifications list.
    """
    _check_participant(home)
    if count < 0 or count > 9000:
        raise ValueError("count must lie within 0..9000")
    block = DEMO_PARTICIPANTS.index(home)
    fields_n = len(TECHNICAL_FIELDS)
    assessors: list[Assessor] = []
    for serial in range(1, count + 1):
        kind = _KIND_CYCLE[serial % len(_KIND_CYCLE)]
        prefix, grades = _QUALIFICATION_FORMS[kind]
        start = today - timedelta(days=60 + (serial * 131) % 1400)
        own = (TECHNICAL_FIELDS[serial % fields_n], TECHNICAL_FIELDS[(serial + 3) % fields_n])
        quals = [
            Qualification(
                kind=kind,
                grade=grades[serial % len(grades)],
                fields=own,
                valid_from=start,
                valid_until=_add_years(start, _QUALIFICATION_YEARS) - timedelta(days=1),
            )
        ]
        if serial % 3 == 0:
            quals.append(
                Qualification(
                    kind=QualificationKind.TECHNICAL_EXPERT,
                    grade="技术专家",
                    fields=(TECHNICAL_FIELDS[(serial + 5) % fields_n],),
                    valid_from=start,
                    valid_until=_add_years(start, _QUALIFICATION_YEARS) - timedelta(days=1),
                )
            )
        if serial == EXPIRED_QUALIFICATION_SERIAL:
            lapsed = next(f for f in TECHNICAL_FIELDS if all(f not in q.fields for q in quals))
            ended = today - timedelta(days=30)
            quals.append(
                Qualification(
                    kind=kind,
                    grade=grades[-1],
                    fields=(lapsed,),
                    valid_from=_add_years(ended, -_QUALIFICATION_YEARS) + timedelta(days=1),
                    valid_until=ended,
                )
            )
        evaluations = tuple(
            Evaluation(
                date=start + timedelta(days=365 * k - 20),
                evaluator=_EVALUATORS[home],
                result="基本合格" if (serial + k) % 5 == 0 else "合格",
                note="现场评审记录不够完整，已提醒改进" if (serial + k) % 5 == 0 else "",
            )
            for k in (1, 2)
            if start + timedelta(days=365 * k - 20) <= today
        )
        surname = _SURNAMES[(block * 7 + serial * 3) % len(_SURNAMES)]
        given = _GIVEN_NAMES[(block + serial * 5) % len(_GIVEN_NAMES)]
        assessors.append(
            Assessor(
                registration_number=f"{prefix}-{_abbr(home)}-{start.year:04d}-{300 + serial:04d}",
                name=surname + given,
                home=home,
                qualifications=tuple(quals),
                state=CertState.VALID,
                reason="",
                effective_at=_midnight_utc(start),
                evaluations=evaluations,
                version=1,
            )
        )
    return assessors


def demo_lab_cma_certificates(issuer: str, *, today: date) -> list[Certificate]:
    """The VALID CMA qualifications (scheme CMA) of ``issuer``'s demo labs.

    Reports and PT results name these labs, so a demo can find the lab behind a
    report. Each passes ``build_certificate`` with exactly one warning (issuing_body).
    """
    _check_participant(issuer)
    certs: list[Certificate] = []
    for lab in DEMO_LABS[issuer]:
        issue = lab.cma_issue_date(today)
        certs.append(
            Certificate(
                certificate_number=lab.cma_number(today),
                scheme=Scheme.CMA,
                issuing_body=_CMA_AUTHORITIES[lab.authority],
                issuer=issuer,
                holder=Holder(name=lab.name, credit_code=lab.credit_code),
                scope="检验检测能力范围：" + "、".join(TECHNICAL_FIELDS[lab.index % 4 :][:4]),
                state=CertState.VALID,
                reason="",
                effective_at=_midnight_utc(issue),
                issue_date=issue,
                expiry_date=_add_years(issue, _CMA_YEARS),
                version=1,
            )
        )
    return certs


# (product, standard); GB/T 2828.1 is the sampling plan behind batch inspections.
_REPORT_SUBJECTS: tuple[tuple[str, str], ...] = (
    ("便携式计算机", "GB 4943.1-2022"),
    ("电动自行车", "GB 17761-2024"),
    ("大米", "GB 2762-2022"),
    ("聚氯乙烯绝缘电缆", "GB/T 5023.1-2008"),
    ("儿童玩具", "GB 6675.1-2014"),
    ("LED 灯具", "GB 7000.1-2015"),
    ("家用电冰箱（批次检验）", "GB/T 2828.1-2012"),
    ("热轧带肋钢筋", "GB/T 1499.2-2018"),
)
_CONCLUSION_CYCLE = (
    Conclusion.CONFORMING,
    Conclusion.CONFORMING,
    Conclusion.NONCONFORMING,
    Conclusion.CONFORMING,
    Conclusion.INFORMATIVE,
    Conclusion.CONFORMING,
)


def demo_test_reports(issuer: str, *, count: int, today: date) -> list[TestReport]:
    """``count`` VALID version-1 test reports by ``issuer``'s demo labs, issued in the past year.

    Each passes ``build_test_report`` with no warnings; its lab's CMA qualification
    (``demo_lab_cma_certificates``) was valid on its issue date.
    """
    _check_participant(issuer)
    if count < 0:
        raise ValueError("count must not be negative")
    labs = DEMO_LABS[issuer]
    reports: list[TestReport] = []
    for serial in range(1, count + 1):
        lab = labs[serial % len(labs)]
        product, standard = _REPORT_SUBJECTS[serial % len(_REPORT_SUBJECTS)]
        issued = today - timedelta(days=3 + (serial * 37) % 360)
        reports.append(
            TestReport(
                report_number=f"{_abbr(issuer)}-{issued.year:04d}-{serial:06d}",
                issuer=issuer,
                lab_name=lab.name,
                lab_cma_number=lab.cma_number(today),
                accreditation_number=lab.accreditation_number,
                product=product,
                standard=standard,
                conclusion=_CONCLUSION_CYCLE[serial % len(_CONCLUSION_CYCLE)],
                issue_date=issued,
                state=CertState.VALID,
                reason="",
                effective_at=_midnight_utc(issued),
                version=1,
            )
        )
    return reports


# (analyte, assigned value, sigma_pt); the unit in one analyte shows "/" is allowed there.
_PT_ANALYTES: tuple[tuple[str, float, float], ...] = (
    ("铅 (Pb) in 大米", 0.182, 0.018),
    ("镉 (Cd) in 大米", 0.095, 0.012),
    ("苯并[a]芘 in 食用植物油", 5.2, 0.8),
    ("甲醛 in 纺织品", 75.0, 7.5),
    ("抗压强度 (N/mm²) in 混凝土试块", 42.3, 1.5),
    ("可迁移元素铅 (Pb) in 玩具涂层", 45.0, 5.0),
)
# Target z-scores; they cover every class and hit the 2.0 and 3.0 boundaries exactly.
_Z_CYCLE = (0.42, -1.13, 1.87, 2.36, -0.68, 3.21, -2.0, 0.05, -2.74, 1.2, 3.0, -0.31)


def demo_pt_results(issuer: str, *, count: int, today: date) -> list[PtResult]:
    """``count`` VALID version-1 PT results of the schemes ``issuer`` runs.

    Participating labs come from every participant. Each result passes
    ``build_pt_result`` with no warnings: its z-score is (reported - assigned) / sigma
    rounded to two decimals, and its class is the default ISO 13528 one. Every seventh
    result gives no assigned value or sigma, as providers that publish z alone do.
    """
    _check_participant(issuer)
    if count < 0:
        raise ValueError("count must not be negative")
    block = DEMO_PARTICIPANTS.index(issuer)
    per_round = len(_ALL_LABS) * len(_PT_ANALYTES)
    results: list[PtResult] = []
    for serial in range(count):
        lab = _ALL_LABS[serial % len(_ALL_LABS)]
        which = (serial // len(_ALL_LABS)) % len(_PT_ANALYTES)
        analyte, assigned, sigma = _PT_ANALYTES[which]
        # Two analytes per scheme; each issuer runs its own three schemes.
        scheme_id = f"CNCA-PT-{today.year:04d}-{17 + block * 3 + which // 2:03d}"
        reported = round(assigned + _Z_CYCLE[serial % len(_Z_CYCLE)] * sigma, 4)
        z = round((reported - assigned) / sigma, 2)
        reported_on = today - timedelta(days=10 + (serial * 17) % 200)
        bare = serial % 7 == 6
        results.append(
            PtResult(
                issuer=issuer,
                scheme_id=scheme_id,
                round=f"{today.year:04d}-{serial // per_round + 1}",
                lab_name=lab.name,
                lab_cma_number=lab.cma_number(today),
                analyte=analyte,
                assigned_value=None if bare else assigned,
                sigma=None if bare else sigma,
                reported_value=reported,
                z_score=z,
                report_date=reported_on,
                state=CertState.VALID,
                reason="",
                effective_at=_midnight_utc(reported_on),
                version=1,
                classification=classify_z(z),
            )
        )
    return results


_SPOT_CHECK_ITEMS: tuple[tuple[str, ...], ...] = (
    ("认证证书有效性", "CCC 标志使用", "产品一致性"),
    ("管理体系运行有效性", "证书及标志使用"),
    ("产品标签标识", "型式试验报告核对", "关键元器件一致性"),
    ("检验检测报告真实性", "原始记录完整性"),
)
_FOLLOW_UPS = ("责令整改，30 日内复查", "暂停证书，移交认证机构处理", "立案调查")


def demo_spot_checks(issuer: str, *, count: int, today: date) -> list[SpotCheck]:
    """``count`` VALID version-1 双随机 spot-check results of ``issuer`` on its demo holders.

    Each passes ``build_spot_check`` with no warnings; every fourth is nonconforming,
    with a follow-up.
    """
    _check_participant(issuer)
    if count < 0 or count > 9999:
        raise ValueError("count must lie within 0..9999")
    holders = DEMO_HOLDERS[issuer]
    checks: list[SpotCheck] = []
    for serial in range(1, count + 1):
        target = holders[serial % len(holders)]
        checked = today - timedelta(days=5 + (serial * 23) % 300)
        failed = serial % 4 == 3
        checks.append(
            SpotCheck(
                check_id=f"{_abbr(issuer)}-SC-{checked.year:04d}-{serial:04d}",
                issuer=issuer,
                target_name=target.name,
                target_credit_code=target.credit_code,
                check_date=checked,
                items=_SPOT_CHECK_ITEMS[serial % len(_SPOT_CHECK_ITEMS)],
                outcome=SpotCheckOutcome.NONCONFORMING if failed else SpotCheckOutcome.CONFORMING,
                follow_up=_FOLLOW_UPS[serial % len(_FOLLOW_UPS)] if failed else "",
                state=CertState.VALID,
                reason="",
                effective_at=_midnight_utc(checked),
                version=1,
            )
        )
    return checks


# ---- Hong Kong labs (HOKLAS): no CMA number, identified by their accreditation ----------

HK_PARTICIPANT = "CN-HK"
HKAS_BODY = identifiers.HKAS_BODY
# HKAS reassesses accredited bodies on a four-year cycle.
_HKAS_CYCLE_YEARS = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoHkLab:
    name: str
    # As written on a report: programme and HKAS registration number.
    accreditation_number: str
    # Hong Kong Business Registration number (8 digits): the holder identifier there.
    business_registration: str
    # Days before "today" the current accreditation was granted.
    accredited_days_ago: int
    # Set for a lab whose accreditation is suspended, with the days ago it took effect.
    suspended_days_ago: int | None = None

    @property
    def hkas(self) -> tuple[str, str]:
        programme, number = self.accreditation_number.split(" ")
        return programme, number


DEMO_HK_LABS: tuple[DemoHkLab, ...] = (
    DemoHkLab(
        name="維港檢測實驗所有限公司 Victoria Harbour Testing Laboratory Ltd.（示例）",
        accreditation_number="HOKLAS 058",
        business_registration="31527046",
        accredited_days_ago=900,
    ),
    DemoHkLab(
        name="九龍化驗所有限公司 Kowloon Analytical Laboratory Ltd.（示例）",
        accreditation_number="HOKLAS 212",
        business_registration="60814235",
        accredited_days_ago=700,
        # Suspended before every demo report it issued: those reports are not recognised.
        suspended_days_ago=200,
    ),
)


def demo_hk_accreditations(*, today: date) -> list[Certificate]:
    """The HOKLAS accreditations of the demo Hong Kong labs, as CN-HK publishes them.

    Scheme HOKLAS, number the HKAS registration number ("058"), holder identified by its
    Business Registration number. Each passes ``build_certificate`` with no warnings.
    """
    certs: list[Certificate] = []
    for lab in DEMO_HK_LABS:
        programme, number = lab.hkas
        issued = today - timedelta(days=lab.accredited_days_ago)
        suspended = lab.suspended_days_ago is not None
        effective = (
            issued if lab.suspended_days_ago is None else today - timedelta(days=lab.suspended_days_ago)
        )
        certs.append(
            Certificate(
                certificate_number=number,
                scheme=Scheme[programme],
                issuing_body=HKAS_BODY,
                issuer=HK_PARTICIPANT,
                holder=Holder(name=lab.name, credit_code=lab.business_registration),
                scope="Chemical testing: food, toys, textiles (化學測試：食品、玩具、紡織品)",
                state=CertState.SUSPENDED if suspended else CertState.VALID,
                reason="Suspended pending reassessment (暫停認可，待重新評審)" if suspended else "",
                effective_at=_midnight_utc(effective),
                issue_date=issued,
                expiry_date=_add_years(issued, _HKAS_CYCLE_YEARS),
                version=1,
            )
        )
    return certs


def demo_hk_test_reports(*, count: int, today: date) -> list[TestReport]:
    """``count`` VALID test reports by the demo Hong Kong labs, in turn: no CMA number, the
    lab identified by its HOKLAS accreditation. Each passes ``build_test_report`` with no
    warnings; every report is issued after its lab's accreditation took its current state."""
    if count < 0:
        raise ValueError("count must not be negative")
    reports: list[TestReport] = []
    for serial in range(1, count + 1):
        lab = DEMO_HK_LABS[(serial - 1) % len(DEMO_HK_LABS)]
        product, standard = _REPORT_SUBJECTS[serial % len(_REPORT_SUBJECTS)]
        issued = today - timedelta(days=3 + (serial * 29) % 150)
        reports.append(
            TestReport(
                report_number=f"HK-{issued.year:04d}-{serial:06d}",
                issuer=HK_PARTICIPANT,
                lab_name=lab.name,
                lab_cma_number="",
                accreditation_number=lab.accreditation_number,
                product=product,
                standard=standard,
                conclusion=_CONCLUSION_CYCLE[serial % len(_CONCLUSION_CYCLE)],
                issue_date=issued,
                state=CertState.VALID,
                reason="",
                effective_at=_midnight_utc(issued),
                version=1,
            )
        )
    return reports


def demo_hk_pt_results(*, count: int, today: date) -> list[PtResult]:
    """``count`` VALID PT results of a CN-HK-run scheme for the demo Hong Kong labs, keyed by
    accreditation number in the lab slot. Each passes ``build_pt_result`` with no warnings."""
    if count < 0:
        raise ValueError("count must not be negative")
    results: list[PtResult] = []
    for serial in range(count):
        lab = DEMO_HK_LABS[serial % len(DEMO_HK_LABS)]
        which = (serial // len(DEMO_HK_LABS)) % len(_PT_ANALYTES)
        analyte, assigned, sigma = _PT_ANALYTES[which]
        reported = round(assigned + _Z_CYCLE[serial % len(_Z_CYCLE)] * sigma, 4)
        z = round((reported - assigned) / sigma, 2)
        reported_on = today - timedelta(days=10 + (serial * 13) % 120)
        results.append(
            PtResult(
                issuer=HK_PARTICIPANT,
                scheme_id=f"HKAS-PT-{today.year:04d}-03",
                round=f"{today.year:04d}-1",
                lab_name=lab.name,
                lab_cma_number="",
                accreditation_number=lab.accreditation_number,
                analyte=analyte,
                assigned_value=assigned,
                sigma=sigma,
                reported_value=reported,
                z_score=z,
                report_date=reported_on,
                state=CertState.VALID,
                reason="",
                effective_at=_midnight_utc(reported_on),
                version=1,
                classification=classify_z(z),
            )
        )
    return results
