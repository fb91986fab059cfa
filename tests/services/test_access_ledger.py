"""The human access ledger: an ``access`` event per touch, the actor a keyed or opaque id (the same
operator is the same actor; another tenant sees another hash), a signed checkpoint over it, and
an unknown action refused. Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine

from api.audit.reports import access_report, lineage_report
from governance.lineage import CheckpointSigner, Ledger
from governance.pseudonym import Pseudonymizer, StaticKeySource
from services.access_ledger import cli_actor, codec_actor, record_access, web_actor
from tests.api.web.conftest import make_tenant

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PS = Pseudonymizer(StaticKeySource({"acme": b"a" * 32, "other": b"b" * 32}))


def test_actors_are_keyed_or_opaque_and_stable() -> None:
    ana = cli_actor(PS, "acme", "Ana.Ops")
    assert ana == cli_actor(PS, "acme", "ana.ops ") and ana.startswith("cli:kh_") and "ana" not in ana
    assert ana != cli_actor(PS, "other", "ana.ops")  # unlinkable across tenants
    assert web_actor("5f1c") == "web:5f1c" and codec_actor("ops-1") == "codec:ops-1"


def test_an_access_is_a_signed_ledger_event_listed_apart_from_runs(db_engine: Engine, tmp_path) -> None:
    make_tenant(db_engine, "acme")
    signer = CheckpointSigner.load_or_create(tmp_path / "signing.key")
    actor = cli_actor(PS, "acme", "ana")
    index = record_access(db_engine, "acme", "key_rotate", actor, at=NOW, target="data key v2", signer=signer)
    record_access(db_engine, "acme", "dsr_export", web_actor("u1"), at=NOW, counts={"held": 3})
    ledger = Ledger(db_engine, "acme")
    assert ledger.checkpoints()[-1].size == index + 1  # the first is covered by a signed checkpoint
    report = access_report(db_engine, "acme")
    assert report["by_action"] == {"dsr_export": 1, "key_rotate": 1}
    first = report["events"][0]
    assert (first["index"], first["actor"], first["target"]) == (index, actor, "data key v2")
    assert report["events"][1]["counts"] == {"held": 3}
    assert lineage_report(db_engine, "acme")["runs"] == []  # a person's touch is not a run
    with pytest.raises(ValueError, match="unknown human-access action 'peek'"):
        record_access(db_engine, "acme", "peek", actor, at=NOW)
