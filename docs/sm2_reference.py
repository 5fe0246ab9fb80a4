"""A textbook SM2 signature (GB/T 32918.2) in plain Python, for documentation and tests only.

Slow, not constant-time, and it takes the per-signature secret k as an argument: never
use it to sign anything real. It exists so that the worked example in docs/signing.md
can carry a reproducible signature (made with the published k of the GM/T 0003.5
example) and so that the tests have an SM2 implementation independent of the one the
gateway uses (tongsuopy), e.g. to make signatures under another signer identity.
Curve constants and SM3 come from gateway.crypto.sm2 (SM3 there is ``cryptography``'s).
"""

from __future__ import annotations

from gateway.crypto.sm2 import DEFAULT_ID, GX, GY, A, N, P, message_digest

Point = tuple[int, int] | None  # None is the point at infinity


def _add(p1: Point, p2: Point) -> Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    num, den = (3 * x1 * x1 + A, 2 * y1) if p1 == p2 else (y2 - y1, x2 - x1)
    slope = num * pow(den, -1, P) % P
    x3 = (slope * slope - x1 - x2) % P
    return x3, (slope * (x1 - x3) - y1) % P


def _mul(k: int, point: Point) -> Point:
    result: Point = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def public_point(d: int) -> bytes:
    """04 || x || y of d*G."""
    q = _mul(d, (GX, GY))
    assert q is not None
    return b"\x04" + q[0].to_bytes(32, "big") + q[1].to_bytes(32, "big")


def sign(d: int, message: bytes, k: int, ident: bytes = DEFAULT_ID) -> tuple[int, int]:
    """(r, s) per GB/T 32918.2 steps A1-A7, with the caller's k."""
    e = int.from_bytes(message_digest(public_point(d), message, ident), "big")
    kg = _mul(k, (GX, GY))
    assert kg is not None
    r = (e + kg[0]) % N
    if r == 0 or r + k == N:
        raise ValueError("choose another k")
    s = pow(1 + d, -1, N) * (k - r * d) % N
    if s == 0:
        raise ValueError("choose another k")
    return r, s


def verify(point: bytes, message: bytes, r: int, s: int, ident: bytes = DEFAULT_ID) -> bool:
    """GB/T 32918.2 steps B1-B7."""
    if not (1 <= r < N and 1 <= s < N):
        return False
    e = int.from_bytes(message_digest(point, message, ident), "big")
    t = (r + s) % N
    if t == 0:
        return False
    q = (int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))
    x1y1 = _add(_mul(s, (GX, GY)), _mul(t, q))
    return x1y1 is not None and (e + x1y1[0]) % N == r
