"""An offboarded tenant (issue 16): ``crmhub web user add`` refuses it with a clear error, and a
login at it — after the web app's cached keys are re-checked against the database — is 401 like any
wrong credentials, never a 500. Offboarding runs as the operator runs it (``crmhub tenant offboard``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from api.cli import app as cli
from api.cli_web import add_user
from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings
from store import keys as key_store
from store import users as user_store
from tests.api.web.conftest import PASSWORD, AppFactory, asgi_client, login

SHRED_CHECK_S = 0.05


@pytest.fixture
def settings(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CRMHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRMHUB_DATABASE_URL", db_url)
    return load_settings(
        data_dir=tmp_path / "data", database_url=db_url, governance={"shred_check_s": SHRED_CHECK_S}
    )


def _offboard(tmp_path: Path, tenant: str) -> None:
    result = CliRunner().invoke(
        cli, ["tenant", "offboard", "--tenant", tenant, "--yes", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, (result.output, result.exception)


async def test_an_offboarded_tenant_gets_no_new_user_and_its_logins_are_401(
    settings: Settings,
    tenant_user: tuple[str, str],
    app_factory: AppFactory,
    db_engine: Engine,
    tmp_path: Path,
) -> None:
    tenant, email = tenant_user
    app = app_factory(settings=settings)
    async with asgi_client(app) as c:
        assert (await login(c, tenant, email)).status_code == 303  # the app now holds the keys cached
        c.cookies.clear()
        _offboard(tmp_path, tenant)
        with db_engine.connect() as conn:
            assert key_store.shredded_at(conn, tenant) is not None
        await asyncio.sleep(SHRED_CHECK_S * 3)  # past the vault's re-check of the shredded state
        for attempt in (email, "someone.else@acme.example"):
            r = await login(c, tenant, attempt)
            assert r.status_code == 401, r.text
            assert "Organisation, email or password is wrong." in r.text
        assert (await login(c, "nobody-here", email)).status_code == 401  # the same as unknown
    async with asgi_client(app_factory(settings=settings)) as fresh:  # no key cached: read afresh
        r = await login(fresh, tenant, email)
        assert r.status_code == 401 and "Organisation, email or password is wrong." in r.text
    with pytest.raises(ConfigError) as refused:
        add_user(settings, tenant, "new@acme.example", PASSWORD)
    assert f"tenant {tenant!r} was offboarded" in str(refused.value)
    assert "crmhub tenant create" in str(refused.value)
    cli_add = CliRunner().invoke(
        cli, ["web", "user", "add", "--tenant", tenant, "--email", "new@acme.example"],
        env={"CRMHUB_WEB_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert cli_add.exit_code != 0 and "was offboarded" in str(cli_add.exception)
    with db_engine.connect() as conn:
        assert user_store.list_users(conn, tenant) == []
