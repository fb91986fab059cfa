from __future__ import annotations

import base64
import json
import os
import stat
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import governance.keys as keys_module
from governance.keys import EnvKeyProvider, KeyProvider, LocalKeyringProvider, load_key_provider
from schemas.errors import ConfigError, IntegrityError

KEY = bytes(range(32))


def test_keyring_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keyring.json"
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        provider = LocalKeyringProvider(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["current"] == provider.current_kek_id
    assert len(base64.b64decode(data["keys"][provider.current_kek_id])) == 32
    assert [p.name for p in path.parent.iterdir()] == ["keyring.json"]  # no temp files left


def test_keyring_readable_by_others_is_refused_with_chmod_fix(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    LocalKeyringProvider(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"chmod 600 .*keyring\.json") as info:
        LocalKeyringProvider(path)
    assert "0644" in str(info.value)
    path.chmod(0o600)
    LocalKeyringProvider(path)  # fixed: accepted again


def test_keyring_is_reused_not_regenerated(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    a = LocalKeyringProvider(path)
    wrapped = a.wrap(a.current_kek_id, KEY, b"aad")
    b = LocalKeyringProvider(path)
    assert b.current_kek_id == a.current_kek_id
    assert b.unwrap(b.current_kek_id, wrapped, b"aad") == KEY


def test_keyring_rotation_keeps_old_versions(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    provider = LocalKeyringProvider(path)
    old = provider.current_kek_id
    wrapped_old = provider.wrap(old, KEY, b"a")
    new = provider.rotate_kek()
    assert new != old
    assert provider.current_kek_id == new
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reopened = LocalKeyringProvider(path)
    assert reopened.kek_ids == (old, new)
    assert reopened.unwrap(old, wrapped_old, b"a") == KEY


def test_corrupt_keyring_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(ConfigError, match="not a valid crmhub keyring"):
        LocalKeyringProvider(path)


def test_wrap_is_authenticated(tmp_path: Path) -> None:
    provider = LocalKeyringProvider(tmp_path / "k.json")
    kid = provider.current_kek_id
    wrapped = provider.wrap(kid, KEY, b"tenant-a")
    assert KEY not in wrapped
    with pytest.raises(IntegrityError):
        provider.unwrap(kid, wrapped, b"tenant-b")
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    with pytest.raises(IntegrityError):
        provider.unwrap(kid, bytes(tampered), b"tenant-a")
    with pytest.raises(ConfigError, match="no KEK"):
        provider.unwrap("local-9-unknown", wrapped, b"tenant-a")


def test_env_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    kek = os.urandom(32)
    monkeypatch.setenv("CRMHUB_KEK", base64.b64encode(kek).decode())
    provider = EnvKeyProvider()
    assert provider.current_kek_id.startswith("env-")
    assert kek.hex()[:12] not in provider.current_kek_id
    wrapped = provider.wrap(provider.current_kek_id, KEY, b"x")
    assert provider.unwrap(provider.current_kek_id, wrapped, b"x") == KEY
    with pytest.raises(ConfigError, match="rewrap"):
        provider.unwrap("env-000000000000", wrapped, b"x")
    with pytest.raises(ConfigError, match="rotation"):
        provider.rotate_kek()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "is not set"),
        ("%%%not-base64%%%", "not valid base64"),
        (base64.b64encode(b"short").decode(), "must decode to 32 bytes"),
    ],
)
def test_env_provider_errors_name_the_fix_not_the_value(value: str | None, message: str) -> None:
    environ = {} if value is None else {"MY_KEK": value}
    with pytest.raises(ConfigError, match=message) as info:
        EnvKeyProvider("MY_KEK", environ=environ)
    assert "MY_KEK" in str(info.value)
    assert "base64" in str(info.value)
    if value:
        assert value not in str(info.value)


def test_load_builtin_providers(tmp_path: Path) -> None:
    local = load_key_provider("local", path=tmp_path / "k.json")
    assert isinstance(local, LocalKeyringProvider)
    env = load_key_provider("env", environ={"CRMHUB_KEK": base64.b64encode(KEY).decode()})
    assert isinstance(env, EnvKeyProvider)


class _PluginProvider(KeyProvider):
    def __init__(self, label: str) -> None:
        self.label = label

    @property
    def current_kek_id(self) -> str:
        return f"plugin-{self.label}"

    def wrap(self, kek_id: str, plaintext_key: bytes, aad: bytes) -> bytes:
        return bytes(b ^ 0x5A for b in plaintext_key)

    def unwrap(self, kek_id: str, wrapped_key: bytes, aad: bytes) -> bytes:
        return bytes(b ^ 0x5A for b in wrapped_key)


def test_load_plugin_provider_from_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="fakekms", value=f"{__name__}:_PluginProvider", group=keys_module.ENTRY_POINT_GROUP)
    bad = EntryPoint(name="notaprovider", value="json:dumps", group=keys_module.ENTRY_POINT_GROUP)

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        return [ep, bad] if group == keys_module.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(keys_module, "entry_points", fake_entry_points)
    provider = load_key_provider("fakekms", label="eu")
    assert isinstance(provider, _PluginProvider)
    assert provider.current_kek_id == "plugin-eu"
    with pytest.raises(ConfigError, match="not a KeyProvider"):
        load_key_provider("notaprovider")
    with pytest.raises(ConfigError, match=r"available: env, fakekms, local, notaprovider"):
        load_key_provider("nope")
