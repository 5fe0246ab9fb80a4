#!/usr/bin/env python
"""What the sm2-sm3 suite costs next to Ed25519 and ECDSA P-256.

    python bench/sm2_bench.py                  # primitives and pipeline verification, ~1 min
    python bench/sm2_bench.py --e2e            # + unary Submit through `mrx serve` on SQLite, ~2 min
    python bench/sm2_bench.py --candidates     # + other SM2 libraries, if installed in this venv
    python bench/sm2_bench.py --json out.json

1. Sign and verify rates of each suite through gateway.crypto (the code the gateway runs),
   over the PAE of a real demo submission (~330 bytes): one thread, and verify in two
   threads (the libraries release the GIL, or not, and the gateway verifies in a pool).
2. Verifier.verify per envelope per suite: everything the gateway does to an envelope
   before the writer (parse, key lookup, suite check, signature, header, record
   validation), in one thread, on a demo federation where CN-JS signs with Ed25519,
   CN-GD with ECDSA P-256 and CN-TJ with SM2.
3. ``--e2e``: the gateway in its own process (``python -m gateway.cli serve``, SQLite in
   a temp dir, 16 workers), unary Submit with 64 calls in flight, pre-signed and
   pre-serialized envelopes of one issuer; three setups: Ed25519 issuer and gateway key,
   SM2 issuer (CN-TJ) with an Ed25519 gateway key, SM2 issuer with an SM2 gateway key
   (every receipt SM2-signed). Every answer must be an accepted receipt. This is not the
   project's submission benchmark (bench/submit_bench.py): one issuer, one run per
   setup, no curve; it shows the difference SM2 makes, not the gateway's ceiling.
4. ``--candidates``: the same sign/verify loop over the other SM2 libraries considered
   (gmssl-pyx, gmssl-fast, gmssl), each checked first against the GM/T 0003.5 example, for
   whoever re-examines the choice in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from gateway.client import make_submission  # noqa: E402
from gateway.crypto.suites import PrivateKey, Suite, pae  # noqa: E402
from gateway.demo_fixtures import demo_certificates  # noqa: E402
from gateway.pb import envelope_pb2, exchange_pb2  # noqa: E402
from gateway.registry.federation import load_federation  # noqa: E402
from gateway.registry.keygen import (  # noqa: E402
    DEMO_ECDSA_ENTRY,
    generate_participant_key,
    load_demo_signers,
    write_demo_federation,
)

SUBMIT = "/mrx.v1.ExchangeService/Submit"
SIGNER_OF = {Suite.ED25519: "CN-JS", Suite.ECDSA_P256_SHA256: DEMO_ECDSA_ENTRY, Suite.SM2_SM3: "CN-TJ"}


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn``, best of 3 rounds of about ``seconds / 3`` each."""
    fn()
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            for _ in range(20):
                fn()
            n += 20
        best = max(best, n / elapsed)
    return best


def threaded_rate(fn: Callable[[], object], threads: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            for _ in range(20):
                fn()
            counts[i] += 20

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return sum(counts) / (time.perf_counter() - start)


def demo(tmp: Path) -> tuple[Path, dict[str, PrivateKey]]:
    paths = write_demo_federation(template_dir=ROOT / "keys", dest=tmp / "fed", now=datetime.now(UTC))
    return tmp / "fed", load_demo_signers(paths)


def envelopes(
    code: str, signer: PrivateKey, count: int, start_serial: int = 1
) -> list[envelope_pb2.Envelope]:
    today = datetime.now(UTC).date()
    certs = demo_certificates(code, count=count, start_serial=start_serial, today=today)
    return [make_submission(cert, sender=code, signer=signer) for cert in certs]


# --- 1 and 2 ------------------------------------------------------------------------------------


def primitives(signers: dict[str, PrivateKey], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for suite, entry in SIGNER_OF.items():
        key = signers[entry]
        code = entry.split("#")[0]
        env = envelopes(code, key, 1)[0]
        data = pae(env.payload_type, env.payload)
        sig = key.sign(data)
        public = key.public_key()
        assert public.verify(data, sig)
        rows.append(
            {
                "suite": suite.value,
                "pae_bytes": len(data),
                "sig_bytes": len(sig),
                "sign_per_s": rate(lambda key=key, data=data: key.sign(data), seconds),
                "verify_per_s": rate(lambda p=public, d=data, s=sig: p.verify(d, s), seconds),
                "verify_2threads_per_s": threaded_rate(
                    lambda p=public, d=data, s=sig: p.verify(d, s), 2, seconds
                ),
            }
        )
    return rows


def pipeline_costs(fed_dir: Path, signers: dict[str, PrivateKey], count: int) -> list[dict[str, Any]]:
    from gateway.ledger.verify import Verifier

    federation = load_federation(fed_dir)
    # verify() never touches the writer: it returns the staged value the writer would get.
    pipeline = Verifier(federation=federation)
    rows = []
    for suite, entry in SIGNER_OF.items():
        envs = envelopes(entry.split("#")[0], signers[entry], count)
        for env in envs[:20]:
            pipeline.verify(env)
        start = time.perf_counter()
        for env in envs:
            pipeline.verify(env)
        per = (time.perf_counter() - start) / len(envs)
        rows.append({"suite": suite.value, "envelopes": len(envs), "us_per_envelope": per * 1e6})
    return rows


# --- 3 ------------------------------------------------------------------------------------------


def unary(target: str, requests: list[bytes], inflight: int) -> tuple[float, list[Any]]:
    """Unary Submit with ``inflight`` calls outstanding: write_bench's client, one channel."""
    from write_bench import calls_in_flight  # bench/ is on sys.path when run as a script

    with grpc.insecure_channel(target) as channel:
        results, _, wall = calls_in_flight(channel, SUBMIT, requests, inflight)
    return wall, results


def serve(fed_dir: Path, database: Path, key: Path, keyid: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gateway.cli", "serve", "--address", "127.0.0.1:0",
            "--federation", str(fed_dir), "--database", str(database),
            "--gateway-key", str(key), "--gateway-keyid", keyid, "--workers", "16",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"serving on (\S+:\d+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"mrx serve did not start: {line}{proc.stdout.read()}")
    return proc, match.group(1)


def end_to_end(
    tmp: Path, fed_dir: Path, signers: dict[str, PrivateKey], records: int
) -> list[dict[str, Any]]:
    now = datetime.now(UTC).replace(microsecond=0)
    gw_sm2_path, _ = generate_participant_key(
        federation_dir=fed_dir, owner="MRX-GW", private_dir=fed_dir / "private", suite=Suite.SM2_SM3,
        keyid="MRX-GW/demo-sm2", not_before=now - timedelta(days=1), not_after=now + timedelta(days=30),
    )  # fmt: skip
    gw_ed = (fed_dir / "private" / "MRX-GW_demo.key.pem", "MRX-GW/demo")
    setups = [
        ("issuer ed25519 (CN-JS), gateway ed25519", "CN-JS", gw_ed),
        ("issuer sm2-sm3 (CN-TJ), gateway ed25519", "CN-TJ", gw_ed),
        ("issuer sm2-sm3 (CN-TJ), gateway sm2-sm3", "CN-TJ", (gw_sm2_path, "MRX-GW/demo-sm2")),
    ]
    rows = []
    for i, (label, code, (key_path, keyid)) in enumerate(setups):
        warm = envelopes(code, signers[code], 200, start_serial=1)
        timed = envelopes(code, signers[code], records, start_serial=201)
        proc, target = serve(fed_dir, tmp / f"e2e{i}.db", key_path, keyid)
        try:
            unary(target, [exchange_pb2.SubmitRequest(envelope=e).SerializeToString() for e in warm], 64)
            requests = [exchange_pb2.SubmitRequest(envelope=e).SerializeToString() for e in timed]
            cpu0 = os.times()
            wall, results = unary(target, requests, 64)
            cpu1 = os.times()
        finally:
            proc.terminate()
            proc.communicate(timeout=60)
        accepted = 0
        for raw in results:
            if isinstance(raw, bytes):
                response = exchange_pb2.SubmitResponse.FromString(raw)
                accepted += response.receipt.signatures[0].keyid == keyid
        rows.append(
            {
                "setup": label,
                "records": records,
                "accepted_receipts": accepted,
                "req_per_s": records / wall,
                "client_cores": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall,
            }
        )
        if accepted != records:
            raise SystemExit(f"{label}: only {accepted} of {records} accepted with a {keyid} receipt")
    return rows


# --- 4 ------------------------------------------------------------------------------------------

GMT_D = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8"
GMT_PUB = (
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
GMT_RS = (
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)


def candidates(data: bytes, seconds: float) -> list[dict[str, Any]]:
    from gateway.crypto.sm2 import encode_signature

    der = encode_signature(int(GMT_RS[:64], 16), int(GMT_RS[64:], 16))
    msg, ident = b"message digest", b"1234567812345678"
    rows: list[dict[str, Any]] = []

    def add(name: str, vector: bool, sign: Callable[[], bytes], verify: Callable[[bytes], object]) -> None:
        sig = sign()
        rows.append(
            {
                "library": name,
                "gmt_0003_vector": vector,
                "sign_per_s": rate(sign, seconds),
                "verify_per_s": rate(lambda: verify(sig), seconds),
                "verify_2threads_per_s": threaded_rate(lambda: verify(sig), 2, seconds),
            }
        )

    try:
        import gmssl_pyx as pyx

        pub, prv = bytes.fromhex(GMT_PUB), bytes.fromhex(GMT_D)
        add(
            "gmssl-pyx (GmSSL, C)",
            bool(pyx.sm2_verify(pub, msg, der, ident)),
            lambda: pyx.sm2_sign(prv, pub, data, ident),
            lambda s: pyx.sm2_verify(pub, data, s, ident),
        )
    except ImportError:
        pass
    try:
        import gmssl_fast

        k = gmssl_fast.SM2(private_key=GMT_D, public_key=GMT_PUB)
        add(
            "gmssl-fast (GmSSL via Rust)",
            bool(k.verify(msg, bytes.fromhex(GMT_RS))),
            lambda: k.sign(data),
            lambda s: k.verify(data, s),
        )
    except ImportError:
        pass
    try:
        from gmssl import sm2 as pure

        c = pure.CryptSM2(private_key=GMT_D.lower(), public_key=GMT_PUB.lower())
        add(
            "gmssl (pure Python)",
            bool(c.verify_with_sm3(GMT_RS.lower(), msg)),
            lambda: c.sign_with_sm3(data).encode(),
            lambda s: c.verify_with_sm3(s.decode(), data),
        )
    except ImportError:
        pass
    return rows


# --- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    import cryptography
    import tongsuopy

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": model,
        "cores": os.cpu_count(),
        "load_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "tongsuopy": tongsuopy.__version__,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="per rate measurement (default %(default)s)")
    p.add_argument("--envelopes", type=int, default=1000, help="per suite for Verifier.verify")
    p.add_argument("--e2e", action="store_true", help="also run unary Submit through mrx serve")
    p.add_argument("--records", type=int, default=3000, help="timed requests per --e2e setup")
    p.add_argument("--candidates", action="store_true", help="also time other SM2 libraries if installed")
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args()

    out: dict[str, Any] = {"machine": machine()}
    print(json.dumps(out["machine"]))
    with tempfile.TemporaryDirectory(prefix="mrx-sm2-bench-") as tmp_name:
        tmp = Path(tmp_name)
        fed_dir, signers = demo(tmp)
        out["primitives"] = primitives(signers, args.seconds)
        print(f"{'suite':<20}{'PAE B':>7}{'sig B':>7}{'sign/s':>10}{'verify/s':>10}{'verify/s 2 thr':>16}")
        for r in out["primitives"]:
            print(
                f"{r['suite']:<20}{r['pae_bytes']:>7}{r['sig_bytes']:>7}{r['sign_per_s']:>10,.0f}"
                f"{r['verify_per_s']:>10,.0f}{r['verify_2threads_per_s']:>16,.0f}"
            )
        out["pipeline"] = pipeline_costs(fed_dir, signers, args.envelopes)
        for r in out["pipeline"]:
            print(
                f"Verifier.verify {r['suite']:<20}{r['us_per_envelope']:>8.0f} us/envelope ({r['envelopes']})"
            )
        if args.e2e:
            out["e2e"] = end_to_end(tmp, fed_dir, signers, args.records)
            for r in out["e2e"]:
                print(
                    f"unary Submit, {r['setup']:<42}{r['req_per_s']:>7,.0f} req/s "
                    f"({r['accepted_receipts']}/{r['records']} receipts, "
                    f"client {r['client_cores']:.2f} cores)"
                )
        if args.candidates:
            env = envelopes("CN-TJ", signers["CN-TJ"], 1)[0]
            out["candidates"] = candidates(pae(env.payload_type, env.payload), args.seconds)
            for r in out["candidates"]:
                print(
                    f"{r['library']:<30} vector {r['gmt_0003_vector']!s:<6}{r['sign_per_s']:>10,.0f} sign/s"
                    f"{r['verify_per_s']:>10,.0f} verify/s{r['verify_2threads_per_s']:>10,.0f} verify/s 2 thr"
                )
    out["machine"]["load_1min_end"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
