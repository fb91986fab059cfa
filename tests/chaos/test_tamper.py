"""Tamper (issue 7, scenario 8), the parts not already covered elsewhere:

* every byte of a tenant's wrapped data key flipped, one at a time → the vault refuses the key
  (100 % detected, nothing opens);
* consistency proofs between **all pairs** of published (signed) checkpoints of a growing ledger
  verify, every checkpoint signature verifies, and a proof against a forged earlier root fails.

Mutating, deleting or reordering any one of 100,000 ledger events is
tests/governance/test_lineage.py (``test_tampering_at_any_index_is_localized``,
``test_tampering_is_localized_to_first_bad_index``: the first bad index is named); every bit flip of a
sealed blob is tests/governance/test_vault.py (``test_every_single_bit_flip_fails``).

Reduced (CI): 20 checkpoints (190 pairs); full (``CRMHUB_CHAOS_FULL=1``): 60 (1,770 pairs).
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
from sqlalchemy import select

from governance.keys import LocalKeyringProvider
from governance.lineage import CheckpointSigner, Ledger, verify_checkpoint
from governance.merkle import MerkleProofError, verify_consistency
from governance.vault import Vault
from schemas.errors import IntegrityError
from store.keys import tenant_keys
from tests.chaos.support import size
from tests.governance.test_lineage import make_event

pytestmark = [pytest.mark.chaos]

CHECKPOINTS = size(20, 60)
CTX = {"dataset": "salesforce.Contact", "object_id": "003A000001", "purpose": "crm-sync"}


def test_every_byte_of_a_wrapped_key_flipped_is_detected(db_engine, tmp_path: Path) -> None:
    provider = LocalKeyringProvider(tmp_path / "keyring.json")
    sealed = Vault(db_engine, provider).seal("acme", b"alice@example.com", **CTX)
    with db_engine.connect() as conn:
        (wrapped,) = conn.execute(
            select(tenant_keys.c.wrapped_key).where(tenant_keys.c.tenant == "acme")
        ).one()
    detected = 0
    for i in range(len(wrapped)):
        bad = bytearray(wrapped)
        bad[i] ^= 0x01 << (i % 8)
        with db_engine.begin() as conn:
            conn.execute(
                tenant_keys.update().where(tenant_keys.c.tenant == "acme").values(wrapped_key=bytes(bad))
            )
        with pytest.raises(IntegrityError):
            Vault(db_engine, provider).open("acme", sealed, **CTX)
        detected += 1
    assert detected == len(wrapped) > 0
    with db_engine.begin() as conn:
        conn.execute(tenant_keys.update().where(tenant_keys.c.tenant == "acme").values(wrapped_key=wrapped))
    assert Vault(db_engine, provider).open("acme", sealed, **CTX) == b"alice@example.com"


def test_consistency_proofs_between_all_pairs_of_checkpoints_verify(db_engine) -> None:
    signer = CheckpointSigner.generate()
    ledger = Ledger(db_engine, "acme")
    rng = random.Random(8)
    n = 0
    for _ in range(CHECKPOINTS):
        k = rng.randint(1, 40)
        ledger.append([make_event(n + i) for i in range(k)])
        n += k
        ledger.checkpoint(signer)
    published = ledger.checkpoints()
    assert len(published) == CHECKPOINTS and published[-1].size == n
    pairs = 0
    for i, old in enumerate(published):
        verify_checkpoint(old, signer.public_key_b64())
        for new in published[i + 1 :]:
            proof = ledger.consistency_proof(old.size, new.size)
            hashes = [base64.b64decode(h) for h in proof.hashes]
            root1, root2 = base64.b64decode(old.root_hash), base64.b64decode(new.root_hash)
            verify_consistency(old.size, new.size, hashes, root1, root2)
            forged = bytes([root1[0] ^ 1]) + root1[1:]
            with pytest.raises(MerkleProofError):
                verify_consistency(old.size, new.size, hashes, forged, root2)
            pairs += 1
    assert pairs == CHECKPOINTS * (CHECKPOINTS - 1) // 2
