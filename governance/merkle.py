"""RFC 9162 Merkle tree over SHA-256 (leaf prefix 0x00, node prefix 0x01).

:class:`MerkleTree` keeps every leaf hash and, per level, the hash of every *complete* aligned
subtree (a perfect subtree never changes once full). Appending is amortized O(1) (worst case
O(log n)); the root of any prefix size, inclusion and consistency proofs cost O(log n) hash
lookups plus at most O(log n) hashings — no recomputation over the leaves. Memory: about two
32-byte hashes per leaf.

The verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 and raise :class:`MerkleProofError` on any
failure. Beyond the RFC text they reject hashes that are not 32 bytes, and consistency proofs
from an empty tree (``size1 = 0`` proves nothing). When ``size1 == size2`` the proof must be empty
and the two roots must be identical, as in the reference implementation (transparency-dev/merkle).
The two verification loops look alike but are kept apart, each written as its RFC section writes
it, so a reader can check them against the text line by line (one shared walk would hide which
hash each step combines).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

from schemas.errors import IntegrityError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleProofError",
    "MerkleTree",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
_LEAF: Final = b"\x00"
_NODE: Final = b"\x01"
_sha256 = hashlib.sha256


class MerkleProofError(IntegrityError):
    """A Merkle inclusion or consistency proof did not verify."""


def leaf_hash(data: bytes) -> bytes:
    """MTH of a single entry: SHA-256(0x00 || data)."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of the tree whose leaves hash to ``leaf_hashes`` (``EMPTY_ROOT`` for none).

    Pairs level by level, carrying an odd last node up unchanged: this yields exactly the RFC 9162
    split (left subtree = largest power of two) and runs in C-speed list slicing per level.
    """
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    sha = _sha256
    node = _NODE
    while len(level) > 1:
        nxt = [sha(node + a + b).digest() for a, b in zip(level[0::2], level[1::2], strict=False)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class MerkleTree:
    """An append-only RFC 9162 tree with O(log n) roots and proofs for any past size."""

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        # _levels[k][j] = hash of the perfect subtree over leaves [j*2^k, (j+1)*2^k).
        self._levels: list[list[bytes]] = [[]]
        self.extend(leaf_hashes)

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Sequence[bytes]) -> MerkleTree:
        """Build a tree over many leaf hashes at once (level by level; faster than appending)."""
        if any(len(leaf) != HASH_SIZE for leaf in leaf_hashes):
            raise ValueError("leaf hashes must be 32 bytes")
        tree = cls()
        level = list(leaf_hashes)
        tree._levels = [level]
        sha, node = _sha256, _NODE
        while len(level) > 1:
            level = [sha(node + a + b).digest() for a, b in zip(level[0::2], level[1::2], strict=False)]
            tree._levels.append(level)
        return tree

    def __len__(self) -> int:
        return len(self._levels[0])

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf: bytes) -> int:
        """Add one leaf *hash*; returns its index."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("leaf hash must be 32 bytes")
        levels = self._levels
        levels[0].append(leaf)
        index = len(levels[0]) - 1
        k = 0
        # Each time a level gains its right child, the parent perfect subtree is complete.
        while len(levels[k]) % 2 == 0:
            if len(levels) == k + 1:
                levels.append([])
            row = levels[k]
            levels[k + 1].append(node_hash(row[-2], row[-1]))
            k += 1
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for leaf in leaf_hashes:
            self.append(leaf)

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def leaves(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        return self._levels[0][start:stop]

    def _subtree(self, start: int, n: int) -> bytes:
        """MTH(D[start:start+n]) for a range the RFC recursion produces (start aligned to k)."""
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            return self._levels[level][start >> level]
        k = _largest_power_of_two_below(n)
        return node_hash(self._subtree(start, k), self._subtree(start + k, n - k))

    def root(self, size: int | None = None) -> bytes:
        """Root of the first ``size`` leaves (default: all)."""
        size = self.size if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size])."""
        size = self.size if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"index {index} is outside a tree of size {size}")
        proof: list[bytes] = []
        start, n, m = 0, size, index
        # Walk down from the root, collecting the sibling of each step; the RFC appends them
        # bottom-up, so reverse at the end.
        while n > 1:
            k = _largest_power_of_two_below(n)
            if m < k:
                proof.append(self._subtree(start + k, n - k))
                n = k
            else:
                proof.append(self._subtree(start, k))
                start, n, m = start + k, n - k, m - k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(size1, D[0:size2]); empty when the sizes are equal."""
        size2 = self.size if size2 is None else size2
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise ValueError(f"consistency needs 0 < size1 <= size2 (got {size1}, {size2})")
        proof: list[bytes] = []
        start, n, m, complete = 0, size2, size1, True
        while m != n:
            k = _largest_power_of_two_below(n)
            if m <= k:
                proof.append(self._subtree(start + k, n - k))
                n = k
            else:
                proof.append(self._subtree(start, k))
                start, n, m, complete = start + k, n - k, m - k, False
        if not complete:
            proof.append(self._subtree(start, n))
        proof.reverse()
        return proof

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} is outside 0..{self.size}")


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise MerkleProofError(f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` (a leaf hash) is entry ``index`` of the tree of ``size`` with ``root``.

    Raises :class:`MerkleProofError` naming the failure; returns ``None`` on success.
    """
    if not 0 <= index < size:
        raise MerkleProofError(f"index {index} is outside a tree of size {size}")
    _check_hash("leaf hash", leaf)
    _check_hash("root", root)
    for node in proof:
        _check_hash("proof node", node)
    fn, sn, r = index, size - 1, leaf
    for p in proof:  # RFC 9162 §2.1.3.2, step 4, as written there
        if sn == 0:
            raise MerkleProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("inclusion proof is shorter than the tree is deep")
    if r != root:
        raise MerkleProofError("inclusion proof does not lead to the root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree of ``size1`` with ``root1`` is a prefix of the one of ``size2``/``root2``.

    Raises :class:`MerkleProofError` naming the failure; returns ``None`` on success.
    """
    if size1 < 0 or size2 < size1:
        raise MerkleProofError(f"size2 ({size2}) is smaller than size1 ({size1})")
    if size1 == 0:
        raise MerkleProofError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise MerkleProofError("sizes are equal but the proof is not empty")
        if root1 != root2:
            raise MerkleProofError("sizes are equal but the roots differ")
        return
    if not proof:
        raise MerkleProofError("empty consistency proof")
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    for node in proof:
        _check_hash("proof node", node)
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:  # RFC 9162 §2.1.4.2, step 6, as written there
        if sn == 0:
            raise MerkleProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("consistency proof is shorter than needed")
    if fr != root1:
        raise MerkleProofError("consistency proof does not reproduce root1")
    if sr != root2:
        raise MerkleProofError("consistency proof does not reproduce root2")
