"""The Temporal data converter of crmhub: pydantic JSON, then every payload encrypted by the vault.

Three parts (DESIGN §5, STYLE habit 9):

* payload converter — temporalio's pydantic converter (``pydantic_data_converter``);
* failure converter — :class:`DefaultFailureConverterWithEncodedAttributes`: failure messages and
  stack traces move into an ``encoded_attributes`` payload, so the codec encrypts them too (the
  history keeps only ``"Encoded failure"`` and the exception *type* name);
* payload codec — :class:`VaultPayloadCodec`: AES-256-GCM through :class:`~governance.vault.Vault`
  under the reserved pseudo-tenant :data:`CODEC_TENANT`.

An encrypted payload looks like::

    metadata: {encoding: "binary/encrypted", encryption-key-id: "<vault key version>"}
    data:     vault ciphertext of the whole original Payload (metadata + data), AAD-bound to
              (CODEC_TENANT, dataset "temporal-payload", object id = namespace, purpose "orchestration")

so a payload copied into another namespace does not decode there. Key rotation is the vault's:
``vault.rotate(CODEC_TENANT)`` — new payloads use the new version (other processes switch within the
vault's ``cache_ttl``), old payloads keep decoding until their version is shredded.

What stays plaintext in history (Temporal needs it, so it must never carry PII): workflow and
activity ids, type names, task queues, search attributes, exception type names.

The vault does database work now and then (first use, a new block of nonce uses every
``reserve_block`` seals, a status re-read every ``cache_ttl`` seconds). The async codec methods
therefore run their whole batch in a worker thread (``asyncio.to_thread``): one thread hop per
call, never a blocked event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Final

from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from governance.vault import Vault, key_version_of
from schemas.errors import IntegrityError

__all__ = [
    "CODEC_DATASET",
    "CODEC_PURPOSE",
    "CODEC_TENANT",
    "ENCODING",
    "KEY_ID_METADATA",
    "VaultPayloadCodec",
    "make_data_converter",
]

CODEC_TENANT: Final = "__temporal_codec__"
"""Vault pseudo-tenant whose data keys encrypt Temporal payloads (never a real tenant id)."""
CODEC_DATASET: Final = "temporal-payload"
CODEC_PURPOSE: Final = "orchestration"
ENCODING: Final = b"binary/encrypted"
"""``metadata["encoding"]`` of a payload this codec encrypted."""
KEY_ID_METADATA: Final = "encryption-key-id"
"""Metadata key holding the vault key version (decimal ASCII) that sealed the payload."""


class VaultPayloadCodec(PayloadCodec):
    """Encrypts every payload for one Temporal namespace with the vault's codec key.

    :meth:`encode` always encrypts; :meth:`decode` decrypts payloads whose encoding is
    :data:`ENCODING` and passes any other payload through unchanged. A payload with our encoding
    that does not decrypt (altered, wrong namespace, unknown or shredded key, key id that does not
    match the ciphertext) raises :class:`~schemas.errors.IntegrityError`; ciphertext is never
    returned as if it were data.

    ``warm=True`` (the default) seals one empty message at construction, so the codec key is
    created/loaded (and a misconfigured key provider fails) at startup rather than on the first
    workflow task. That does database I/O: construct the codec before the event loop runs or via
    ``asyncio.to_thread``.
    """

    def __init__(self, vault: Vault, namespace: str, *, warm: bool = True) -> None:
        if not namespace:
            raise ValueError("a payload codec needs the Temporal namespace it encrypts for")
        self.vault = vault
        self.namespace = namespace
        if warm:
            self._open_one(self._seal_one(Payload()))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt every payload (one thread hop for the whole batch)."""
        if not payloads:
            return []
        return await asyncio.to_thread(self.encode_sync, payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt our payloads, pass others through; :class:`IntegrityError` on a bad one."""
        if not payloads:
            return []
        return await asyncio.to_thread(self.decode_sync, payloads)

    def encode_sync(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Blocking :meth:`encode` (may touch the database; call from a thread)."""
        return [self._seal_one(p) for p in payloads]

    def decode_sync(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Blocking :meth:`decode` (may touch the database; call from a thread)."""
        return [self._open_one(p) if p.metadata.get("encoding") == ENCODING else p for p in payloads]

    def _seal_one(self, payload: Payload) -> Payload:
        sealed = self.vault.seal(
            CODEC_TENANT,
            payload.SerializeToString(),
            dataset=CODEC_DATASET,
            object_id=self.namespace,
            purpose=CODEC_PURPOSE,
        )
        return Payload(
            metadata={
                "encoding": ENCODING,
                KEY_ID_METADATA: str(key_version_of(sealed)).encode("ascii"),
            },
            data=sealed,
        )

    def _open_one(self, payload: Payload) -> Payload:
        sealed = payload.data
        version = key_version_of(sealed)  # IntegrityError if not a vault ciphertext
        key_id = payload.metadata.get(KEY_ID_METADATA)
        if key_id != str(version).encode("ascii"):
            raise IntegrityError(
                f"encrypted payload metadata {KEY_ID_METADATA!r} does not match its ciphertext "
                "(altered payload)"
            )
        plaintext = self.vault.open(
            CODEC_TENANT, sealed, dataset=CODEC_DATASET, object_id=self.namespace, purpose=CODEC_PURPOSE
        )
        try:
            return Payload.FromString(plaintext)
        except DecodeError:  # pragma: no cover - authenticated bytes we serialised ourselves
            raise IntegrityError("decrypted payload is not a Temporal Payload") from None


def make_data_converter(codec: PayloadCodec) -> DataConverter:
    """crmhub's data converter: pydantic JSON payloads, failure messages and stack traces moved
    into encoded attributes, and ``codec`` applied to every payload (including those failures).

    Give the same converter to the :class:`~temporalio.client.Client` and every worker; a client
    without it cannot read results or failures of encrypted workflows.
    """
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
