"""services.oauth_clients: the OAuth clients from settings (``oauth.*``, ``CRMHUB_OAUTH__*``) and the
clients file (``<data_dir>/oauth-clients.yaml``), per provider settings first; the sandbox's file is
an ordinary one; the flat variables of earlier versions are refused naming their replacement; no
error ever shows a secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.runtime import CLIENTS_FILE, start_sandbox
from schemas.errors import ConfigError
from schemas.settings import RENAMED_ENV, load_settings
from services.oauth_clients import (
    CLI_REDIRECT_URI,
    api_ca_files,
    clients_file,
    oauth_configs,
    read_clients_file,
)

SF_FILE_SECRET = "file-sf-secret-0123456789"
HS_FILE_SECRET = "file-hs-secret-0123456789"


@pytest.fixture(autouse=True)
def no_oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's own ``CRMHUB_OAUTH__*`` (and legacy) variables stay out of these tests."""
    for name in list(os.environ):
        if name.startswith("CRMHUB_OAUTH") or name in RENAMED_ENV:
            monkeypatch.delenv(name)


def write_clients(data_dir: Path, text: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "oauth-clients.yaml"
    path.write_text(text)
    return path


CLIENTS_YAML = f"""
salesforce:
  client_id: file-sf
  client_secret: {SF_FILE_SECRET}
  login_url: https://acme.my.salesforce.com
  ca_file: certs/ca.pem
  extra_hosts: ["sf.internal.example:8443"]
hubspot:
  client_id: file-hs
  client_secret: {HS_FILE_SECRET}
"""


def test_credentials_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CRMHUB_OAUTH__SALESFORCE__CLIENT_ID": "sf-id",
        "CRMHUB_OAUTH__SALESFORCE__CLIENT_SECRET": "sf-secret",
        "CRMHUB_OAUTH__SALESFORCE__LOGIN_URL": "https://acme.my.salesforce.com",
        "CRMHUB_OAUTH__HUBSPOT__CLIENT_ID": "hs-id",
        "CRMHUB_OAUTH__HUBSPOT__CLIENT_SECRET": "hs-secret",
    }.items():
        monkeypatch.setenv(name, value)
    sf, hs = oauth_configs(load_settings(data_dir=tmp_path))
    assert sf.token_url == "https://acme.my.salesforce.com/services/oauth2/token"
    assert sf.redirect_uri == "http://127.0.0.1:8765/callback" == CLI_REDIRECT_URI
    assert hs.token_url == "https://api.hubapi.com/oauth/v1/token" and hs.client_id == "hs-id"
    assert sf.ca_path is None and hs.verify() is True  # the system trust store
    monkeypatch.delenv("CRMHUB_OAUTH__HUBSPOT__CLIENT_SECRET")
    with pytest.raises(ConfigError, match="CRMHUB_OAUTH__HUBSPOT__CLIENT_SECRET"):
        load_settings(data_dir=tmp_path)


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED_ENV.items()))
def test_the_flat_variables_of_earlier_versions_are_refused_naming_the_new_one(
    old: str, new: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(old, "value-that-must-not-show-0123")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"{old} is no longer read: set {new}" in str(err.value)
    assert "value-that-must-not-show" not in str(err.value)


def test_the_clients_file_is_read_when_present(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert oauth_configs(load_settings(data_dir=data_dir)) == []  # no file, nothing set: no provider
    path = write_clients(data_dir, CLIENTS_YAML)
    settings = load_settings(data_dir=data_dir)
    assert clients_file(settings) == path
    sf, hs = oauth_configs(settings)
    assert (sf.client_id, sf.client_secret.get_secret_value()) == ("file-sf", SF_FILE_SECRET)
    assert sf.authorize_url == "https://acme.my.salesforce.com/services/oauth2/authorize"
    assert sf.ca_path == data_dir / "certs" / "ca.pem"  # relative to the file
    assert "sf.internal.example:8443" in sf.instance_allowlist
    assert hs.client_id == "file-hs" and hs.ca_path is None
    assert api_ca_files(settings) == {"salesforce": data_dir / "certs" / "ca.pem"}


def test_a_settings_block_wins_over_the_files_per_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    write_clients(data_dir, CLIENTS_YAML)
    monkeypatch.setenv("CRMHUB_OAUTH__HUBSPOT__CLIENT_ID", "env-hs")
    monkeypatch.setenv("CRMHUB_OAUTH__HUBSPOT__CLIENT_SECRET", "env-hs-secret")
    monkeypatch.setenv("CRMHUB_OAUTH__HUBSPOT__API_URL", "https://api-eu1.hubapi.com")
    sf, hs = oauth_configs(load_settings(data_dir=data_dir))
    assert sf.client_id == "file-sf"  # no settings block: the file's
    assert hs.client_id == "env-hs" and hs.client_secret.get_secret_value() == "env-hs-secret"
    assert hs.token_url == "https://api-eu1.hubapi.com/oauth/v1/token"
    elsewhere = tmp_path / "secrets" / "clients.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("salesforce: {client_id: mounted, client_secret: s}\n")
    monkeypatch.setenv("CRMHUB_OAUTH__CLIENTS_FILE", str(elsewhere))
    (sf, _hs) = oauth_configs(load_settings(data_dir=data_dir))
    assert sf.client_id == "mounted" and sf.token_url == "https://login.salesforce.com/services/oauth2/token"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"salesforce: {{client_secret: {SF_FILE_SECRET}}}\n", "salesforce.client_id: Field required"),
        (f"hubspot: {{client_id: x, client_secret: {HS_FILE_SECRET}, api_url: 7}}\n", "hubspot.api_url"),
        (f"pipedrive: {{client_id: x, client_secret: {SF_FILE_SECRET}}}\n", "pipedrive: Extra inputs"),
        (f"salesforce: [{SF_FILE_SECRET}\n", "fix its YAML"),
    ],
)
def test_a_bad_clients_file_names_the_file_and_field_never_the_secret(
    tmp_path: Path, text: str, shown: str
) -> None:
    path = write_clients(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        read_clients_file(path)
    assert str(path) in str(err.value) and shown in str(err.value)
    assert SF_FILE_SECRET not in str(err.value) and HS_FILE_SECRET not in str(err.value)


def test_an_invalid_url_names_its_origin_not_the_secret(tmp_path: Path) -> None:
    write_clients(
        tmp_path, f"salesforce: {{client_id: a, client_secret: {SF_FILE_SECRET}, login_url: http://x}}\n"
    )
    with pytest.raises(
        ConfigError, match=r"salesforce in .*oauth-clients\.yaml: login_url must be an https"
    ) as err:
        oauth_configs(load_settings(data_dir=tmp_path))
    assert SF_FILE_SECRET not in str(err.value)


def test_registered_redirect_uris_choose_and_check_the_redirect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = "http://127.0.0.1:8000/oauth/callback"
    write_clients(
        tmp_path, f"hubspot: {{client_id: a, client_secret: {HS_FILE_SECRET}, redirect_uris: ['{web}']}}\n"
    )
    settings = load_settings(data_dir=tmp_path)
    (hs,) = oauth_configs(settings)
    assert hs.redirect_uri == web  # the CLI's default is not registered: the app's first one
    assert oauth_configs(settings, redirect_uri=web)[0].redirect_uri == web
    with pytest.raises(ConfigError) as err:
        oauth_configs(settings, redirect_uri="http://127.0.0.1:1/x")
    assert "http://127.0.0.1:1/x is not registered with the hubspot app" in str(err.value)
    assert web in str(err.value) and HS_FILE_SECRET not in str(err.value)
    monkeypatch.setenv("CRMHUB_OAUTH__REDIRECT_URI", "http://127.0.0.1:2/y")  # the setting is checked too
    with pytest.raises(ConfigError, match="not registered"):
        oauth_configs(load_settings(data_dir=tmp_path))


@pytest.mark.integration
def test_the_sandbox_writes_an_ordinary_clients_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_sandbox(data_dir) as sb:
        path = data_dir / CLIENTS_FILE
        assert sb.clients_file == path and path.stat().st_mode & 0o777 == 0o600
        settings = load_settings(data_dir=data_dir)
        sf, hs = oauth_configs(settings)
        info = sb.info
        assert (sf.client_id, hs.client_id) == (info.salesforce_client_id, info.hubspot_client_id)
        assert sf.token_url == f"{info.salesforce_url}/services/oauth2/token"
        assert hs.instance_url_fixed == info.hubspot_url
        assert sf.ca_path == hs.ca_path == Path(info.ca_path)
        assert info.salesforce_url.removeprefix("https://") in sf.instance_allowlist
        assert sf.redirect_uri == CLI_REDIRECT_URI  # registered by the sandbox
        assert api_ca_files(settings) == {"salesforce": Path(info.ca_path), "hubspot": Path(info.ca_path)}
        assert "sandbox.json" not in path.read_text() and "control" not in path.read_text()
    # restarted, it rewrites its own file (same clients), but never a deployment's
    with start_sandbox(data_dir) as again:
        assert again.info.salesforce_client_id == info.salesforce_client_id
    path.write_text("salesforce: {client_id: real, client_secret: real-secret}\n")
    with pytest.raises(ConfigError, match="was not written by the sandbox"), start_sandbox(data_dir):
        pass
    assert "real-secret" in path.read_text()
