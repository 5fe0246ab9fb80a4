"""Signature suites, the DSSE signing input (PAE) and key handling.

This is the only module that touches ``cryptography`` for signatures (SM2 goes through
gateway.crypto.sm2, the only module that touches tongsuopy). Their exceptions stop
here: a bad signature is ``False``, a key of the wrong kind is ``ValueError``. Nothing
above this module has to know which library does the arithmetic.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.crypto.sm2 import Sm2PrivateKey, Sm2PublicKey

log = logging.getLogger(__name__)

_PublicKeyImpl: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | Sm2PublicKey
_PrivateKeyImpl: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | Sm2PrivateKey


class Suite(enum.Enum):
    """A signature suite. The value is the spelling used in keys/federation.toml."""

    ED25519 = "ed25519"
    ECDSA_P256_SHA256 = "ecdsa-p256-sha256"
    # SM2 (GB/T 32918.2) with SM3, signer identity 1234567812345678: gateway/crypto/sm2.py.
    SM2_SM3 = "sm2-sm3"

    @property
    def proto(self) -> int:
        """The ``mrx.v1.SignatureSuite`` number of this suite."""
        return _SUITE_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> Suite:
        """The suite for a ``mrx.v1.SignatureSuite`` number; ValueError for 0 or unknown."""
        try:
            return _PROTO_TO_SUITE[value]
        except KeyError:
            raise ValueError(f"unsupported signature suite {value}") from None


# Spelled out rather than imported from gateway.pb so that crypto does not depend on the
# generated code; test_crypto checks these against envelope_pb2.
_SUITE_TO_PROTO: dict[Suite, int] = {Suite.ED25519: 1, Suite.ECDSA_P256_SHA256: 2, Suite.SM2_SM3: 3}
_PROTO_TO_SUITE: dict[int, Suite] = {v: k for k, v in _SUITE_TO_PROTO.items()}


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the exact bytes that are signed.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths in ASCII decimal
    bytes. Binding the type into the signed bytes stops a signature over one kind of
    payload being replayed as another kind.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def _suite_of_public(key: object) -> Suite:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return Suite.ED25519
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return Suite.ECDSA_P256_SHA256
    if isinstance(key, Sm2PublicKey):
        return Suite.SM2_SM3
    raise ValueError(
        f"unsupported public key type {type(key).__name__}: expected Ed25519, ECDSA P-256 or SM2"
    )


def _suite_of_private(key: object) -> Suite:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Suite.ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return Suite.ECDSA_P256_SHA256
    if isinstance(key, Sm2PrivateKey):
        return Suite.SM2_SM3
    raise ValueError(
        f"unsupported private key type {type(key).__name__}: expected Ed25519, ECDSA P-256 or SM2"
    )


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else pem


class PublicKey:
    """A verification key bound to its suite."""

    __slots__ = ("_key", "suite")

    def __init__(self, key: _PublicKeyImpl, *, suite: Suite | None = None):
        actual = _suite_of_public(key)
        if suite is not None and suite is not actual:
            raise ValueError(f"key is {actual.value}, not {suite.value}")
        self._key = key
        self.suite = actual

    @classmethod
    def from_pem(cls, pem: bytes | str, suite: Suite) -> PublicKey:
        """Load a SubjectPublicKeyInfo PEM; ValueError if it is unreadable or not ``suite``."""
        data = _as_bytes(pem)
        key: object
        try:
            key = serialization.load_pem_public_key(data)
        except UnsupportedAlgorithm as exc:
            # cryptography knows no SM2 curve: try the SM2 loader before giving up.
            try:
                key = Sm2PublicKey.from_pem(data)
            except ValueError:
                raise ValueError(f"not a readable public key PEM: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a readable public key PEM: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | Sm2PublicKey):
            raise ValueError(f"unsupported public key type {type(key).__name__}")
        return cls(key, suite=suite)

    @classmethod
    def from_raw_ed25519(cls, raw: bytes) -> PublicKey:
        """An Ed25519 key from its 32 raw bytes (as RFC 8032 test vectors give it)."""
        try:
            return cls(ed25519.Ed25519PublicKey.from_public_bytes(raw))
        except ValueError as exc:
            raise ValueError(f"not an Ed25519 public key: {exc}") from None

    @classmethod
    def from_sm2_point(cls, point: bytes) -> PublicKey:
        """An SM2 key from its 65-byte uncompressed point (as GM/T test vectors give it)."""
        return cls(Sm2PublicKey.from_point(point))

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True only for a valid signature over ``data``; never raises on bad input.

        No lock here: cryptography and tongsuopy release the GIL during verification,
        so threads verify in parallel. SM2 accepts only canonical DER (gateway.crypto.sm2).
        """
        if isinstance(self._key, Sm2PublicKey):
            return self._key.verify(data, signature)
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, data)
            else:
                self._key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, TypeError):
            # Garbage (wrong length, bad DER) is as untrustworthy as a wrong signature.
            return False
        return True

    def der(self) -> bytes:
        if isinstance(self._key, Sm2PublicKey):
            return self._key.der()
        return self._key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def raw(self) -> bytes:
        """Ed25519: the 32-byte key of RFC 8032. ECDSA, SM2: the uncompressed point (65 bytes)."""
        if isinstance(self._key, Sm2PublicKey):
            return self._key.point()
        if isinstance(self._key, ed25519.Ed25519PublicKey):
            return self._key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return self._key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def pem(self) -> str:
        if isinstance(self._key, Sm2PublicKey):
            return self._key.pem()
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def fingerprint(self) -> str:
        """Hex SHA-256 of the DER SubjectPublicKeyInfo: stable across PEM line wrapping."""
        return hashlib.sha256(self.der()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.der() == other.der()

    def __hash__(self) -> int:
        return hash(self.der())

    def __repr__(self) -> str:
        return f"PublicKey({self.suite.value}, sha256:{self.fingerprint()[:16]})"


class PrivateKey:
    """A signing key with the key id under which the federation knows its public half."""

    __slots__ = ("_key", "keyid", "suite")

    def __init__(self, key: _PrivateKeyImpl, *, keyid: str):
        self._key = key
        self.keyid = keyid
        self.suite = _suite_of_private(key)

    @classmethod
    def generate(cls, suite: Suite, keyid: str) -> PrivateKey:
        key: _PrivateKeyImpl
        if suite is Suite.ED25519:
            key = ed25519.Ed25519PrivateKey.generate()
        elif suite is Suite.SM2_SM3:
            key = Sm2PrivateKey.generate()
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        return cls(key, keyid=keyid)

    @classmethod
    def from_pem(cls, pem: bytes | str, keyid: str) -> PrivateKey:
        """Load an unencrypted PKCS#8 PEM; the suite follows from the key type."""
        data = _as_bytes(pem)
        key: object
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except UnsupportedAlgorithm as exc:
            # cryptography knows no SM2 curve: try the SM2 loader before giving up.
            try:
                key = Sm2PrivateKey.from_pem(data)
            except ValueError:
                raise ValueError(f"not a readable unencrypted private key PEM: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a readable unencrypted private key PEM: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | Sm2PrivateKey):
            raise ValueError(f"unsupported private key type {type(key).__name__}")
        return cls(key, keyid=keyid)

    @classmethod
    def from_raw_ed25519(cls, seed: bytes, keyid: str) -> PrivateKey:
        """An Ed25519 key from its 32-byte secret (as RFC 8032 test vectors give it)."""
        try:
            return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed), keyid=keyid)
        except ValueError as exc:
            raise ValueError(f"not an Ed25519 secret key: {exc}") from None

    @classmethod
    def from_raw_sm2(cls, d: bytes, keyid: str) -> PrivateKey:
        """An SM2 key from its 32-byte secret scalar (as GM/T test vectors give it)."""
        return cls(Sm2PrivateKey.from_scalar(d), keyid=keyid)

    def sign(self, data: bytes) -> bytes:
        """Ed25519: the 64-byte signature. ECDSA P-256: a DER signature over SHA-256(data).
        SM2: a DER signature over SM3(Z || data), Z with the fixed signer identity."""
        if isinstance(self._key, Sm2PrivateKey):
            return self._key.sign(data)
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def public_key(self) -> PublicKey:
        return PublicKey(self._key.public_key())

    def pem(self) -> bytes:
        """Unencrypted PKCS#8. Protection is the file mode (see ``save``), not a passphrase,
        because the gateway and adapters start unattended."""
        if isinstance(self._key, Sm2PrivateKey):
            return self._key.pem()
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, path: Path) -> None:
        """Write the key to a new file readable by its owner only.

        The file is written under a temporary name created 0600 (never briefly
        world-readable, whatever the umask) and hard-linked into place, so ``path``
        either does not exist or holds the whole key, and an existing file is never
        replaced: FileExistsError instead.
        """
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"refusing to overwrite existing key file {path}")
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.pem())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"refusing to overwrite existing key file {path}") from None
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, keyid: str) -> PrivateKey:
        """Read a key written by ``save``; warns if group or others can read the file."""
        path = Path(path)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "private key file %s has mode %o: group/others can read it; run chmod 600",
                path,
                stat.S_IMODE(mode),
            )
        return cls.from_pem(path.read_bytes(), keyid)

    def __repr__(self) -> str:
        # Never show key material, even in a traceback.
        return f"PrivateKey({self.keyid!r}, {self.suite.value})"


Signer = PrivateKey
