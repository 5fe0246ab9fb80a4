"""AuditService: checkpoints, proofs and the exchanges a principal may see."""

from __future__ import annotations

import hashlib

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.convert import timestamp_to_datetime
from gateway.domain.errors import FieldViolation, InvalidArgument, NotFound, OutOfRange, PermissionDenied
from gateway.pb import audit_pb2, audit_pb2_grpc, envelope_pb2
from gateway.registry.federation import Federation
from gateway.services.auth import Principal, ReadAuthenticator
from gateway.services.paging import bad_token, decode_token, encode_token
from gateway.store.audit_reads import AuditReader, AuditStore, EntryFilter, LogEntry

SERVICE = "/mrx.v1.AuditService/"
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _us(ts: Timestamp, field: str) -> int:
    return int(timestamp_to_datetime(ts, field=field).timestamp() * 1_000_000)


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, *, store: AuditStore, auth: ReadAuthenticator, federation: Federation):
        self._store = store
        self._auth = auth
        self._federation = federation

    def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetCheckpointResponse:
        self._auth.authenticate(context, SERVICE + "GetCheckpoint", request)
        latest = self._store.latest_checkpoint()
        if latest is None:
            raise NotFound("the exchange log has no checkpoint yet", reason="NO_CHECKPOINT")
        return audit_pb2.GetCheckpointResponse(checkpoint=envelope_pb2.Envelope.FromString(latest[1]))

    def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetInclusionProofResponse:
        principal = self._auth.authenticate(context, SERVICE + "GetInclusionProof", request)
        with self._store.snapshot() as reader:
            size, checkpoint = self._tree_size(reader, request.tree_size)
            entry = self._select_entry(reader, request.WhichOneof("leaf"), request, principal, size)
            hashes = reader.inclusion_proof(entry.log_index, size)
            if checkpoint is None:
                checkpoint = reader.checkpoint_at(size)
        response = audit_pb2.GetInclusionProofResponse(
            log_index=entry.log_index, tree_size=size, leaf=entry.leaf, hashes=hashes
        )
        if checkpoint is not None:
            response.checkpoint.ParseFromString(checkpoint)
        return response

    def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetConsistencyProofResponse:
        self._auth.authenticate(context, SERVICE + "GetConsistencyProof", request)
        old, new = request.old_size, request.new_size
        if old == 0 or old > new:
            raise InvalidArgument(
                f"need 0 < old_size <= new_size, got old_size {old}, new_size {new}",
                violations=[FieldViolation("old_size", f"must be between 1 and new_size ({new})")],
                reason="BAD_TREE_SIZE",
            )
        with self._store.snapshot() as reader:
            size = reader.log_size()
            if new > size:
                raise OutOfRange(
                    f"new_size {new} is beyond the log, which has {size} entries",
                    reason="TREE_SIZE_BEYOND_LOG",
                    metadata={"log_size": str(size)},
                )
            return audit_pb2.GetConsistencyProofResponse(hashes=reader.consistency_proof(old, new))

    def ListExchanges(
        self, request: audit_pb2.ListExchangesRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListExchangesResponse:
        principal = self._auth.authenticate(context, SERVICE + "ListExchanges", request)
        parties = principal.parties
        if request.participant:
            principal.require_scope([request.participant], f"the exchanges of {request.participant}")
            parties = frozenset({request.participant})
        if request.alliance:
            alliance = self._federation.alliances.get(request.alliance)
            if alliance is None:
                raise InvalidArgument(
                    f"no alliance {request.alliance!r}",
                    violations=[FieldViolation("alliance", "unknown alliance")],
                )
            principal.require_scope(alliance.members, f"the exchanges of alliance {alliance.code}")
            members = frozenset(alliance.members)
            parties = members if parties is None else parties & members
        if request.page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative", violations=[FieldViolation("page_size", "< 0")]
            )
        flt = EntryFilter(
            parties=parties,
            kind=request.kind,
            outcome=request.outcome,
            received_from_us=(
                _us(request.received_from, "received_from") if request.HasField("received_from") else None
            ),
            received_to_us=_us(request.received_to, "received_to")
            if request.HasField("received_to")
            else None,
        )
        start, end = flt.received_from_us, flt.received_to_us
        if start is not None and end is not None and start >= end:
            raise InvalidArgument(
                "received_from must be before received_to (the range is half-open)",
                violations=[FieldViolation("received_to", "not after received_from")],
            )
        digest = _filter_digest(principal, request)
        after = _decode_cursor(request.page_token, digest) if request.page_token else None
        limit = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        with self._store.snapshot() as reader:
            rows = reader.list_entries(
                flt, after=after, limit=limit + 1, with_envelopes=request.with_envelopes
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return audit_pb2.ListExchangesResponse(
            entries=[_entry(r) for r in rows],
            next_page_token=encode_token(digest, rows[-1].log_index) if more else "",
        )

    def GetEnvelope(
        self, request: audit_pb2.GetEnvelopeRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ExchangeEntry:
        principal = self._auth.authenticate(context, SERVICE + "GetEnvelope", request)
        with self._store.snapshot() as reader:
            entry = self._select_entry(reader, request.WhichOneof("selector"), request, principal, None)
        return _entry(entry)

    @staticmethod
    def _tree_size(reader: AuditReader, requested: int) -> tuple[int, bytes | None]:
        """The tree size to prove against, with its checkpoint when already read."""
        if requested == 0:
            latest = reader.latest_checkpoint()
            if latest is None:
                raise NotFound("the exchange log has no checkpoint yet", reason="NO_CHECKPOINT")
            return latest
        size = reader.log_size()
        if requested > size:
            raise OutOfRange(
                f"tree_size {requested} is beyond the log, which has {size} entries",
                reason="TREE_SIZE_BEYOND_LOG",
                metadata={"log_size": str(size)},
            )
        return requested, None

    @staticmethod
    def _select_entry(
        reader: AuditReader,
        which: str | None,
        request: audit_pb2.GetInclusionProofRequest | audit_pb2.GetEnvelopeRequest,
        principal: Principal,
        size: int | None,
    ) -> LogEntry:
        if which == "log_index":
            index = request.log_index
            if index >= MAX_INDEX:
                raise OutOfRange(
                    f"log_index must be below 2^63, got {index}",
                    reason="INDEX_BEYOND_LOG",
                )
            if size is not None and index >= size:
                raise OutOfRange(
                    f"log_index {index} is not in a tree of size {size}",
                    reason="INDEX_BEYOND_TREE",
                    metadata={"tree_size": str(size)},
                )
            # The response carries the leaf only, so leave the envelope blob unread.
            entry = reader.entry(index, with_envelope=size is None)
        elif which == "envelope_sha256":
            if len(request.envelope_sha256) != 32:
                raise InvalidArgument(
                    "envelope_sha256 must be 32 bytes",
                    violations=[FieldViolation("envelope_sha256", "must be 32 bytes")],
                )
            entry = reader.entry_by_digest(request.envelope_sha256, with_envelope=size is None)
            if entry is not None and size is not None and entry.log_index >= size:
                # Scope first, and no log index: the answer must not say where an exchange
                # the caller may not see sits in the log.
                _require_sees(principal, entry)
                raise OutOfRange(
                    f"that exchange is not in a tree of size {size}",
                    reason="INDEX_BEYOND_TREE",
                    metadata={"tree_size": str(size)},
                )
        else:
            raise InvalidArgument(
                "give log_index or envelope_sha256",
                violations=[FieldViolation("log_index", "or envelope_sha256")],
            )
        if entry is None:
            raise NotFound("no such exchange in the log", reason="EXCHANGE_NOT_FOUND")
        _require_sees(principal, entry)
        return entry


def _entry(row: LogEntry) -> audit_pb2.ExchangeEntry:
    entry = audit_pb2.ExchangeEntry(log_index=row.log_index, leaf=row.leaf)
    if row.envelope is not None:
        entry.envelope.ParseFromString(row.envelope)
    return entry


def _filter_digest(principal: Principal, request: audit_pb2.ListExchangesRequest) -> str:
    shape = audit_pb2.ListExchangesRequest()
    shape.CopyFrom(request)
    shape.page_token = ""
    shape.page_size = 0
    raw = principal.code.encode() + shape.SerializeToString(deterministic=True)
    return hashlib.sha256(raw).hexdigest()[:16]


def _decode_cursor(token: str, digest: str) -> int:
    (last,) = decode_token(token, digest, 1)
    if not isinstance(last, int) or not 0 <= last < 2**63:
        raise bad_token()
    return last


# Log indexes are BIGINT: anything from 2^63 on cannot name an entry.
MAX_INDEX = 2**63


def _require_sees(principal: Principal, entry: LogEntry) -> None:
    if not principal.sees(entry.sender, entry.subject_issuer):
        raise PermissionDenied(
            # No log index here: asked by digest, it would say where a hidden exchange is.
            f"{principal.code} may not see that exchange: neither its sender nor the record's issuer "
            "is within its scope",
            reason="OUTSIDE_SCOPE",
        )
