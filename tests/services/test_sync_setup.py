"""services.sync_setup: the one create-sync check of ``crmhub sync create`` and the web app's
``POST /syncs`` — tenant, instruction version, and both connections existing *and the tenant's*;
a refusal names the field and the fix and stores nothing. The CLI runs as a user runs it (typer's
CliRunner on this test's database); the web form's checks are in tests/api/web/test_web_connect.py
and the cross-tenant sweep in tests/chaos/test_isolation.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from api.cli import app as cli
from api.demo import demo_instruction
from schemas.errors import ConfigError
from services.sync_setup import NewSyncRefused, create_sync
from store import connections as connection_store
from store import instructions as instruction_store
from store import syncs as sync_store
from tests.api.web.conftest import make_tenant


def add_connection(engine: Engine, tenant: str, connection_id: str, provider: str) -> None:
    with engine.begin() as conn:
        connection_store.insert_connection(
            conn,
            id=connection_id,
            tenant=tenant,
            provider=provider,
            instance_url="https://acme.my.salesforce.com"
            if provider == "salesforce"
            else "https://api.hubapi.com",
            scopes=("api",),
            access_token_sealed=b"sealed-a",
            refresh_token_sealed=b"sealed-r",
            access_expires_at=None,
            now=datetime.now(UTC),
        )


def add_instruction(engine: Engine, tenant: str, version: int = 1) -> None:
    ins = demo_instruction(tenant, version)
    with engine.begin() as conn:
        instruction_store.add_instruction(
            conn,
            tenant=tenant,
            version=version,
            content=ins.model_dump(mode="json"),
            content_hash=ins.content_hash,
            now=datetime.now(UTC),
        )


@pytest.fixture
def two_tenants(db_engine: Engine) -> Engine:
    """acme and globex, each with an instruction v1, a Salesforce and a HubSpot connection."""
    for tenant in ("acme", "globex"):
        make_tenant(db_engine, tenant)
        add_instruction(db_engine, tenant)
        add_connection(db_engine, tenant, f"{tenant}-sf", "salesforce")
        add_connection(db_engine, tenant, f"{tenant}-hs", "hubspot")
    return db_engine


def definition(**change: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "tenant": "acme",
        "id": "contacts",
        "source_connection_id": "acme-sf",
        "source_stream": "Contact",
        "destination_connection_id": "acme-hs",
        "destination_stream": "contacts",
        "mapping": {"Email": "email"},
        "destination_id_property": "email",
        "source_key_property": "Email",
        "instruction_version": 1,
    }
    return {**spec, **change}


def syncs_of(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(sync_store.syncs)).scalar_one())


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        ({"tenant": "initech"}, "tenant", "crmhub tenant create initech"),
        ({"instruction_version": 4}, "instruction_version", "crmhub instruction load FILE"),
        ({"source_connection_id": "nope"}, "source_connection_id", "crmhub connections list --tenant acme"),
        (
            {"source_connection_id": "globex-sf"},
            "source_connection_id",
            "crmhub connections list --tenant acme",
        ),
        ({"destination_connection_id": "globex-hs"}, "destination_connection_id", "crmhub connect PROVIDER"),
    ],
)
def test_the_check_names_the_field_and_the_fix_and_stores_nothing(
    two_tenants: Engine, change: dict[str, Any], field: str, fix: str
) -> None:
    spec = sync_store.SyncSpec.model_validate(definition(**change))
    with pytest.raises(NewSyncRefused) as err:
        create_sync(two_tenants, spec)
    assert (
        err.value.field == field and err.value.message.startswith(f"{field}: ") and fix in err.value.message
    )
    assert "'globex'" not in err.value.message  # another tenant's connection is not said to be one
    assert syncs_of(two_tenants) == 0
    if field.endswith("connection_id"):  # reads exactly like an unknown id
        unknown = sync_store.SyncSpec.model_validate(definition(**{field: "unknown-id"}))
        with pytest.raises(NewSyncRefused) as same:
            create_sync(two_tenants, unknown)
        assert same.value.message == err.value.message.replace(str(change[field]), "unknown-id")


def test_a_sync_of_the_tenants_own_connections_is_stored_once(two_tenants: Engine) -> None:
    spec = sync_store.SyncSpec.model_validate(definition())
    row = create_sync(two_tenants, spec)
    assert row.spec == spec and row.cursor is None
    with pytest.raises(ConfigError, match="already exists"):
        create_sync(two_tenants, spec)
    assert syncs_of(two_tenants) == 1


@pytest.fixture
def cli_env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CRMHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRMHUB_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "250")
    return tmp_path


def sync_create(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data))
    return CliRunner().invoke(cli, ["sync", "create", str(path)])


def test_crmhub_sync_create_refuses_another_tenants_connection(two_tenants: Engine, cli_env: Path) -> None:
    """The CLI never checked this: a sync of acme reading globex's Salesforce is refused, clearly,
    and nothing is created."""
    refused = sync_create(cli_env, definition(source_connection_id="globex-sf"))
    assert refused.exit_code != 0
    message = str(refused.exception)
    assert isinstance(refused.exception, ConfigError)
    assert "sync.yaml: source_connection_id: tenant 'acme' has no connection 'globex-sf'" in message
    assert "crmhub connections list --tenant acme" in message
    assert syncs_of(two_tenants) == 0
    for change in ({"destination_connection_id": "globex-hs"}, {"instruction_version": 9}, {"tenant": "x"}):
        assert sync_create(cli_env, definition(**change)).exit_code != 0
    assert syncs_of(two_tenants) == 0

    created = sync_create(cli_env, definition())
    assert created.exit_code == 0, (created.output, created.exception)
    assert "sync contacts of acme created: Contact → contacts" in created.output
    assert syncs_of(two_tenants) == 1
