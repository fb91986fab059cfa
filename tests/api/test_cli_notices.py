"""``crmhub tenant contacts add|list|remove`` against a real database (typer's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner, Result

from api.cli import app as cli
from store import notices as notice_store
from tests.api.web.conftest import make_tenant


@pytest.fixture
def acme(tmp_path: Path, db_url: str, db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("CRMHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRMHUB_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "250")
    make_tenant(db_engine, "acme")
    return db_engine


def crmhub(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_contacts_add_list_remove_keep_addresses_sealed(acme: Engine) -> None:
    mail = crmhub(
        "tenant", "contacts", "add", "--tenant", "acme", "--label", "dpo", "--email", "dpo@acme.example"
    )
    assert mail.exit_code == 0, (mail.output, mail.exception)
    hook = crmhub(
        "tenant",
        "contacts",
        "add",
        "--tenant",
        "acme",
        "--label",
        "ops-hook",
        "--webhook",
        "https://hooks.acme.example/n",
    )
    assert hook.exit_code == 0, (hook.output, hook.exception)
    assert "whsec_" in hook.output
    listed = crmhub("tenant", "contacts", "list", "--tenant", "acme", "--json")
    rows = json.loads(listed.output)
    assert sorted((r["channel"], r["label"]) for r in rows) == [("email", "dpo"), ("webhook", "ops-hook")]
    assert "dpo@acme.example" not in listed.output and "hooks.acme.example" not in listed.output
    with acme.connect() as conn:
        sealed = b"".join(
            bytes(v) for v in conn.execute(select(notice_store.contacts.c.target_sealed)).scalars()
        )
    assert b"dpo@acme.example" not in sealed
    email_id = next(r["id"] for r in rows if r["channel"] == "email")
    removed = crmhub("tenant", "contacts", "remove", "--tenant", "acme", email_id)
    assert removed.exit_code == 0, (removed.output, removed.exception)
    again = crmhub("tenant", "contacts", "remove", "--tenant", "acme", email_id)
    assert again.exit_code != 0 and "no contact" in str(again.exception)
    assert [
        r["label"]
        for r in json.loads(crmhub("tenant", "contacts", "list", "--tenant", "acme", "--json").output)
    ] == ["ops-hook"]


def test_contacts_of_an_unknown_tenant_name_the_fix(acme: Engine) -> None:
    result = crmhub("tenant", "contacts", "list", "--tenant", "nobody")
    assert result.exit_code != 0 and "crmhub tenant create nobody" in str(result.exception)
