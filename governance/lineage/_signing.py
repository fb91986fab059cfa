"""Signing keys and checkpoints: who vouches for a ledger's size and root, and how to check it.

:class:`CheckpointSigner` holds the Ed25519 private key (loaded from, or created atomically in, a
mode-0600 PEM file) and signs checkpoints; :func:`verify_checkpoint` checks one against a public
key given in any of the forms :data:`PublicKeyLike` names (:func:`load_public_key`). A key's id
(:func:`key_id_for`) is the first 8 bytes of SHA-256 over its raw bytes, so an auditor can tell
which key signed without trusting the checkpoint's word for it.

Each signer keeps a :class:`~governance.lineage._journal.CheckpointJournal` of what it signed:
beside its key file (``ledger-checkpoints.jsonl``) when loaded from one, in memory otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from governance.lineage._journal import JOURNAL_FILE, CheckpointJournal
from schemas.errors import ConfigError, IntegrityError
from schemas.lineage import Checkpoint
from store.files import create_private, refuse_if_shared

__all__ = [
    "CheckpointSigner",
    "PublicKeyLike",
    "b64",
    "encode_public_key",
    "key_id_for",
    "load_public_key",
    "verify_checkpoint",
]

PublicKeyLike = Ed25519PublicKey | bytes | str
"""An Ed25519 public key: the object, 32 raw bytes, base64 of the raw bytes, or PEM text/bytes."""


def b64(data: bytes) -> str:
    """Standard base64 text (how checkpoints, proofs and reports carry hashes and keys)."""
    return base64.b64encode(data).decode("ascii")


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """Short stable key id: the first 8 bytes (hex) of SHA-256 over the raw public key."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def load_public_key(value: PublicKeyLike) -> Ed25519PublicKey:
    """Accept a key object, raw 32 bytes, base64 raw, or PEM; raise :class:`ConfigError` otherwise."""
    if isinstance(value, Ed25519PublicKey):
        return value
    data = value.encode("ascii") if isinstance(value, str) else value
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError("public key is not an Ed25519 key")
            return key
        raw = data if len(data) == 32 else base64.b64decode(data, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "public key must be Ed25519: PEM, raw 32 bytes, or base64 of the raw bytes"
        ) from exc


def encode_public_key(value: PublicKeyLike) -> str:
    """Base64 of the 32 raw bytes of a public key given in any :data:`PublicKeyLike` form."""
    return b64(_raw(load_public_key(value)))


class CheckpointSigner:
    """Holds the Ed25519 private key that signs checkpoints; the public key goes to auditors."""

    def __init__(self, private_key: Ed25519PrivateKey, *, journal_path: Path | None = None) -> None:
        self._key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.key_id: str = key_id_for(self.public_key)
        self.journal = CheckpointJournal(
            journal_path, self.key_id, lambda cp: verify_checkpoint(cp, self.public_key)
        )
        """Every checkpoint this key signed (a file when ``journal_path`` is given, else memory)."""

    @classmethod
    def generate(cls) -> CheckpointSigner:
        """A signer with a fresh in-memory key (tests, throwaway ledgers)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path | str) -> CheckpointSigner:
        """Load the PKCS#8 PEM key at ``path``, or create it (mode 0600; its directory 0700) if it
        does not exist; the checkpoint journal is ``ledger-checkpoints.jsonl`` beside it.

        Creation is atomic (write a temporary file, then hard-link it into place), so workers
        starting together end up with one key. A key file readable by group or others is refused
        with :class:`ConfigError`.
        """
        path = Path(path)
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = str(path.with_name(f".checkpoint-key-{os.urandom(6).hex()}"))
            fd = create_private(Path(tmp))
            try:
                os.write(fd, pem)
                os.fsync(fd)
                os.close(fd)
                # FileExistsError: another process created it first; use theirs.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
        refuse_if_shared(path, "checkpoint key file")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("checkpoint key file does not hold an Ed25519 private key")
        return cls(key, journal_path=path.parent / JOURNAL_FILE)

    def public_key_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def public_key_b64(self) -> str:
        """Base64 of the 32 raw public key bytes."""
        return encode_public_key(self.public_key)

    def sign_checkpoint(
        self, origin: str, size: int, root: bytes, timestamp: datetime | None = None
    ) -> Checkpoint:
        """Sign the statement "``origin`` had ``size`` entries with root ``root``"."""
        timestamp = datetime.now(UTC) if timestamp is None else timestamp
        signature = self._key.sign(Checkpoint.body(origin, size, root, timestamp))
        return Checkpoint(
            origin=origin,
            size=size,
            root_hash=b64(root),
            timestamp=timestamp,
            key_id=self.key_id,
            signature=b64(signature),
        )


def verify_checkpoint(checkpoint: Checkpoint, public_key: PublicKeyLike) -> None:
    """Raise :class:`IntegrityError` unless ``checkpoint`` is signed by ``public_key``."""
    key = load_public_key(public_key)
    if checkpoint.key_id != key_id_for(key):
        raise IntegrityError(f"checkpoint was signed by key {checkpoint.key_id}, not by {key_id_for(key)}")
    try:
        key.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_body())
    except (InvalidSignature, ValueError) as exc:
        raise IntegrityError(f"checkpoint signature of {checkpoint.origin} is invalid") from exc
