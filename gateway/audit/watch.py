"""Monitoring the exchange log: every checkpoint must extend the last one seen.

A monitor keeps the last checkpoint it verified in a small state file, together with the
gateway keys it pinned on its first run. Each round it fetches the latest checkpoint,
checks the gateway's signature with a pinned key, and, if the log grew, checks an RFC 6962
consistency proof from the old tree to the new one. A log that shrank, a different root at
the same size, or a proof that does not verify means the history the secretariat saw was
rewritten: the monitor raises a loud alarm, keeps the old state (so every later round
alarms too, until a human looks) and saves both signed checkpoints as evidence. Two
conflicting checkpoints signed by the gateway key prove the misbehaviour to anyone.

Exit codes (also in docs/audit.md): 0 consistent, 2 could not check, 3 history rewritten,
4 checkpoint rejected (bad signature, unknown key, malformed).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.message import DecodeError

from gateway.audit import merkle
from gateway.audit.checkpoints import CHECKPOINT_PAYLOAD_TYPE
from gateway.client import AuditClient, Refusal
from gateway.crypto.dsse import SignatureError, verify_envelope
from gateway.crypto.suites import PublicKey, Suite
from gateway.pb import audit_pb2, envelope_pb2, registry_pb2

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_REWRITTEN = 3
EXIT_REJECTED = 4

STATE_FORMAT = "mrx-audit-watch-state"
STATE_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint envelope that does not verify or does not parse."""


class WatchStateError(Exception):
    """The state file is unreadable; the monitor refuses to start over silently."""


@dataclass(frozen=True)
class SignedCheckpoint:
    envelope: bytes  # the serialized Envelope, kept as evidence
    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: datetime | None
    keyid: str

    def describe(self) -> str:
        when = _time_text(self.timestamp) if self.timestamp else "(no time)"
        return f"tree size {self.tree_size}, root {self.root_hash.hex()}, signed {when} by {self.keyid}"

    def to_json(self) -> dict[str, Any]:
        return {
            "envelope": base64.b64encode(self.envelope).decode("ascii"),
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": _time_text(self.timestamp),
        }


def open_checkpoint(envelope: envelope_pb2.Envelope, keys: Mapping[str, PublicKey]) -> SignedCheckpoint:
    """Verify a checkpoint envelope with one of ``keys`` (by key id) and decode it."""
    if envelope.payload_type != CHECKPOINT_PAYLOAD_TYPE:
        raise CheckpointError(f"payload type {envelope.payload_type[:80]!r} is not a checkpoint")
    try:
        keyid = verify_envelope(envelope, payload_type=CHECKPOINT_PAYLOAD_TYPE, keys=keys, what="checkpoint")
    except SignatureError:
        keyid = None
    if keyid is None:
        named = ", ".join(repr(s.keyid[:80]) for s in envelope.signatures) or "no key"
        raise CheckpointError(
            f"the checkpoint is signed by {named} and no signature verifies with a pinned gateway key "
            f"({', '.join(sorted(keys)) or 'none pinned'})"
        )
    payload = audit_pb2.Checkpoint()
    try:
        payload.ParseFromString(envelope.payload)
    except DecodeError:
        raise CheckpointError("the signed payload is not a serialized mrx.v1.Checkpoint") from None
    if len(payload.root_hash) != merkle.HASH_SIZE:
        raise CheckpointError(f"the signed root hash is {len(payload.root_hash)} bytes, not 32")
    try:
        when = payload.timestamp.ToDatetime(tzinfo=UTC) if payload.HasField("timestamp") else None
    except (ValueError, OverflowError, OSError):
        raise CheckpointError("the signed checkpoint time is out of range") from None
    return SignedCheckpoint(
        envelope=envelope.SerializeToString(deterministic=True),
        origin=payload.origin,
        tree_size=payload.tree_size,
        root_hash=payload.root_hash,
        timestamp=when,
        keyid=keyid,
    )


# --- state ---------------------------------------------------------------------------------


@dataclass
class WatchState:
    gateway_keys: dict[str, PublicKey]
    checkpoint: SignedCheckpoint | None
    gateway: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "gateway": self.gateway,
            "gateway_keys": [
                {"keyid": keyid, "suite": key.suite.value, "public_key_pem": key.pem()}
                for keyid, key in sorted(self.gateway_keys.items())
            ],
            "checkpoint": self.checkpoint.to_json() if self.checkpoint else None,
            "saved_at": _time_text(datetime.now(UTC)),
        }

    def save(self, path: Path) -> None:
        # Write-then-rename: a crash mid-write must not leave a state the next run rejects.
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="ascii")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> WatchState | None:
        """The saved state, None if there is none yet; WatchStateError if it is damaged."""
        try:
            doc = json.loads(path.read_text(encoding="ascii"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WatchStateError(f"{path}: unreadable watch state: {exc}") from None
        try:
            return cls._from_json(doc)
        except (KeyError, TypeError, ValueError, binascii.Error, CheckpointError) as exc:
            raise WatchStateError(f"{path}: damaged watch state: {exc}") from None

    @classmethod
    def _from_json(cls, doc: Any) -> WatchState:
        if doc.get("format") != STATE_FORMAT or doc.get("version") != STATE_VERSION:
            raise ValueError(f"not a version {STATE_VERSION} {STATE_FORMAT} file")
        keys = {
            k["keyid"]: PublicKey.from_pem(k["public_key_pem"], Suite(k["suite"]))
            for k in doc["gateway_keys"]
        }
        checkpoint = None
        if doc["checkpoint"] is not None:
            raw = base64.b64decode(doc["checkpoint"]["envelope"], validate=True)
            envelope = envelope_pb2.Envelope()
            try:
                envelope.ParseFromString(raw)
            except DecodeError:
                raise ValueError("the saved checkpoint is not a serialized Envelope") from None
            # The saved copy is re-verified, never trusted: the state file is just a file.
            checkpoint = open_checkpoint(envelope, keys)
        return cls(gateway_keys=keys, checkpoint=checkpoint, gateway=str(doc.get("gateway", "")))


# --- judging a new checkpoint --------------------------------------------------------------


class Status(enum.Enum):
    FIRST = "first"
    UNCHANGED = "unchanged"
    GREW = "grew"
    REWRITTEN = "rewritten"


@dataclass(frozen=True)
class Verdict:
    status: Status
    old: SignedCheckpoint | None
    new: SignedCheckpoint | None
    finding: str
    proof: tuple[bytes, ...] = ()


def judge(
    old: SignedCheckpoint | None,
    new: SignedCheckpoint | None,
    consistency_proof: Callable[[int, int], Sequence[bytes]],
) -> Verdict:
    """Compare a verified new checkpoint with the last one seen (None: nothing served)."""
    if old is None:
        if new is None:
            return Verdict(Status.UNCHANGED, None, None, "the gateway has no checkpoint yet")
        return Verdict(Status.FIRST, None, new, f"first checkpoint recorded: {new.describe()}")
    if new is None:
        return Verdict(
            Status.REWRITTEN,
            old,
            None,
            f"the gateway serves no checkpoint, after one of size {old.tree_size}",
        )
    if new.origin != old.origin:
        return Verdict(
            Status.REWRITTEN, old, new, f"the checkpoint names log {new.origin!r}, not {old.origin!r}"
        )
    if new.tree_size < old.tree_size:
        return Verdict(
            Status.REWRITTEN, old, new, f"the log shrank from {old.tree_size} to {new.tree_size} entries"
        )
    if new.tree_size == old.tree_size:
        if new.root_hash == old.root_hash:
            return Verdict(Status.UNCHANGED, old, new, f"unchanged: {new.describe()}")
        return Verdict(
            Status.REWRITTEN,
            old,
            new,
            f"two signed checkpoints of size {new.tree_size} with different roots",
        )
    proof = tuple(consistency_proof(old.tree_size, new.tree_size))
    if merkle.verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof):
        return Verdict(
            Status.GREW,
            old,
            new,
            f"consistent: grew from {old.tree_size} to {new.tree_size} entries, root {new.root_hash.hex()}",
            proof,
        )
    return Verdict(
        Status.REWRITTEN,
        old,
        new,
        f"the consistency proof from size {old.tree_size} to {new.tree_size} ({len(proof)} hashes) "
        "does not verify: the new tree does not extend the old one",
        proof,
    )


def alarm_text(verdict: Verdict, *, gateway: str, evidence: Path | None) -> str:
    bar = "!" * 78
    lines = [
        bar,
        f"HISTORY REWRITTEN: {verdict.finding}",
        f"  gateway:      {gateway}",
        f"  seen before:  {verdict.old.describe() if verdict.old else '(nothing)'}",
        f"  now served:   {verdict.new.describe() if verdict.new else '(no checkpoint)'}",
    ]
    if verdict.old is not None and verdict.new is not None:
        lines += [
            f"  old root:     {verdict.old.root_hash.hex()} (size {verdict.old.tree_size})",
            f"  new root:     {verdict.new.root_hash.hex()} (size {verdict.new.tree_size})",
        ]
    if evidence is not None:
        lines.append(f"  evidence:     {evidence} (both signed checkpoints and the proof)")
    lines += [
        "  The state file was left unchanged: every further round raises this alarm until",
        "  the secretariats have investigated. Exchanges acknowledged before may have been",
        "  altered or removed from the log.",
        bar,
    ]
    return "\n".join(lines)


def save_evidence(state_path: Path, verdict: Verdict, *, gateway: str, at: datetime) -> Path:
    path = state_path.with_name(f"{state_path.name}.alarm-{at:%Y%m%dT%H%M%S%fZ}.json")
    doc = {
        "finding": verdict.finding,
        "gateway": gateway,
        "detected_at": _time_text(at),
        "seen_before": verdict.old.to_json() if verdict.old else None,
        "now_served": verdict.new.to_json() if verdict.new else None,
        "consistency_proof": [h.hex() for h in verdict.proof],
    }
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="ascii")
    return path


# --- one round, and the loop -------------------------------------------------------------


def fetch_gateway_keys(client: AuditClient) -> dict[str, PublicKey]:
    """The gateway principal's keys as RegistryService lists them (trust on first use)."""
    participants = client.registry.ListParticipants(
        registry_pb2.ListParticipantsRequest(), timeout=client.timeout
    ).participants
    keys: dict[str, PublicKey] = {}
    for p in participants:
        if p.role != registry_pb2.PARTICIPANT_ROLE_GATEWAY:
            continue
        listed = client.registry.ListKeys(registry_pb2.ListKeysRequest(owner=p.code), timeout=client.timeout)
        for k in listed.keys:
            keys[k.keyid] = PublicKey.from_pem(k.public_key_pem, Suite.from_proto(k.suite))
    return keys


def watch_once(
    client: AuditClient,
    state_path: Path,
    *,
    gateway: str,
    out: TextIO,
    err: TextIO,
    pinned_keys: Mapping[str, PublicKey] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """One round; returns the exit code. grpc.RpcError and WatchStateError propagate."""
    state = WatchState.load(state_path)
    if state is None:
        if pinned_keys is not None:
            keys = dict(pinned_keys)
            source = "the federation file"
        else:
            keys = fetch_gateway_keys(client)
            source = "the gateway's RegistryService (trust on first use)"
        shown = "; ".join(f"{keyid} sha256:{key.fingerprint()}" for keyid, key in sorted(keys.items()))
        print(f"first run: pinned gateway key(s) from {source}: {shown or 'none'}", file=out)
        if pinned_keys is None:
            print(
                "warning: compare these fingerprints with the federation file; the pins are kept in "
                f"{state_path} and every later checkpoint must verify with them",
                file=err,
            )
        state = WatchState(gateway_keys=keys, checkpoint=None, gateway=gateway)
    elif pinned_keys is not None:
        _pin_new_keys(state, pinned_keys, out)

    try:
        new: SignedCheckpoint | None = open_checkpoint(client.checkpoint(), state.gateway_keys)
    except CheckpointError as exc:
        print(f"CHECKPOINT REJECTED: {exc}\n  gateway: {gateway}", file=err)
        return EXIT_REJECTED
    except grpc.RpcError as exc:
        refusal = Refusal.from_rpc_error(exc)
        if (refusal.code, refusal.reason) != (grpc.StatusCode.NOT_FOUND, "NO_CHECKPOINT"):
            raise
        new = None

    verdict = judge(state.checkpoint, new, client.consistency_proof)
    if verdict.status is Status.REWRITTEN:
        evidence = save_evidence(state_path, verdict, gateway=gateway, at=now())
        print(alarm_text(verdict, gateway=gateway, evidence=evidence), file=err, flush=True)
        return EXIT_REWRITTEN
    state.checkpoint = verdict.new
    state.gateway = gateway
    state.save(state_path)
    print(f"{_time_text(now())} {verdict.finding}", file=out, flush=True)
    return EXIT_OK


def _pin_new_keys(state: WatchState, federation_keys: Mapping[str, PublicKey], out: TextIO) -> None:
    """A gateway key rotation: pin the keys the federation file added since the first run.

    The file is the source the first run trusted, and the operator passed it again; a key
    id already pinned must keep its key (a different key under a pinned id is refused, as
    it would let the file quietly replace the key the history was checked with).
    """
    added = {}
    for keyid, key in federation_keys.items():
        pinned = state.gateway_keys.get(keyid)
        if pinned is None:
            added[keyid] = key
        elif pinned.pem() != key.pem():
            raise WatchStateError(
                f"the federation file's key {keyid} differs from the one pinned under that id"
            )
    if added:
        state.gateway_keys.update(added)
        shown = "; ".join(f"{keyid} sha256:{key.fingerprint()}" for keyid, key in sorted(added.items()))
        print(f"pinned new gateway key(s) from the federation file: {shown}", file=out)


def watch_loop(
    round_: Callable[[], int],
    *,
    interval: float,
    err: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run rounds every ``interval`` seconds until an alarm; transient failures are retried."""
    while True:
        try:
            code = round_()
        except grpc.RpcError as exc:
            print(f"watch: could not check this round, retrying: {Refusal.from_rpc_error(exc)}", file=err)
            code = EXIT_OK
        if code != EXIT_OK:
            return code
        sleep(interval)


def _time_text(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
