"""The vault: envelope encryption of tenant data with AES-256-GCM.

Every tenant has its own 256-bit *data key*, versioned and stored wrapped by a key-encryption key
from a :class:`~governance.keys.KeyProvider` (table ``vault_tenant_keys``, :mod:`store.keys`).

Ciphertext format (version 1), 33 bytes of overhead::

    0      1          5                 17                      n-16      n
    | 0x01 | key ver  | nonce (96 bits) | ciphertext             | tag     |
      fmt    uint32 BE  random

AAD = the 5 header bytes + a canonical, length-prefixed encoding of the context
``(kind, tenant, dataset, object id, purpose)`` (``kind`` is ``record`` for :meth:`Vault.seal`,
``batch`` for :meth:`Vault.seal_batch` whose context is ``(tenant, sync, batch, purpose)``). A
ciphertext opened under any other context, or altered in any bit, raises
:class:`~schemas.errors.IntegrityError`.

Nonces are random, so a key must not see anywhere near 2**32 encryptions (NIST SP 800-38D §8.3).
Each data key has a use counter persisted in blocks (``reserve_block`` uses per database write);
when the reserved count reaches ``rotate_after`` (default 2**31) the vault rotates the tenant to a
new key version by itself. Old versions keep opening old data.

``shred(tenant)`` destroys every key of a tenant (crypto-shredding) and returns a
:class:`DeletionCertificate`; afterwards nothing sealed for that tenant opens, and the tenant can
not seal again. A vault in another (running) process re-checks the tenant's shredded state at most
``shred_check_s`` seconds (default 1) after it last did, before it uses a cached key again, so a
shred takes effect everywhere within that bound — not only when ``cache_ttl`` runs out.

A :class:`~governance.keys.LocalKeyringProvider` that had to *create* its keyring while the
database holds keys wrapped by another KEK means the keyring was lost: the vault refuses to start
(:class:`ConfigError` naming the restore) and removes the empty keyring again.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar

import sqlalchemy.exc
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Connection, Engine

from governance.aead import AesGcm
from governance.keys import KeyProvider, LocalKeyringProvider
from schemas.errors import ConfigError, IntegrityError
from store import keys as keystore
from store.keys import KeyKind, KeyStatus

__all__ = [
    "FORMAT_V1",
    "OVERHEAD",
    "AesGcm",
    "DeletionCertificate",
    "KeyInfo",
    "RewrapReport",
    "TenantKeysDestroyed",
    "Vault",
    "key_version_of",
]

FORMAT_V1: Final = 0x01
_HEADER = struct.Struct(">BI")
_HEADER_LEN: Final = _HEADER.size  # 5
_NONCE_LEN: Final = AesGcm.NONCE_LEN
_TAG_LEN: Final = AesGcm.TAG_LEN
OVERHEAD: Final = _HEADER_LEN + _NONCE_LEN + _TAG_LEN  # 33 bytes added to every plaintext
_MAX_VERSION: Final = 2**31 - 1  # fits a signed 32-bit column on every database; uint32 on the wire
_NONCE_HARD_LIMIT: Final = 2**32  # SP 800-38D bound for random 96-bit nonces
_T = TypeVar("_T")


class TenantKeysDestroyed(IntegrityError):
    """The tenant's keys were crypto-shredded: its data can no longer be opened or sealed."""


def _lp(*fields: str) -> bytes:
    """Canonical length-prefixed encoding: for each field, uint32 BE byte length + UTF-8 bytes."""
    out = bytearray()
    for f in fields:
        b = f.encode("utf-8")
        out += struct.pack(">I", len(b))
        out += b
    return bytes(out)


_RECORD = "crmhub.vault.record.v1"
_BATCH = "crmhub.vault.batch.v1"


def _check_tenant(tenant: str) -> None:
    """Tenant ids are stored as key-row names: 1-255 characters, no control characters."""
    if not 1 <= len(tenant) <= 255 or not tenant.isprintable():
        raise ConfigError("tenant id must be 1-255 printable characters (no control characters)")


def _key_aad(tenant: str, kind: KeyKind, version: int) -> bytes:
    return _lp("crmhub.vault.key.v1", tenant, kind.value, str(version))


def key_version_of(ciphertext: bytes) -> int:
    """The tenant data-key version a vault ciphertext was sealed with (no key needed)."""
    if len(ciphertext) < OVERHEAD or ciphertext[0] != FORMAT_V1:
        raise IntegrityError("not a crmhub vault ciphertext (unknown format byte or truncated)")
    return int(_HEADER.unpack_from(ciphertext)[1])


class KeyInfo(BaseModel):
    """What ops may see about one tenant key (never key bytes)."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    kind: str
    version: int
    status: str
    kek_id: str
    uses_reserved: int
    created_at: datetime
    retired_at: datetime | None
    destroyed_at: datetime | None


class RewrapReport(BaseModel):
    """Result of :meth:`Vault.rewrap`: how many keys moved from which KEKs to which."""

    model_config = ConfigDict(frozen=True)

    keys_rewrapped: int
    from_kek_ids: list[str]
    to_kek_id: str
    per_tenant: dict[str, int] = {}
    """Tenant → how many of its keys were rewrapped (each one's ``key_rewrap`` access event)."""


class DeletionCertificate(BaseModel):
    """Evidence that a tenant's keys were destroyed (crypto-shredding).

    ``digest`` is SHA-256 over the canonical JSON of every other field; :meth:`verify` recomputes
    it. ``sealed_upper_bound`` bounds how many ciphertexts became unreadable (reserved key uses).
    """

    model_config = ConfigDict(frozen=True)

    tenant: str
    method: str = "crypto-shredding: wrapped AES-256-GCM data keys and HMAC pseudonym key erased"
    data_key_versions: list[int]
    pseudonym_key_versions: list[int]
    kek_ids: list[str]
    keys_destroyed: int
    sealed_upper_bound: int
    destroyed_at: datetime
    digest: str

    @staticmethod
    def compute_digest(fields: dict[str, object]) -> str:
        """``sha256:<hex>`` of the canonical JSON of ``fields`` (digest excluded)."""
        body = {k: v for k, v in fields.items() if k != "digest"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def verify(self) -> bool:
        """True if ``digest`` matches the other fields."""
        return self.digest == self.compute_digest(self.model_dump(mode="json"))


@dataclass(slots=True)
class _CachedKey:
    aead: AesGcm
    loaded_at: float


@dataclass(slots=True)
class _ActiveBlock:
    version: int
    aead: AesGcm
    next_use: int
    end: int  # exclusive
    loaded_at: float


class Vault:
    """Seal and open tenant data; rotate, rewrap and shred tenant keys.

    Thread-safe; one instance per process is enough. ``rotate_after`` is the number of uses after
    which a data key is replaced (at most 2**32 - ``reserve_block``), ``reserve_block`` how many uses one
    database write reserves, ``cache_ttl`` how long (seconds) unwrapped keys are trusted before
    their status is read again, ``shred_check_s`` how long (seconds) a tenant's cached keys are used
    before its shredded state is read again (one indexed query per tenant and interval).
    """

    def __init__(
        self,
        engine: Engine,
        provider: KeyProvider,
        *,
        rotate_after: int = 2**31,
        reserve_block: int = 10_000,
        cache_ttl: float = 300.0,
        shred_check_s: float = 1.0,
    ) -> None:
        if reserve_block < 1:
            raise ConfigError("vault reserve_block must be ≥ 1")
        if not 1 <= rotate_after <= _NONCE_HARD_LIMIT - reserve_block:
            raise ConfigError(
                "vault rotate_after must be between 1 and 2**32 - reserve_block (NIST SP 800-38D)"
            )
        self.engine = engine
        self.provider = provider
        self.rotate_after = rotate_after
        self.reserve_block = reserve_block
        if not shred_check_s > 0:
            raise ConfigError("vault shred_check_s must be > 0 (seconds)")
        self.cache_ttl = cache_ttl
        self.shred_check_s = shred_check_s
        self._lock = threading.RLock()
        self._active: dict[str, _ActiveBlock] = {}
        self._keys: dict[tuple[str, int], _CachedKey] = {}
        self._pseudonym: dict[str, tuple[bytes, float]] = {}
        self._shred_checked: dict[str, float] = {}  # tenant → monotonic time of the last check
        self._refuse_if_keyring_lost()

    def _refuse_if_keyring_lost(self) -> None:
        """A local keyring created just now must not stand in for a lost one (see the module doc)."""
        provider = self.provider
        if not (isinstance(provider, LocalKeyringProvider) and provider.created):
            return
        try:
            with self.engine.connect() as conn:
                wrapped = keystore.live_kek_ids(conn)
        except sqlalchemy.exc.DBAPIError:
            return  # no vault table yet: a database that was never migrated holds no keys
        provider.refuse_if_replacing(wrapped)

    def _check_not_shredded(self, tenant: str) -> None:
        """Raise :class:`TenantKeysDestroyed` (and forget the tenant's cached keys) if the tenant was
        shredded, asking the database at most once per ``shred_check_s``."""
        now = time.monotonic()
        last = self._shred_checked.get(tenant)
        if last is not None and now - last <= self.shred_check_s:
            return
        with self.engine.connect() as conn:
            at = keystore.shredded_at(conn, tenant)
        if at is not None:
            with self._lock:
                self._forget(tenant)
            raise TenantKeysDestroyed(
                f"tenant {tenant!r} was crypto-shredded at {at}; its data can no longer be opened or sealed"
            )
        self._shred_checked[tenant] = now

    # ---- sealing ---------------------------------------------------------------------------

    def seal(self, tenant: str, plaintext: bytes, *, dataset: str, object_id: str, purpose: str) -> bytes:
        """Encrypt one object for ``tenant``, bound to (dataset, object id, purpose)."""
        return self._seal(tenant, plaintext, _lp(_RECORD, tenant, dataset, object_id, purpose))

    def open(self, tenant: str, ciphertext: bytes, *, dataset: str, object_id: str, purpose: str) -> bytes:
        """Decrypt what :meth:`seal` produced under the same context, else :class:`IntegrityError`."""
        return self._open(tenant, ciphertext, _lp(_RECORD, tenant, dataset, object_id, purpose))

    def seal_batch(self, tenant: str, blob: bytes, *, sync: str, batch: str, purpose: str) -> bytes:
        """Encrypt a whole staging batch (the hot path), bound to (tenant, sync, batch, purpose)."""
        return self._seal(tenant, blob, _lp(_BATCH, tenant, sync, batch, purpose))

    def open_batch(self, tenant: str, ciphertext: bytes, *, sync: str, batch: str, purpose: str) -> bytes:
        """Decrypt what :meth:`seal_batch` produced under the same context."""
        return self._open(tenant, ciphertext, _lp(_BATCH, tenant, sync, batch, purpose))

    def _seal(self, tenant: str, plaintext: bytes, context: bytes) -> bytes:
        version, aead = self._take_use(tenant)
        header = _HEADER.pack(FORMAT_V1, version)
        nonce = secrets.token_bytes(_NONCE_LEN)
        return header + nonce + aead.encrypt(nonce, plaintext, header + context)

    def _open(self, tenant: str, ciphertext: bytes, context: bytes) -> bytes:
        version = key_version_of(ciphertext)
        aead = self._key_for_open(tenant, version)
        view = memoryview(ciphertext)
        header = ciphertext[:_HEADER_LEN]
        return aead.decrypt(
            view[_HEADER_LEN : _HEADER_LEN + _NONCE_LEN], view[_HEADER_LEN + _NONCE_LEN :], header + context
        )

    def _take_use(self, tenant: str) -> tuple[int, AesGcm]:
        with self._lock:
            block = self._active.get(tenant)
            if (
                block is None
                or block.next_use >= block.end
                or time.monotonic() - block.loaded_at > self.cache_ttl
            ):
                block = self._reserve(tenant)
                self._active[tenant] = block
                self._shred_checked[tenant] = time.monotonic()  # the reservation read the key's state
            else:
                self._check_not_shredded(tenant)
            block.next_use += 1
            return block.version, block.aead

    def _reserve(self, tenant: str) -> _ActiveBlock:
        """Reserve the next block of uses of the tenant's active data key (rotating if it is spent)."""

        def reserve(conn: Connection, row: keystore.TenantKeyRow) -> _ActiveBlock | None:
            if row.uses_reserved >= self.rotate_after:  # spent: rotate without reserving more
                self._create_key(conn, tenant, KeyKind.DATA, refuse_if_destroyed=True)
                return None
            total = keystore.reserve_uses(conn, tenant, row.version, self.reserve_block)
            if total is None:
                return None  # rotated or destroyed by someone else meanwhile
            start = total - self.reserve_block
            if start >= self.rotate_after:
                self._create_key(conn, tenant, KeyKind.DATA, refuse_if_destroyed=True)
                return None
            aead = self._unwrap_row(tenant, KeyKind.DATA, row.version, row.wrapped_key, row.kek_id)
            return _ActiveBlock(row.version, aead, start, min(total, self.rotate_after), time.monotonic())

        block = self._with_active_key(tenant, KeyKind.DATA, reserve, attempts=20)
        if block is None:
            raise IntegrityError(
                f"could not obtain an active data key for tenant {tenant!r} (too much contention)"
            )
        self._keys[(tenant, block.version)] = _CachedKey(block.aead, time.monotonic())
        return block

    def _with_active_key(
        self,
        tenant: str,
        kind: KeyKind,
        step: Callable[[Connection, keystore.TenantKeyRow], _T | None],
        *,
        attempts: int,
    ) -> _T | None:
        """``step`` on the tenant's active key of ``kind``, in one transaction; a missing key is
        created first. ``step`` returning ``None`` (it rotated the key, or the row changed meanwhile)
        and a race lost to another process start over, at most ``attempts`` times (then ``None``)."""
        _check_tenant(tenant)
        for _ in range(attempts):
            try:
                with self.engine.begin() as conn:
                    row = keystore.active_key(conn, tenant, kind)
                    if row is None:
                        # Create version 1 exactly: a concurrent first use that created it meanwhile
                        # makes this insert a duplicate (reloaded below). latest+1 here would let
                        # it read the other's fresh version 1 and rotate it away, each first use
                        # ending with a key of its own (for the never-rotated pseudonym key: two
                        # sets of pseudonyms for one tenant).
                        self._refuse_if_shredded(conn, tenant)
                        self._create_key(conn, tenant, kind, refuse_if_destroyed=False, version=1)
                        continue
                    result = step(conn, row)
            except sqlalchemy.exc.DBAPIError as exc:
                if _lost_race(exc):
                    continue  # a concurrent process created the same version first: reload
                raise
            if result is not None:
                return result
        return None

    def _create_key(
        self,
        conn: Connection,
        tenant: str,
        kind: KeyKind,
        *,
        refuse_if_destroyed: bool,
        version: int | None = None,
    ) -> int:
        """Insert ``version`` (default: the next) of (tenant, kind) as active and retire older ones;
        a version that exists already raises ``sqlalchemy.exc.IntegrityError``."""
        if refuse_if_destroyed:
            self._refuse_if_shredded(conn, tenant)
        if version is None:
            version = keystore.latest_version(conn, tenant, kind) + 1
        if version > _MAX_VERSION:
            raise ConfigError(f"tenant {tenant!r} has exhausted key versions")
        key = secrets.token_bytes(AesGcm.KEY_LEN)
        kek_id = self.provider.current_kek_id
        wrapped = self.provider.wrap(kek_id, key, _key_aad(tenant, kind, version))
        # Retire first: it locks the current active row before the insert, the same order as
        # reserve_uses, so concurrent rotations serialise on that row instead of deadlocking.
        keystore.retire_active(conn, tenant, kind, below_version=version)
        keystore.insert_key(
            conn, tenant=tenant, kind=kind, version=version, wrapped_key=wrapped, kek_id=kek_id
        )
        return version

    @staticmethod
    def _refuse_if_shredded(conn: Connection, tenant: str) -> None:
        for row in keystore.list_keys(conn, tenant):
            if row.status == KeyStatus.DESTROYED.value:
                raise TenantKeysDestroyed(
                    f"tenant {tenant!r} was crypto-shredded at {row.destroyed_at}; it cannot seal new data"
                )

    def _unwrap_row(
        self, tenant: str, kind: KeyKind, version: int, wrapped: bytes | None, kek_id: str
    ) -> AesGcm:
        if wrapped is None:
            raise TenantKeysDestroyed(f"tenant {tenant!r} key version {version} was destroyed")
        return AesGcm(self.provider.unwrap(kek_id, wrapped, _key_aad(tenant, kind, version)))

    def _key_for_open(self, tenant: str, version: int) -> AesGcm:
        now = time.monotonic()
        with self._lock:
            cached = self._keys.get((tenant, version))
        if cached is not None and now - cached.loaded_at <= self.cache_ttl:
            self._check_not_shredded(tenant)
            return cached.aead
        _check_tenant(tenant)
        row = None
        if 1 <= version <= _MAX_VERSION:
            with self.engine.connect() as conn:
                row = keystore.get_key(conn, tenant, KeyKind.DATA, version)
        if row is None:
            raise IntegrityError(
                f"tenant {tenant!r} has no data key version {version}: the ciphertext belongs to another "
                "tenant or was altered"
            )
        if row.status == KeyStatus.DESTROYED.value:
            with self._lock:
                self._forget(tenant)
            raise TenantKeysDestroyed(
                f"tenant {tenant!r} data key version {version} was destroyed (crypto-shredded) at "
                f"{row.destroyed_at}; data sealed with it can no longer be opened"
            )
        aead = self._unwrap_row(tenant, KeyKind.DATA, version, row.wrapped_key, row.kek_id)
        with self._lock:
            self._keys[(tenant, version)] = _CachedKey(aead, now)
            self._shred_checked[tenant] = now  # the row just read was not destroyed
        return aead

    def _forget(self, tenant: str) -> None:
        self._shred_checked.pop(tenant, None)
        self._active.pop(tenant, None)
        self._pseudonym.pop(tenant, None)
        for k in [k for k in self._keys if k[0] == tenant]:
            del self._keys[k]

    # ---- pseudonym key ---------------------------------------------------------------------

    def pseudonym_key(self, tenant: str) -> bytes:
        """The tenant's 32-byte HMAC key for :mod:`governance.pseudonym` (separate from data keys,
        created on first use, never rotated). For that module only: do not log or store it."""
        now = time.monotonic()
        with self._lock:
            cached = self._pseudonym.get(tenant)
        if cached is not None and now - cached[1] <= self.cache_ttl:
            self._check_not_shredded(tenant)
            return cached[0]
        row = self._with_active_key(tenant, KeyKind.PSEUDONYM, lambda _, active: active, attempts=5)
        if row is None:
            raise IntegrityError(
                f"could not obtain the pseudonym key of tenant {tenant!r} (too much contention)"
            )
        if row.wrapped_key is None:  # pragma: no cover - active rows always hold a key
            raise TenantKeysDestroyed(f"tenant {tenant!r} pseudonym key was destroyed")
        key = self.provider.unwrap(
            row.kek_id, row.wrapped_key, _key_aad(tenant, KeyKind.PSEUDONYM, row.version)
        )
        with self._lock:
            self._pseudonym[tenant] = (key, now)
            self._shred_checked[tenant] = now  # the active row just read was not destroyed
        return key

    # ---- key management --------------------------------------------------------------------

    def rotate(self, tenant: str) -> int:
        """Start a new data-key version for ``tenant`` (new seals use it; old data still opens).
        Returns the new version."""
        _check_tenant(tenant)
        with self.engine.begin() as conn:
            version = self._create_key(conn, tenant, KeyKind.DATA, refuse_if_destroyed=True)
        with self._lock:
            self._active.pop(tenant, None)
        return version

    def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        """Metadata of every key (of one tenant or all), oldest first; no key material."""
        with self.engine.connect() as conn:
            rows = keystore.list_keys(conn, tenant)
        return [
            KeyInfo(
                tenant=r.tenant,
                kind=r.kind,
                version=r.version,
                status=r.status,
                kek_id=r.kek_id,
                uses_reserved=r.uses_reserved,
                created_at=_aware(r.created_at),
                retired_at=_aware(r.retired_at) if r.retired_at else None,
                destroyed_at=_aware(r.destroyed_at) if r.destroyed_at else None,
            )
            for r in rows
        ]

    def rewrap(self, new_provider: KeyProvider) -> RewrapReport:
        """Re-wrap every live key (all tenants) under ``new_provider``'s current KEK, in one
        transaction. Data is not touched; afterwards the old KEK is no longer needed and this vault
        uses ``new_provider``. Other processes must be given the new provider too."""
        to_kek = new_provider.current_kek_id
        from_ids: set[str] = set()
        count = 0
        per_tenant: dict[str, int] = {}
        with self.engine.begin() as conn:
            for row in keystore.list_keys(conn):
                if row.status == KeyStatus.DESTROYED.value or row.wrapped_key is None:
                    continue
                kind = KeyKind(row.kind)
                aad = _key_aad(row.tenant, kind, row.version)
                key = self.provider.unwrap(row.kek_id, row.wrapped_key, aad)
                wrapped = new_provider.wrap(to_kek, key, aad)
                keystore.update_wrapping(
                    conn,
                    tenant=row.tenant,
                    kind=row.kind,
                    version=row.version,
                    wrapped_key=wrapped,
                    kek_id=to_kek,
                )
                from_ids.add(row.kek_id)
                count += 1
                per_tenant[row.tenant] = per_tenant.get(row.tenant, 0) + 1
        self.provider = new_provider
        return RewrapReport(
            keys_rewrapped=count, from_kek_ids=sorted(from_ids), to_kek_id=to_kek, per_tenant=per_tenant
        )

    def shred(self, tenant: str) -> DeletionCertificate:
        """Destroy every key of ``tenant`` (data and pseudonym) and certify it.

        Everything sealed for the tenant then fails to open with :class:`TenantKeysDestroyed`;
        other tenants are unaffected. Idempotent: a second call certifies zero new keys.
        """
        _check_tenant(tenant)
        at = datetime.now(UTC)
        with self.engine.begin() as conn:
            rows = keystore.destroy_tenant_keys(conn, tenant, at=at)
        with self._lock:
            self._forget(tenant)
        fields: dict[str, object] = {
            "tenant": tenant,
            "method": DeletionCertificate.model_fields["method"].default,
            "data_key_versions": [r.version for r in rows if r.kind == KeyKind.DATA.value],
            "pseudonym_key_versions": [r.version for r in rows if r.kind == KeyKind.PSEUDONYM.value],
            "kek_ids": sorted({r.kek_id for r in rows}),
            "keys_destroyed": len(rows),
            "sealed_upper_bound": sum(r.uses_reserved for r in rows if r.kind == KeyKind.DATA.value),
            "destroyed_at": at,
        }
        draft = DeletionCertificate.model_validate({**fields, "digest": ""})
        return draft.model_copy(
            update={"digest": DeletionCertificate.compute_digest(draft.model_dump(mode="json"))}
        )


_RETRY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected


def _lost_race(exc: sqlalchemy.exc.DBAPIError) -> bool:
    """A duplicate key (someone created that version first) or a PostgreSQL conflict: retry."""
    if isinstance(exc, sqlalchemy.exc.IntegrityError):
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes for DateTime(timezone=True); they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
