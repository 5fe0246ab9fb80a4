"""`mrx demo --adapters`, run as a newcomer runs it: both directions, verified, bad rows named."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_adapters_shows_both_directions_verified_and_the_unmappable_rows() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--adapters"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for expected in (
        # outbound: the three local systems, each through its own adapter
        "CN-JS  Jiangsu CCC list, CSV export in GBK   read 303, mapped 295, unmappable 8, sent 295, "
        "accepted 294, refused 1",
        "CN-HK  HKAS register, English CSV            read 241, mapped 233, unmappable 8, sent 233, "
        "accepted 233, refused 0",
        "CN-SH  Shanghai certificate table (SQL)      read 254, mapped 251, unmappable 3, sent 251, "
        "accepted 251, refused 0",
        # unmappable rows: which row, which column, why
        "CN-JS line 296             统一社会信用代码: check character (position 18) does not match",
        "CN-HK line 236             Status: unknown word 'Provisional'",
        "CN-SH row change_seq=261   status_code: unknown word '7'",
        "CN-JS line 303             refused by the gateway: ILLEGAL_TRANSITION",
        # inbound: the other regions' changes in Shanghai's table, never its own
        "inbound: received 778, applied 527, unchanged 0, own 251, other kinds 0",
        "rows in sh_inbound_cert: CN-HK 230, CN-JS 290",
        # end to end
        "a Jiangsu change: CCC 2024011001080006 (南京长江电线电缆有限公司), SUSPENDED v6",
        "Shanghai row = the record CN-JS signed: yes; issuer signature (CN-JS/demo, ed25519): verified",
        "a Hong Kong record: HOKLAS 058 (Kowloon Testing Laboratory Limited), VALID v1",
        "Shanghai row = the record CN-HK signed: yes; issuer signature (CN-HK/demo, ed25519): verified",
        "inclusion proof (asked by YRD-SEC) verified",
        "inclusion proof (asked by GBA-SEC) verified",
        "Demo finished: both directions verified end to end.",
    ):
        assert expected in out, f"{expected!r} missing from the demo output:\n{out}"
    assert "DOES NOT VERIFY" not in out and "NO;" not in out
    assert "WARNING" not in result.stderr  # every row is reported once, in the output
    workdir = re.search(r"local data\s+(\S+) ", out)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists(), "the demo must not leave keys or local data behind"
