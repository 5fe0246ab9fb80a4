"""SM2 signatures with SM3: the ``sm2-sm3`` suite (GB/T 32918.2, GB/T 32905, GM/T 0009).

The only module that imports tongsuopy (the Tongsuo Python SDK); why that library is
recorded in docs/ARCHITECTURE.md, "Commercial cryptography (SM2/SM3)". Everything
above this module sees ``Sm2PublicKey`` and ``Sm2PrivateKey`` and the plain functions
here, so the arithmetic can move to another library by changing this file alone.

What is signed: the PAE bytes M. The signer computes Z = SM3(ENTL || ID || a || b ||
xG || yG || xA || yA) with the distinguishing identifier ID fixed to the GM/T 0009
default ``1234567812345678`` (ENTL = its length in bits, 0x0080), then
e = SM3(Z || M), then the SM2 signature (r, s) of e, encoded as DER
``SEQUENCE { r INTEGER, s INTEGER }``. The identifier is fixed for every key because
nothing in the envelope could carry a per-key one without letting the sender steer
verification; GM/T 0009 (GB/T 35276) names this default for the case where the parties
have agreed on no other identity. Tongsuo, GmSSL, Bouncy Castle and the common Go and
JavaScript SM libraries use it by default; OpenSSL 3 must be given it explicitly
(``-pkeyopt distid:1234567812345678``), or it uses an empty identifier.

Signatures are parsed here, strictly, before the library sees them: only the
canonical (minimal) DER encoding of two integers in [1, n-1] with nothing after it is
accepted. A signature has exactly one valid encoding, so an envelope's digest (which
receipts and the audit log name) cannot be changed by re-encoding a signature.
"""

from __future__ import annotations

from typing import Any, cast

from cryptography.hazmat.primitives import hashes as _hashes
from tongsuopy.crypto import hashes as _ts_hashes
from tongsuopy.crypto import serialization as _ts_serialization
from tongsuopy.crypto.asymciphers import ec as _ts_ec
from tongsuopy.crypto.exceptions import InternalError as _TsInternalError
from tongsuopy.crypto.exceptions import InvalidSignature as _TsInvalidSignature
from tongsuopy.crypto.exceptions import UnsupportedAlgorithm as _TsUnsupported

# GM/T 0009 (GB/T 35276): the identifier used when the parties agreed on no other.
DEFAULT_ID = b"1234567812345678"

# The SM2 recommended curve (GB/T 32918.5-2017), y^2 = x^3 + ax + b over F_p.
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

# id-ecPublicKey with the named curve sm2 (1.2.156.10197.1.301), as OpenSSL writes it.
CURVE_OID = "1.2.156.10197.1.301"


class SignatureEncodingError(ValueError):
    """A signature that is not the canonical DER of two integers in [1, n-1]."""


def sm3(data: bytes) -> bytes:
    """SM3 (GB/T 32905) of ``data``; computed by ``cryptography``, not by tongsuopy."""
    digest = _hashes.Hash(_hashes.SM3())
    digest.update(data)
    return digest.finalize()


def z_value(public_point: bytes, ident: bytes = DEFAULT_ID) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA) for an uncompressed point."""
    if len(public_point) != 65 or public_point[0] != 4:
        raise ValueError("expected a 65-byte uncompressed point 04 || x || y")
    if len(ident) >= 8192:
        raise ValueError("identifier longer than 8191 bytes")
    parts = [len(ident) * 8, A, B, GX, GY]
    data = parts[0].to_bytes(2, "big") + ident
    data += b"".join(v.to_bytes(32, "big") for v in parts[1:])
    return sm3(data + public_point[1:])


def message_digest(public_point: bytes, message: bytes, ident: bytes = DEFAULT_ID) -> bytes:
    """e = SM3(Z || M): the value the SM2 signature equation works on."""
    return sm3(z_value(public_point, ident) + message)


# --- strict DER ---------------------------------------------------------------------------


def _der_length(data: bytes, at: int) -> tuple[int, int]:
    """(length, position after the length octets); canonical (shortest) form only."""
    if at >= len(data):
        raise SignatureEncodingError("truncated: length missing")
    first = data[at]
    if first < 0x80:
        return first, at + 1
    count = first & 0x7F
    if count == 0:
        raise SignatureEncodingError("indefinite length is not DER")
    if count > 2 or at + 1 + count > len(data):
        raise SignatureEncodingError("length field too long or truncated")
    length = int.from_bytes(data[at + 1 : at + 1 + count], "big")
    if length < 0x80 or (count == 2 and length < 0x100):
        raise SignatureEncodingError("length not in its shortest form (not DER)")
    return length, at + 1 + count


def _der_integer(data: bytes, at: int, name: str) -> tuple[int, int]:
    if at >= len(data) or data[at] != 0x02:
        raise SignatureEncodingError(f"{name}: expected an INTEGER (tag 0x02)")
    length, start = _der_length(data, at + 1)
    end = start + length
    if length == 0 or end > len(data):
        raise SignatureEncodingError(f"{name}: empty or truncated INTEGER")
    body = data[start:end]
    if body[0] & 0x80:
        raise SignatureEncodingError(f"{name}: negative INTEGER")
    if len(body) > 1 and body[0] == 0 and not body[1] & 0x80:
        raise SignatureEncodingError(f"{name}: INTEGER with a superfluous leading zero (not DER)")
    return int.from_bytes(body, "big"), end


def decode_signature(sig: bytes) -> tuple[int, int]:
    """(r, s) from DER ``SEQUENCE { r INTEGER, s INTEGER }``; SignatureEncodingError otherwise.

    Refuses every non-canonical form (long or indefinite lengths, padded or negative
    integers, trailing bytes) and r or s outside [1, n-1] (GB/T 32918.2 verification,
    steps B1 and B2).
    """
    if len(sig) < 8 or sig[0] != 0x30:
        raise SignatureEncodingError("not a DER SEQUENCE (a raw 64-byte r || s must be DER-encoded)")
    length, start = _der_length(sig, 1)
    if start + length != len(sig):
        raise SignatureEncodingError("SEQUENCE length does not match the signature's size (trailing bytes?)")
    r, at = _der_integer(sig, start, "r")
    s, at = _der_integer(sig, at, "s")
    if at != len(sig):
        raise SignatureEncodingError("bytes after s inside the SEQUENCE")
    for name, value in (("r", r), ("s", s)):
        if not 1 <= value < N:
            raise SignatureEncodingError(f"{name} out of range: must be in [1, n-1]")
    return r, s


def _der_int_bytes(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + bytes([len(body)]) + body


def encode_signature(r: int, s: int) -> bytes:
    """The DER encoding of (r, s); both must be in [1, n-1]."""
    if not (1 <= r < N and 1 <= s < N):
        raise ValueError("r and s must be in [1, n-1]")
    body = _der_int_bytes(r) + _der_int_bytes(s)
    return b"\x30" + bytes([len(body)]) + body


# --- keys ---------------------------------------------------------------------------------


def _is_sm2(key: Any) -> bool:
    return isinstance(key.curve, _ts_ec.SM2)


class Sm2PublicKey:
    """An SM2 verification key."""

    __slots__ = ("_key",)

    def __init__(self, key: Any):
        if not isinstance(key, _ts_ec.EllipticCurvePublicKey) or not _is_sm2(key):
            raise ValueError("not an SM2 public key")
        self._key = key

    @classmethod
    def from_pem(cls, pem: bytes) -> Sm2PublicKey:
        """A SubjectPublicKeyInfo PEM on the SM2 curve; ValueError otherwise."""
        try:
            key = _ts_serialization.load_pem_public_key(pem)
        except (ValueError, TypeError, _TsUnsupported) as exc:
            raise ValueError(f"not a readable public key PEM: {exc}") from None
        return cls(key)

    @classmethod
    def from_point(cls, point: bytes) -> Sm2PublicKey:
        """From the 65-byte uncompressed point 04 || x || y; ValueError if not on the curve."""
        if len(point) != 65 or point[0] != 4:
            raise ValueError("expected a 65-byte uncompressed point 04 || x || y")
        x, y = int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big")
        if not (x < P and y < P and (y * y - (x * x * x + A * x + B)) % P == 0):
            raise ValueError("point is not on the SM2 curve")
        return cls(_ts_ec.EllipticCurvePublicNumbers(x, y, _ts_ec.SM2()).public_key())

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True only for a canonical DER SM2 signature over ``data`` (ID fixed); never raises."""
        try:
            decode_signature(signature)
        except SignatureEncodingError:
            return False
        return self._verify_bytes(data, signature)

    def _verify_bytes(self, data: bytes, signature: bytes) -> bool:
        # tongsuopy raises InternalError, not InvalidSignature, for bytes that are not DER
        # (Tongsuo's verify returns -1): decode_signature keeps those away, and this keeps
        # any that slip through a refusal rather than an INTERNAL error.
        try:
            self._key.verify(signature, data, _ts_ec.ECDSA(_ts_hashes.SM3()))
        except (_TsInvalidSignature, _TsInternalError, ValueError, TypeError):
            return False
        return True

    def point(self) -> bytes:
        """The uncompressed point 04 || x || y (65 bytes)."""
        return cast(
            bytes,
            self._key.public_bytes(
                _ts_serialization.Encoding.X962, _ts_serialization.PublicFormat.UncompressedPoint
            ),
        )

    def der(self) -> bytes:
        return cast(
            bytes,
            self._key.public_bytes(
                _ts_serialization.Encoding.DER, _ts_serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def pem(self) -> str:
        pem = self._key.public_bytes(
            _ts_serialization.Encoding.PEM, _ts_serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cast(bytes, pem).decode("ascii")


class Sm2PrivateKey:
    """An SM2 signing key. Its scalar never leaves the library except as PKCS#8 PEM."""

    __slots__ = ("_key",)

    def __init__(self, key: Any):
        if not isinstance(key, _ts_ec.EllipticCurvePrivateKey) or not _is_sm2(key):
            raise ValueError("not an SM2 private key")
        self._key = key

    @classmethod
    def generate(cls) -> Sm2PrivateKey:
        """A fresh key from Tongsuo's CSPRNG (seeded from the operating system)."""
        return cls(_ts_ec.generate_private_key(_ts_ec.SM2()))

    @classmethod
    def from_pem(cls, pem: bytes) -> Sm2PrivateKey:
        """An unencrypted PKCS#8 (or SEC 1) PEM on the SM2 curve; ValueError otherwise."""
        try:
            key = _ts_serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, _TsUnsupported) as exc:
            raise ValueError(f"not a readable unencrypted private key PEM: {exc}") from None
        return cls(key)

    @classmethod
    def from_scalar(cls, d: bytes) -> Sm2PrivateKey:
        """From the 32-byte secret scalar d, 1 <= d <= n-2 (as published test vectors give it)."""
        value = int.from_bytes(d, "big")
        if len(d) != 32 or not 1 <= value <= N - 2:
            raise ValueError("an SM2 secret is 32 bytes, from 1 to n-2")
        return cls(_ts_ec.derive_private_key(value, _ts_ec.SM2()))

    def sign(self, data: bytes) -> bytes:
        """A DER SM2 signature over ``data`` (Z with the default ID, SM3, a fresh random k)."""
        return cast(bytes, self._key.sign(data, _ts_ec.ECDSA(_ts_hashes.SM3())))

    def public_key(self) -> Sm2PublicKey:
        return Sm2PublicKey(self._key.public_key())

    def pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM, the layout ``openssl genpkey -algorithm SM2`` writes."""
        return cast(
            bytes,
            self._key.private_bytes(
                _ts_serialization.Encoding.PEM,
                _ts_serialization.PrivateFormat.PKCS8,
                _ts_serialization.NoEncryption(),
            ),
        )
