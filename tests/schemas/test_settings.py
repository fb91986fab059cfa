from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from schemas.errors import ConfigError
from schemas.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Each test starts in an empty directory with no CRMHUB_* variables set."""
    import os

    for name in list(os.environ):
        if name.startswith("CRMHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_without_a_file() -> None:
    s = load_settings()
    assert s.effective_database_url.startswith("sqlite:///")
    assert s.effective_database_url.endswith(".crmhub/crmhub.db")
    assert s.task_queue("eu") == "crmhub-eu"
    assert s.task_queue("us") == "crmhub-us"
    assert s.regions["eu"].jurisdiction == "EEA"


def test_the_shipped_temporal_yaml_is_valid(monkeypatch) -> None:
    monkeypatch.setenv("CRMHUB_CONFIG", str(REPO / "temporal.yaml"))
    s = load_settings()
    assert s.temporal.dev_server.ui_port == 8233
    assert set(s.regions) >= {"eu", "us"}
    assert s.schedules.sync_interval == timedelta(hours=1)
    assert s.schedules.retention_purge_interval == timedelta(days=1)


def test_environment_overrides_the_file(monkeypatch, tmp_path) -> None:
    (tmp_path / "temporal.yaml").write_text("temporal:\n  address: 10.0.0.1:7233\n  namespace: prod\n")
    monkeypatch.setenv("CRMHUB_TEMPORAL__ADDRESS", "127.0.0.1:7999")
    monkeypatch.setenv("CRMHUB_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    monkeypatch.setenv("CRMHUB_REGIONS__EU__TASK_QUEUE", "eu-frankfurt")
    s = load_settings()
    assert s.temporal.address == "127.0.0.1:7999"
    assert s.temporal.namespace == "prod"  # from the file
    assert s.effective_database_url.startswith("postgresql+psycopg://")
    assert s.task_queue("eu") == "eu-frankfurt"


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("CRMHUB_TEMPORAL__ADDRESS", "no-port", "temporal.address"),
        ("CRMHUB_WORKER__MAX_CONCURRENT_ACTIVITIES", "0", "worker.max_concurrent_activities"),
        ("CRMHUB_DATABASE_URL", "mysql://x", "database_url"),
        ("CRMHUB_DEFAULT_REGION", "mars", "default_region"),
        ("CRMHUB_SCHEDULES__SYNC_INTERVAL", "PT10S", "schedules.sync_interval"),
    ],
)
def test_bad_values_name_field_and_fix(monkeypatch, env, value, field) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    msg = str(info.value)
    assert field in msg or field.split(".")[0] in msg
    assert "CRMHUB_" in msg  # says which variable to set
    assert "\n" not in msg  # one line


def test_unknown_key_in_file_is_refused(tmp_path) -> None:
    (tmp_path / "temporal.yaml").write_text("temporal:\n  adress: 127.0.0.1:7233\n")
    with pytest.raises(ConfigError, match=r"temporal\.adress: unknown setting"):
        load_settings()


def test_duplicate_task_queues_are_refused(tmp_path) -> None:
    (tmp_path / "temporal.yaml").write_text(
        "regions:\n  eu: {task_queue: q, jurisdiction: EEA}\n  us: {task_queue: q, jurisdiction: US}\n"
    )
    with pytest.raises(ConfigError, match="own task_queue"):
        load_settings()


def test_missing_named_config_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CRMHUB_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_broken_yaml_is_a_config_error(tmp_path) -> None:
    (tmp_path / "temporal.yaml").write_text("temporal: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_settings()


def test_unknown_region_lookup() -> None:
    with pytest.raises(ConfigError, match="unknown region 'ap'"):
        load_settings().task_queue("ap")


def test_a_file_listing_regions_gets_exactly_those(tmp_path) -> None:
    (tmp_path / "temporal.yaml").write_text(
        "default_region: fra\nregions:\n  fra: {task_queue: q-fra, jurisdiction: EEA}\n"
    )
    assert set(load_settings().regions) == {"fra"}


def test_the_shipped_web_block_is_valid_when_uncommented(monkeypatch, tmp_path) -> None:
    text = (REPO / "temporal.yaml").read_text()
    block = text[text.index("# web:") :]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines() if line.startswith("# "))
    path = tmp_path / "web.yaml"
    path.write_text(uncommented + "\n")  # metrics_token stays a comment: it belongs in the environment
    monkeypatch.setenv("CRMHUB_CONFIG", str(path))
    web = load_settings().web
    assert web.trusted_proxies == () and web.login_window == timedelta(minutes=5)
    assert web.login_attempts_per_client == 5 and web.password_hash_slots == 2 and web.metrics_token is None


@pytest.mark.parametrize(
    ("env", "value", "says"),
    [
        (
            "CRMHUB_WEB__TRUSTED_PROXIES",
            '["10.0.0.1/24"]',
            "'10.0.0.1/24' is not an IP address or CIDR network without host bits",
        ),
        ("CRMHUB_WEB__TRUSTED_PROXIES", '["proxy.example"]', "not an IP address or CIDR network"),
        ("CRMHUB_WEB__LOGIN_WINDOW", "PT1S", "web.login_window"),
        ("CRMHUB_WEB__PASSWORD_HASH_SLOTS", "0", "web.password_hash_slots"),
    ],
)
def test_bad_web_settings_name_the_field(monkeypatch, env: str, value: str, says: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert says in str(err.value)
    assert env in str(err.value)


def test_trusted_proxies_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CRMHUB_WEB__TRUSTED_PROXIES", '["10.0.0.5", "192.168.0.0/16", "::1"]')
    monkeypatch.setenv("CRMHUB_WEB__METRICS_TOKEN", "t0ken-t0ken-t0ken")
    web = load_settings().web
    assert web.trusted_proxies == ("10.0.0.5", "192.168.0.0/16", "::1")
    assert web.metrics_token is not None and "t0ken" not in repr(web)
