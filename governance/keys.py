"""Key providers: where the key-encryption key (KEK) that wraps tenant data keys lives.

The vault never stores a plaintext data key; it asks a :class:`KeyProvider` to wrap it. A provider
holds one or more KEK *versions*, each named by a ``kek_id`` that is stored beside every wrapped key.

Interface (a small abstract base — implement three members, one optional hook)::

    class KeyProvider(ABC):
        current_kek_id: str                                  # property: KEK used for new wraps
        def wrap(self, kek_id, plaintext_key, aad) -> bytes   # authenticated; binds ``aad``
        def unwrap(self, kek_id, wrapped_key, aad) -> bytes   # IntegrityError if it fails to verify
        def rotate_kek(self) -> str                            # optional: new KEK version, returns its id

``wrap``/``unwrap`` must be authenticated: a wrapped key moved to another tenant/version (other
``aad``) or altered must fail with :class:`~schemas.errors.IntegrityError`. An unknown ``kek_id``
is a :class:`~schemas.errors.ConfigError` (the provider is not configured with that KEK).

Built in:

* ``local`` — :class:`LocalKeyringProvider`: a JSON keyring file, created with mode 0600, refused
  if group/world-accessible. The embedded default.
* ``env`` — :class:`EnvKeyProvider`: one KEK, base64 in an environment variable (``CRMHUB_KEK``).

Others (KMS, HashiCorp Vault, ...) are plugins registered under the entry-point group
``crmhub.key_providers``::

    [project.entry-points."crmhub.key_providers"]
    awskms = "crmhub_awskms:AwsKmsProvider"

and loaded with ``load_key_provider("awskms", key_arn=...)`` (options are passed to the class).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import threading
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.errors import ConfigError, IntegrityError
from store.files import create_private, refuse_if_shared

__all__ = [
    "ENTRY_POINT_GROUP",
    "EnvKeyProvider",
    "KeyProvider",
    "LocalKeyringProvider",
    "load_key_provider",
]

ENTRY_POINT_GROUP = "crmhub.key_providers"
_KEK_BYTES = 32
_NONCE_BYTES = 12
_WRAP_FORMAT = b"\x01"


class KeyProvider(ABC):
    """Source of key-encryption keys. Wraps and unwraps 32-byte data keys; never returns a KEK."""

    @property
    @abstractmethod
    def current_kek_id(self) -> str:
        """Id of the KEK version new wraps use."""

    @abstractmethod
    def wrap(self, kek_id: str, plaintext_key: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext_key`` under KEK ``kek_id``, binding ``aad``."""

    @abstractmethod
    def unwrap(self, kek_id: str, wrapped_key: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`wrap`; :class:`IntegrityError` if the wrapped key or ``aad`` differ."""

    def rotate_kek(self) -> str:
        """Create a new KEK version, make it current and return its id (optional hook)."""
        raise ConfigError(f"key provider {type(self).__name__} does not support KEK rotation")


def _wrap_with(kek: bytes, plaintext_key: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _WRAP_FORMAT + nonce + AESGCM(kek).encrypt(nonce, plaintext_key, aad)


def _unwrap_with(kek: bytes, wrapped_key: bytes, aad: bytes) -> bytes:
    if len(wrapped_key) < 1 + _NONCE_BYTES + 16 or wrapped_key[:1] != _WRAP_FORMAT:
        raise IntegrityError("wrapped key is malformed (unknown format or truncated)")
    nonce = wrapped_key[1 : 1 + _NONCE_BYTES]
    try:
        return AESGCM(kek).decrypt(nonce, wrapped_key[1 + _NONCE_BYTES :], aad)
    except InvalidTag:
        raise IntegrityError(
            "wrapped key failed to verify: it was altered, moved to another tenant/version, "
            "or wrapped by a different KEK with the same id"
        ) from None


def _kek_fingerprint(kek: bytes) -> str:
    """A short, one-way id for a KEK (domain-separated hash; reveals nothing usable)."""
    return hashlib.sha256(b"crmhub.kek-id.v1\x00" + kek).hexdigest()[:12]


class LocalKeyringProvider(KeyProvider):
    """KEKs in a JSON keyring file (the embedded default).

    The file is created on first use with mode 0600 (``os.open(..., 0o600)``) and holds every KEK
    version (``{"format": 1, "current": id, "keys": {id: base64}}``). A keyring that is readable or
    writable by group/others is refused with a :class:`ConfigError` naming the ``chmod`` fix.
    Old versions stay in the file until removed by hand after a :meth:`Vault.rewrap`.

    ``created`` is true when this instance created the file: the vault then checks that the
    database holds no key a previous (lost) keyring wrapped, rather than sealing on beside
    unreadable data (:meth:`refuse_if_replacing`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.created = False
        self._current, self._keys = self._load_or_create()

    def refuse_if_replacing(self, wrapped: dict[str, int]) -> None:
        """``wrapped`` counts stored keys per KEK id. If this instance created the keyring while keys
        wrapped by a local keyring (ids ``local-…``) it does not hold exist, the keyring they need
        was lost: remove the new file again (so the next start refuses too) and raise
        :class:`ConfigError` naming the restore. Keys of other providers (``env-…``, plugins) are
        not its business: a new keyring may be a rewrap target."""
        lost = {k: n for k, n in wrapped.items() if k.startswith("local-") and k not in self._keys}
        if not (self.created and lost):
            return
        self.path.unlink(missing_ok=True)
        self.created = False
        raise ConfigError(
            f"keyring {self.path} is missing, but the database holds {sum(lost.values())} tenant keys "
            f"wrapped by KEK(s) {', '.join(sorted(lost))}: without that keyring the data sealed with "
            f"them cannot be opened; restore {self.path} from backup (mode 0600), or set "
            "governance.key_provider to the provider that wrapped them; crmhub did not create a new one"
        )

    @property
    def current_kek_id(self) -> str:
        return self._current

    @property
    def kek_ids(self) -> tuple[str, ...]:
        """Every KEK version the keyring holds."""
        return tuple(self._keys)

    def wrap(self, kek_id: str, plaintext_key: bytes, aad: bytes) -> bytes:
        return _wrap_with(self._kek(kek_id), plaintext_key, aad)

    def unwrap(self, kek_id: str, wrapped_key: bytes, aad: bytes) -> bytes:
        return _unwrap_with(self._kek(kek_id), wrapped_key, aad)

    def rotate_kek(self) -> str:
        """Add a new KEK version to the keyring file and make it current."""
        with self._lock:
            kek = secrets.token_bytes(_KEK_BYTES)
            kek_id = f"local-{len(self._keys) + 1}-{_kek_fingerprint(kek)}"
            keys = {**self._keys, kek_id: kek}
            self._write(kek_id, keys, replace=True)
            self._current, self._keys = kek_id, keys
            return kek_id

    def _kek(self, kek_id: str) -> bytes:
        try:
            return self._keys[kek_id]
        except KeyError:
            raise ConfigError(
                f"keyring {self.path} has no KEK {kek_id!r}; configure the key provider that wrapped "
                "this key, or rewrap the vault's keys with the current provider"
            ) from None

    def _load_or_create(self) -> tuple[str, dict[str, bytes]]:
        if not self.path.exists():
            kek = secrets.token_bytes(_KEK_BYTES)
            kek_id = f"local-1-{_kek_fingerprint(kek)}"
            with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
                self._write(kek_id, {kek_id: kek}, replace=False)
                self.created = True
        refuse_if_shared(self.path, "keyring")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            current = str(data["current"])
            keys = {str(k): base64.b64decode(v, validate=True) for k, v in data["keys"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise ConfigError(
                f"keyring {self.path} is not a valid crmhub keyring (expected JSON with 'current' and "
                "'keys'); restore it from backup"
            ) from exc
        if current not in keys or any(len(k) != _KEK_BYTES for k in keys.values()):
            raise ConfigError(
                f"keyring {self.path} is inconsistent ('current' missing or a KEK is not 32 bytes); "
                "restore it from backup"
            )
        return current, keys

    def _write(self, current: str, keys: dict[str, bytes], *, replace: bool) -> None:
        """Write the keyring atomically: a 0600 temp file, then link (create) or replace."""
        payload = json.dumps(
            {
                "format": 1,
                "current": current,
                "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()},
            },
            indent=2,
        ).encode()
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        fd = create_private(tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                os.replace(tmp, self.path)
            else:
                os.link(tmp, self.path)  # atomic create: fails if another process won the race
        finally:
            tmp.unlink(missing_ok=True)


class EnvKeyProvider(KeyProvider):
    """One KEK, base64-encoded (32 bytes) in an environment variable (default ``CRMHUB_KEK``).

    Its id is ``env-`` plus a one-way fingerprint of the KEK, so a changed variable is detected
    (unwrap names the missing id) instead of failing as corrupt data. No rotation: rotate by
    setting a new variable and calling ``Vault.rewrap`` with the old and new providers.
    """

    def __init__(self, var: str = "CRMHUB_KEK", *, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get(var)
        fix = (
            f"set {var} to 32 random bytes in base64, e.g. "
            "python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())'"
        )
        if not raw:
            raise ConfigError(f"{var} is not set; {fix}")
        try:
            kek = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{var} is not valid base64; {fix}") from None
        if len(kek) != _KEK_BYTES:
            raise ConfigError(f"{var} must decode to 32 bytes (got {len(kek)}); {fix}")
        self.var = var
        self._kek = kek
        self._kek_id = f"env-{_kek_fingerprint(kek)}"

    @property
    def current_kek_id(self) -> str:
        return self._kek_id

    def wrap(self, kek_id: str, plaintext_key: bytes, aad: bytes) -> bytes:
        self._check_id(kek_id)
        return _wrap_with(self._kek, plaintext_key, aad)

    def unwrap(self, kek_id: str, wrapped_key: bytes, aad: bytes) -> bytes:
        self._check_id(kek_id)
        return _unwrap_with(self._kek, wrapped_key, aad)

    def _check_id(self, kek_id: str) -> None:
        if kek_id != self._kek_id:
            raise ConfigError(
                f"{self.var} holds KEK {self._kek_id!r}, not {kek_id!r}; set {self.var} to the KEK that "
                "wrapped this key, or rewrap the vault's keys"
            )


_BUILTIN: dict[str, type[KeyProvider]] = {"local": LocalKeyringProvider, "env": EnvKeyProvider}


def load_key_provider(name: str, **options: Any) -> KeyProvider:
    """Instantiate provider ``name`` (built in, or from entry-point group ``crmhub.key_providers``)
    with ``options``; an unknown name or a bad plugin is a :class:`ConfigError`."""
    cls: Any = _BUILTIN.get(name)
    if cls is None:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            available = sorted({*_BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
            raise ConfigError(
                f"unknown key provider {name!r}; available: {', '.join(available)} "
                f"(install a plugin that registers it under entry-point group {ENTRY_POINT_GROUP!r})"
            )
        try:
            cls = found[0].load()
        except Exception as exc:
            raise ConfigError(f"key provider plugin {name!r} failed to import: {type(exc).__name__}") from exc
    if not (isinstance(cls, type) and issubclass(cls, KeyProvider)):
        raise ConfigError(f"key provider {name!r} is not a KeyProvider subclass")
    provider = cls(**options)
    assert isinstance(provider, KeyProvider)
    return provider
