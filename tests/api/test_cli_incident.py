"""``crmhub incident`` against a real database (typer's CliRunner): a leaked-credential report on a
connection opens an incident over the connection's lifetime, a tenant without contact is not marked
notified (exit 1, naming the fix), ``check-ledger`` opens one incident for a tampered ledger, and
``repair`` appends, once, the ledger event an open that failed partway owed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from typer.testing import CliRunner, Result

from api.cli import app as cli
from governance.lineage import CheckpointSigner, Ledger
from schemas.lineage import EventKind, LineageEvent
from schemas.settings import load_settings
from store import lineage as lineage_store
from tests.incident_support import GLOBEX, HOUR, hashes, pull_event, seed

T0 = datetime.now(UTC) - 24 * HOUR


@pytest.fixture
def world(tmp_path: Path, db_url: str, db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("CRMHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRMHUB_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "250")
    seed(db_engine, T0)
    return db_engine


def crmhub(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_a_leaked_credential_opens_an_incident_over_the_connections_lifetime(world: Engine) -> None:
    missing = crmhub("incident", "open", "--signal", "leaked-credential", "--summary", "token in a repo")
    assert missing.exit_code != 0 and "needs --connection" in str(missing.exception)
    opened = crmhub(
        "incident", "open", "--signal", "leaked-credential", "--connection", "sa-globex",
        "--summary", "refresh token published in a public repository", "--json",
    )  # fmt: skip
    assert opened.exit_code == 0, (opened.output, opened.exception)
    doc = json.loads(opened.output)
    assert doc["signal"] == "leaked_credential" and doc["nature"] == "unauthorized_access"
    assert doc["window"]["from"].startswith(f"{T0 - 5 * HOUR:%Y-%m-%dT%H:%M}")  # the connection's creation
    assert [(p["tenant"], p["subjects"], p["records"]) for p in doc["tenants"]] == [(GLOBEX, 4, 5)]
    told = crmhub("incident", "notify", doc["incident"])
    assert told.exit_code == 1
    assert (
        "tenant globex: NOT notified: it has no contact; add one with crmhub tenant contacts add"
        in told.output
    )
    shown = crmhub("incident", "show", doc["incident"])
    assert shown.exit_code == 0 and "keyed_hashes" in shown.output and " h open" in shown.output
    listed = crmhub("incident", "list", "--tenant", GLOBEX)
    assert doc["incident"] in listed.output and "0/1" in listed.output


def test_check_ledger_opens_one_incident_for_a_tampered_ledger(world: Engine) -> None:
    nothing = crmhub("incident", "check-ledger")
    assert nothing.exit_code != 0 and "no ledger signing key yet" in str(nothing.exception)
    settings = load_settings()
    signer = CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)
    Ledger(world, GLOBEX).checkpoint(signer)
    clean = crmhub("incident", "check-ledger")
    assert clean.exit_code == 0 and "every tenant's ledger verifies" in clean.output
    with world.begin() as conn:
        conn.execute(
            update(lineage_store.events)
            .where(lineage_store.events.c.tenant == GLOBEX, lineage_store.events.c.idx == 1)
            .values(event=pull_event(GLOBEX, T0, hashes(GLOBEX, 1)).canonical_bytes())
        )
    first = crmhub("incident", "check-ledger")
    assert first.exit_code == 1
    assert "tenant globex: ledger does NOT verify" in first.output and "opened incident inc-" in first.output
    second = crmhub("incident", "check-ledger")
    assert second.exit_code == 1 and "already open: incident inc-" in second.output
    listed = crmhub("incident", "list", "--json")
    assert [i["signal"] for i in json.loads(listed.output)] == ["ledger_verification_failed"]


def test_repair_appends_what_a_failed_open_owed_once(world: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Ledger.append

    def append(self: Ledger, events: Sequence[LineageEvent], **kw: Any) -> list[int]:
        if self.tenant == GLOBEX and any(e.kind is EventKind.INCIDENT for e in events):
            raise OSError("disk full")
        return real(self, events, **kw)

    with monkeypatch.context() as patched:  # (monkeypatch.undo would drop the world's settings too)
        patched.setattr(Ledger, "append", append)
        failed = crmhub(
            "incident", "open", "--summary", "laptop with a database dump stolen", "--from", "2000-01-01"
        )
        assert isinstance(failed.exception, OSError), failed.output
    repaired = crmhub("incident", "repair")
    assert repaired.exit_code == 0, repaired.output
    assert "appended became_aware to tenant globex's ledger" in repaired.output
    assert "2 ledger event(s) appended" in repaired.output  # globex, then initech
    again = crmhub("incident", "repair")
    assert "0 ledger event(s) appended" in again.output
    steps = [e.details["step"] for e in Ledger(world, GLOBEX).read_events() if e.kind is EventKind.INCIDENT]
    assert steps == ["became_aware"]
