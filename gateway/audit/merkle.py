"""RFC 6962 / RFC 9162 Merkle tree: hashing, compact ranges, proofs and offline verifiers.

Storage model: a node ``(level, index)`` is the root of the perfect subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes. Only perfect
subtrees are stored because they never change once complete, which keeps the store
append-only. Every other hash a tree needs (its root, the right edge of a tree whose size is
not a power of two) is folded on demand from the perfect subtrees that compose it.

Proof generation plans first and reads once: the node ids a proof needs follow from the
sizes alone, so they are all requested in one ``NodeReader.get_nodes`` call (one
``SELECT ... IN`` for the storage layer) before anything is hashed. A proof that needs no
stored node (a one-leaf tree, equal sizes) makes no call at all.

The verifiers follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step, because they are
what secretariats run offline against bundles they did not produce; they answer ``False``
(or ``None``) for any malformed input instead of raising.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeAlias

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "MemoryNodeStore",
    "MissingNodeError",
    "NodeId",
    "NodeReader",
    "consistency_node_ids",
    "consistency_proof",
    "inclusion_node_ids",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32

NodeId: TypeAlias = tuple[int, int]
"""``(level, index)`` of a perfect subtree; see the module docstring."""

_Range: TypeAlias = tuple[int, int]

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

# Distinct prefixes are the RFC 6962 second-preimage defence: no leaf can pose as a node.
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """MTH of a single entry: SHA-256(0x00 || data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


class NodeReader(Protocol):
    """Read access to stored perfect-subtree hashes."""

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        """Return the hashes of those ``ids`` that are stored; absent ids are simply left out."""
        ...


class MissingNodeError(KeyError):
    """The node store lacks perfect-subtree hashes that a tree of the requested size must have."""

    def __init__(self, missing: Sequence[NodeId]) -> None:
        self.missing: tuple[NodeId, ...] = tuple(missing)
        super().__init__(self.missing)

    def __str__(self) -> str:
        # KeyError.__str__ would print a bare repr of the tuple, which reads like a code bug
        # rather than a store that is behind or damaged.
        shown = ", ".join(f"(level={level}, index={index})" for level, index in self.missing[:8])
        more = f" and {len(self.missing) - 8} more" if len(self.missing) > 8 else ""
        return f"Merkle node store lacks {len(self.missing)} node(s): {shown}{more}"


class MemoryNodeStore:
    """Dict-backed ``NodeReader``, for tests and for verifying exported bundles offline."""

    def __init__(self, nodes: Iterable[tuple[NodeId, bytes]] = ()) -> None:
        self._nodes: dict[NodeId, bytes] = {}
        self.put(nodes)

    def put(self, nodes: Iterable[tuple[NodeId, bytes]]) -> None:
        """Store nodes; re-putting an identical node is a no-op, changing one is refused."""
        for node_id, value in nodes:
            value = bytes(value)
            if len(value) != HASH_SIZE:
                raise ValueError(f"node {node_id} hash is {len(value)} bytes, expected {HASH_SIZE}")
            existing = self._nodes.setdefault(node_id, value)
            # A perfect subtree never changes, so a differing rewrite means two histories.
            if existing != value:
                raise ValueError(f"node {node_id} is already stored with a different hash")

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        return {node_id: self._nodes[node_id] for node_id in ids if node_id in self._nodes}

    def __len__(self) -> int:
        return len(self._nodes)


# --- planning: which perfect subtrees a hash, root or proof is made of (pure) ---------------


def _split_point(width: int) -> int:
    """The RFC 6962 k: the largest power of two strictly below ``width`` (``width >= 2``)."""
    return 1 << ((width - 1).bit_length() - 1)


def _range_node_ids(begin: int, end: int) -> list[NodeId]:
    """Perfect subtrees composing MTH(D[begin:end]), largest (leftmost) first.

    Only valid for ranges the RFC 6962 recursion produces, where ``begin`` is aligned to the
    smallest power of two not below ``end - begin``; every piece is then aligned too.
    """
    ids: list[NodeId] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        ids.append((level, begin >> level))
        begin += 1 << level
    return ids


def _inclusion_ranges(index: int, size: int) -> list[_Range]:
    """Leaf ranges of the RFC 6962 PATH(index, D[0:size]) elements, from the leaf upward."""
    ranges: list[_Range] = []
    begin, end = 0, size
    while end - begin > 1:
        split = begin + _split_point(end - begin)
        if index < split:
            ranges.append((split, end))
            end = split
        else:
            ranges.append((begin, split))
            begin = split
    # The walk went root-down; PATH lists siblings leaf-up.
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[_Range]:
    """Leaf ranges of the RFC 6962 SUBPROOF(old_size, D[0:new_size], true) elements, in order."""
    ranges: list[_Range] = []
    begin, end = 0, new_size
    # RFC 6962's flag b: while true the old tree's root is a node the verifier already knows,
    # so it is left out of the proof.
    old_root_known = True
    while old_size != end:
        split = begin + _split_point(end - begin)
        if old_size <= split:
            ranges.append((split, end))
            end = split
        else:
            ranges.append((begin, split))
            begin = split
            old_root_known = False
    if not old_root_known:
        ranges.append((begin, end))
    # SUBPROOF appends on the way back out of the recursion, so the deepest range comes first.
    ranges.reverse()
    return ranges


def _plan(ranges: Sequence[_Range]) -> tuple[list[list[NodeId]], list[NodeId]]:
    per_range = [_range_node_ids(begin, end) for begin, end in ranges]
    # The ranges of one proof cover disjoint leaves, so no node is requested twice.
    return per_range, [node_id for ids in per_range for node_id in ids]


def _check_inclusion_args(index: int, size: int) -> None:
    if size <= 0:
        raise ValueError(f"inclusion proof needs a non-empty tree, got size {size}")
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")


def _check_consistency_args(old_size: int, new_size: int) -> None:
    if not 0 < old_size <= new_size:
        raise ValueError(f"consistency proof needs 0 < old_size <= new_size, got {old_size} and {new_size}")


def inclusion_node_ids(index: int, size: int) -> list[NodeId]:
    """Every stored node ``inclusion_proof(index, size, ...)`` will request, without duplicates."""
    _check_inclusion_args(index, size)
    return _plan(_inclusion_ranges(index, size))[1]


def consistency_node_ids(old_size: int, new_size: int) -> list[NodeId]:
    """Every stored node ``consistency_proof(old_size, new_size, ...)`` will request."""
    _check_consistency_args(old_size, new_size)
    return _plan(_consistency_ranges(old_size, new_size))[1]


# --- reading and folding -------------------------------------------------------------------


def _fetch(reader: NodeReader, ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
    if not ids:
        # Spares the store an empty IN (), which some SQL dialects reject.
        return {}
    found = reader.get_nodes(ids)
    missing = [node_id for node_id in ids if node_id not in found]
    if missing:
        raise MissingNodeError(missing)
    nodes = {node_id: bytes(found[node_id]) for node_id in ids}
    # A damaged row would otherwise surface only as proofs that secretariats reject.
    for node_id, value in nodes.items():
        if len(value) != HASH_SIZE:
            raise ValueError(f"stored node {node_id} is {len(value)} bytes, expected {HASH_SIZE}")
    return nodes


def _fold(ids: Sequence[NodeId], nodes: Mapping[NodeId, bytes]) -> bytes:
    # MTH splits off the largest power of two on the left, so a decomposition folds
    # right-to-left: the smallest subtrees combine first.
    acc = nodes[ids[-1]]
    for node_id in reversed(ids[:-1]):
        acc = node_hash(nodes[node_id], acc)
    return acc


def _hash_ranges(ranges: Sequence[_Range], reader: NodeReader) -> list[bytes]:
    per_range, ids = _plan(ranges)
    nodes = _fetch(reader, ids)
    return [_fold(range_ids, nodes) for range_ids in per_range]


def root_hash(size: int, reader: NodeReader) -> bytes:
    """MTH of the first ``size`` leaves."""
    if size < 0:
        raise ValueError(f"tree size cannot be negative, got {size}")
    if size == 0:
        return EMPTY_ROOT
    return _hash_ranges([(0, size)], reader)[0]


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """RFC 6962 PATH / RFC 9162 audit path for leaf ``index`` in the tree of ``size``, leaf-up."""
    _check_inclusion_args(index, size)
    return _hash_ranges(_inclusion_ranges(index, size), reader)


def consistency_proof(old_size: int, new_size: int, reader: NodeReader) -> list[bytes]:
    """RFC 6962 PROOF / RFC 9162 consistency proof from ``old_size`` to ``new_size``."""
    _check_consistency_args(old_size, new_size)
    return _hash_ranges(_consistency_ranges(old_size, new_size), reader)


# --- compact range ------------------------------------------------------------------------


class CompactRange:
    """The right frontier of a tree: roots of the perfect subtrees in the binary
    decomposition of its size, largest first. Enough to append and to compute the root."""

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ValueError(f"tree size cannot be negative, got {size}")
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} frontier nodes, got {len(hashes)}"
            )
        for value in hashes:
            if len(value) != HASH_SIZE:
                raise ValueError(f"frontier hash is {len(value)} bytes, expected {HASH_SIZE}")
        self._size = size
        self._hashes = [bytes(value) for value in hashes]

    @property
    def size(self) -> int:
        return self._size

    @property
    def frontier(self) -> list[tuple[NodeId, bytes]]:
        return list(zip(self.ids_for_size(self._size), self._hashes, strict=True))

    @staticmethod
    def ids_for_size(size: int) -> list[NodeId]:
        """Frontier node ids of a tree of ``size``, largest first."""
        if size < 0:
            raise ValueError(f"tree size cannot be negative, got {size}")
        return _range_node_ids(0, size)

    @classmethod
    def from_store(cls, size: int, reader: NodeReader) -> CompactRange:
        ids = cls.ids_for_size(size)
        nodes = _fetch(reader, ids)
        return cls(size, [nodes[node_id] for node_id in ids])

    def append(self, leaf: bytes) -> list[tuple[NodeId, bytes]]:
        """Add a leaf hash; return every perfect node it completes, the leaf first, for storage."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf)} bytes, expected {HASH_SIZE}")
        index = self._size
        acc = bytes(leaf)
        level = 0
        completed: list[tuple[NodeId, bytes]] = [((0, index), acc)]
        # Each trailing 1 bit of the old size is a frontier subtree of exactly the new node's
        # height waiting for a right sibling; they are the frontier's last entries.
        while index & 1:
            acc = node_hash(self._hashes.pop(), acc)
            index >>= 1
            level += 1
            completed.append(((level, index), acc))
        self._hashes.append(acc)
        self._size += 1
        return completed

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        acc = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            acc = node_hash(left, acc)
        return acc


# --- verifiers (RFC 9162 2.1.3.2 and 2.1.4.2) ------------------------------------------------


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE


def _is_count(value: object) -> bool:
    # bool is an int subclass; a True where a size belongs is a caller bug, not a size of 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _as_path(proof: object) -> list[bytes] | None:
    # bytes and str are Sequences too, but a single blob is never a well-formed path.
    if not isinstance(proof, Sequence) or isinstance(proof, bytes | bytearray | str):
        return None
    elements = list(proof)
    if not all(_is_hash(element) for element in elements):
        return None
    return [bytes(element) for element in elements]


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes | None:
    """The root an inclusion proof implies (RFC 9162 2.1.3.2), or None if it is malformed."""
    if not (_is_hash(leaf_hash) and _is_count(index) and _is_count(size)):
        return None
    if not 0 <= index < size:
        return None
    path = _as_path(proof)
    if path is None:
        return None
    fn, sn = index, size - 1
    r = bytes(leaf_hash)
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # On the right edge the tree has no sibling at some levels; skip them.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # A proof that ends before reaching the root is too short for this size.
    if sn != 0:
        return None
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` show ``leaf_hash`` at ``index`` in the tree ``root``?"""
    if not _is_hash(root):
        return False
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    return computed is not None and computed == bytes(root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree ``new_root`` an append-only extension of ``old_root``?

    Equal sizes need an empty proof and equal roots. Old size 0 needs an empty proof and
    ``old_root == EMPTY_ROOT``: every tree extends the empty one.
    """
    if not (_is_count(old_size) and _is_count(new_size) and _is_hash(old_root) and _is_hash(new_root)):
        return False
    path = _as_path(proof)
    if path is None or not 0 <= old_size <= new_size:
        return False
    old_root, new_root = bytes(old_root), bytes(new_root)
    if old_size == 0:
        return not path and old_root == EMPTY_ROOT and (new_size > 0 or new_root == EMPTY_ROOT)
    if old_size == new_size:
        return not path and old_root == new_root
    # A power-of-two old tree is itself a node of the new tree, so the prover leaves it out.
    if old_size & (old_size - 1) == 0:
        path = [old_root, *path]
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
