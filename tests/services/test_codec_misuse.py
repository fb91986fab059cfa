"""The codec-token misuse signal on the database of ``db_url`` (SQLite and PostgreSQL), fed by the
real codec server app (its ``codec_audit`` rows and ``codec_decode`` access events): a token asking
for another namespace opens one incident over the tenants it decoded (subjects from lineage), a
second check finds that incident; undecryptable payloads from a token that decoded nothing are a
finding but no breach; decode volume counts against the token's baseline; a new client host counts
only when switched on and with a baseline. No token secret or client address in the incident or the
ledger."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payloads

from governance.lineage import Ledger
from governance.registry import Registry
from governance.vault import Vault
from schemas.codec_misuse import CodecMisuseSettings
from schemas.lineage import EventKind
from services.codec_misuse import Rule, codec_findings, open_codec_incidents
from services.incidents import Signal, get_incident
from store import codec_audit as audit_store
from store import ledger_outbox, notices
from tests.incident_support import ACME, GLOBEX, HOUR, INITECH, seeded_vault
from workers.codec_access import DecodeLedger
from workers.codec_server import CodecServerSettings, create_codec_app, parse_tokens
from workers.converter import VaultPayloadCodec, make_data_converter

NS = "crmhub-prod"
SECRETS = {"alice": "alice-secret-0123456789abcdef", "bob": "bob-secret-0123456789abcdef00",
           "carol": "carol-secret-0123456789abcdef0"}  # fmt: skip
RULES = CodecMisuseSettings(volume_floor=20)


@pytest.fixture
def vault(db_engine: Engine, tmp_path: Path) -> Vault:
    return seeded_vault(db_engine, tmp_path, datetime.now(UTC) - 24 * HOUR)


@pytest.fixture
def codec(db_engine: Engine, vault: Vault) -> TestClient:
    spec = ",".join(f"{who}:{secret}:{NS}" for who, secret in SECRETS.items())
    app = create_codec_app(
        CodecServerSettings(tokens=parse_tokens(spec)), vault, decode_ledger=DecodeLedger(db_engine)
    )
    return TestClient(app)


def _body(vault: Vault, values: list[object], namespace: str = NS) -> str:
    payloads = asyncio.run(make_data_converter(VaultPayloadCodec(vault, namespace)).encode(values))
    return json_format.MessageToJson(Payloads(payloads=payloads))


def _post(client: TestClient, who: str, body: str, namespace: str = NS) -> int:
    headers = {"Authorization": f"Bearer {SECRETS[who]}", "X-Namespace": namespace}
    return client.post("/decode", content=body, headers=headers).status_code


def _history(
    engine: Engine, token: str, *, hours: int, payloads: int, client: str = "10.1.2.3:40000"
) -> None:
    """``hours`` hourly decodes of ``payloads`` each before the window (the token's baseline)."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for h in range(2, hours + 2):
            audit_store.insert_audit(
                conn, audit_store.CodecAuditRow(now - h * HOUR, token, NS, "decode", payloads, "ok", client)
            )


def _stored_text(engine: Engine) -> str:
    with engine.connect() as conn:
        rows = [
            *conn.execute(select(notices.incidents)).all(),
            *conn.execute(select(ledger_outbox.ledger_outbox)).all(),
        ]
    ledgers = [e.model_dump_json() for t in (ACME, GLOBEX, INITECH) for e in Ledger(engine, t).read_events()]
    return repr(rows) + "".join(ledgers)


def test_another_namespace_opens_one_incident_over_the_tenants_decoded(
    db_engine: Engine, registry: Registry, vault: Vault, codec: TestClient
) -> None:
    assert _post(codec, "alice", _body(vault, [{"tenant": ACME}, {"tenant": GLOBEX}, {"run": "r1"}])) == 200
    assert _post(codec, "bob", _body(vault, [{"tenant": INITECH}])) == 200
    for _ in range(RULES.forbidden_threshold - 1):
        assert _post(codec, "alice", _body(vault, [1]), namespace="crmhub-payroll") == 403
    assert codec_findings(db_engine, RULES, now=datetime.now(UTC)) == []  # one short of the threshold
    assert _post(codec, "alice", _body(vault, [1]), namespace="crmhub-payroll") == 403

    (finding,) = codec_findings(db_engine, RULES, now=datetime.now(UTC))
    assert (finding.token_id, [r for r, _ in finding.rules]) == ("alice", [Rule.WRONG_NAMESPACE])
    assert finding.tenants == (ACME, GLOBEX)  # bob's initech is not alice's
    ((_, incident, new),) = open_codec_incidents(db_engine, registry, [finding], RULES, now=datetime.now(UTC))
    assert new and incident is not None
    assert (
        incident.row.signal == Signal.CODEC_TOKEN_MISUSE.value
        and incident.row.nature == "unauthorized_access"
    )
    got = {t.tenant: (t.subjects, t.subjects_basis, t.records) for t in incident.tenants}
    assert got == {ACME: (5, "keyed_hashes", 5), GLOBEX: (4, "keyed_hashes", 5)}
    assert "alice" in incident.row.summary and "3 requests named another namespace" in incident.row.summary
    for tenant in (ACME, GLOBEX):
        (event,) = [e for e in Ledger(db_engine, tenant).read_events() if e.kind is EventKind.INCIDENT]
        assert event.details["signal"] == "codec_token_misuse" and event.details["step"] == "became_aware"
    assert not [e for e in Ledger(db_engine, INITECH).read_events() if e.kind is EventKind.INCIDENT]

    # Misuse that goes on is the same finding: the next check finds the incident, opens none.
    assert _post(codec, "alice", _body(vault, [1]), namespace="crmhub-payroll") == 403
    (again,) = codec_findings(db_engine, RULES, now=datetime.now(UTC))
    ((_, same, new_again),) = open_codec_incidents(db_engine, registry, [again], RULES, now=datetime.now(UTC))
    assert not new_again and same is not None and same.row.id == incident.row.id
    # A window later the requests have aged out of it: nothing is found.
    later = datetime.now(UTC) + RULES.window + timedelta(minutes=5)
    assert codec_findings(db_engine, RULES, now=later) == []
    # Misuse that starts after the incident's window ended (the token was quiet in between) is new.
    assert same.row.window_to is not None
    episode = replace(again, first=same.row.window_to + timedelta(minutes=1))
    ((_, second, new_episode),) = open_codec_incidents(db_engine, registry, [episode], RULES, now=later)
    assert new_episode and second is not None and second.row.id != incident.row.id
    stored = _stored_text(db_engine)
    assert not [s for s in SECRETS.values() if s in stored]
    assert "testclient" not in stored  # the client address stays in codec_audit
    scope = get_incident(db_engine, incident.row.id).row.scope
    assert scope is not None and scope["finding"] == {"token_id": "alice"}


def test_undecryptable_payloads_are_a_finding_but_no_breach_without_decodes(
    db_engine: Engine, registry: Registry, vault: Vault, codec: TestClient
) -> None:
    copied = _body(vault, [{"tenant": ACME}], namespace="crmhub-staging")  # sealed for another namespace
    for _ in range(RULES.failed_threshold):
        assert _post(codec, "carol", copied) == 400
    (finding,) = codec_findings(db_engine, RULES, now=datetime.now(UTC))
    assert [r for r, _ in finding.rules] == [Rule.UNDECRYPTABLE] and finding.tenants == ()
    ((_, incident, new),) = open_codec_incidents(db_engine, registry, [finding], RULES, now=datetime.now(UTC))
    assert incident is None and not new


def test_volume_counts_against_the_tokens_baseline(
    db_engine: Engine, registry: Registry, vault: Vault, codec: TestClient
) -> None:
    bulk = _body(vault, [{"tenant": ACME, "page": i} for i in range(30)])
    assert _post(codec, "bob", bulk) == 200  # 30 payloads, no history: over the floor of 20
    (finding,) = codec_findings(db_engine, RULES, now=datetime.now(UTC))
    assert [r for r, _ in finding.rules] == [Rule.VOLUME] and finding.tenants == (ACME,)
    assert "30 payloads decoded, baseline 0 per 1 h" in finding.summary
    # With a week of 4 payloads an hour the bound is 10 * 4 = 40: 30 is ordinary for bob.
    _history(db_engine, "bob", hours=168, payloads=4)
    assert codec_findings(db_engine, RULES, now=datetime.now(UTC)) == []
    assert _post(codec, "bob", _body(vault, [{"tenant": ACME}] * 11)) == 200  # 41 in the window
    (heavy,) = codec_findings(db_engine, RULES, now=datetime.now(UTC))
    assert [r for r, _ in heavy.rules] == [Rule.VOLUME] and "(bound 40)" in heavy.summary


def test_a_new_client_host_counts_only_when_switched_on_and_with_a_baseline(
    db_engine: Engine, vault: Vault, codec: TestClient
) -> None:
    watch = RULES.model_copy(update={"new_client": True})
    assert _post(codec, "bob", _body(vault, [{"tenant": ACME}])) == 200
    assert codec_findings(db_engine, watch, now=datetime.now(UTC)) == []  # no baseline: nothing is new
    _history(db_engine, "bob", hours=3, payloads=1)  # bob decoded from 10.1.2.3 before
    assert codec_findings(db_engine, RULES, now=datetime.now(UTC)) == []  # off by default
    (finding,) = codec_findings(db_engine, watch, now=datetime.now(UTC))
    assert finding.rules == ((Rule.NEW_CLIENT, "decodes from 1 client host(s) not used in the 7 d before"),)
    _history(db_engine, "bob", hours=1, payloads=1, client="testclient:50000")
    assert codec_findings(db_engine, watch, now=datetime.now(UTC)) == []  # the same host, another port
