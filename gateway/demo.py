"""``mrx demo``: a day of exchanges through a real gateway on the embedded default.

Starts a gateway on a fresh SQLite file with freshly generated demo keys, lets several
provinces publish signed certificate statuses, lets another province read them back
and verify the issuer's own signature, shows refused attempts with their reasons, and
prints a summary. Exits non-zero if anything did not behave as shown, so the demo is
also a smoke test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TextIO

from gateway.client import GatewayClient, SubmissionRefused, make_submission
from gateway.crypto.dsse import verify_envelope_signature
from gateway.crypto.suites import PrivateKey, Suite
from gateway.demo_fixtures import (
    DEMO_HK_LABS,
    demo_assessors,
    demo_certificates,
    demo_hk_accreditations,
    demo_hk_pt_results,
    demo_hk_test_reports,
    demo_lab_cma_certificates,
    demo_pt_results,
    demo_spot_checks,
    demo_status_change,
    demo_test_reports,
)
from gateway.domain.certificates import Certificate, CertState, Scheme
from gateway.domain.records import CHINA, Assessor, Record
from gateway.pb import recognition_pb2, records_pb2
from gateway.registry.federation import Federation, load_federation
from gateway.registry.keygen import DEMO_ECDSA_ENTRY, load_demo_signers, write_demo_federation
from gateway.server import start_gateway
from gateway.store.engine import display_url, open_engines, resolve_database_url
from gateway.store.reads import ReadStore

PUBLISHERS = ("CN-JS", "CN-SH", "CN-ZJ", "CN-BJ", "CN-TJ", "CN-GD")
PER_PUBLISHER = 40


class DemoFailure(Exception):
    pass


def run_demo(*, database: str | None, template: Path, keep: bool, out: TextIO) -> int:
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mrx-demo-"))
    now = datetime.now(UTC)
    today = now.astimezone(CHINA).date()

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    try:
        paths = write_demo_federation(template_dir=template, dest=workdir / "federation", now=now)
        federation = load_federation(workdir / "federation")
        signers = load_demo_signers(paths)
        url = resolve_database_url(database or str(workdir / "mrx.db"))
        engines = open_engines(url)
        # The demo serves plaintext on loopback on purpose, and its header says so: the
        # gateway's start-up warning about it would only alarm a newcomer.
        server_log = logging.getLogger("gateway.server")
        level = server_log.level
        server_log.setLevel(logging.ERROR)
        try:
            gateway = start_gateway(
                federation=federation, engines=engines, gateway_key=signers[federation.gateway_code]
            )
        finally:
            server_log.setLevel(level)
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    target = gateway.address
    say("mrx demo: the mutual-recognition exchange gateway")
    say(
        f"  federation  {federation.name}: {len(federation.participants)} participants, alliances "
        + ", ".join(f"{a.code} ({'/'.join(a.members)})" for a in federation.alliances.values())
    )
    say(f"  demo keys   {workdir / 'federation'} (fresh, thrown away afterwards)")
    say(f"  gateway     {target} (plaintext, loopback only), store {engines.dialect} {display_url(url)}")
    failures: list[str] = []
    try:
        clients = {
            code: GatewayClient(target, sender=code, signer=signers[code]) for code in (*PUBLISHERS, "CN-AH")
        }
        gd_ecdsa = GatewayClient(target, sender="CN-GD", signer=signers[DEMO_ECDSA_ENTRY])
        published: dict[str, list[Certificate]] = {}

        say()
        say("1. Provinces publish certificate statuses (streamed batches, each item signed by its issuer)")
        for code in PUBLISHERS:
            certs = demo_certificates(code, count=PER_PUBLISHER, today=today)
            published[code] = certs
            client = gd_ecdsa if code == "CN-GD" else clients[code]
            outcomes = list(client.publish_many(certs))
            ok = sum(1 for o in outcomes if o.receipt is not None)
            suite = client.signer.suite.value if client.signer else "?"
            name = federation.participants[code].name
            say(f"   {code} {name:<16} {len(certs):>3} sent, {ok:>3} receipts ({suite})")
            if ok != len(certs):
                failures.append(f"{code}: {len(certs) - ok} items refused")

        say()
        say("2. Status changes (unary Submit; the receipt comes back only after a durable commit)")
        js_cert = next(c for c in published["CN-JS"] if c.scheme is Scheme.CCC)
        suspended = demo_status_change(
            js_cert, state=CertState.SUSPENDED, reason="监督抽查不合格，暂停证书", effective_at=now
        )
        r = clients["CN-JS"].publish(suspended)
        say(
            f"   CN-JS suspends CCC {js_cert.certificate_number} ({js_cert.holder.name}): "
            f"receipt log #{r.log_index}, version {r.record_version}"
        )
        sh_cert = next(c for c in published["CN-SH"] if c.scheme is not Scheme.CCC)
        revoked = demo_status_change(
            sh_cert, state=CertState.REVOKED, reason="暂停期间未完成整改，撤销证书", effective_at=now
        )
        r = clients["CN-SH"].publish(revoked)
        say(
            f"   CN-SH revokes {sh_cert.scheme.name} {sh_cert.certificate_number}: receipt log #{r.log_index}"
        )
        gd_cert = published["CN-GD"][1]
        withdrawn = demo_status_change(
            gd_cert, state=CertState.WITHDRAWN, reason="持证人申请注销", effective_at=now
        )
        r = gd_ecdsa.publish(withdrawn)
        say(
            f"   CN-GD withdraws {gd_cert.scheme.name} {gd_cert.certificate_number} (ECDSA P-256 key): "
            f"receipt log #{r.log_index}"
        )

        say()
        say("3. Another province asks (CN-AH reads what CN-JS published, and checks CN-JS's own signature)")
        reader = clients["CN-AH"]
        view = reader.get_certificate(Scheme.CCC, js_cert.certificate_number)
        issuer_key = federation.keys[view.envelope.signatures[0].keyid]
        verified = verify_envelope_signature(view.envelope, issuer_key.public_key)
        state = CertState(view.effective_state).name
        say(
            f"   GetCertificate CCC {js_cert.certificate_number}: {state} since "
            f"{view.certificate.effective_at.ToDatetime(tzinfo=UTC):%Y-%m-%d %H:%M} UTC, version "
            f"{view.certificate.version}, reason {view.certificate.reason!r}"
        )
        say(
            f"   issuer signature ({issuer_key.keyid}, {issuer_key.suite.value}): "
            f"{'verified' if verified else 'DOES NOT VERIFY'}"
        )
        if state != "SUSPENDED" or not verified:
            failures.append("read-back of the suspended certificate")
        # CN-TJ signs with SM2 only (commercial cryptography): its records read back the same.
        tj_cert = published["CN-TJ"][0]
        tj_view = clients["CN-BJ"].get_certificate(tj_cert.scheme, tj_cert.certificate_number)
        tj_sig = tj_view.envelope.signatures[0]
        tj_key = federation.keys[tj_sig.keyid]
        tj_ok = verify_envelope_signature(tj_view.envelope, tj_key.public_key)
        say(
            f"   CN-BJ reads CN-TJ's {tj_cert.scheme.name} {tj_cert.certificate_number}; "
            f"issuer signature ({tj_key.keyid}, {tj_key.suite.value}): "
            f"{'verified' if tj_ok else 'DOES NOT VERIFY'}"
        )
        if not tj_ok:
            failures.append("read-back of an SM2-signed certificate")
        holder = js_cert.holder
        found = list(reader.query_certificates(holder_credit_code=holder.credit_code, page_size=5))
        say(
            f"   QueryCertificates holder {holder.credit_code} ({holder.name}): {len(found)} certificates, "
            f"{sum(1 for v in found if CertState(v.effective_state) is CertState.SUSPENDED)} suspended"
        )
        valid_js = list(reader.query_certificates(issuer="CN-JS", state=CertState.VALID, page_size=7))
        say(f"   QueryCertificates issuer CN-JS, state VALID: {len(valid_js)} (paged 7 at a time)")
        if len(valid_js) != PER_PUBLISHER - 1 or not found:
            failures.append("queries")

        say()
        say("4. Refused attempts, each with its gRPC status and machine-readable reason")
        attempts = _refusals(clients, signers, published, revoked, now)
        for label, expected, attempt in attempts:
            try:
                outcome = attempt()
            except SubmissionRefused as refused:
                ref = refused.refusal
                fields = "".join(f"\n{'':38}field {f}: {d}" for f, d in ref.field_violations[:2])
                say(f"   {label:<24} -> {ref.code.name} {ref.reason}: {ref.message}{fields}")
                if (ref.code.name, ref.reason) != expected:
                    failures.append(f"{label}: got {ref.code.name} {ref.reason}, expected {expected}")
            else:
                say(f"   {label:<24} -> {outcome}")
                if expected != ("OK", "ORIGINAL_RECEIPT"):
                    failures.append(f"{label}: was not refused")

        say()
        say("5. Assessors and results (each published by its issuer, signed, receipted)")
        clients.update(
            {
                code: GatewayClient(target, sender=code, signer=signers[code])
                for code in ("CN-SN", "CN-HE", "CN-FJ", "CN-HK")
            }
        )
        result_keys = _publish_results(clients, today, say, failures)

        say()
        say("6. Recognition decisions (signed by the gateway; the asker files them as evidence)")
        _recognition(clients, result_keys, js_cert, federation, say, failures)

        store = ReadStore(engines)
        say()
        say("Summary")
        say(f"   exchange log   {store.exchange_count()} entries (accepted and refused-after-signature)")
        say(f"   certificates   {store.certificate_count()} stored, from {len(PUBLISHERS)} participants")
        unlogged = gateway.verifier.unlogged_refusals
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(unlogged.items()))
        say(f"   not logged     {sum(unlogged.values())} refused before the signature was proven ({reasons})")
        writer = gateway.writer_client
        say(
            f"   group commit   {writer.committed} submissions in {writer.commits} transactions "
            f"(writer {gateway.writer.mode})"
        )
        say(f"   took           {time.perf_counter() - started:.1f} s")
        for client in (*clients.values(), gd_ecdsa):
            client.close()
    finally:
        gateway.stop()
        engines.dispose()
        if keep:
            say(f"   kept           {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        say("DEMO FAILED: " + "; ".join(failures))
        return 1
    say("Demo finished: every exchange behaved as described.")
    return 0


def _refusals(
    clients: dict[str, GatewayClient],
    signers: dict[str, PrivateKey],
    published: dict[str, list[Certificate]],
    revoked: Certificate,
    now: datetime,
) -> list[tuple[str, tuple[str, str], Callable[[], str]]]:
    zj, sh, js = clients["CN-ZJ"], clients["CN-SH"], clients["CN-JS"]
    zj_cert = published["CN-ZJ"][3]

    def forged() -> str:
        env = zj.sign(dataclasses.replace(zj_cert, version=2, scope=zj_cert.scope + "（篡改）"))
        env.payload = env.payload.replace("（篡改）".encode(), "（伪造）".encode())
        zj.submit(env)
        return "accepted"

    def unknown_key() -> str:
        rogue = PrivateKey.generate(Suite.ED25519, "CN-ZJ/rogue")
        env = make_submission(dataclasses.replace(zj_cert, version=2), sender="CN-ZJ", signer=rogue)
        zj.submit(env)
        return "accepted"

    def wrong_issuer() -> str:
        cert = dataclasses.replace(
            published["CN-JS"][5], version=2, state=CertState.SUSPENDED, reason="越权操作"
        )
        sh.publish(cert)  # CN-SH signs a change to a certificate issued under CN-JS
        return "accepted"

    def claims_issuer() -> str:
        cert = dataclasses.replace(published["CN-JS"][6], issuer="CN-SH", version=2)
        sh.publish(cert)  # ...and pretends to be its issuer: the number is in CN-JS's block
        return "accepted"

    today = now.astimezone(CHINA).date()

    def foreign_lab() -> str:
        report = dataclasses.replace(demo_test_reports("CN-JS", count=1, today=today)[0], issuer="CN-SH")
        sh.publish(report)  # a report of a lab the federation declares for CN-JS
        return "accepted"

    def foreign_assessor() -> str:
        assessor = dataclasses.replace(demo_assessors("CN-SN", count=1, today=today)[0], home="CN-JS")
        js.publish(assessor)  # a Shaanxi registration number under a Jiangsu home
        return "accepted"

    replay_id = "demo-replay-0001"
    first_env = js.sign(
        dataclasses.replace(published["CN-JS"][7], version=2, reason=""), message_id=replay_id
    )
    first = js.submit(first_env)

    def replay() -> str:
        js.publish(dataclasses.replace(published["CN-JS"][8], version=2), message_id=replay_id)
        return "accepted"

    def resend() -> str:
        again = js.submit(first_env)
        same = again.SerializeToString() == first.SerializeToString()
        return f"original receipt returned (log #{again.log_index}, identical: {same})"

    def resurrect() -> str:
        sh.publish(
            dataclasses.replace(revoked, state=CertState.VALID, version=revoked.version + 1, reason="")
        )
        return "accepted"

    def older() -> str:
        js.publish(published["CN-JS"][7])  # version 1 after version 2 was stored
        return "accepted"

    def stale() -> str:
        js.publish(dataclasses.replace(published["CN-JS"][9], version=2), created_at=now - timedelta(hours=2))
        return "accepted"

    def bad_code() -> str:
        cert = published["CN-JS"][10]
        code = cert.holder.credit_code
        broken = code[:-1] + ("0" if code[-1] != "0" else "1")
        js.publish(
            dataclasses.replace(cert, holder=dataclasses.replace(cert.holder, credit_code=broken), version=2)
        )
        return "accepted"

    def secretariat() -> str:
        sec = GatewayClient(js.target, sender="YRD-SEC", signer=signers["YRD-SEC"])
        try:
            cert = dataclasses.replace(published["CN-SH"][2], issuer="YRD-SEC", version=2)
            env = make_submission(cert, sender="YRD-SEC", signer=signers["YRD-SEC"])
            sec.submit(env)
        finally:
            sec.close()
        return "accepted"

    return [
        ("forged signature", ("UNAUTHENTICATED", "BAD_SIGNATURE"), forged),
        ("key not in federation", ("UNAUTHENTICATED", "UNKNOWN_KEY"), unknown_key),
        ("not the issuer", ("PERMISSION_DENIED", "NOT_ISSUER"), wrong_issuer),
        ("claims another's cert", ("PERMISSION_DENIED", "OUTSIDE_JURISDICTION"), claims_issuer),
        ("report of another's lab", ("PERMISSION_DENIED", "OUTSIDE_JURISDICTION"), foreign_lab),
        ("assessor of another", ("PERMISSION_DENIED", "OUTSIDE_JURISDICTION"), foreign_assessor),
        ("secretariat writes", ("PERMISSION_DENIED", "READ_ONLY_PRINCIPAL"), secretariat),
        ("replay, new bytes", ("ALREADY_EXISTS", "MESSAGE_ID_REUSED"), replay),
        ("replay, same bytes", ("OK", "ORIGINAL_RECEIPT"), resend),
        ("revoked -> valid", ("FAILED_PRECONDITION", "ILLEGAL_TRANSITION"), resurrect),
        ("older version", ("FAILED_PRECONDITION", "STALE_VERSION"), older),
        ("clock 2 h behind", ("FAILED_PRECONDITION", "STALE_MESSAGE"), stale),
        ("bad credit code", ("INVALID_ARGUMENT", "INVALID_FIELDS"), bad_code),
    ]


def _publish_results(
    clients: dict[str, GatewayClient], today: date, say: Callable[[str], None], failures: list[str]
) -> dict[str, str]:
    """Publish a small set of every kind; returns record keys the decisions ask about."""
    keys: dict[str, str] = {}
    batches: list[tuple[str, str, list[Record]]] = [
        ("CN-JS", "lab CMA qualifications", list(demo_lab_cma_certificates("CN-JS", today=today))),
        ("CN-JS", "test reports", list(demo_test_reports("CN-JS", count=6, today=today))),
        ("CN-BJ", "PT results", list(demo_pt_results("CN-BJ", count=6, today=today))),
        ("CN-SH", "spot checks", list(demo_spot_checks("CN-SH", count=4, today=today))),
        ("CN-SN", "assessor records", list(demo_assessors("CN-SN", count=4, today=today))),
        # Hong Kong labs have no CMA number: their HOKLAS accreditation identifies them.
        ("CN-HK", "HOKLAS accreditations", list(demo_hk_accreditations(today=today))),
        ("CN-HK", "HK test reports", list(demo_hk_test_reports(count=len(DEMO_HK_LABS), today=today))),
        ("CN-HK", "HK PT results", list(demo_hk_pt_results(count=4, today=today))),
    ]
    for code, label, records in batches:
        outcomes = list(clients[code].publish_many(records))
        receipts = [o.receipt for o in outcomes if o.receipt is not None]
        say(f"   {code} {label:<24} {len(records):>3} sent, {len(receipts):>3} receipts")
        if len(receipts) != len(records):
            failures.append(f"{code} {label}: {len(records) - len(receipts)} refused")
            continue
        keys[label] = receipts[0].record_key
        if label == "HK test reports":
            # The second demo lab's accreditation is suspended: its report is the refusal.
            keys["HK test report, suspended lab"] = receipts[1].record_key
        if label == "PT results":
            classes = [clients[code].get_record(r.record_key).pt_classification for r in receipts]
            counts = {recognition_name(c): classes.count(c) for c in sorted(set(classes))}
            say(f"   {'':6}{'':24} ISO 13528 classes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if label == "assessor records":
            # One assessor in good standing, one whose qualification for a field lapsed.
            good, lapsed = records[0], records[1]
            assert isinstance(good, Assessor) and isinstance(lapsed, Assessor)
            keys["assessor-field"] = good.qualifications[0].fields[0]
            keys["assessor-expired"] = receipts[1].record_key
            keys["assessor-expired-field"] = next(
                q.fields[0] for q in lapsed.qualifications if q.valid_until < today
            )
    return keys


def recognition_name(pt_class: int) -> str:
    return records_pb2.PtClass.Name(pt_class).removeprefix("PT_CLASS_")  # type: ignore[arg-type]


def _recognition(
    clients: dict[str, GatewayClient],
    keys: dict[str, str],
    suspended: Certificate,
    federation: Federation,
    say: Callable[[str], None],
    failures: list[str],
) -> None:
    report = keys.get("test reports", "")
    assessor = keys.get("assessor records", "")
    expired = keys.get("assessor-expired", "")
    field, lapsed_field = keys.get("assessor-field", ""), keys.get("assessor-expired-field", "")

    def assessor_question(key: str, field: str) -> recognition_pb2.AssessorQuestion:
        _, home, number = key.split("/", 2)
        return recognition_pb2.AssessorQuestion(registration_number=number, home=home, field=field)

    questions: list[tuple[str, str, str, str, dict[str, object]]] = [
        ("CN-SH", "RECOGNISED", "", "a Jiangsu test report, in YRD", {"record_key": report}),
        ("CN-BJ", "RECOGNISED", "", "the same report, across YRD-BTH", {"record_key": report}),
        (
            "CN-GD",
            "NOT_RECOGNISED",
            "AGREEMENT_NOT_IN_FORCE",
            "the same report, JS-GD pilot",
            {"record_key": report},
        ),
        ("CN-FJ", "NOT_RECOGNISED", "NO_AGREEMENT", "the same report, from Fujian", {"record_key": report}),
        (
            "CN-AH",
            "NOT_RECOGNISED",
            "RECORD_SUSPENDED",
            "the suspended CCC certificate",
            {"record_key": suspended.key},
        ),
        (
            "CN-HE",
            "RECOGNISED",
            "",
            f"a Shaanxi assessor for {field}",
            {"assessor": assessor_question(assessor, field)},
        ),
        (
            "CN-HE",
            "NOT_RECOGNISED",
            "QUALIFICATION_EXPIRED",
            f"another for {lapsed_field}",
            {"assessor": assessor_question(expired, lapsed_field)},
        ),
        (
            "CN-GD",
            "RECOGNISED",
            "",
            f"a Hong Kong report ({DEMO_HK_LABS[0].accreditation_number})",
            {"record_key": keys.get("HK test reports", "")},
        ),
        (
            "CN-GD",
            "NOT_RECOGNISED",
            "LAB_NOT_ACCREDITED",
            f"one by {DEMO_HK_LABS[1].accreditation_number} (suspended)",
            {"record_key": keys.get("HK test report, suspended lab", "")},
        ),
    ]
    for asker, verdict, reason, label, question in questions:
        decision = clients[asker].check_recognition(**question)  # type: ignore[arg-type]
        got = recognition_pb2.Verdict.Name(decision.verdict).removeprefix("VERDICT_")  # type: ignore[arg-type]
        why = decision.agreement_id or "; ".join(f"{r.code}: {r.message}" for r in decision.reasons)
        say(f"   {asker} asks about {label:<32} -> {got} ({why})")
        codes = [r.code for r in decision.reasons]
        if got != verdict or (reason and reason not in codes):
            failures.append(
                f"recognition of {label} by {asker}: got {got} {codes}, expected {verdict} {reason}"
            )
    say(f"   every decision's signature verified with the gateway key {federation.gateway_code}")


# --- mrx demo --adapters --------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
ADAPTER_FIXTURES = REPO / "tests" / "fixtures" / "adapters"
ADAPTER_MAPPINGS = REPO / "adapters" / "mappings"
# The pilot federation has no agreement between Hong Kong and Shanghai; the demo adds one
# to its throw-away copy (and says so) so that the gateway lets the HKAS record through.
DEMO_HK_SH_AGREEMENT = """
[[agreements]]
id = "DEMO-HK-SH-ACCREDITATION"
name = "Demo only: Shanghai reads Hong Kong's HKAS accreditations"
parties = ["CN-HK", "CN-SH"]
kinds = ["certificate_status"]
schemes = ["HOKLAS", "HKCAS"]
effective_from = 2026-01-01
"""
SH_INBOUND_DDL = """CREATE TABLE sh_inbound_cert (
  id INTEGER PRIMARY KEY,
  source_province VARCHAR(20), cert_no VARCHAR(64), scheme_name VARCHAR(40), body_code VARCHAR(64),
  holder_name VARCHAR(200), holder_uscc VARCHAR(18), product_scope VARCHAR(2000), status_code VARCHAR(4),
  status_reason VARCHAR(1000), status_time VARCHAR(40), issue_date VARCHAR(8), expire_date VARCHAR(8),
  version BIGINT
)"""


@dataclasses.dataclass(frozen=True)
class _LocalSystem:
    participant: str
    label: str
    mapping: str
    reader: str
    sink: str = ""


def run_adapters_demo(*, database: str | None, template: Path, keep: bool, out: TextIO) -> int:
    """Three regions' local systems exchanging through a real gateway via their adapters."""
    from adapters import Adapter, load_adapter
    from adapters.cli import runner_and_inbound
    from adapters.mapping import load_mapping
    from adapters.readers import SqlReader
    from adapters.sinks import run_sql_script

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mrx-demo-adapters-"))
    now = datetime.now(UTC)

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    if not ADAPTER_FIXTURES.is_dir():
        say(f"mrx demo --adapters needs the repository's fixtures ({ADAPTER_FIXTURES}): run it from a clone")
        return 2
    try:
        fed_dir = workdir / "federation"
        paths = write_demo_federation(template_dir=template, dest=fed_dir, now=now)
        with (fed_dir / "federation.toml").open("a", encoding="utf-8") as f:
            f.write(DEMO_HK_SH_AGREEMENT)
        federation = load_federation(fed_dir)
        url = resolve_database_url(database or str(workdir / "mrx.db"))
        engines = open_engines(url)
        server_log = logging.getLogger("gateway.server")
        level = server_log.level
        server_log.setLevel(logging.ERROR)
        try:
            gateway = start_gateway(
                federation=federation,
                engines=engines,
                gateway_key=load_demo_signers(paths)[federation.gateway_code],
                checkpoint_interval=0.2,
            )
        finally:
            server_log.setLevel(level)
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    target = gateway.address
    local_db = workdir / "shanghai_local.db"
    local_url = f"sqlite:///{local_db}"
    run_sql_script(local_url, (ADAPTER_FIXTURES / "shanghai_certs.sql").read_text("utf-8") + SH_INBOUND_DDL)
    for name in ("jiangsu_ccc.csv", "hong_kong_certificates.csv"):
        shutil.copyfile(ADAPTER_FIXTURES / name, workdir / name)
    systems = [
        _LocalSystem(
            "CN-JS",
            "Jiangsu CCC list, CSV export in GBK",
            "jiangsu_ccc_csv.toml",
            f'type = "csv"\npath = "{workdir / "jiangsu_ccc.csv"}"\nencoding = "gbk"',
        ),
        _LocalSystem(
            "CN-HK",
            "HKAS register, English CSV",
            "hong_kong_certificates_csv.toml",
            f'type = "csv"\npath = "{workdir / "hong_kong_certificates.csv"}"',
        ),
        _LocalSystem(
            "CN-SH",
            "Shanghai certificate table (SQL)",
            "shanghai_certs_sql.toml",
            f'type = "sql"\nurl = "{local_url}"\ntable = "sh_cert_status"',
            f'[sink]\ntype = "sql"\nurl = "{local_url}"\ntable = "sh_inbound_cert"\n'
            f'mapping = "{ADAPTER_MAPPINGS / "shanghai_inbound_sql.toml"}"\n',
        ),
    ]
    say("mrx demo --adapters: three regions' local systems exchange through the gateway")
    say(f"  gateway     {target} (plaintext, loopback only), store {engines.dialect} {display_url(url)}")
    say(
        "  agreements  CN-JS -> CN-SH under YRD-2026-RESULTS (CCC); CN-HK -> CN-SH under "
        "DEMO-HK-SH-ACCREDITATION, added to the demo's throw-away federation only"
    )
    say(f"  local data  {workdir} (copied from tests/fixtures/adapters, thrown away afterwards)")
    failures: list[str] = []
    runners = []
    # Section 2 prints every unmappable row once; the adapter's log would repeat each on stderr.
    adapter_log = logging.getLogger("mrx.adapter")
    adapter_level = adapter_log.level
    adapter_log.setLevel(logging.ERROR)
    try:
        adapters = {}
        inbound = None
        say()
        say("1. Each local system's adapter publishes its changes (as `mrx adapter run --once`)")
        for system in systems:
            sysdir = workdir / system.participant
            sysdir.mkdir()
            config = sysdir / "adapter.toml"
            config.write_text(
                f'participant = "{system.participant}"\nmapping = "{ADAPTER_MAPPINGS / system.mapping}"\n'
                f'state_dir = "state"\nbatch_size = 200\n\n[gateway]\naddress = "{target}"\n'
                f'key = "{paths[system.participant]}"\nkeyid = "{system.participant}/demo"\n'
                f'federation = "{fed_dir}"\nretry_seconds = 10\n\n[reader]\n{system.reader}\n\n{system.sink}',
                "utf-8",
            )
            adapter = load_adapter(config)
            adapters[system.participant] = adapter
            runner, follow = runner_and_inbound(adapter)
            runners.append(runner)
            inbound = follow or inbound
            summary = runner.run_once()
            say(f"   {system.participant}  {system.label:<37} {summary.lines()[0]}")
            if summary.accepted == 0:
                failures.append(f"{system.participant}: nothing accepted")

        say()
        say("2. Rows no adapter could map (row, column, why): reported, never sent; the rest went through")
        for system in systems:
            assert adapters[system.participant].config is not None
            state_dir = workdir / system.participant / "state"
            for line in (state_dir / "rejects.jsonl").read_text("utf-8").splitlines():
                reject = json.loads(line)
                if "field" in reject:
                    say(f"   {system.participant} {reject['where']:<20} {reject['field']}: {reject['why']}")
                else:
                    refused = f"refused by the gateway: {reject['reason']}"
                    say(f"   {system.participant} {reject['where']:<20} {refused}")

        say()
        say("3. The Shanghai adapter follows the change feed into its local table sh_inbound_cert")
        assert inbound is not None
        got = inbound(until_caught_up=True)
        say(f"   {got.line()}")
        # Read back as the local system sees it: its table, through the inbound mapping.
        sh = adapters["CN-SH"]
        assert sh.config is not None and sh.config.sink is not None
        inbound_mapping = load_mapping(sh.config.sink["mapping"])
        table = SqlReader(local_url, table="sh_inbound_cert", cursor_column=inbound_mapping.cursor_column)
        # (An Adapter reads one issuer's rows: it checks each row's issuer against it.)
        local_rows = [
            m.record
            for issuer in ("CN-JS", "CN-HK", "CN-SH")
            for m in Adapter(participant=issuer, mapping=inbound_mapping, reader=table).snapshot()
            if isinstance(m.record, Certificate)
        ]
        by_province: dict[str, int] = {}
        for record in local_rows:
            by_province[record.issuer] = by_province.get(record.issuer, 0) + 1
        say("   rows in sh_inbound_cert: " + ", ".join(f"{k} {v}" for k, v in sorted(by_province.items())))
        if not by_province.get("CN-JS") or not by_province.get("CN-HK") or "CN-SH" in by_province:
            failures.append(f"inbound rows by province {by_province}")

        say()
        say("4. End to end: the Shanghai rows are the records their issuers signed, and in the signed log")
        signers = load_demo_signers(paths)
        js_row = min(
            (r for r in local_rows if r.issuer == "CN-JS" and r.state is CertState.SUSPENDED),
            key=lambda r: r.version,
            default=None,
        )
        hk_row = next((r for r in local_rows if r.issuer == "CN-HK" and r.certificate_number == "058"), None)
        for label, local in (("a Jiangsu change", js_row), ("a Hong Kong record", hk_row)):
            if local is None:
                failures.append(f"{label} did not arrive in Shanghai")
            elif not _verify_arrival(target, signers, federation, local, label, say):
                failures.append(f"{label}: end-to-end verification")
        say()
        say(f"   took {time.perf_counter() - started:.1f} s")
    finally:
        adapter_log.setLevel(adapter_level)
        for runner in runners:
            runner.close()
        gateway.stop()
        engines.dispose()
        if keep:
            say(f"   kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        say("DEMO FAILED: " + "; ".join(failures))
        return 1
    say("Demo finished: both directions verified end to end.")
    return 0


def _verify_arrival(
    target: str,
    signers: dict[str, PrivateKey],
    federation: Federation,
    local: Record | None,
    label: str,
    say: Callable[[str], None],
) -> bool:
    """The row in Shanghai's table against the change feed, the issuer's key and the log."""
    import hashlib

    from gateway.audit import merkle
    from gateway.audit.checkpoints import CHECKPOINT_PAYLOAD_TYPE
    from gateway.client import AuditClient
    from gateway.crypto.dsse import verify_envelope
    from gateway.pb import audit_pb2

    if not isinstance(local, Certificate):
        say(f"   {label}: the Shanghai row does not map back to a certificate")
        return False
    with GatewayClient(target, sender="CN-SH", signer=signers["CN-SH"]) as client:
        changes = [
            c
            for c in client.subscribe(
                kinds=["certificate_status"],
                issuers=[local.issuer],
                certificate_numbers=[local.certificate_number],
                until_caught_up=True,
            )
            if c.record.key == local.key
        ]
    change = changes[-1]
    signature = change.envelope.signatures[0]
    issuer_key = federation.keys[signature.keyid]
    signed_ok = issuer_key.owner == local.issuer and verify_envelope_signature(
        change.envelope, issuer_key.public_key
    )
    same = change.record == local
    say(
        f"   {label}: {local.scheme.name} {local.certificate_number} ({local.holder.name}), "
        f"{local.state.name} v{local.version}"
    )
    say(
        f"     Shanghai row = the record {local.issuer} signed: {'yes' if same else 'NO'}; issuer signature "
        f"({signature.keyid}, {issuer_key.suite.value}): {'verified' if signed_ok else 'DOES NOT VERIFY'}"
    )
    gateway_keys = {k.keyid: k.public_key for k in federation.keys_of(federation.gateway_code)}
    # A province sees the leaves of its own exchanges only; the issuer's alliance
    # secretariat (its auditor) asks for the proof.
    auditor = next(a.secretariat for a in federation.alliances.values() if local.issuer in a.members)
    with AuditClient(target, principal=auditor, signer=signers[auditor]) as audit:
        deadline = time.monotonic() + 10
        while True:
            envelope = audit.checkpoint()
            checkpoint = audit_pb2.Checkpoint.FromString(envelope.payload)
            if checkpoint.tree_size > change.log_index or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        verify_envelope(envelope, payload_type=CHECKPOINT_PAYLOAD_TYPE, keys=gateway_keys, what="checkpoint")
        proof = audit.inclusion_proof(log_index=change.log_index, tree_size=checkpoint.tree_size)
    leaf = audit_pb2.ExchangeLeaf.FromString(proof.leaf)
    included = (
        leaf.record_key == local.key
        and leaf.envelope_sha256 == hashlib.sha256(change.envelope.SerializeToString()).digest()
        and merkle.verify_inclusion(
            merkle.leaf_hash(proof.leaf),
            change.log_index,
            checkpoint.tree_size,
            list(proof.hashes),
            checkpoint.root_hash,
        )
    )
    say(
        f"     log #{change.log_index} in the gateway-signed checkpoint of size {checkpoint.tree_size}: "
        f"inclusion proof (asked by {auditor}) {'verified' if included else 'DOES NOT VERIFY'}"
    )
    return same and signed_ok and included
