"""Regenerate the worked example in docs/signing.md, so that no figure is typed by hand.

    python docs/make_signing_example.py           # print the generated blocks
    python docs/make_signing_example.py --write   # update docs/signing.md in place
    python docs/make_signing_example.py --check   # exit 1 if docs/signing.md is stale

Each generated block in the doc follows a line ``<!-- example:NAME -->``; only the
contents of those fenced blocks are replaced. tests/unit/test_signing_doc.py runs the
same comparison, so a change to the envelope, PAE or payload cannot leave the doc
silently wrong.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script from a checkout without installing the package.
    sys.path.insert(0, str(ROOT))

from google.protobuf import text_format  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from gateway.crypto.dsse import SUBMISSION_PAYLOAD_TYPE, sha256, sign_envelope  # noqa: E402
from gateway.crypto.reads import MD_SIGNATURE, read_signing_input, sign_read  # noqa: E402
from gateway.crypto.suites import PrivateKey, PublicKey, pae  # noqa: E402
from gateway.pb import envelope_pb2, exchange_pb2, records_pb2  # noqa: E402

sys.path.insert(0, str(ROOT / "docs"))
import sm2_reference  # noqa: E402

from gateway.crypto import sm2  # noqa: E402

DOC = ROOT / "docs" / "signing.md"

# RFC 8032 section 7.1, TEST 1. A published test key: anyone can sign with it, so it is
# in no federation and the gateway refuses it.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
EXAMPLE_KEYID = "CN-JS/rfc8032-test1"

# GM/T 0003.5-2012 (GB/T 32918.5-2017), the signature example on the recommended curve:
# a published key, and the published per-signature secret k, used here so that the SM2
# example signature is reproducible. A real signature needs a fresh random k every time
# (two signatures with one k reveal the private key).
GMT_SECRET = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
GMT_K = int("59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21", 16)
SM2_EXAMPLE_KEYID = "CN-TJ/gmt0003-example"

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ORG_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def org_code_check(code8: str) -> str:
    """GB 11714 check character of an 8-character organisation code."""
    total = sum(int(c, 36) * w for c, w in zip(code8, ORG_CODE_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


def uscc_check(code17: str) -> str:
    """GB 32100-2015 check character of the first 17 characters of a credit code."""
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(code17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def holder_credit_code() -> str:
    # 9 = registered by market regulation, 1 = enterprise, 320500 = Suzhou, then a
    # digits-only organisation code (its check character does not depend on how letters
    # are valued, which sources disagree about) and the two check characters.
    body = "91320500" + "76418930"
    body += org_code_check(body[8:])
    return body + uscc_check(body)


def _timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def example_submission() -> records_pb2.Submission:
    return records_pb2.Submission(
        header=records_pb2.SubmissionHeader(
            message_id="demo-0001",
            sender="CN-JS",
            created_at=_timestamp(datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
            nonce=bytes(range(16)),
            kind=records_pb2.RECORD_KIND_CERTIFICATE_STATUS,
        ),
        certificate_status=records_pb2.CertificateStatus(
            certificate_number="2024010901000123",
            scheme=records_pb2.CERTIFICATE_SCHEME_CCC,
            issuing_body="CNCA-R-2002-001",
            issuer="CN-JS",
            holder=records_pb2.Holder(name="苏州明德电子科技有限公司", credit_code=holder_credit_code()),
            scope="便携式计算机 MD-N14 系列",
            state=records_pb2.CERTIFICATE_STATE_VALID,
            reason="初次认证",
            effective_at=_timestamp(datetime(2024, 3, 15, tzinfo=UTC)),
            issue_date="2024-03-15",
            expiry_date="2029-03-14",
            version=1,
        ),
    )


def tianjin_credit_code() -> str:
    # 120116 = Tianjin Binhai New Area; the rest as in holder_credit_code.
    body = "91120116" + "58330914"
    body += org_code_check(body[8:])
    return body + uscc_check(body)


def sm2_example_submission() -> records_pb2.Submission:
    """The submission of section 7, as Tianjin would send it (another id, sender, holder)."""
    submission = example_submission()
    submission.header.message_id = "demo-0002"
    submission.header.sender = "CN-TJ"
    cert = submission.certificate_status
    cert.certificate_number = "2024010902000456"
    cert.issuer = "CN-TJ"
    cert.holder.name = "天津滨海明德电子科技有限公司"
    cert.holder.credit_code = tianjin_credit_code()
    return submission


def build_sm2_example() -> dict[str, bytes]:
    """Every byte string of the SM2 worked example (signature made with the published k)."""
    d = int.from_bytes(GMT_SECRET, "big")
    point = sm2_reference.public_point(d)
    payload = sm2_example_submission().SerializeToString()
    signed = pae(SUBMISSION_PAYLOAD_TYPE, payload)
    r, s = sm2_reference.sign(d, signed, GMT_K)
    sig = sm2.encode_signature(r, s)
    envelope = envelope_pb2.Envelope(
        payload_type=SUBMISSION_PAYLOAD_TYPE,
        payload=payload,
        signatures=[
            envelope_pb2.Signature(
                keyid=SM2_EXAMPLE_KEYID, sig=sig, suite=envelope_pb2.SIGNATURE_SUITE_SM2_SM3
            )
        ],
    )
    envelope_bytes = envelope.SerializeToString()
    return {
        "sm2-public-key": point,
        "sm2-z": sm2.z_value(point),
        "sm2-payload": payload,
        "sm2-pae": signed,
        "sm2-e": sm2.message_digest(point, signed),
        "sm2-r": r.to_bytes(32, "big"),
        "sm2-s": s.to_bytes(32, "big"),
        "sm2-signature": sig,
        "sm2-envelope": envelope_bytes,
        "sm2-envelope-sha256": sha256(envelope_bytes),
    }


def build_example() -> dict[str, bytes]:
    """Every byte string of the worked example."""
    signer = PrivateKey.from_raw_ed25519(RFC8032_SECRET, EXAMPLE_KEYID)
    payload = example_submission().SerializeToString()
    envelope = sign_envelope(payload_type=SUBMISSION_PAYLOAD_TYPE, payload=payload, signer=signer)
    envelope_bytes = envelope.SerializeToString()
    return {
        "public-key": signer.public_key().raw(),
        "payload": payload,
        "pae": pae(SUBMISSION_PAYLOAD_TYPE, payload),
        "signature": envelope.signatures[0].sig,
        "envelope": envelope_bytes,
        "envelope-sha256": sha256(envelope_bytes),
    }


READ_METHOD = "/mrx.v1.ExchangeService/GetCertificate"
READ_SIGNED_AT = "2026-11-23T08:00:00Z"
READ_NONCE = "3f1c0a9e5b7d42c8a6e1f0b2d4c6e8a0"


def example_read_request() -> bytes:
    """GetCertificateRequest{scheme: CCC, certificate_number: "2026011001080001"} as sent."""
    request = exchange_pb2.GetCertificateRequest(
        scheme=records_pb2.CERTIFICATE_SCHEME_CCC, certificate_number="2026011001080001"
    )
    return request.SerializeToString()


def build_read_example() -> dict[str, bytes]:
    """Every byte string of the signed-read example (section 12)."""
    signer = PrivateKey.from_raw_ed25519(RFC8032_SECRET, EXAMPLE_KEYID)
    body = example_read_request()
    signed = read_signing_input(READ_METHOD, READ_SIGNED_AT, READ_NONCE, body)
    metadata = dict(
        sign_read(
            signer=signer,
            principal="CN-JS",
            method=READ_METHOD,
            request=body,
            now=datetime.fromisoformat(READ_SIGNED_AT.replace("Z", "+00:00")),
            nonce=READ_NONCE,
        )
    )
    signature = metadata[MD_SIGNATURE]
    assert isinstance(signature, bytes)
    return {
        "read-request": body,
        "read-request-sha256": sha256(body),
        "read-pae": signed,
        "read-signature": signature,
    }


def _hex_lines(data: bytes, width: int = 32) -> str:
    return "\n".join(data[i : i + width].hex() for i in range(0, len(data), width))


def render_blocks() -> dict[str, str]:
    """The contents of each ``<!-- example:NAME -->`` block, by NAME."""
    figures = build_example()
    payload = figures["payload"]
    blocks = {name: _hex_lines(value) for name, value in figures.items()}
    blocks["payload-text"] = text_format.MessageToString(example_submission(), as_utf8=True).rstrip()
    # Quoted: the trailing space matters and editors strip it from bare lines.
    blocks["pae-head"] = '"' + figures["pae"][: -len(payload)].decode("ascii") + '"'
    blocks["pae-hello"] = _hex_lines(pae("http://example.com/HelloWorld", b"hello world"))
    sm2_figures = build_sm2_example()
    blocks.update({name: _hex_lines(value) for name, value in sm2_figures.items()})
    blocks["sm2-public-key-pem"] = PublicKey.from_sm2_point(sm2_figures["sm2-public-key"]).pem().rstrip()
    blocks["sm2-payload-text"] = text_format.MessageToString(sm2_example_submission(), as_utf8=True).rstrip()
    read = build_read_example()
    blocks.update({name: _hex_lines(value) for name, value in read.items()})
    body = f"{READ_METHOD}\n{READ_SIGNED_AT}\n{READ_NONCE}\n"
    blocks["read-body-head"] = json.dumps(body)
    return blocks


BLOCK = re.compile(r"(<!-- example:(?P<name>[a-z0-9-]+) -->\n```[a-z]*\n)(?P<body>.*?)(\n```)", re.DOTALL)


def doc_blocks(text: str) -> dict[str, str]:
    """The generated blocks as they stand in a copy of docs/signing.md."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def update_doc(text: str) -> str:
    blocks = render_blocks()
    missing = set(blocks) - set(doc_blocks(text))
    if missing:
        raise ValueError(f"docs/signing.md lacks example blocks: {', '.join(sorted(missing))}")
    return BLOCK.sub(lambda m: m[1] + blocks.get(m["name"], m["body"]) + m[4], text)


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        DOC.write_text(update_doc(DOC.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    if argv == ["--check"]:
        current = DOC.read_text(encoding="utf-8")
        if update_doc(current) != current:
            print(
                "docs/signing.md is stale: run python docs/make_signing_example.py --write", file=sys.stderr
            )
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for name, body in render_blocks().items():
        print(f"<!-- example:{name} -->\n```text\n{body}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
