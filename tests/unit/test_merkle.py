"""RFC 6962 / RFC 9162 Merkle tree: published vectors, an independent naive reference, proofs
read from the node store in one call, and verifiers that refuse (never raise on) bad input.

Published data: transparency-dev/merkle (the successor of google/trillian's merkle package)
``testonly/constants.go`` (leaves, roots, every perfect-subtree hash, compact frontiers),
``proof/verify_test.go`` (inclusion and consistency proofs and the corruption probes below)
and ``proof/proof_test.go`` (which stored nodes each proof is made of).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from gateway.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryNodeStore,
    MissingNodeError,
    NodeId,
    consistency_node_ids,
    consistency_proof,
    inclusion_node_ids,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)


def h(hex_digest: str) -> bytes:
    return bytes.fromhex(hex_digest)


# --- published vectors (transparency-dev/merkle testonly/constants.go) ----------------------

LEAF_INPUTS = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]

# Indexed by tree size, 0..8.
ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# Every perfect subtree of the 8-leaf tree, by (level, index).
NODE_HASHES: dict[NodeId, bytes] = {
    (0, 0): h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    (0, 1): h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
    (0, 2): h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
    (0, 3): h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
    (0, 4): h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    (0, 5): h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
    (0, 6): h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
    (0, 7): h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    (1, 0): h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    (1, 1): h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
    (1, 2): h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
    (1, 3): h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    (2, 0): h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    (2, 1): h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    (3, 0): h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
}

# CompactTrees(): the frontier of each tree size 0..8, largest subtree first.
COMPACT_FRONTIERS: list[list[NodeId]] = [
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]

# proof/verify_test.go numbers leaves from 1 there; these are 0-based indexes.
INCLUSION_VECTORS: list[tuple[int, int, list[bytes]]] = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

CONSISTENCY_VECTORS: list[tuple[int, int, list[bytes]]] = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

# proof/proof_test.go: the stored nodes each proof is built from. That implementation orders
# them differently (it rehashes the ragged edge in place), so the sets are compared.
INCLUSION_NODE_SETS: list[tuple[int, int, set[NodeId]]] = [
    (0, 2, {(0, 1)}),
    (1, 2, {(0, 0)}),
    (1, 3, {(0, 0), (0, 2)}),
    (0, 7, {(0, 1), (1, 1), (0, 6), (1, 2)}),
    (2, 7, {(0, 3), (1, 0), (0, 6), (1, 2)}),
    (4, 7, {(0, 5), (0, 6), (2, 0)}),
    (6, 7, {(1, 2), (2, 0)}),
    (2, 4, {(0, 3), (1, 0)}),
    (3, 5, {(0, 2), (1, 0), (0, 4)}),
    (3, 6, {(0, 2), (1, 0), (1, 2)}),
    (4, 6, {(0, 5), (2, 0)}),
    (10, 15, {(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)}),
    (24, 31, {(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)}),
    (81, 95, {(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)}),
]

CONSISTENCY_NODE_SETS: list[tuple[int, int, set[NodeId]]] = [
    (1, 2, {(0, 1)}),
    (1, 4, {(0, 1), (1, 1)}),
    (1, 6, {(0, 1), (1, 1), (1, 2)}),
    (2, 3, {(0, 2)}),
    (2, 8, {(1, 1), (2, 1)}),
    (3, 7, {(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)}),
    (4, 7, {(0, 6), (1, 2)}),
    (5, 7, {(0, 4), (0, 5), (0, 6), (2, 0)}),
    (6, 7, {(1, 2), (0, 6), (2, 0)}),
    (7, 8, {(0, 6), (0, 7), (1, 2), (2, 0)}),
    (2, 4, {(1, 1)}),
    (3, 5, {(0, 2), (0, 3), (1, 0), (0, 4)}),
    (3, 6, {(0, 2), (0, 3), (1, 0), (1, 2)}),
    (4, 6, {(1, 2)}),
    (1, 7, {(0, 1), (1, 1), (0, 6), (1, 2)}),
    (10, 15, {(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)}),
    (24, 31, {(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)}),
    (81, 95, {(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)}),
]

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


# --- naive reference: RFC 6962 section 2.1 transcribed, sharing no code with the module -----


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@functools.cache
def ref_mth(entries: tuple[bytes, ...]) -> bytes:
    n = len(entries)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + entries[0])
    k = _k(n)
    return _sha256(b"\x01" + ref_mth(entries[:k]) + ref_mth(entries[k:]))


def ref_path(m: int, entries: tuple[bytes, ...]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, entries[:k]), ref_mth(entries[k:])]
    return [*ref_path(m - k, entries[k:]), ref_mth(entries[:k])]


def ref_subproof(m: int, entries: tuple[bytes, ...], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [ref_mth(entries)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, entries[:k], b), ref_mth(entries[k:])]
    return [*ref_subproof(m - k, entries[k:], False), ref_mth(entries[:k])]


def ref_proof(m: int, entries: tuple[bytes, ...]) -> list[bytes]:
    return ref_subproof(m, entries, True)


# --- helpers ----------------------------------------------------------------------------------


class RecordingReader:
    """Wraps a store and records each get_nodes call, to count round trips to the database."""

    def __init__(self, inner: MemoryNodeStore) -> None:
        self.inner = inner
        self.calls: list[list[NodeId]] = []

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        self.calls.append(list(ids))
        return self.inner.get_nodes(ids)


def build_store(entries: Sequence[bytes]) -> tuple[MemoryNodeStore, CompactRange]:
    store = MemoryNodeStore()
    tree = CompactRange()
    for entry in entries:
        store.put(tree.append(leaf_hash(entry)))
    return store, tree


def node_end(node_id: NodeId) -> int:
    level, index = node_id
    return (index + 1) << level


MAX_SIZE = 64
ENTRIES = tuple(b"mrx exchange %d" % i for i in range(MAX_SIZE))
SIZES = range(1, MAX_SIZE + 1)


@pytest.fixture(scope="module")
def store() -> MemoryNodeStore:
    return build_store(ENTRIES)[0]


def flip(value: bytes, mask: int) -> bytes:
    return bytes([value[0] ^ mask]) + value[1:]


def inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """transparency-dev's corruptInclusionProof: each must fail verification."""
    yield "index - 1", (leaf, index - 1, size, proof, root)
    yield "index + 1", (leaf, index + 1, size, proof, root)
    yield "index ^ 2", (leaf, index ^ 2, size, proof, root)
    yield "size * 2", (leaf, index, size * 2, proof, root)
    yield "size // 2", (leaf, index, size // 2, proof, root)
    yield "wrong leaf", (leaf_hash(b"not this leaf"), index, size, proof, root)
    yield "empty root", (leaf, index, size, proof, EMPTY_ROOT)
    yield "random root", (leaf, index, size, proof, SOME_HASH)
    yield "trailing garbage", (leaf, index, size, [*proof, b""], root)
    yield "trailing root", (leaf, index, size, [*proof, root], root)
    yield "preceding garbage", (leaf, index, size, [b"", *proof], root)
    yield "preceding root", (leaf, index, size, [root, *proof], root)
    for i in range(len(proof)):
        tampered = list(proof)
        tampered[i] = flip(tampered[i], 8)
        yield f"modified proof[{i}]", (leaf, index, size, tampered, root)
    if proof:
        yield "removed component", (leaf, index, size, proof[:-1], root)
    if len(proof) > 1:
        yield "inserted component", (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root)


def consistency_probes(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """transparency-dev's corruptConsistencyProof: each must fail verification."""
    yield "old - 1", (old - 1, new, old_root, new_root, proof)
    yield "old + 1", (old + 1, new, old_root, new_root, proof)
    yield "old ^ 2", (old ^ 2, new, old_root, new_root, proof)
    yield "new * 2", (old, new * 2, old_root, new_root, proof)
    yield "new // 2", (old, new // 2, old_root, new_root, proof)
    yield "wrong old root", (old, new, SOME_HASH, new_root, proof)
    yield "wrong new root", (old, new, old_root, SOME_HASH, proof)
    yield "swapped roots", (old, new, new_root, old_root, proof)
    yield "empty proof", (old, new, old_root, new_root, [])
    yield "trailing garbage", (old, new, old_root, new_root, [*proof, b""])
    yield "trailing old root", (old, new, old_root, new_root, [*proof, old_root])
    yield "trailing new root", (old, new, old_root, new_root, [*proof, new_root])
    yield "preceding garbage", (old, new, old_root, new_root, [b"", *proof])
    yield "preceding old root", (old, new, old_root, new_root, [old_root, *proof])
    yield "preceding new root", (old, new, old_root, new_root, [new_root, *proof])
    yield "preceding proof[0]", (old, new, old_root, new_root, [proof[0], *proof])
    yield "truncated", (old, new, old_root, new_root, proof[:-1])
    for i in range(len(proof)):
        tampered = list(proof)
        tampered[i] = flip(tampered[i], 16)
        yield f"modified proof[{i}]", (old, new, old_root, new_root, tampered)


# --- published vectors -------------------------------------------------------------------------


def test_hash_primitives_match_published_values() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    assert leaf_hash(b"") == ROOTS[1] == NODE_HASHES[(0, 0)]
    assert node_hash(NODE_HASHES[(0, 0)], NODE_HASHES[(0, 1)]) == NODE_HASHES[(1, 0)]


def test_roots_match_published_values() -> None:
    store, tree = build_store([])[0], CompactRange()
    assert tree.root() == ROOTS[0]
    assert root_hash(0, store) == ROOTS[0]
    for size, entry in enumerate(LEAF_INPUTS, start=1):
        store.put(tree.append(leaf_hash(entry)))
        assert tree.root() == ROOTS[size], size
        assert root_hash(size, store) == ROOTS[size], size
        assert ref_mth(tuple(LEAF_INPUTS[:size])) == ROOTS[size], size


def test_compact_range_emits_the_published_perfect_subtrees() -> None:
    tree = CompactRange()
    emitted: dict[NodeId, bytes] = {}
    for size, entry in enumerate(LEAF_INPUTS, start=1):
        for node_id, value in tree.append(leaf_hash(entry)):
            assert node_id not in emitted
            emitted[node_id] = value
        assert tree.frontier == [(node_id, NODE_HASHES[node_id]) for node_id in COMPACT_FRONTIERS[size]]
        assert CompactRange.ids_for_size(size) == COMPACT_FRONTIERS[size]
    assert emitted == NODE_HASHES


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION_VECTORS)
def test_inclusion_proofs_match_published_values(index: int, size: int, expected: list[bytes]) -> None:
    store = build_store(LEAF_INPUTS)[0]
    assert inclusion_proof(index, size, store) == expected
    assert ref_path(index, tuple(LEAF_INPUTS[:size])) == expected
    leaf = leaf_hash(LEAF_INPUTS[index])
    assert root_from_inclusion_proof(leaf, index, size, expected) == ROOTS[size]
    assert verify_inclusion(leaf, index, size, expected, ROOTS[size])
    for name, args in inclusion_probes(index, size, expected, ROOTS[size], leaf):
        assert not verify_inclusion(*args), name


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY_VECTORS)
def test_consistency_proofs_match_published_values(old: int, new: int, expected: list[bytes]) -> None:
    store = build_store(LEAF_INPUTS)[0]
    assert consistency_proof(old, new, store) == expected
    assert ref_proof(old, tuple(LEAF_INPUTS[:new])) == expected
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], expected)
    if expected:
        for name, args in consistency_probes(old, new, ROOTS[old], ROOTS[new], expected):
            assert not verify_consistency(*args), name


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION_NODE_SETS)
def test_inclusion_reads_the_published_node_set(index: int, size: int, expected: set[NodeId]) -> None:
    ids = inclusion_node_ids(index, size)
    assert len(ids) == len(expected)
    assert set(ids) == expected


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY_NODE_SETS)
def test_consistency_reads_the_published_node_set(old: int, new: int, expected: set[NodeId]) -> None:
    ids = consistency_node_ids(old, new)
    assert len(ids) == len(expected)
    assert set(ids) == expected


# --- every size up to 64 against the naive reference ----------------------------------------


def test_roots_match_reference(store: MemoryNodeStore) -> None:
    for size in range(MAX_SIZE + 1):
        reader = RecordingReader(store)
        assert root_hash(size, reader) == ref_mth(ENTRIES[:size]), size
        assert len(reader.calls) == (1 if size else 0)


def test_inclusion_proofs_match_reference_and_verify(store: MemoryNodeStore) -> None:
    for size in SIZES:
        root = ref_mth(ENTRIES[:size])
        for index in range(size):
            reader = RecordingReader(store)
            proof = inclusion_proof(index, size, reader)
            assert proof == ref_path(index, ENTRIES[:size]), (index, size)
            # One round trip, or none when there is nothing to read (a one-leaf tree).
            assert len(reader.calls) == (1 if proof else 0)
            requested = reader.calls[0] if reader.calls else []
            assert requested == inclusion_node_ids(index, size)
            # A proof for an old size must only need nodes that were complete back then.
            assert all(node_end(node_id) <= size for node_id in requested), (index, size)
            leaf = leaf_hash(ENTRIES[index])
            assert root_from_inclusion_proof(leaf, index, size, proof) == root
            assert verify_inclusion(leaf, index, size, proof, root)
            assert verify_inclusion(loose(bytearray(leaf)), index, size, tuple(proof), loose(bytearray(root)))
            for name, args in inclusion_probes(index, size, proof, root, leaf):
                assert not verify_inclusion(*args), (name, index, size)


def test_consistency_proofs_match_reference_and_verify(store: MemoryNodeStore) -> None:
    for new in SIZES:
        new_root = ref_mth(ENTRIES[:new])
        for old in range(1, new + 1):
            old_root = ref_mth(ENTRIES[:old])
            reader = RecordingReader(store)
            proof = consistency_proof(old, new, reader)
            assert proof == ref_proof(old, ENTRIES[:new]), (old, new)
            assert len(reader.calls) == (1 if proof else 0)
            requested = reader.calls[0] if reader.calls else []
            assert requested == consistency_node_ids(old, new)
            assert all(node_end(node_id) <= new for node_id in requested), (old, new)
            assert verify_consistency(old, new, old_root, new_root, proof)
            if old == new:
                assert proof == []
                assert not verify_consistency(old, new, old_root, new_root, [old_root])
                continue
            for name, args in consistency_probes(old, new, old_root, new_root, proof):
                assert not verify_consistency(*args), (name, old, new)
            # The same proof must not vouch for a tree whose history differs from ours.
            forked_root = ref_mth((*ENTRIES[: new - 1], b"forked"))
            assert not verify_consistency(old, new, old_root, forked_root, proof), (old, new)


def test_consistency_from_the_empty_tree() -> None:
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, ROOTS[1], [])
    assert not verify_consistency(0, 5, ROOTS[1], ROOTS[5], [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [ROOTS[5]])


# --- compact range ----------------------------------------------------------------------------


def test_compact_range_emits_exactly_the_perfect_subtrees() -> None:
    tree = CompactRange()
    emitted: dict[NodeId, bytes] = {}
    for size in SIZES:
        new_nodes = tree.append(leaf_hash(ENTRIES[size - 1]))
        assert new_nodes[0] == ((0, size - 1), leaf_hash(ENTRIES[size - 1]))
        for node_id, value in new_nodes:
            assert node_id not in emitted, node_id
            assert node_end(node_id) == size, node_id  # completed by this very leaf
            level, index = node_id
            assert value == ref_mth(ENTRIES[index << level : (index + 1) << level]), node_id
            emitted[node_id] = value
        assert tree.size == size
        assert len(emitted) == 2 * size - size.bit_count()
        assert tree.root() == ref_mth(ENTRIES[:size])
        assert [node_id for node_id, _ in tree.frontier] == CompactRange.ids_for_size(size)


def test_compact_range_from_store_round_trips(store: MemoryNodeStore) -> None:
    for size in range(MAX_SIZE + 1):
        reader = RecordingReader(store)
        loaded = CompactRange.from_store(size, reader)
        assert len(reader.calls) == (1 if size else 0)
        assert loaded.size == size
        assert loaded.root() == ref_mth(ENTRIES[:size])
        # Appending to a reloaded frontier must reproduce the nodes a fresh build stored.
        if size < MAX_SIZE:
            for node_id, value in loaded.append(leaf_hash(ENTRIES[size])):
                assert store.get_nodes([node_id]) == {node_id: value}
            assert loaded.root() == ref_mth(ENTRIES[: size + 1])


def test_compact_range_refuses_inconsistent_state() -> None:
    with pytest.raises(ValueError, match="3 has 2 frontier nodes, got 1"):
        CompactRange(3, [EMPTY_ROOT])
    with pytest.raises(ValueError, match="-1"):
        CompactRange(-1)
    with pytest.raises(ValueError, match="leaf hash is 5 bytes"):
        CompactRange().append(b"short")
    with pytest.raises(MissingNodeError):
        CompactRange.from_store(3, MemoryNodeStore())


# --- the store is read once, for a handful of nodes ----------------------------------------


class UniformTreeReader:
    """Every leaf holds the same entry, so a perfect subtree's hash depends only on its level:
    a consistent tree of any size without building it."""

    def __init__(self) -> None:
        self.level_hashes = [leaf_hash(b"same entry")]
        for _ in range(64):
            self.level_hashes.append(node_hash(self.level_hashes[-1], self.level_hashes[-1]))
        self.calls: list[list[NodeId]] = []

    def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
        self.calls.append(list(ids))
        return {node_id: self.level_hashes[node_id[0]] for node_id in ids}


BIG = 1_000_003


@pytest.mark.parametrize("index", [0, 1, 2, 524_287, 524_288, 999_999, BIG - 2, BIG - 1])
def test_inclusion_proof_reads_once_and_little(index: int) -> None:
    reader = UniformTreeReader()
    root = root_hash(BIG, reader)
    reader.calls.clear()
    proof = inclusion_proof(index, BIG, reader)
    assert len(reader.calls) == 1
    (requested,) = reader.calls
    assert len(requested) == len(set(requested))
    assert len(requested) <= 2 * BIG.bit_length() < 200
    assert verify_inclusion(reader.level_hashes[0], index, BIG, proof, root)


@pytest.mark.parametrize("old", [1, 2, 3, 524_287, 524_288, 524_289, 999_999, BIG - 1, BIG])
def test_consistency_proof_reads_once_and_little(old: int) -> None:
    reader = UniformTreeReader()
    old_root, new_root = root_hash(old, reader), root_hash(BIG, reader)
    reader.calls.clear()
    proof = consistency_proof(old, BIG, reader)
    assert len(reader.calls) == (1 if old < BIG else 0)
    requested = reader.calls[0] if reader.calls else []
    assert len(requested) == len(set(requested))
    assert len(requested) <= 2 * BIG.bit_length() < 200
    assert verify_consistency(old, BIG, old_root, new_root, proof)


def test_node_reads_stay_logarithmic_for_every_small_tree() -> None:
    for new in range(1, 300):
        bound = 2 * new.bit_length()
        for other in range(1, new + 1):
            assert len(inclusion_node_ids(other - 1, new)) <= bound, (other - 1, new)
            assert len(consistency_node_ids(other, new)) <= bound, (other, new)


# --- errors --------------------------------------------------------------------------------------


def test_proof_arguments_are_checked() -> None:
    store = build_store(LEAF_INPUTS)[0]
    with pytest.raises(ValueError, match="leaf index 8 is not in a tree of size 8"):
        inclusion_proof(8, 8, store)
    with pytest.raises(ValueError, match="leaf index -1 is not in a tree of size 8"):
        inclusion_proof(-1, 8, store)
    with pytest.raises(ValueError, match="got size 0"):
        inclusion_proof(0, 0, store)
    with pytest.raises(ValueError, match="got 0 and 4"):
        consistency_proof(0, 4, store)
    with pytest.raises(ValueError, match="got 5 and 4"):
        consistency_proof(5, 4, store)
    with pytest.raises(ValueError, match="-1"):
        root_hash(-1, store)
    with pytest.raises(ValueError, match="-2"):
        CompactRange.ids_for_size(-2)


def test_missing_nodes_are_reported_by_id() -> None:
    store, _ = build_store(LEAF_INPUTS[:5])
    with pytest.raises(MissingNodeError) as caught:
        inclusion_proof(0, 8, store)
    assert isinstance(caught.value, KeyError)
    assert caught.value.missing == ((2, 1),)
    assert "(level=2, index=1)" in str(caught.value)
    with pytest.raises(KeyError):
        root_hash(7, store)
    with pytest.raises(MissingNodeError, match="lacks 2 node"):
        consistency_proof(4, 7, store)


def test_damaged_stored_nodes_are_refused() -> None:
    class Damaged:
        def get_nodes(self, ids: Sequence[NodeId]) -> Mapping[NodeId, bytes]:
            return {node_id: b"truncated" for node_id in ids}

    with pytest.raises(ValueError, match=r"stored node \(1, 0\) is 9 bytes"):
        root_hash(2, Damaged())


def test_memory_store_is_append_only() -> None:
    store = MemoryNodeStore([((0, 0), NODE_HASHES[(0, 0)])])
    store.put([((0, 0), NODE_HASHES[(0, 0)])])
    assert len(store) == 1
    with pytest.raises(ValueError, match="different hash"):
        store.put([((0, 0), NODE_HASHES[(0, 1)])])
    with pytest.raises(ValueError, match="3 bytes"):
        store.put([((0, 1), b"abc")])


def loose(value: object) -> Any:
    """Lets a test hand the verifiers what their annotations exclude, as a hostile bundle would."""
    return value


MALFORMED: list[Any] = [None, 1, "", "ab", b"", b"\x00" * 31, b"\x00" * 33, [], [b""], object()]


def test_verifiers_never_raise_on_malformed_input() -> None:
    leaf, root = NODE_HASHES[(0, 5)], ROOTS[8]
    proof = INCLUSION_VECTORS[2][2]
    assert verify_inclusion(leaf, 5, 8, proof, root)
    for bad in MALFORMED:
        assert not verify_inclusion(bad, 5, 8, proof, root)
        assert not verify_inclusion(leaf, 5, 8, proof, bad)
        assert not verify_inclusion(leaf, 5, 8, bad, root)
        assert not verify_inclusion(leaf, bad, 8, proof, root)
        assert not verify_inclusion(leaf, 5, bad, proof, root)
        assert root_from_inclusion_proof(leaf, 5, 8, bad) is None
    for index, size in [(-1, 8), (8, 8), (0, 0), (0, -1), (True, 8), (5, 8.0), (2**70, 2**71)]:
        assert not verify_inclusion(leaf, loose(index), loose(size), proof, root)
    assert not verify_inclusion(leaf, 5, 8, [*proof[:2], loose(proof[2].hex())], root)
    assert not verify_inclusion(leaf, 5, 8, loose(b"".join(proof)), root)

    old_root, new_root = ROOTS[6], ROOTS[8]
    proof = CONSISTENCY_VECTORS[2][2]
    assert verify_consistency(6, 8, old_root, new_root, proof)
    for bad in MALFORMED:
        assert not verify_consistency(6, 8, bad, new_root, proof)
        assert not verify_consistency(6, 8, old_root, bad, proof)
        if bad != []:
            assert not verify_consistency(6, 8, old_root, new_root, bad)
        assert not verify_consistency(bad, 8, old_root, new_root, proof)
        assert not verify_consistency(6, bad, old_root, new_root, proof)
    for old, new in [(-1, 8), (9, 8), (6, -8), (True, 8), (6, 8.0), (2**70, 2**71), (6, 2**80)]:
        assert not verify_consistency(loose(old), loose(new), old_root, new_root, proof)
    assert not verify_consistency(6, 8, old_root, new_root, loose(b"".join(proof)))
