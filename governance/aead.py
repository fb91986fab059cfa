"""AES-256-GCM as crmhub uses it (the vault's cipher): 32-byte keys, 12-byte nonces, 16-byte tags,
every failure to verify an :class:`~schemas.errors.IntegrityError`. Checked against the Wycheproof
vectors (tests/governance/test_wycheproof.py)."""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.errors import ConfigError, IntegrityError

__all__ = ["AesGcm"]


class AesGcm:
    """AES-256-GCM restricted to what crmhub uses: 32-byte keys, 12-byte nonces, 16-byte tags.

    Any other key size is a :class:`ConfigError`; another nonce size is refused (``ValueError``
    on encrypt, :class:`IntegrityError` on decrypt, since ciphertexts are untrusted input).
    """

    KEY_LEN: Final = 32
    NONCE_LEN: Final = 12
    TAG_LEN: Final = 16
    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != self.KEY_LEN:
            raise ConfigError(f"AES-256-GCM needs a 32-byte key, got {len(key)} bytes")
        self._aead = AESGCM(key)

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """``ciphertext || tag`` of ``plaintext``; the nonce must be 12 bytes and never reused."""
        if len(nonce) != self.NONCE_LEN:
            raise ValueError("AES-GCM nonce must be 12 bytes")
        return self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes | memoryview, data: bytes | memoryview, aad: bytes) -> bytes:
        """Plaintext of ``ciphertext || tag``; :class:`IntegrityError` if anything fails to verify."""
        if len(nonce) != self.NONCE_LEN:
            raise IntegrityError("AES-GCM nonce must be 12 bytes")
        if len(data) < self.TAG_LEN:
            raise IntegrityError("ciphertext is shorter than the GCM tag")
        try:
            return self._aead.decrypt(nonce, data, aad)
        except InvalidTag:
            raise IntegrityError(
                "ciphertext failed to verify (altered, or opened in the wrong context)"
            ) from None
