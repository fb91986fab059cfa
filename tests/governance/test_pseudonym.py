from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.keys import LocalKeyringProvider
from governance.pseudonym import PSEUDONYM_LENGTH, Pseudonymizer, StaticKeySource, _Hmac
from governance.vault import TenantKeysDestroyed, Vault
from schemas.errors import DataError

SOURCE = StaticKeySource({"acme": b"a" * 32, "globex": b"g" * 32})
SHAPE = re.compile(r"^(ps|kh)_[0-9a-f]{32}$")

scalars = st.one_of(st.text(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.binary())


def test_format_and_length() -> None:
    ps = Pseudonymizer(SOURCE)
    p = ps.pseudonymize("acme", "alice@example.com")
    h = ps.keyed_hash("acme", "003A000001")
    assert p is not None
    assert SHAPE.match(p)
    assert p.startswith("ps_")
    assert SHAPE.match(h)
    assert h.startswith("kh_")
    assert len(p) == len(h) == PSEUDONYM_LENGTH


@given(value=scalars)
def test_stable_within_tenant(value) -> None:
    a, b = Pseudonymizer(SOURCE), Pseudonymizer(SOURCE)
    assert a.pseudonymize("acme", value) == b.pseudonymize("acme", value)
    assert a.keyed_hash("acme", value) == b.keyed_hash("acme", value)


@given(value=scalars)
def test_unlinkable_across_tenants_and_uses(value) -> None:
    ps = Pseudonymizer(SOURCE)
    acme = ps.pseudonymize("acme", value)
    assert acme != ps.pseudonymize("globex", value)
    assert ps.keyed_hash("acme", value) != ps.keyed_hash("globex", value)
    # field pseudonyms and lineage hashes use different sub-keys
    assert acme is not None
    assert acme[3:] != ps.keyed_hash("acme", value)[3:]


def test_values_are_type_tagged_and_none_passes_through() -> None:
    ps = Pseudonymizer(SOURCE)
    outputs = {ps.pseudonymize("acme", v) for v in ("1", 1, True, b"1", 1.0)}
    assert len(outputs) == 5
    assert ps.pseudonymize("acme", None) is None
    with pytest.raises(DataError, match="dict") as info:
        ps.pseudonymize("acme", {"email": "alice@example.com"})
    assert "alice" not in str(info.value)


def test_distinct_values_distinct_pseudonyms() -> None:
    ps = Pseudonymizer(SOURCE)
    values = [f"user{i}@example.com" for i in range(2000)]
    assert len({ps.pseudonymize("acme", v) for v in values}) == len(values)


def test_vault_backed_key_is_separate_stable_and_shredded(db_engine, tmp_path: Path) -> None:
    vault = Vault(db_engine, LocalKeyringProvider(tmp_path / "k.json"))
    first = Pseudonymizer(vault).pseudonymize("acme", "alice@example.com")
    vault.rotate("acme")  # data-key rotation must not change pseudonyms
    again = Pseudonymizer(Vault(db_engine, vault.provider)).pseudonymize("acme", "alice@example.com")
    assert first == again
    kinds = {(k.kind, k.version) for k in vault.list_keys("acme")}
    assert ("pseudonym", 1) in kinds
    vault.shred("acme")
    with pytest.raises(TenantKeysDestroyed):
        Pseudonymizer(vault).pseudonymize("acme", "alice@example.com")


@given(key=st.binary(min_size=1, max_size=200), message=st.binary(max_size=300))
def test_precomputed_hmac_matches_stdlib(key: bytes, message: bytes) -> None:
    assert _Hmac(key).hexdigest(message) == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_documented_construction() -> None:
    """ps_ = first 128 bits (hex) of HMAC-SHA256(HMAC-SHA256(tenant key, label), type tag + value)."""
    field_key = hmac.new(b"a" * 32, b"crmhub.pseudonym.field.v1", hashlib.sha256).digest()
    expected = hmac.new(field_key, b"salice@example.com", hashlib.sha256).hexdigest()[:32]
    assert Pseudonymizer(SOURCE).pseudonymize("acme", "alice@example.com") == "ps_" + expected
