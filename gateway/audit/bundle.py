"""Offline audit bundles: export what a principal may see, verify it with no server.

A bundle is one JSON file (format in docs/audit.md): the latest signed checkpoint, the
gateway's public keys, the public keys of everyone who signed an included envelope, and
for each exchange its leaf bytes, its submission envelope and its inclusion proof against
that checkpoint. ``verify_bundle`` needs nothing else: no gateway, no database, no network.

Verification reports every problem it finds, each naming the part of the bundle (and the
entry and log index) it is about, rather than stopping at the first: an auditor who
receives a damaged bundle needs to know how much of it is still good. It never raises on
malformed input; whatever the bytes, the answer is a ``VerifyResult``.

Signatures and proofs protect what matters (the checkpoint, the leaves, the envelopes).
The per-part SHA-256 digests and the byte-exact layout check exist so that no byte of the
file can change unnoticed, including the export metadata and whitespace that no signature
covers; they detect damage, not forgery, since whoever edits a part can recompute them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from gateway.audit import merkle
from gateway.audit.checkpoints import CHECKPOINT_PAYLOAD_TYPE
from gateway.client import AuditClient
from gateway.crypto.dsse import SUBMISSION_PAYLOAD_TYPE, SignatureError, sha256, verify_signature
from gateway.crypto.suites import PublicKey, Suite
from gateway.pb import audit_pb2, envelope_pb2, records_pb2, registry_pb2
from gateway.registry.federation import Federation, KeyRecord

FORMAT = "mrx-audit-bundle"
VERSION = 1
# The parts covered by the digests, in file order.
PARTS = ("export", "checkpoint", "gateway_keys", "signer_keys", "entries")
TOP_LEVEL = ("format", "version", *PARTS, "sha256")

_M = TypeVar("_M", bound=Message)
_HEX32 = re.compile(r"[0-9a-f]{64}")
# Every field in the file is ASCII (base64, hex, PEM, codes, RFC 3339 times); a byte
# outside it is damage, and rejecting it early keeps positions in messages exact.
_KEY_FIELDS = (
    "keyid",
    "owner",
    "suite",
    "public_key_pem",
    "not_before",
    "not_after",
    "revoked",
    "revoked_at",
)
_ENTRY_FIELDS = ("log_index", "leaf", "envelope", "proof")
_CHECKPOINT_FIELDS = ("envelope", "origin", "tree_size", "root_hash", "timestamp")
_EXPORT_FIELDS = ("exported_by", "exported_at", "gateway", "filters", "tool")
_FILTER_FIELDS = ("alliance", "participant", "received_from", "received_to")


# --- the parts of a bundle --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BundleKey:
    """A public key as a bundle lists it (the registry's view at export time)."""

    keyid: str
    owner: str
    public_key: PublicKey
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked: bool = False
    revoked_at: datetime | None = None

    @classmethod
    def from_proto(cls, msg: registry_pb2.PublicKey) -> BundleKey:
        """From RegistryService.ListKeys; ValueError if the PEM or suite is unusable."""
        return cls(
            keyid=msg.keyid,
            owner=msg.owner,
            public_key=PublicKey.from_pem(msg.public_key_pem, Suite.from_proto(msg.suite)),
            not_before=_ts(msg, "not_before"),
            not_after=_ts(msg, "not_after"),
            revoked=msg.revoked,
            revoked_at=_ts(msg, "revoked_at"),
        )

    @classmethod
    def from_record(cls, record: KeyRecord) -> BundleKey:
        return cls(
            keyid=record.keyid,
            owner=record.owner,
            public_key=record.public_key,
            not_before=record.not_before,
            not_after=record.not_after,
            revoked=record.revoked,
            revoked_at=record.revoked_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "keyid": self.keyid,
            "owner": self.owner,
            "suite": self.public_key.suite.value,
            "public_key_pem": self.public_key.pem(),
            "not_before": _time_text(self.not_before),
            "not_after": _time_text(self.not_after),
            "revoked": self.revoked,
            "revoked_at": _time_text(self.revoked_at),
        }


@dataclass(frozen=True)
class BundleEntry:
    log_index: int
    leaf: bytes  # ExchangeLeaf bytes exactly as hashed
    envelope: bytes  # the serialized submission Envelope whose SHA-256 the leaf records
    proof: tuple[bytes, ...]  # audit path against the checkpoint's tree size, leaf upward

    def to_json(self) -> dict[str, Any]:
        return {
            "log_index": self.log_index,
            "leaf": _b64(self.leaf),
            "envelope": _b64(self.envelope),
            "proof": [h.hex() for h in self.proof],
        }


@dataclass(frozen=True, kw_only=True)
class ExportInfo:
    exported_by: str
    exported_at: datetime
    gateway: str
    alliance: str = ""
    participant: str = ""
    received_from: datetime | None = None
    received_to: datetime | None = None
    tool: str = "mrx audit export"

    def to_json(self) -> dict[str, Any]:
        return {
            "exported_by": self.exported_by,
            "exported_at": _time_text(self.exported_at),
            "gateway": self.gateway,
            "filters": {
                "alliance": self.alliance,
                "participant": self.participant,
                "received_from": _time_text(self.received_from),
                "received_to": _time_text(self.received_to),
            },
            "tool": self.tool,
        }


def encode_bundle(
    *,
    export: ExportInfo,
    checkpoint: envelope_pb2.Envelope,
    gateway_keys: Sequence[BundleKey],
    signer_keys: Sequence[BundleKey],
    entries: Sequence[BundleEntry],
) -> bytes:
    """The bundle file's bytes."""
    # Written even if broken: a gateway serving a bad checkpoint is what the bundle must show.
    payload = _decode(audit_pb2.Checkpoint, checkpoint.payload) or audit_pb2.Checkpoint()
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "export": export.to_json(),
        "checkpoint": {
            "envelope": _b64(checkpoint.SerializeToString(deterministic=True)),
            # Copies for readers (jq .checkpoint); verify checks them against the signed payload.
            "origin": payload.origin,
            "tree_size": payload.tree_size,
            "root_hash": payload.root_hash.hex(),
            "timestamp": _time_text(_when(payload, "timestamp")),
        },
        "gateway_keys": [k.to_json() for k in gateway_keys],
        "signer_keys": [k.to_json() for k in signer_keys],
        "entries": [e.to_json() for e in sorted(entries, key=lambda e: e.log_index)],
    }
    doc["sha256"] = {part: part_digest(doc[part]) for part in PARTS}
    return layout(doc)


def layout(doc: Any) -> bytes:
    """The one byte layout mrx writes; verify insists on it (see the module docstring)."""
    return (json.dumps(doc, indent=1, ensure_ascii=True) + "\n").encode("ascii")


def part_digest(value: Any) -> str:
    """SHA-256 of a part's compact JSON, which ``jq -cj .PART bundle.json`` reproduces."""
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(compact.encode("ascii")).hexdigest()


# --- verification result ------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One failed check. ``part`` is a path into the bundle, e.g. ``entries[3].proof``."""

    part: str
    message: str
    entry: int | None = None
    log_index: int | None = None

    def __str__(self) -> str:
        where = self.part
        if self.log_index is not None:
            where += f" (log index {self.log_index})"
        return f"{where}: {self.message}"


@dataclass
class VerifyResult:
    problems: list[Problem] = field(default_factory=list)
    # Things an auditor should look at that do not make the bundle fail.
    warnings: list[str] = field(default_factory=list)
    entries: int = 0
    entries_verified: int = 0
    tree_size: int | None = None
    root_hash: bytes | None = None
    origin: str = ""
    checkpoint_time: datetime | None = None
    checkpoint_verified: bool = False
    # "pinned" when the caller supplied the gateway key, "bundle" when it came from the file.
    gateway_key_source: str = "bundle"
    outcomes: Counter[str] = field(default_factory=Counter)
    refusal_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(
        self, part: str, message: str, *, entry: int | None = None, log_index: int | None = None
    ) -> None:
        self.problems.append(Problem(part, message, entry, log_index))

    def summary_lines(self) -> list[str]:
        root = self.root_hash.hex() if self.root_hash is not None else "(unknown)"
        size = str(self.tree_size) if self.tree_size is not None else "(unknown)"
        when = _time_text(self.checkpoint_time) if self.checkpoint_time is not None else "(unknown)"
        signed = "verified" if self.checkpoint_verified else "NOT VERIFIED"
        source = (
            "with the pinned gateway key"
            if self.gateway_key_source == "pinned"
            else "with the bundle's own gateway key, not pinned"
        )
        outcomes = ", ".join(f"{name.lower()} {n}" for name, n in sorted(self.outcomes.items())) or "none"
        lines = [
            f"checkpoint: tree size {size}, root {root}, time {when}, origin {self.origin!r}",
            f"checkpoint signature: {signed} ({source})",
            f"entries: {self.entries} ({outcomes}); {self.entries_verified} verified, "
            f"{self.entries - self.entries_verified} with problems",
        ]
        if self.refusal_reasons:
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.refusal_reasons.items()))
            lines.append(f"refusal reasons: {reasons}")
        lines.append(
            "result: PASS, every check passed"
            if self.ok
            else f"result: FAIL, {len(self.problems)} problem(s)"
        )
        return lines


# --- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    """A key the auditor trusts independently of the bundle. ``keyid`` None: any key id."""

    keyid: str | None
    public_key: PublicKey


def trusted_from_federation(federation: Federation) -> tuple[list[TrustedKey], dict[str, PublicKey]]:
    """(gateway keys, every key by key id) from a federation directory the auditor holds.

    Revoked gateway keys are left out: a checkpoint's own timestamp cannot show it was
    signed before a revocation, since whoever holds a compromised key can backdate it.
    Revoked signer keys stay, because the gateway verified those signatures when they
    were made and logged them under a tree that a trusted key signs.
    """
    gateway = [
        TrustedKey(r.keyid, r.public_key)
        for r in federation.keys.values()
        if r.owner == federation.gateway_code and not r.revoked
    ]
    return gateway, {r.keyid: r.public_key for r in federation.keys.values()}


def load_public_key_pem(pem: bytes) -> PublicKey:
    """A public key PEM of either suite; ValueError if it is neither."""
    errors = []
    for suite in Suite:
        try:
            return PublicKey.from_pem(pem, suite)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError(errors[-1])


def verify_bundle(
    data: bytes,
    *,
    gateway_keys: Sequence[TrustedKey] | None = None,
    signer_keys: Mapping[str, PublicKey] | None = None,
) -> VerifyResult:
    """Check a bundle file's bytes; every failure is a Problem in the result.

    ``gateway_keys`` pins the keys the checkpoint must be signed with (from the auditor's
    copy of the federation, or a PEM); without it the bundle's own gateway keys are used
    and a warning says so. ``signer_keys`` likewise pins the envelope signers' keys.
    """
    result = VerifyResult()
    doc = _parse(data, result)
    if doc is None:
        return result
    _Verifier(doc, result, gateway_keys, signer_keys).run()
    return result


def _parse(data: bytes, result: VerifyResult) -> dict[str, Any] | None:
    if not data.strip():
        result.problem("bundle", "the file is empty")
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        where = _json_path_at(data[: exc.start].decode("ascii"), exc.start)
        result.problem(
            where,
            f"byte {exc.start} ({_line_col(data, exc.start)}) is 0x{data[exc.start]:02x}, not ASCII; "
            "mrx writes bundles in ASCII only, so the file was damaged or edited",
        )
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        result.problem(
            _json_path_at(text, exc.pos),
            f"not valid JSON at byte {exc.pos} (line {exc.lineno}, column {exc.colno}): {exc.msg}",
        )
        return None
    except RecursionError:
        result.problem("bundle", "not a bundle: JSON nested too deeply")
        return None
    if not isinstance(doc, dict):
        result.problem("bundle", f"not a bundle: the top level is a JSON {_kind(doc)}, not an object")
        return None
    if doc.get("format") != FORMAT:
        result.problem(
            "format", f"is {_show(doc.get('format'))}, expected {FORMAT!r}: not an mrx audit bundle"
        )
        return None
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        result.problem("version", f"is {_show(doc.get('version'))}; this verifier reads version {VERSION}")
        return None
    expected = layout(doc)
    if expected != data:
        at = next((i for i, (a, b) in enumerate(zip(data, expected, strict=False)) if a != b), None)
        if at is None:
            at = min(len(data), len(expected))
        result.problem(
            _json_path_at(text, at),
            f"the file differs from mrx's layout of its own content at byte {at} ({_line_col(data, at)}): "
            "whitespace, escaping or key order was changed after export",
        )
    return doc


class _Verifier:
    def __init__(
        self,
        doc: dict[str, Any],
        result: VerifyResult,
        gateway_keys: Sequence[TrustedKey] | None,
        signer_keys: Mapping[str, PublicKey] | None,
    ):
        self.doc = doc
        self.r = result
        self.pinned_gateway = gateway_keys
        self.pinned_signers = signer_keys
        self.bundle_gateway: dict[str, tuple[int, BundleKey]] = {}
        self.bundle_signers: dict[str, tuple[int, BundleKey]] = {}
        self.filters: dict[str, Any] = {}
        # (entry, log index, root its proof leads to) for proofs that miss the checkpoint's root.
        self.missed: list[tuple[int, int, bytes]] = []
        if gateway_keys is not None:
            result.gateway_key_source = "pinned"

    def run(self) -> None:
        self.check_top_level()
        self.check_digests()
        self.read_export()
        self.bundle_gateway = self.read_keys("gateway_keys")
        self.bundle_signers = self.read_keys("signer_keys")
        self.compare_with_pins()
        root = self.check_checkpoint()
        self.check_entries(root)

    def compare_with_pins(self) -> None:
        """Bundle keys that contradict the keys the auditor trusts are findings in themselves."""
        if self.pinned_gateway is None:
            shown = ", ".join(
                f"{keyid} sha256:{key.public_key.fingerprint()}"
                for keyid, (_, key) in self.bundle_gateway.items()
            )
            self.r.warnings.append(
                f"the gateway key was taken from the bundle itself ({shown or 'none listed'}): a forger "
                "would ship their own; compare it with the federation file, or pass --federation or "
                "--gateway-key to pin it"
            )
        pins = self.pinned_gateway
        by_id = {k.keyid: k.public_key for k in pins or () if k.keyid is not None}
        # A federation pins by key id (possibly none left, all revoked); a bare PEM pins none.
        if pins is not None and all(k.keyid is not None for k in pins):
            for keyid, (i, key) in self.bundle_gateway.items():
                if keyid not in by_id:
                    self.r.problem(
                        f"gateway_keys[{i}] ({keyid})",
                        "is not an unrevoked gateway key of the pinned federation",
                    )
                elif by_id[keyid] != key.public_key:
                    self.r.problem(f"gateway_keys[{i}] ({keyid})", "differs from the pinned federation's key")
        if self.pinned_signers is not None:
            for keyid, (i, key) in self.bundle_signers.items():
                pinned = self.pinned_signers.get(keyid)
                if pinned is None:
                    self.r.problem(f"signer_keys[{i}] ({keyid})", "is not in the pinned federation")
                elif pinned != key.public_key:
                    self.r.problem(f"signer_keys[{i}] ({keyid})", "differs from the pinned federation's key")

    # -- structure --

    def check_top_level(self) -> None:
        for name in self.doc:
            if name not in TOP_LEVEL:
                self.r.problem(
                    _key_path("", name), "unknown part; this verifier reads " + ", ".join(TOP_LEVEL)
                )
        for name in TOP_LEVEL:
            if name not in self.doc:
                self.r.problem(name, "missing")

    def check_digests(self) -> None:
        digests = self.doc.get("sha256")
        if not isinstance(digests, dict):
            if "sha256" in self.doc:
                self.r.problem("sha256", f"must be an object of hex digests, not a JSON {_kind(digests)}")
            return
        for part in PARTS:
            recorded = digests.get(part)
            if part not in self.doc:
                continue
            if not isinstance(recorded, str) or not _HEX32.fullmatch(recorded):
                self.r.problem(f"sha256.{part}", "missing or not 64 lowercase hex characters")
                continue
            if part_digest(self.doc[part]) != recorded:
                self.r.problem(
                    part,
                    f"content does not match its digest sha256.{part}: this part (or the digest) "
                    "was changed after export",
                )
        for name in digests:
            if name not in PARTS:
                self.r.problem(_key_path("sha256", name), "digest of an unknown part")

    def read_export(self) -> None:
        export = self.doc.get("export")
        if export is None:
            return
        if not isinstance(export, dict):
            self.r.problem("export", f"must be an object, not a JSON {_kind(export)}")
            return
        _unknown(export, _EXPORT_FIELDS, "export", self.r)
        for name in ("exported_by", "exported_at", "gateway", "tool"):
            if not isinstance(export.get(name), str):
                self.r.problem(f"export.{name}", "missing or not a string")
        if _parse_time(export.get("exported_at")) is None and isinstance(export.get("exported_at"), str):
            self.r.problem("export.exported_at", "not an RFC 3339 UTC time")
        filters = export.get("filters")
        if not isinstance(filters, dict):
            self.r.problem("export.filters", "missing or not an object")
            return
        _unknown(filters, _FILTER_FIELDS, "export.filters", self.r)
        for name in ("alliance", "participant"):
            if not isinstance(filters.get(name), str):
                self.r.problem(f"export.filters.{name}", "missing or not a string")
        for name in ("received_from", "received_to"):
            value = filters.get(name)
            if value is not None and _parse_time(value) is None:
                self.r.problem(f"export.filters.{name}", "neither null nor an RFC 3339 UTC time")
        self.filters = filters

    def read_keys(self, part: str) -> dict[str, tuple[int, BundleKey]]:
        listed = self.doc.get(part)
        keys: dict[str, tuple[int, BundleKey]] = {}
        if listed is None:
            return keys
        if not isinstance(listed, list):
            self.r.problem(part, f"must be a list, not a JSON {_kind(listed)}")
            return keys
        for i, item in enumerate(listed):
            path = f"{part}[{i}]"
            key = self.read_key(item, path)
            if key is None:
                continue
            if key.keyid in keys:
                self.r.problem(
                    path, f"key id {key.keyid} is listed twice (also {part}[{keys[key.keyid][0]}])"
                )
                continue
            keys[key.keyid] = (i, key)
        return keys

    def read_key(self, item: Any, path: str) -> BundleKey | None:
        if not isinstance(item, dict):
            self.r.problem(path, f"must be an object, not a JSON {_kind(item)}")
            return None
        _unknown(item, _KEY_FIELDS, path, self.r)
        keyid, owner, suite_text, pem = (item.get(n) for n in ("keyid", "owner", "suite", "public_key_pem"))
        bad = [
            n
            for n, v in (("keyid", keyid), ("owner", owner), ("suite", suite_text), ("public_key_pem", pem))
            if not isinstance(v, str)
        ]
        if bad:
            self.r.problem(path, "missing or non-string " + ", ".join(bad))
            return None
        assert isinstance(keyid, str) and isinstance(owner, str)
        assert isinstance(suite_text, str) and isinstance(pem, str)
        label = f"{path} ({keyid})"
        if not keyid.startswith(owner + "/"):
            self.r.problem(label, f"key id does not start with its owner {owner!r}/")
        try:
            suite = Suite(suite_text)
        except ValueError:
            self.r.problem(label, f"unknown suite {suite_text!r}")
            return None
        try:
            public_key = PublicKey.from_pem(pem, suite)
        except ValueError as exc:
            self.r.problem(label, f"public_key_pem is not a usable {suite.value} public key: {exc}")
            return None
        times: dict[str, datetime | None] = {}
        for name in ("not_before", "not_after", "revoked_at"):
            value = item.get(name)
            times[name] = _parse_time(value)
            if value is not None and times[name] is None:
                self.r.problem(f"{path}.{name}", "neither null nor an RFC 3339 UTC time")
        revoked = item.get("revoked")
        if not isinstance(revoked, bool):
            self.r.problem(f"{path}.revoked", "missing or not true/false")
            revoked = False
        return BundleKey(
            keyid=keyid,
            owner=owner,
            public_key=public_key,
            not_before=times["not_before"],
            not_after=times["not_after"],
            revoked=revoked,
            revoked_at=times["revoked_at"],
        )

    # -- checkpoint --

    def check_checkpoint(self) -> bytes | None:
        """The root hash to check proofs against (None if the checkpoint is unusable)."""
        cp = self.doc.get("checkpoint")
        if cp is None:
            return None
        if not isinstance(cp, dict):
            self.r.problem("checkpoint", f"must be an object, not a JSON {_kind(cp)}")
            return None
        _unknown(cp, _CHECKPOINT_FIELDS, "checkpoint", self.r)
        raw = _b64_field(cp, "envelope", "checkpoint.envelope", self.r)
        if raw is None:
            return None
        envelope = _decode(envelope_pb2.Envelope, raw)
        if envelope is None:
            self.r.problem("checkpoint.envelope", "not a serialized mrx.v1.Envelope")
            return None
        if envelope.payload_type != CHECKPOINT_PAYLOAD_TYPE:
            self.r.problem(
                "checkpoint.envelope",
                f"payload_type is {envelope.payload_type[:80]!r}, expected {CHECKPOINT_PAYLOAD_TYPE!r}",
            )
        self.check_checkpoint_signature(envelope)
        payload = _decode(audit_pb2.Checkpoint, envelope.payload)
        if payload is None:
            self.r.problem("checkpoint.envelope", "payload is not a serialized mrx.v1.Checkpoint")
            return None
        self.r.origin = payload.origin
        self.r.tree_size = payload.tree_size
        when = _when(payload, "timestamp")
        if when is None:
            self.r.problem("checkpoint.envelope", "the signed checkpoint has no valid timestamp")
        self.r.checkpoint_time = when
        root = payload.root_hash
        if len(root) != merkle.HASH_SIZE:
            self.r.problem("checkpoint.envelope", f"the signed root hash is {len(root)} bytes, not 32")
            return None
        self.r.root_hash = root
        copies = {
            "origin": payload.origin,
            "tree_size": payload.tree_size,
            "root_hash": root.hex(),
            "timestamp": _time_text(when),
        }
        for name, signed in copies.items():
            if name in cp and not _same(cp[name], signed):
                self.r.problem(
                    f"checkpoint.{name}",
                    f"is {_show(cp[name])} but the signed checkpoint says {_show(signed)}",
                )
            elif name not in cp:
                self.r.problem(f"checkpoint.{name}", "missing")
        return root

    def check_checkpoint_signature(self, envelope: envelope_pb2.Envelope) -> None:
        if not envelope.signatures:
            self.r.problem("checkpoint.envelope", "carries no signature")
            return
        failures: list[str] = []
        for sig in envelope.signatures:
            keyid = sig.keyid[:80]
            candidates = self.gateway_candidates(sig.keyid)
            if not candidates:
                failures.append(f"signed by {keyid!r}, which is not a {self.gateway_key_kind()}")
                continue
            for label, key in candidates:
                if _verifies(envelope, sig, key):
                    self.r.checkpoint_verified = True
                    self.note_gateway_key(sig.keyid, key)
                    return
                failures.append(f"signature by {keyid} does not verify with {label}")
        self.r.problem("checkpoint.envelope", "; ".join(failures))

    def gateway_key_kind(self) -> str:
        return "pinned gateway key" if self.pinned_gateway is not None else "key listed in gateway_keys"

    def gateway_candidates(self, keyid: str) -> list[tuple[str, PublicKey]]:
        if self.pinned_gateway is not None:
            return [
                (f"pinned gateway key {k.keyid or k.public_key.fingerprint()[:16]}", k.public_key)
                for k in self.pinned_gateway
                if k.keyid is None or k.keyid == keyid
            ]
        found = self.bundle_gateway.get(keyid)
        if found is None:
            return []
        return [(f"gateway key {keyid} (gateway_keys[{found[0]}])", found[1].public_key)]

    def note_gateway_key(self, keyid: str, key: PublicKey) -> None:
        """With a bare pinned PEM, the bundle's key of that id must be the pinned one too."""
        if self.pinned_gateway is None or any(k.keyid == keyid for k in self.pinned_gateway):
            return  # unpinned, or compared by key id in compare_with_pins
        listed = self.bundle_gateway.get(keyid)
        if listed is not None and listed[1].public_key != key:
            self.r.problem(
                f"gateway_keys[{listed[0]}] ({keyid})",
                "differs from the pinned gateway key with which the checkpoint verifies",
            )

    # -- entries --

    def check_entries(self, root: bytes | None) -> None:
        entries = self.doc.get("entries")
        if entries is None:
            return
        if not isinstance(entries, list):
            self.r.problem("entries", f"must be a list, not a JSON {_kind(entries)}")
            return
        self.r.entries = len(entries)
        if root is None:
            self.r.problem(
                "entries",
                f"inclusion of the {len(entries)} entries cannot be checked without a usable checkpoint",
            )
        seen: dict[int, int] = {}
        used: set[str] = set()
        for i, item in enumerate(entries):
            self.check_entry(i, item, root, seen, used)
        if root is not None:
            self.report_missed_roots(root, len(entries))
            failed = {p.entry for p in self.r.problems} | {i for i, _, _ in self.missed}
            self.r.entries_verified = sum(1 for i in range(len(entries)) if i not in failed)
        for keyid, (index, _) in self.bundle_signers.items():
            if keyid not in used:
                self.r.warnings.append(f"signer_keys[{index}] ({keyid}) signs none of the entries")

    def report_missed_roots(self, root: bytes, count: int) -> None:
        roots = {computed for _, _, computed in self.missed}
        if count >= 2 and len(self.missed) == count and len(roots) == 1:
            # Entries that all agree on one other root point at the checkpoint, not at them.
            self.r.problem(
                "entries",
                f"none of the {count} entries is proven included: all their proofs agree on root "
                f"{roots.pop().hex()}, but the checkpoint's root is {root.hex()}; the checkpoint does not "
                "describe the tree these entries come from",
            )
            return
        for i, index, computed in self.missed:
            self.r.problem(
                f"entries[{i}]",
                f"inclusion proof fails: leaf, proof and log index lead to root {computed.hex()}, "
                f"not the checkpoint's {root.hex()}",
                entry=i,
                log_index=index,
            )

    def check_entry(
        self, i: int, item: Any, root: bytes | None, seen: dict[int, int], used: set[str]
    ) -> None:
        path = f"entries[{i}]"
        if not isinstance(item, dict):
            self.r.problem(path, f"must be an object, not a JSON {_kind(item)}", entry=i)
            return
        _unknown(item, _ENTRY_FIELDS, path, self.r, entry=i)
        index = item.get("log_index")
        if not _is_count(index):
            self.r.problem(f"{path}.log_index", f"is {_show(index)}, not a non-negative integer", entry=i)
            index = None
        at: dict[str, Any] = {"entry": i, "log_index": index}
        if index is not None:
            if index in seen:
                self.r.problem(path, f"duplicates entries[{seen[index]}]", **at)
            seen.setdefault(index, i)
            size = self.r.tree_size
            if size is not None and index >= size:
                self.r.problem(
                    f"{path}.log_index", f"is not within the checkpoint's tree of size {size}", **at
                )
        leaf_bytes = _b64_field(item, "leaf", f"{path}.leaf", self.r, **at)
        envelope_bytes = _b64_field(item, "envelope", f"{path}.envelope", self.r, **at)
        proof = self.read_proof(item, path, at)

        leaf = None
        if leaf_bytes is not None:
            leaf = _decode(audit_pb2.ExchangeLeaf, leaf_bytes)
            if leaf is None:
                self.r.problem(f"{path}.leaf", "not a serialized mrx.v1.ExchangeLeaf", **at)
            else:
                self.check_leaf(leaf, path, at)
        if leaf_bytes is not None and proof is not None and index is not None and root is not None:
            size = self.r.tree_size or 0
            computed = merkle.root_from_inclusion_proof(merkle.leaf_hash(leaf_bytes), index, size, proof)
            if computed is None:
                self.r.problem(
                    f"{path}.proof",
                    f"malformed: {len(proof)} hash(es) cannot be an audit path for log index {index} in a "
                    f"tree of size {size}",
                    **at,
                )
            elif computed != root:
                self.missed.append((i, index, computed))
        if envelope_bytes is not None:
            self.check_envelope(envelope_bytes, leaf, path, at, used)

    def read_proof(self, item: dict[str, Any], path: str, at: dict[str, Any]) -> list[bytes] | None:
        proof = item.get("proof")
        if not isinstance(proof, list):
            self.r.problem(f"{path}.proof", "missing or not a list of hashes", **at)
            return None
        hashes = []
        for j, h in enumerate(proof):
            if not isinstance(h, str) or not _HEX32.fullmatch(h):
                self.r.problem(f"{path}.proof[{j}]", f"is {_show(h)}, not 64 lowercase hex characters", **at)
                return None
            hashes.append(bytes.fromhex(h))
        return hashes

    def check_leaf(self, leaf: audit_pb2.ExchangeLeaf, path: str, at: dict[str, Any]) -> None:
        index = at["log_index"]
        if index is not None and leaf.log_index != index:
            self.r.problem(path, f"the leaf says log index {leaf.log_index}, the entry says {index}", **at)
        try:
            outcome = envelope_pb2.Outcome.Name(leaf.outcome).removeprefix("OUTCOME_")
        except ValueError:
            outcome = f"OUTCOME_{leaf.outcome}"
        self.r.outcomes[outcome] += 1
        if leaf.outcome == envelope_pb2.OUTCOME_REFUSED:
            self.r.refusal_reasons[leaf.reason or "(none)"] += 1
        received = _when(leaf, "received_at")
        if received is None:
            self.r.problem(f"{path}.leaf", "the leaf has no valid received_at time", **at)
        start, end = (_parse_time(self.filters.get(n)) for n in ("received_from", "received_to"))
        if received is not None and (
            (start is not None and received < start) or (end is not None and received >= end)
        ):
            self.r.problem(
                path,
                f"received at {_time_text(received)}, outside the export's filter "
                f"[{_time_text(start) or '-'}, {_time_text(end) or '-'})",
                **at,
            )

    def check_envelope(
        self,
        raw: bytes,
        leaf: audit_pb2.ExchangeLeaf | None,
        path: str,
        at: dict[str, Any],
        used: set[str],
    ) -> None:
        where = f"{path}.envelope"
        if leaf is not None and sha256(raw) != leaf.envelope_sha256:
            self.r.problem(
                where,
                f"SHA-256 of the envelope bytes is {sha256(raw).hex()}, but the leaf records "
                f"{leaf.envelope_sha256.hex()}",
                **at,
            )
        envelope = _decode(envelope_pb2.Envelope, raw)
        if envelope is None:
            self.r.problem(where, "not a serialized mrx.v1.Envelope", **at)
            return
        if envelope.payload_type != SUBMISSION_PAYLOAD_TYPE:
            self.r.problem(where, f"payload_type is {envelope.payload_type[:80]!r}, not a submission", **at)
        if len(envelope.signatures) != 1:
            self.r.problem(
                where, f"carries {len(envelope.signatures)} signatures; submissions carry one", **at
            )
            return
        sig = envelope.signatures[0]
        used.add(sig.keyid)
        key, label, owner = self.signer_key(sig.keyid)
        if key is None:
            self.r.problem(where, f"signed by {sig.keyid[:80]!r}, which is not {label}", **at)
        elif not _verifies(envelope, sig, key):
            self.r.problem(where, f"signature by {sig.keyid} does not verify with {label}", **at)
        submission = _decode(records_pb2.Submission, envelope.payload)
        if submission is None:
            self.r.problem(where, "payload is not a serialized mrx.v1.Submission", **at)
            return
        if leaf is None:
            return
        header = submission.header
        if header.sender != leaf.sender or header.message_id != leaf.message_id:
            self.r.problem(
                where,
                f"the envelope is message {header.message_id[:128]!r} from {header.sender[:16]!r}, the leaf "
                f"records {leaf.message_id!r} from {leaf.sender!r}",
                **at,
            )
        if owner is not None and owner != leaf.sender:
            self.r.problem(
                where, f"signed with a key of {owner}, but the leaf's sender is {leaf.sender}", **at
            )
        signed_at = _when(header, "created_at") or _when(leaf, "received_at")
        self.check_key_validity(sig.keyid, signed_at, path, at)

    def signer_key(self, keyid: str) -> tuple[PublicKey | None, str, str | None]:
        """(key, how it is named in messages, owner) for an envelope signature's key id."""
        listed = self.bundle_signers.get(keyid)
        if self.pinned_signers is not None:
            pinned = self.pinned_signers.get(keyid)
            if pinned is None:
                return None, "a key of the pinned federation", None
            # Federation key ids start with their owner (checked when the federation loads).
            return pinned, f"federation key {keyid}", keyid.split("/", 1)[0]
        if listed is None:
            return None, "a key listed in signer_keys", None
        return listed[1].public_key, f"signer key {keyid} (signer_keys[{listed[0]}])", listed[1].owner

    def check_key_validity(
        self, keyid: str, signed_at: datetime | None, path: str, at: dict[str, Any]
    ) -> None:
        """Judged, as the gateway judges it, at the submission's signed created_at."""
        listed = self.bundle_signers.get(keyid)
        if listed is None or signed_at is None:
            return
        key = listed[1]
        # Warnings, not failures: these dates are the registry's, not signed, and a key
        # revoked after the exchange does not make an earlier signature false.
        late = key.not_after is not None and signed_at >= key.not_after
        early = key.not_before is not None and signed_at < key.not_before
        revoked = key.revoked and key.revoked_at is not None and key.revoked_at <= signed_at
        if early or late or revoked:
            self.r.warnings.append(
                f"{path} (log index {at['log_index']}): signer key {keyid} was "
                f"{'revoked' if revoked else 'outside its validity'} when the submission was signed "
                f"({_time_text(signed_at)})"
            )


# --- export --------------------------------------------------------------------------------


def export_bundle(
    client: AuditClient,
    *,
    gateway: str,
    alliance: str = "",
    participant: str = "",
    received_from: datetime | None = None,
    received_to: datetime | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    page_size: int = 1000,
) -> tuple[bytes, list[str]]:
    """Read a bundle through ``client``; returns (the bundle's bytes, notes for the user).

    Everything is pinned to the latest checkpoint's tree size: exchanges appended after it
    are left for the next export, so the bundle is one consistent snapshot. Raises
    grpc.RpcError as the gateway refuses (e.g. PERMISSION_DENIED outside the scope).
    """
    notes: list[str] = []
    checkpoint = client.checkpoint()
    payload = _decode(audit_pb2.Checkpoint, checkpoint.payload)
    if payload is None:
        raise ValueError("the gateway's checkpoint payload is not a serialized mrx.v1.Checkpoint")
    size = payload.tree_size
    request = audit_pb2.ListExchangesRequest(
        alliance=alliance, participant=participant, page_size=page_size, with_envelopes=True
    )
    if received_from is not None:
        request.received_from.FromDatetime(received_from)
    if received_to is not None:
        request.received_to.FromDatetime(received_to)
    entries: list[BundleEntry] = []
    later = 0
    for listed in client.exchanges(request):
        if listed.log_index >= size:
            later += 1
            continue
        proof = client.inclusion_proof(log_index=listed.log_index, tree_size=size)
        entries.append(
            BundleEntry(
                log_index=listed.log_index,
                leaf=listed.leaf,
                envelope=listed.envelope.SerializeToString(deterministic=True),
                proof=tuple(proof.hashes),
            )
        )
    if later:
        notes.append(f"{later} matching exchange(s) newer than the checkpoint (tree size {size}) left out")

    gateway_keys, signer_keys = _fetch_keys(client, entries, notes)
    data = encode_bundle(
        export=ExportInfo(
            exported_by=client.principal,
            exported_at=now(),
            gateway=gateway,
            alliance=alliance,
            participant=participant,
            received_from=received_from,
            received_to=received_to,
        ),
        checkpoint=checkpoint,
        gateway_keys=gateway_keys,
        signer_keys=signer_keys,
        entries=entries,
    )
    return data, notes


def _fetch_keys(
    client: AuditClient, entries: Iterable[BundleEntry], notes: list[str]
) -> tuple[list[BundleKey], list[BundleKey]]:
    participants = client.registry.ListParticipants(
        registry_pb2.ListParticipantsRequest(), timeout=client.timeout
    )
    gateway_codes = {
        p.code for p in participants.participants if p.role == registry_pb2.PARTICIPANT_ROLE_GATEWAY
    }
    listed = client.registry.ListKeys(registry_pb2.ListKeysRequest(), timeout=client.timeout).keys
    by_id: dict[str, BundleKey] = {}
    for msg in listed:
        try:
            by_id[msg.keyid] = BundleKey.from_proto(msg)
        except ValueError as exc:
            notes.append(f"registry key {msg.keyid} is unusable and was left out: {exc}")
    wanted: set[str] = set()
    for entry in entries:
        envelope = _decode(envelope_pb2.Envelope, entry.envelope)
        if envelope is not None:
            wanted.update(s.keyid for s in envelope.signatures)
    missing = sorted(wanted - set(by_id))
    if missing:
        notes.append("the registry does not list signer key(s) " + ", ".join(missing))
    gateway_keys = sorted((k for k in by_id.values() if k.owner in gateway_codes), key=lambda k: k.keyid)
    signer_keys = sorted((by_id[k] for k in wanted if k in by_id), key=lambda k: k.keyid)
    return gateway_keys, signer_keys


# --- helpers -------------------------------------------------------------------------------


def _ts(msg: Message, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    value: datetime = getattr(msg, name).ToDatetime(tzinfo=UTC)
    return value


def _when(msg: Message, name: str) -> datetime | None:
    """A Timestamp field as a datetime; None if unset or outside what datetime can hold."""
    try:
        return _ts(msg, name)
    except (ValueError, OverflowError, OSError):
        return None


def _same(a: Any, b: Any) -> bool:
    # JSON true == 1 and 12.0 == 12 in Python; a copied field must be the same value *and* type.
    return type(a) is type(b) and a == b


def _time_text(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        return None
    # Only the exact spelling mrx writes counts, so that no byte of a time can change unseen.
    return parsed if _time_text(parsed) == value else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64_field(obj: dict[str, Any], name: str, path: str, result: VerifyResult, **at: Any) -> bytes | None:
    value = obj.get(name)
    if not isinstance(value, str):
        result.problem(path, "missing or not a base64 string", **at)
        return None
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        result.problem(path, "not valid base64", **at)
        return None
    # b64decode ignores the unused low bits of the last character; insist on the one
    # canonical spelling so that a changed character cannot go unseen.
    if _b64(data) != value:
        result.problem(path, "not canonical base64 (the last characters were altered)", **at)
        return None
    return data


def _decode(cls: type[_M], data: bytes) -> _M | None:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None
    return msg


def _verifies(envelope: envelope_pb2.Envelope, sig: envelope_pb2.Signature, key: PublicKey) -> bool:
    try:
        verify_signature(envelope, sig, key)
    except SignatureError:
        return False
    return True


def _suite_of(sig: envelope_pb2.Signature) -> Suite | None:
    try:
        return Suite.from_proto(sig.suite)
    except ValueError:
        return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _unknown(obj: dict[str, Any], allowed: Sequence[str], path: str, result: VerifyResult, **at: Any) -> None:
    for name in obj:
        if name not in allowed:
            result.problem(_key_path(path, name), "unknown field (allowed: " + ", ".join(allowed) + ")", **at)


def _key_path(parent: str, name: str) -> str:
    shown = name if re.fullmatch(r"[A-Za-z0-9_]{1,40}", name) else repr(name[:40])
    return f"{parent}.{shown}" if parent else shown


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _line_col(data: bytes, pos: int) -> str:
    line = data.count(b"\n", 0, pos) + 1
    col = pos - (data.rfind(b"\n", 0, pos) + 1) + 1
    return f"line {line}, column {col}"


def _json_path_at(text: str, pos: int) -> str:
    """The path (e.g. ``entries[3].proof[1]``) of the JSON value around character ``pos``.

    A lenient scan of the text before ``pos``: good enough to say which part and which
    entry a damaged byte lies in, even when the document no longer parses.
    """
    # Frames: ["obj", key or None, expecting a key] or ["arr", index].
    stack: list[list[Any]] = []
    i, end = 0, min(pos, len(text))
    while i < end:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if stack and stack[-1][0] == "obj" and stack[-1][2]:
                stack[-1][1] = text[i + 1 : j]
            i = j + 1
            continue
        if c == "{":
            stack.append(["obj", None, True])
        elif c == "[":
            stack.append(["arr", 0])
        elif c in "}]" and stack:
            stack.pop()
        elif c == ":" and stack and stack[-1][0] == "obj":
            stack[-1][2] = False
        elif c == "," and stack:
            if stack[-1][0] == "obj":
                stack[-1][2] = True
            else:
                stack[-1][1] += 1
        i += 1
    path = ""
    for frame in stack:
        if frame[0] == "arr":
            path += f"[{frame[1]}]"
        elif frame[1] is not None:
            path = _key_path(path, str(frame[1]))
    return path or "bundle"
