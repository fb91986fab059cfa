"""Wycheproof AES-GCM vectors against :class:`governance.vault.AesGcm`.

The wrapper accepts only 256-bit keys and 96-bit nonces, so: 256/96 vectors must behave exactly
as Wycheproof says (valid → decrypts to msg and re-encrypts to ct||tag; invalid → refused), and
every vector with another key or nonce size must be refused up front.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from governance.vault import AesGcm
from schemas.errors import ConfigError, IntegrityError
from tests.governance.vectors import VECTORS as SHARED_VECTORS

VECTORS = SHARED_VECTORS / "wycheproof" / "aes_gcm_test.json"


def _cases() -> list[Any]:
    data = json.loads(VECTORS.read_text())
    out = []
    for group in data["testGroups"]:
        for t in group["tests"]:
            out.append(pytest.param(group["keySize"], group["ivSize"], t, id=f"tc{t['tcId']}"))
    return out


CASES = _cases()


def test_vector_file_is_complete() -> None:
    data = json.loads(VECTORS.read_text())
    assert len(CASES) == data["numberOfTests"] == 316
    assert sum(1 for c in CASES if c.values[0] == 256 and c.values[1] == 96) == 66


@pytest.mark.parametrize(("key_size", "iv_size", "case"), CASES)
def test_wycheproof(key_size: int, iv_size: int, case: dict[str, Any]) -> None:
    key = bytes.fromhex(case["key"])
    iv = bytes.fromhex(case["iv"])
    aad = bytes.fromhex(case["aad"])
    msg = bytes.fromhex(case["msg"])
    sealed = bytes.fromhex(case["ct"]) + bytes.fromhex(case["tag"])

    if key_size != 256:
        with pytest.raises(ConfigError):
            AesGcm(key)
        return
    aead = AesGcm(key)
    if iv_size != 96:
        with pytest.raises(IntegrityError):
            aead.decrypt(iv, sealed, aad)
        with pytest.raises(ValueError, match="12 bytes"):
            aead.encrypt(iv, msg, aad)
        return
    if case["result"] == "valid":
        assert aead.decrypt(iv, sealed, aad) == msg
        assert aead.encrypt(iv, msg, aad) == sealed
    else:
        assert case["result"] == "invalid"
        with pytest.raises(IntegrityError):
            aead.decrypt(iv, sealed, aad)
