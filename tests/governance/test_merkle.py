"""RFC 9162 Merkle tree: the 196 transparency-dev vectors plus property tests."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.merkle import (
    EMPTY_ROOT,
    MerkleProofError,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.governance.vectors import VECTORS as SHARED_VECTORS

VECTORS = SHARED_VECTORS / "merkle"


def _load(kind: str) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [(str(f.relative_to(VECTORS)), json.loads(f.read_text())) for f in files]


def _b(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")


def test_all_vectors_are_present() -> None:
    assert len(INCLUSION) + len(CONSISTENCY) == 196


@pytest.mark.parametrize(("name", "case"), INCLUSION, ids=[n for n, _ in INCLUSION])
def test_inclusion_vector(name: str, case: dict[str, Any]) -> None:
    proof = [_b(p) for p in case["proof"] or []]
    args = (_b(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b(case["root"]))
    if case["wantErr"]:
        with pytest.raises(MerkleProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize(("name", "case"), CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_consistency_vector(name: str, case: dict[str, Any]) -> None:
    proof = [_b(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], proof, _b(case["root1"]), _b(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(MerkleProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def _reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from the RFC 9162 recursion, as an independent oracle."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


def _tree(n: int) -> tuple[MerkleTree, list[bytes]]:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    return MerkleTree(leaves), leaves


def test_known_roots_from_vectors() -> None:
    # The vectors' tree of 8 leaves is built from the RFC 6962 test inputs.
    inputs = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    tree = MerkleTree(leaf_hash(x) for x in inputs)
    happy = json.loads((VECTORS / "inclusion/1/happy-path.json").read_text())
    assert tree.root() == _b(happy["root"])
    assert tree.inclusion_proof(0) == [_b(p) for p in happy["proof"]]
    cons = json.loads((VECTORS / "consistency/2/happy-path.json").read_text())
    assert tree.consistency_proof(6, 8) == [_b(p) for p in cons["proof"]]


def test_empty_tree_root() -> None:
    assert MerkleTree().root() == EMPTY_ROOT == root_from_leaf_hashes([])


@given(st.integers(min_value=0, max_value=300))
@settings(max_examples=60, deadline=None)
def test_roots_match_rfc_recursion_for_every_prefix(n: int) -> None:
    tree, leaves = _tree(n)
    assert tree.root() == _reference_root(leaves) == root_from_leaf_hashes(leaves)
    for size in {0, n // 2, max(n - 1, 0)}:
        assert tree.root(size) == _reference_root(leaves[:size])


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_every_inclusion_proof_verifies_and_mutations_fail(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=200))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    tree, leaves = _tree(size)
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(leaves[index], index, size, proof, tree.root(size))
    if proof:
        pos = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bit = data.draw(st.integers(min_value=0, max_value=255))
        mutated = list(proof)
        node = bytearray(mutated[pos])
        node[bit // 8] ^= 1 << (bit % 8)
        mutated[pos] = bytes(node)
        with pytest.raises(MerkleProofError):
            verify_inclusion(leaves[index], index, size, mutated, tree.root(size))
        with pytest.raises(MerkleProofError):
            verify_inclusion(leaves[index], index, size, proof[:-1], tree.root(size))
    with pytest.raises(MerkleProofError):
        verify_inclusion(leaves[index], index, size, [*proof, leaves[0]], tree.root(size))
    other = (index + 1) % size
    if other != index:
        with pytest.raises(MerkleProofError):
            verify_inclusion(leaves[index], other, size, proof, tree.root(size))


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_every_consistency_proof_verifies_and_mutations_fail(data: st.DataObject) -> None:
    size2 = data.draw(st.integers(min_value=1, max_value=200))
    size1 = data.draw(st.integers(min_value=1, max_value=size2))
    tree, _ = _tree(size2)
    proof = tree.consistency_proof(size1, size2)
    root1, root2 = tree.root(size1), tree.root(size2)
    verify_consistency(size1, size2, proof, root1, root2)
    if size1 == size2:
        assert proof == []
        return
    pos = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    mutated = list(proof)
    mutated[pos] = hashlib.sha256(mutated[pos]).digest()
    with pytest.raises(MerkleProofError):
        verify_consistency(size1, size2, mutated, root1, root2)
    with pytest.raises(MerkleProofError):
        verify_consistency(size1, size2, proof, root2, root1)
    with pytest.raises(MerkleProofError):
        verify_consistency(size1, size2, [*proof, root1], root1, root2)
    wrong_size1 = size1 + 1 if size1 + 1 < size2 else size1 - 1
    if wrong_size1 >= 1:
        with pytest.raises(MerkleProofError):
            verify_consistency(wrong_size1, size2, proof, root1, root2)


def test_large_tree_is_fast_and_proofs_work_for_any_past_size() -> None:
    tree, leaves = _tree(100_000)
    root = tree.root()
    assert root == root_from_leaf_hashes(leaves)
    for index, size in [(0, 100_000), (99_999, 100_000), (12_345, 54_321), (65_535, 65_536)]:
        verify_inclusion(leaves[index], index, size, tree.inclusion_proof(index, size), tree.root(size))
    verify_consistency(54_321, 100_000, tree.consistency_proof(54_321), tree.root(54_321), root)


def test_append_rejects_non_hashes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree().append(b"short")


@given(st.integers(min_value=0, max_value=70), st.integers(min_value=0, max_value=70))
@settings(max_examples=60, deadline=None)
def test_bulk_build_then_append_equals_appending(n: int, more: int) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n + more)]
    bulk = MerkleTree.from_leaf_hashes(leaves[:n])
    bulk.extend(leaves[n:])
    one_by_one = MerkleTree(leaves)
    for size in range(n + more + 1):
        assert bulk.root(size) == one_by_one.root(size) == _reference_root(leaves[:size])
