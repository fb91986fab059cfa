"""``crmhub sync set-instruction`` and ``crmhub sync set-mapping`` (typer's CliRunner, this test's
database): a sync is pointed only at a stored version of its own tenant that allows every field it
reads; a refusal names the field and the fix and changes nothing. The whole path after a real drift
refusal runs in tests/e2e/test_drift_resume_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import Engine
from typer.testing import CliRunner, Result

from api.cli import app as cli
from tests.api.web.conftest import make_tenant
from tests.api.web.test_web_drift import MAPPING, SYNC, add_instruction, cited, instruction, seed_drifted_sync

SYNC_ARGS = ["--tenant", "acme", "--sync", SYNC]


@pytest.fixture
def acme(tmp_path: Path, db_url: str, db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("CRMHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRMHUB_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "250")
    make_tenant(db_engine, "acme")
    seed_drifted_sync(db_engine, "acme")
    return db_engine


def crmhub(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_set_instruction_checks_version_tenant_and_fields(acme: Engine) -> None:
    missing = crmhub("sync", "set-instruction", *SYNC_ARGS, "--version", "7")
    assert "tenant 'acme' has no instruction v7 (the latest is v1)" in str(missing.exception)

    make_tenant(acme, "tenantb")  # another tenant's version is not the sync's
    add_instruction(acme, instruction("tenantb", 2, list(MAPPING)))
    other = crmhub("sync", "set-instruction", *SYNC_ARGS, "--version", "2")
    assert "tenant 'acme' has no instruction v2" in str(other.exception)
    unknown = crmhub("sync", "set-instruction", "--tenant", "tenantb", "--sync", SYNC, "--version", "2")
    assert "tenant 'tenantb' has no sync 'contacts'" in str(unknown.exception)

    add_instruction(acme, instruction("acme", 2, ["Email", "Job_Title__c", "Lead_Score__c"]))
    refused = crmhub("sync", "set-instruction", *SYNC_ARGS, "--version", "2")
    assert refused.exit_code != 0
    message = str(refused.exception)
    assert "instruction v2 does not allow Contact.Title" in message and "(→ jobtitle)" in message
    assert f"crmhub sync set-mapping --tenant acme --sync {SYNC} --drop Title" in message
    assert cited(acme, "acme") == (1, MAPPING)

    ok = crmhub("sync", "set-instruction", *SYNC_ARGS, "--version", "2", "--rename", "Title=Job_Title__c")
    assert ok.exit_code == 0, (ok.output, ok.exception)
    assert "now cites instruction v2 (was v1)" in ok.output and "Job_Title__c → jobtitle" in ok.output
    assert cited(acme, "acme") == (
        2,
        {"Email": "email", "Job_Title__c": "jobtitle", "Lead_Score__c": "lead_score"},
    )


def test_set_instruction_from_a_file(acme: Engine, tmp_path: Path) -> None:
    ins = instruction("acme", 4, [*MAPPING, "Phone"])
    path = tmp_path / "v4.yaml"
    path.write_text(yaml.safe_dump(ins.model_dump(mode="json")), encoding="utf-8")
    both = crmhub("sync", "set-instruction", *SYNC_ARGS, "--version", "1", "--file", str(path))
    assert "exactly one of --version N" in str(both.exception)
    wrong = crmhub("sync", "set-instruction", "--tenant", "other", "--sync", SYNC, "--file", str(path))
    assert "is an instruction of tenant 'acme', not of 'other'" in str(wrong.exception)

    ok = crmhub("sync", "set-instruction", *SYNC_ARGS, "--file", str(path), "--map", "Phone=phone")
    assert ok.exit_code == 0, (ok.output, ok.exception)
    assert "instruction v4 of acme stored" in ok.output and "Phone → phone" in ok.output
    assert cited(acme, "acme") == (4, {**MAPPING, "Phone": "phone"})


def test_set_mapping_is_checked_against_the_cited_instruction(acme: Engine) -> None:
    nothing = crmhub("sync", "set-mapping", *SYNC_ARGS)
    assert "nothing to change" in str(nothing.exception)
    absent = crmhub("sync", "set-mapping", *SYNC_ARGS, "--drop", "Nope")
    assert "cannot drop Nope: the mapping has no source field Nope" in str(absent.exception)
    malformed = crmhub("sync", "set-mapping", *SYNC_ARGS, "--map", "Phone")
    assert "--map 'Phone' must look like LEFT=RIGHT" in str(malformed.exception)
    outside = crmhub("sync", "set-mapping", *SYNC_ARGS, "--map", "Birthdate=birthdate")
    message = str(outside.exception)
    assert "instruction v1 does not allow Contact.Birthdate" in message
    assert "(allowing Birthdate)" in message and "--drop" not in message
    assert cited(acme, "acme") == (1, MAPPING)

    ok = crmhub("sync", "set-mapping", *SYNC_ARGS, "--drop", "Title")
    assert ok.exit_code == 0, (ok.output, ok.exception)
    assert "Title dropped" in ok.output
    assert cited(acme, "acme") == (1, {"Email": "email", "Lead_Score__c": "lead_score"})
    everything = crmhub("sync", "set-mapping", *SYNC_ARGS, "--drop", "Email", "--drop", "Lead_Score__c")
    assert "the mapping would be empty" in str(everything.exception)
