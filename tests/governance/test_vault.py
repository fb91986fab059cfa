from __future__ import annotations

import base64
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from governance.keys import EnvKeyProvider, LocalKeyringProvider
from governance.vault import (
    OVERHEAD,
    AesGcm,
    DeletionCertificate,
    TenantKeysDestroyed,
    Vault,
    key_version_of,
)
from schemas.errors import ConfigError, IntegrityError
from store.keys import tenant_keys

CTX = {"dataset": "salesforce.Contact", "object_id": "003A000001", "purpose": "crm_sync"}


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyringProvider:
    return LocalKeyringProvider(tmp_path / "keyring.json")


@pytest.fixture
def vault(db_engine, provider) -> Vault:
    return Vault(db_engine, provider)


def test_round_trip_and_format(vault: Vault) -> None:
    ct = vault.seal("acme", b"hello", **CTX)
    assert ct[0] == 0x01
    assert key_version_of(ct) == 1
    assert len(ct) == len(b"hello") + OVERHEAD
    assert b"hello" not in ct
    assert vault.open("acme", ct, **CTX) == b"hello"


def test_same_plaintext_gives_different_ciphertexts(vault: Vault) -> None:
    assert vault.seal("acme", b"x" * 32, **CTX) != vault.seal("acme", b"x" * 32, **CTX)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plaintext=st.binary(max_size=2048),
    tenant=st.text(min_size=1, max_size=20).filter(str.isprintable),
    dataset=st.text(max_size=20),
    object_id=st.text(max_size=20),
    purpose=st.text(max_size=20),
)
def test_seal_open_round_trip_property(vault: Vault, plaintext, tenant, dataset, object_id, purpose) -> None:
    ct = vault.seal(tenant, plaintext, dataset=dataset, object_id=object_id, purpose=purpose)
    assert vault.open(tenant, ct, dataset=dataset, object_id=object_id, purpose=purpose) == plaintext


@pytest.mark.parametrize(
    ("tenant", "changes"),
    [
        ("globex", {}),
        ("acme", {"object_id": "003A000002"}),
        ("acme", {"purpose": "marketing"}),
        ("acme", {"dataset": "hubspot.contacts"}),
        # length-prefixing: moving characters between fields must not give the same AAD
        ("acme", {"dataset": "salesforce.Contact0", "object_id": "03A000001"}),
    ],
)
def test_swapped_context_fails(vault: Vault, tenant: str, changes: dict[str, str]) -> None:
    vault.seal("globex", b"make globex have a key too", **CTX)
    ct = vault.seal("acme", b"secret", **CTX)
    with pytest.raises(IntegrityError):
        vault.open(tenant, ct, **{**CTX, **changes})


def test_record_and_batch_contexts_do_not_mix(vault: Vault) -> None:
    ct = vault.seal_batch("acme", b"blob", sync="s1", batch="b1", purpose="crm_sync")
    assert vault.open_batch("acme", ct, sync="s1", batch="b1", purpose="crm_sync") == b"blob"
    with pytest.raises(IntegrityError):
        vault.open("acme", ct, dataset="s1", object_id="b1", purpose="crm_sync")
    with pytest.raises(IntegrityError):
        vault.open_batch("acme", ct, sync="s1", batch="b2", purpose="crm_sync")


def test_every_single_bit_flip_fails(vault: Vault) -> None:
    ct = vault.seal("acme", b"0123456789abcdef", **CTX)
    for i in range(len(ct)):
        for bit in range(8):
            tampered = bytearray(ct)
            tampered[i] ^= 1 << bit
            with pytest.raises(IntegrityError):
                vault.open("acme", bytes(tampered), **CTX)


def test_truncated_and_foreign_input_fails(vault: Vault) -> None:
    ct = vault.seal("acme", b"abc", **CTX)
    for bad in (b"", ct[:10], ct[:-1], b"\x02" + ct[1:]):
        with pytest.raises(IntegrityError):
            vault.open("acme", bad, **CTX)


def test_rotation_old_opens_new_uses_new_version(vault: Vault) -> None:
    old = vault.seal("acme", b"old", **CTX)
    assert vault.rotate("acme") == 2
    new = vault.seal("acme", b"new", **CTX)
    assert key_version_of(old) == 1
    assert key_version_of(new) == 2
    assert vault.open("acme", old, **CTX) == b"old"
    assert vault.open("acme", new, **CTX) == b"new"
    statuses = {(k.kind, k.version): k.status for k in vault.list_keys("acme")}
    assert statuses[("data", 1)] == "retired"
    assert statuses[("data", 2)] == "active"


def test_rotation_is_visible_to_another_process(db_engine, provider) -> None:
    a = Vault(db_engine, provider)
    b = Vault(db_engine, provider)
    ct = a.seal("acme", b"x", **CTX)
    a.rotate("acme")
    # b never cached anything: it opens the old version and seals with the new one
    assert b.open("acme", ct, **CTX) == b"x"
    assert key_version_of(b.seal("acme", b"y", **CTX)) == 2


def test_rewrap_changes_wrapping_only(db_engine, provider, tmp_path: Path) -> None:
    vault = Vault(db_engine, provider)
    cts = {t: vault.seal(t, t.encode(), **CTX) for t in ("acme", "globex")}
    vault.rotate("acme")
    cts["acme2"] = vault.seal("acme", b"acme-v2", **CTX)
    with db_engine.connect() as conn:
        before = {(r.tenant, r.kind, r.version): r.wrapped_key for r in conn.execute(select(tenant_keys))}

    env = {"CRMHUB_KEK": base64.b64encode(os.urandom(32)).decode()}
    new = EnvKeyProvider(environ=env)
    report = vault.rewrap(new)
    assert report.keys_rewrapped == len(before)
    assert report.from_kek_ids == [provider.current_kek_id]
    assert report.to_kek_id == new.current_kek_id
    with db_engine.connect() as conn:
        after = {
            (r.tenant, r.kind, r.version): (r.wrapped_key, r.kek_id)
            for r in conn.execute(select(tenant_keys))
        }
    assert after.keys() == before.keys()
    assert all(after[k][0] != before[k] and after[k][1] == new.current_kek_id for k in before)

    # a fresh process with only the new KEK opens everything; the keyring file is gone
    (tmp_path / "keyring.json").unlink()
    fresh = Vault(db_engine, EnvKeyProvider(environ=env))
    assert fresh.open("acme", cts["acme"], **CTX) == b"acme"
    assert fresh.open("globex", cts["globex"], **CTX) == b"globex"
    assert fresh.open("acme", cts["acme2"], **CTX) == b"acme-v2"
    # and the old provider can no longer unwrap: it does not know the new KEK id
    stale = Vault(db_engine, LocalKeyringProvider(tmp_path / "other.json"))
    with pytest.raises(ConfigError, match="rewrap"):
        stale.open("acme", cts["acme"], **CTX)


def test_rewrap_after_kek_rotation_in_keyring(db_engine, provider) -> None:
    vault = Vault(db_engine, provider)
    ct = vault.seal("acme", b"x", **CTX)
    old_id = provider.current_kek_id
    new_id = provider.rotate_kek()
    assert new_id != old_id
    report = vault.rewrap(provider)
    assert report.from_kek_ids == [old_id]
    assert {k.kek_id for k in vault.list_keys()} == {new_id}
    assert Vault(db_engine, provider).open("acme", ct, **CTX) == b"x"


def test_use_counter_forces_rotation(db_engine, provider) -> None:
    vault = Vault(db_engine, provider, rotate_after=5, reserve_block=2)
    cts = [vault.seal("acme", str(i).encode(), **CTX) for i in range(12)]
    versions = [key_version_of(c) for c in cts]
    assert versions == [1] * 5 + [2] * 5 + [3] * 2
    assert all(vault.open("acme", c, **CTX) == str(i).encode() for i, c in enumerate(cts))
    infos = {k.version: k for k in vault.list_keys("acme") if k.kind == "data"}
    assert infos[1].status == infos[2].status == "retired"
    assert infos[3].status == "active"
    assert all(infos[v].uses_reserved <= 6 for v in (1, 2))  # never more than a block past the limit


def test_use_counter_is_durable_across_processes(db_engine, provider) -> None:
    first = Vault(db_engine, provider, rotate_after=25, reserve_block=10)
    for _ in range(3):
        first.seal("acme", b"x", **CTX)
    # the first process holds uses 0..9; a second one must start at 10, a third at 20
    second = Vault(db_engine, provider, rotate_after=25, reserve_block=10)
    second.seal("acme", b"x", **CTX)
    third = Vault(db_engine, provider, rotate_after=25, reserve_block=10)
    third.seal("acme", b"x", **CTX)  # reserves 20..29, capped at 25
    assert [k.uses_reserved for k in third.list_keys("acme") if k.kind == "data"] == [30]
    fourth = Vault(db_engine, provider, rotate_after=25, reserve_block=10)
    assert key_version_of(fourth.seal("acme", b"x", **CTX)) == 2


def test_hot_path_does_not_write_the_database_per_seal(db_engine, provider) -> None:
    vault = Vault(db_engine, provider, reserve_block=10_000)
    vault.seal("acme", b"warm-up", **CTX)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(db_engine, "before_cursor_execute", count)
    try:
        for _ in range(2_000):
            vault.seal_batch("acme", b"x" * 64, sync="s", batch="b", purpose="crm_sync")
    finally:
        event.remove(db_engine, "before_cursor_execute", count)
    assert statements == []


def test_shred_makes_tenant_unreadable_and_certifies(vault: Vault) -> None:
    a1 = vault.seal("acme", b"a1", **CTX)
    vault.rotate("acme")
    a2 = vault.seal_batch("acme", b"a2", sync="s", batch="b", purpose="crm_sync")
    vault.pseudonym_key("acme")
    b1 = vault.seal("globex", b"b1", **CTX)

    cert = vault.shred("acme")
    assert isinstance(cert, DeletionCertificate)
    assert cert.tenant == "acme"
    assert cert.data_key_versions == [1, 2]
    assert cert.pseudonym_key_versions == [1]
    assert cert.keys_destroyed == 3
    assert cert.sealed_upper_bound >= 2
    assert cert.kek_ids == [vault.provider.current_kek_id]
    assert cert.digest.startswith("sha256:")
    assert cert.verify()
    assert not cert.model_copy(update={"tenant": "globex"}).verify()

    with pytest.raises(TenantKeysDestroyed, match="crypto-shredded"):
        vault.open("acme", a1, **CTX)
    with pytest.raises(TenantKeysDestroyed):
        vault.open_batch("acme", a2, sync="s", batch="b", purpose="crm_sync")
    with pytest.raises(TenantKeysDestroyed):
        vault.seal("acme", b"new", **CTX)
    with pytest.raises(TenantKeysDestroyed):
        vault.pseudonym_key("acme")
    assert vault.open("globex", b1, **CTX) == b"b1"
    assert all(k.status == "destroyed" for k in vault.list_keys("acme"))

    again = vault.shred("acme")
    assert again.keys_destroyed == 0
    assert again.verify()


def test_shred_seen_by_other_process_after_cache_ttl(db_engine, provider) -> None:
    writer = Vault(db_engine, provider)
    reader = Vault(db_engine, provider, cache_ttl=0.0)
    ct = writer.seal("acme", b"x", **CTX)
    assert reader.open("acme", ct, **CTX) == b"x"
    writer.shred("acme")
    with pytest.raises(TenantKeysDestroyed):
        reader.open("acme", ct, **CTX)


def test_destroyed_key_rows_hold_no_key_material(db_engine, vault: Vault) -> None:
    vault.seal("acme", b"x", **CTX)
    vault.shred("acme")
    with db_engine.connect() as conn:
        assert list(conn.execute(select(tenant_keys.c.wrapped_key))) == [(None,)]


def test_wrapped_key_moved_to_another_tenant_fails(db_engine, vault: Vault) -> None:
    vault.seal("acme", b"x", **CTX)
    vault.seal("globex", b"y", **CTX)
    with db_engine.begin() as conn:
        acme_key = conn.execute(
            select(tenant_keys.c.wrapped_key).where(tenant_keys.c.tenant == "acme")
        ).scalar_one()
        conn.execute(
            tenant_keys.update().where(tenant_keys.c.tenant == "globex").values(wrapped_key=acme_key)
        )
    fresh = Vault(db_engine, vault.provider)
    with pytest.raises(IntegrityError, match="wrapped key"):
        fresh.seal("globex", b"z", **CTX)


def test_errors_do_not_leak_plaintext_or_keys(vault: Vault) -> None:
    secret = b"alice@example.com"
    ct = vault.seal("acme", secret, **CTX)
    with pytest.raises(IntegrityError) as info:
        vault.open("acme", ct, **{**CTX, "purpose": "other"})
    assert "alice" not in str(info.value)
    assert ct.hex() not in str(info.value)


@pytest.mark.parametrize("tenant", ["", "a\x00b", "line\nbreak", "x" * 256])
def test_bad_tenant_ids_are_refused(vault: Vault, tenant: str) -> None:
    with pytest.raises(ConfigError, match="tenant id"):
        vault.seal(tenant, b"x", **CTX)
    with pytest.raises(ConfigError, match="tenant id"):
        vault.shred(tenant)


def test_config_limits_are_validated(db_engine, provider) -> None:
    with pytest.raises(ConfigError, match="SP 800-38D"):
        Vault(db_engine, provider, rotate_after=2**32)
    with pytest.raises(ConfigError):
        Vault(db_engine, provider, reserve_block=0)


def test_aes_gcm_refuses_wrong_sizes() -> None:
    for size in (16, 24, 31, 33):
        with pytest.raises(ConfigError, match="32-byte"):
            AesGcm(os.urandom(size))
    aead = AesGcm(os.urandom(32))
    with pytest.raises(ValueError, match="12 bytes"):
        aead.encrypt(os.urandom(16), b"x", b"")
    ct = aead.encrypt(b"\x00" * 12, b"x", b"aad")
    with pytest.raises(IntegrityError):
        aead.decrypt(b"\x00" * 8, ct, b"aad")
    with pytest.raises(IntegrityError):
        aead.decrypt(b"\x00" * 12, ct[:15], b"aad")
    assert aead.decrypt(b"\x00" * 12, ct, b"aad") == b"x"


def test_concurrent_processes_never_exceed_the_use_limit(db_engine, provider) -> None:
    """Several vault instances (as separate processes would) race on one tenant: every key
    version is used at most ``rotate_after`` times and every ciphertext opens."""
    limit, block = 40, 7
    vaults = [Vault(db_engine, provider, rotate_after=limit, reserve_block=block) for _ in range(6)]
    results: list[list[bytes]] = [[] for _ in vaults]

    def work(i: int) -> None:
        for n in range(60):
            results[i].append(vaults[i].seal("acme", f"{i}:{n}".encode(), **CTX))

    with ThreadPoolExecutor(max_workers=len(vaults)) as pool:
        list(pool.map(work, range(len(vaults))))
    per_version = Counter(key_version_of(ct) for cts in results for ct in cts)
    assert sum(per_version.values()) == 360
    assert max(per_version.values()) <= limit
    reader = Vault(db_engine, provider)
    for i, cts in enumerate(results):
        assert [reader.open("acme", ct, **CTX) for ct in cts] == [f"{i}:{n}".encode() for n in range(60)]
    active = [k for k in reader.list_keys("acme") if k.kind == "data" and k.status == "active"]
    assert len(active) == 1


def test_concurrent_first_uses_share_one_pseudonym_key(db_engine, provider) -> None:
    """Thirty vault instances (as processes would) ask for a new tenant's pseudonym key at once: one
    key is created and all get it (issue 16: a first use that read "no key" and then "version 1"
    used to create version 2, and the two callers pseudonymised with different keys)."""
    import threading

    for tenant in (f"t{i}" for i in range(5)):
        vaults = [Vault(db_engine, provider) for _ in range(30)]
        barrier = threading.Barrier(len(vaults))

        def first_use(v: Vault, tenant: str = tenant, barrier: threading.Barrier = barrier) -> bytes:
            barrier.wait()
            return v.pseudonym_key(tenant)

        with ThreadPoolExecutor(max_workers=len(vaults)) as pool:
            keys = set(pool.map(first_use, vaults))
        assert len(keys) == 1, tenant
        assert [k.version for k in Vault(db_engine, provider).list_keys(tenant)] == [1]
