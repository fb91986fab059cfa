"""services.connectors: connector options from settings (``CRMHUB_CONNECTORS__<PROVIDER>__<OPTION>``)
are checked when a worker starts, name the setting when wrong, and reach the connector's config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.salesforce import SalesforceConnector
from schemas.errors import ConfigError, ReauthorizationRequired
from schemas.settings import load_settings
from services.connectors import ConnectionConnectors
from store import connections as connection_store
from store.connections import ConnectionRow, ConnectionStatus
from tests.api.web.conftest import make_tenant


def factory(options: dict[str, dict[str, Any]]) -> ConnectionConnectors:
    engine: Any = None  # options are checked before any connection is read
    return ConnectionConnectors(engine, lambda _id: engine, options=options)


def connection_row(
    provider: str, instance_url: str, *, scopes: tuple[str, ...] = ("oauth",)
) -> ConnectionRow:
    now = datetime.now(UTC)
    return ConnectionRow(
        id="c1",
        tenant="acme",
        provider=provider,
        status=ConnectionStatus.ACTIVE,
        status_message=None,
        instance_url=instance_url,
        scopes=scopes,
        access_token_sealed=None,
        refresh_token_sealed=None,
        access_expires_at=None,
        refreshed_at=None,
        refresh_claim_owner=None,
        refresh_claimed_until=None,
        created_at=now,
        updated_at=now,
    )


def test_options_come_from_the_environment_and_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMHUB_CONNECTORS__HUBSPOT__EXPORT_THRESHOLD", "20000")
    settings = load_settings()
    assert settings.connectors == {"hubspot": {"export_threshold": "20000"}}
    connectors = factory(settings.connectors)

    row = connection_row("hubspot", "https://api.hubapi.com", scopes=("oauth", "crm.export"))
    config: Any = connectors._config(HubSpotConnector, row)
    assert config.export_threshold == 20_000
    assert config.granted_scopes == ("oauth", "crm.export") and config.exports_allowed
    assert config.rate_limit_key == "c1" and config.base_url == "https://api.hubapi.com"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hubspot": {"export_treshold": 1}}, "CRMHUB_CONNECTORS__HUBSPOT__EXPORT_TRESHOLD: hubspot has no"),
        ({"hubspot": {"export_threshold": "many"}}, "CRMHUB_CONNECTORS__HUBSPOT__EXPORT_THRESHOLD: Input"),
        ({"hubspot": {"export_threshold": 0}}, "CRMHUB_CONNECTORS__HUBSPOT__EXPORT_THRESHOLD: Input should"),
        ({"hubspot": {"granted_scopes": ["crm.export"]}}, "set by each connection, not by settings"),
        ({"salesforce": {"instance_url": "https://x"}}, "set by each connection, not by settings"),
        ({"zoho": {"page_size": 5}}, "CRMHUB_CONNECTORS__ZOHO: no connector 'zoho' is installed"),
    ],
)
def test_a_wrong_option_fails_at_start_naming_the_setting(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        factory(options)
    assert message in str(err.value)


def test_a_connections_ca_is_its_providers_ca_file_not_a_sandbox_file(tmp_path: Path) -> None:
    """The CA a connection's API calls trust is the ``ca_file`` of its provider's OAuth settings, for
    every connection of that provider; a provider without one keeps the system store."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "sandbox.json").write_text('{"ca_path": "/elsewhere.pem"}')  # read by nothing any more
    engine: Any = None
    connectors = ConnectionConnectors(engine, lambda _id: engine, ca_files={"salesforce": ca})
    sf: Any = connectors._config(
        SalesforceConnector, connection_row("salesforce", "https://acme.my.salesforce.com")
    )
    hs: Any = connectors._config(HubSpotConnector, connection_row("hubspot", "https://127.0.0.1:8702"))
    assert sf.ca_bundle == ca
    assert hs.ca_bundle is None


class DeadTokens:
    """A token source whose refresh token died (what a revoked app looks like to a connector)."""

    def access_token(self) -> str:
        raise ReauthorizationRequired("connection c1 needs a new OAuth connect", code="invalid_grant")

    def refresh(self, rejected: str) -> str:
        raise AssertionError("never reached")


def test_locate_never_fails_a_connect_and_stores_nothing_it_did_not_hear(
    db_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A vendor that cannot be asked where the data lives answers ``None`` (logged with the error
    code only); the connection keeps no region, and the new-sync check asks again."""
    make_tenant(db_engine, "acme")
    with db_engine.begin() as conn:
        connection_store.insert_connection(
            conn,
            id="c1",
            tenant="acme",
            provider="hubspot",
            instance_url="https://api.hubapi.com",
            scopes=("oauth",),
            access_token_sealed=b"sealed-a",
            refresh_token_sealed=b"sealed-r",
            access_expires_at=None,
            now=datetime.now(UTC),
        )
    connectors = ConnectionConnectors(db_engine, lambda _id: DeadTokens())
    caplog.set_level("WARNING", logger="services.connectors")
    assert connectors.locate("c1") is None
    assert "region lookup failed: connection=c1 error=invalid_grant" in caplog.text
    with db_engine.connect() as conn:
        row = connection_store.get_connection(conn, "c1")
    assert row is not None and row.region_instance is None
