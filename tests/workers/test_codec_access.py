"""Codec decodes of a tenant's payloads are ``access`` events in that tenant's ledger (actor
``codec:<token id>``), at most one per actor and tenant per window, signed and verifiable offline;
no event written, nothing decoded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from google.protobuf import json_format
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payloads

from governance.keys import LocalKeyringProvider
from governance.lineage import CheckpointSigner, Ledger, verify
from governance.vault import Vault
from schemas.lineage import EventKind
from store.codec_audit import list_audit
from store.engine import make_engine
from workers.codec_access import DecodeLedger, tenants_named
from workers.codec_server import CodecServerSettings, create_codec_app, parse_tokens
from workers.converter import VaultPayloadCodec, make_data_converter

TOKEN = "ops-secret-token-0123456789abcdef"
NS = "crmhub-prod"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": NS, "Content-Type": "application/json"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _body(vault: Vault, values: list[object]) -> str:
    payloads = asyncio.run(make_data_converter(VaultPayloadCodec(vault, NS)).encode(values))
    return json_format.MessageToJson(Payloads(payloads=payloads))


def _decodes(engine: Engine, tenant: str) -> list[tuple[str, str, dict[str, int]]]:
    events = [e for e in Ledger(engine, tenant).read_events() if e.kind is EventKind.ACCESS]
    return [(str(e.details["action"]), str(e.details["actor"]), dict(e.counts)) for e in events]


def test_decodes_are_ledgered_per_tenant_once_per_window_and_verify(
    db_engine: Engine, tmp_path: Path
) -> None:
    vault = Vault(db_engine, LocalKeyringProvider(tmp_path / "keyring.json"))
    signer = CheckpointSigner.load_or_create(tmp_path / "signing.key")
    clock = Clock()
    ledger = DecodeLedger(db_engine, signer=signer, clock=clock)
    settings = CodecServerSettings(tokens=parse_tokens(f"alice:{TOKEN}:{NS}"))
    client = TestClient(create_codec_app(settings, vault, decode_ledger=ledger))
    inputs: list[object] = [
        {"tenant": "acme", "sync_id": "s1"},
        {"tenant": "acme", "sync_id": "s2"},
        {"tenant": "zebra", "sync_id": "z1"},
        {"run_id": "r1"},  # names no tenant: codec_audit only
        42,
    ]
    body = _body(vault, inputs)

    assert client.post("/decode", content=body, headers=HEADERS).status_code == 200
    assert _decodes(db_engine, "acme") == [("codec_decode", "codec:alice", {"payloads": 2})]
    assert _decodes(db_engine, "zebra") == [("codec_decode", "codec:alice", {"payloads": 1})]

    # the UI re-decodes the same history on every page view: within the window, no new event
    clock.now += timedelta(minutes=59)
    assert client.post("/decode", content=body, headers=HEADERS).status_code == 200
    assert len(_decodes(db_engine, "acme")) == 1
    clock.now += timedelta(minutes=2)
    assert client.post("/decode", content=body, headers=HEADERS).status_code == 200
    assert len(_decodes(db_engine, "acme")) == 2
    # encodes are not reads of a tenant's data
    assert client.post("/encode", content='{"payloads": []}', headers=HEADERS).status_code == 200
    assert len(_decodes(db_engine, "acme")) == 2
    # every request stays in codec_audit
    with db_engine.connect() as conn:
        assert [r.operation for r in list_audit(conn)].count("decode") == 3

    # each event is covered by a signed checkpoint: the auditor's report verifies offline
    for tenant, size in (("acme", 2), ("zebra", 2)):
        led = Ledger(db_engine, tenant)
        report = led.export_report()
        result = verify(report, led.checkpoints()[-1], signer.public_key_pem())
        assert result.ok and result.size == size, result.reason


def test_no_ledger_event_no_decode(db_engine: Engine, tmp_path: Path) -> None:
    vault = Vault(db_engine, LocalKeyringProvider(tmp_path / "keyring.json"))
    unmigrated = make_engine(f"sqlite:///{tmp_path / 'no-tables.db'}")
    settings = CodecServerSettings(tokens=parse_tokens(f"alice:{TOKEN}:{NS}"))
    try:
        app = create_codec_app(settings, vault, decode_ledger=DecodeLedger(unmigrated))
        resp = TestClient(app).post(
            "/decode", content=_body(vault, [{"tenant": "acme", "secret": "x@example.com"}]), headers=HEADERS
        )
    finally:
        unmigrated.dispose()
    assert resp.status_code == 503
    assert "example.com" not in resp.text
    with db_engine.connect() as conn:
        assert [r.outcome for r in list_audit(conn)] == ["failed"]


def test_tenants_named_reads_only_top_level_json_tenants(tmp_path: Path, db_engine: Engine) -> None:
    vault = Vault(db_engine, LocalKeyringProvider(tmp_path / "keyring.json"))
    codec = VaultPayloadCodec(vault, NS)
    payloads = make_data_converter(codec).payload_converter.to_payloads(
        [{"tenant": "acme"}, {"nested": {"tenant": "zebra"}}, {"tenant": ""}, ["tenant"], "acme"]
    )
    assert tenants_named(payloads) == {"acme": 1}
