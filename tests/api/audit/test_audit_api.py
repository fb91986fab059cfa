"""The auditor API on a tiny app: token → tenant is the only gate, every route reads only the token's
tenant, every access is logged with the token id, and the integrity routes hand out proofs and a
ledger report that verify offline."""

from __future__ import annotations

import base64
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.audit import AuditServices, router
from governance.lineage import CheckpointSigner, Ledger, report_from_json, verify
from governance.merkle import verify_consistency, verify_inclusion
from governance.registry import load_registry
from schemas.lineage import DatasetRef, EventKind, LineageEvent, TransferMechanism
from services.wiring import default_subprocessors_file
from store import auditors
from store import instructions as instruction_store
from store import tenants as tenant_store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ROUTES = [
    "/audit/whoami",
    "/audit/lineage",
    "/audit/lineage?format=csv",
    "/audit/lineage?format=html",
    "/audit/subprocessors",
    "/audit/transfers",
    "/audit/records-of-processing",
    "/audit/openlineage",
    "/audit/integrity/checkpoint",
    "/audit/integrity/inclusion/0",
    "/audit/integrity/consistency?first=1",
    "/audit/integrity/ledger",
]


def _events(tenant: str, run: str, n: int, hash_prefix: str) -> list[LineageEvent]:
    src = DatasetRef(namespace=f"salesforce://{tenant}.example", name="Contact")
    dst = DatasetRef(namespace=f"hubspot://{tenant}.example", name="contacts")
    stage = DatasetRef(namespace="crmhub://staging", name=f"sync-{tenant}")
    hashes = tuple(f"kh_{hash_prefix}{i:031x}" for i in range(n))
    common: dict[str, Any] = {
        "tenant": tenant, "run_id": run, "sync_id": f"sync-{tenant}", "instruction_version": 2,
        "instruction_hash": f"sha256:{tenant}", "purpose": f"purpose-{tenant}", "timestamp": T0,
    }  # fmt: skip
    return [
        LineageEvent(kind=EventKind.PULL, source=src, destination=stage, record_id_hashes=hashes,
                     counts={"records": n, "withheld_values": 3 * n, "deleted": 0}, subprocessor="salesforce",
                     region_from="eea", region_to="eea", details={"withheld": "Title,MailingCity"}, **common),
        LineageEvent(kind=EventKind.PUSH, source=stage, destination=dst, record_id_hashes=hashes[:-1],
                     counts={"pushed": n - 1, "created": n - 1, "updated": 0, "failed": 1},
                     subprocessor="hubspot", region_from="eea", region_to="us", **common),
        LineageEvent(kind=EventKind.TRANSFER, source=stage, destination=dst, record_id_hashes=hashes[:-1],
                     subprocessor="hubspot", region_from="eea", region_to="us",
                     transfer_mechanism=TransferMechanism.SCC, **common),
    ]  # fmt: skip


@pytest.fixture
def world(db_engine) -> dict[str, Any]:
    signer = CheckpointSigner.generate()
    tokens = {}
    with db_engine.begin() as conn:
        for tenant in ("alpha", "bravo"):
            tenant_store.create_tenant(conn, id=tenant, name=f"{tenant} GmbH", home_region="eea",
                                       authorised_subprocessors=["salesforce", "hubspot"],
                                       now=T0)  # fmt: skip
            instruction_store.add_instruction(conn, tenant=tenant, version=2,
                                              content={"purpose": f"purpose-{tenant}",
                                                       "data_categories": ["contact_details"]},
                                              content_hash=f"sha256:{tenant}", now=T0)  # fmt: skip
            _, tokens[tenant] = auditors.create_token(
                conn, tenant=tenant, name=f"auditor of {tenant}", now=T0
            )
    for tenant, run, n, prefix in (("alpha", "run-alpha-1", 4, "a"), ("bravo", "run-bravo-1", 7, "b")):
        ledger = Ledger(db_engine, tenant)
        ledger.append(_events(tenant, run, n, prefix))
        ledger.checkpoint(signer)
        ledger.append(_events(tenant, f"{run}-second", n, prefix))
        ledger.checkpoint(signer)
    Ledger(db_engine, "bravo").append(_events("bravo", "run-bravo-3", 2, "b"))  # bravo: 9 entries
    Ledger(db_engine, "bravo").checkpoint(signer)
    app = FastAPI()
    app.include_router(router, prefix="/audit")
    registry = load_registry(default_subprocessors_file())
    app.state.audit_services = AuditServices(db_engine, registry, signer.public_key_pem())
    return {"client": TestClient(app), "tokens": tokens, "signer": signer, "engine": db_engine}


def _get(world: dict[str, Any], path: str, tenant: str | None) -> Any:
    headers = {"Authorization": f"Bearer {world['tokens'][tenant]}"} if tenant else {}
    return world["client"].get(path, headers=headers)


@pytest.mark.parametrize("path", ROUTES)
def test_an_auditor_of_alpha_reads_nothing_of_bravo(world, path) -> None:
    response = _get(world, path, "alpha")
    assert response.status_code == 200, response.text
    body = response.text
    if path.startswith(("/audit/integrity/inclusion", "/audit/integrity/consistency")):
        proof = response.json()["proof"]
        assert proof.get("size", proof.get("size2")) == 6  # alpha's tree (bravo's has 9 entries)
    else:
        assert "alpha" in body
    for marker in ("bravo", "run-bravo", "kh_b", "purpose-bravo"):
        assert marker not in body, f"{path} leaked {marker}"


@pytest.mark.parametrize("path", ROUTES)
def test_every_route_refuses_without_a_valid_token(world, path) -> None:
    assert _get(world, path, None).status_code == 401
    bad = world["tokens"]["alpha"][:-4] + "AAAA"
    response = world["client"].get(path, headers={"Authorization": f"Bearer {bad}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_every_access_is_logged_with_the_token_id_only(world) -> None:
    token = world["tokens"]["alpha"]
    token_id = auditors.token_id_of(token)
    _get(world, "/audit/lineage?format=csv&from=2025-01-01", "alpha")
    world["client"].get("/audit/transfers", headers={"Authorization": "Bearer nope"})
    with world["engine"].connect() as conn:
        rows = auditors.list_access(conn)
    granted, denied = rows[1], rows[0]
    assert (granted.token_id, granted.tenant, granted.outcome) == (token_id, "alpha", "granted")
    assert granted.route == "GET /audit/lineage"
    assert granted.query == "from=2025-01-01&format=csv"
    assert (denied.token_id, denied.tenant, denied.outcome) == (None, None, "denied")
    secret = token.rsplit("_", 1)[1]
    assert all(secret not in (r.query + r.route + str(r.token_id)) for r in rows)


def test_a_revoked_or_expired_token_is_refused(world) -> None:
    with world["engine"].begin() as conn:
        token_id = auditors.token_id_of(world["tokens"]["alpha"])
        assert token_id is not None
        assert auditors.revoke_token(conn, token_id, now=T0)
        _, expired = auditors.create_token(
            conn, tenant="alpha", name="x", now=T0, expires_at=T0 + timedelta(days=1)
        )
    assert _get(world, "/audit/whoami", "alpha").status_code == 401
    response = world["client"].get("/audit/whoami", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401


def test_lineage_report_counts_per_run_in_json_csv_and_html(world) -> None:
    report = _get(world, "/audit/lineage", "alpha").json()
    assert report["tenant"] == "alpha" and report["ledger"]["size"] == 6
    run = report["runs"][0]
    assert len(report["runs"]) == 2
    assert run["run_id"] == "run-alpha-1"
    assert run["counts"]["pulled"] == 4
    assert run["counts"]["pushed"] == 3
    assert run["counts"]["failed"] == 1
    assert run["counts"]["filtered"] == 0
    assert run["counts"]["withheld_values"] == 12
    assert run["withheld_fields"] == ["MailingCity", "Title"]
    assert run["purposes"] == ["purpose-alpha"] and run["instruction_versions"] == [2]
    assert run["datasets"]["sources"] == ["crmhub://staging/sync-alpha", "salesforce://alpha.example/Contact"]
    assert report["totals"]["pulled"] == 8
    rows = list(csv.DictReader(io.StringIO(_get(world, "/audit/lineage?format=csv", "alpha").text)))
    assert [(r["run_id"], r["pulled"], r["pushed"], r["failed"]) for r in rows] == [
        ("run-alpha-1", "4", "3", "1"),
        ("run-alpha-1-second", "4", "3", "1"),
    ]
    html = _get(world, "/audit/lineage?format=html", "alpha")
    assert html.headers["content-type"].startswith("text/html")
    assert "<td>run-alpha-1</td>" in html.text
    assert _get(world, "/audit/lineage?from=2025-04-01", "alpha").json()["runs"] == []
    assert _get(world, "/audit/lineage?from=2025-04-01&to=2025-03-01", "alpha").status_code == 422


def test_subprocessor_transfer_and_art30_reports(world) -> None:
    subs = _get(world, "/audit/subprocessors", "alpha").json()["subprocessors"]
    hub = next(s for s in subs if s["id"] == "hubspot")
    assert hub["entity"] == "HubSpot, Inc." and hub["country"] == "US" and hub["authorised"]
    assert hub["activities"] == {"push": 2, "transfer": 2} and hub["regions"] == ["eea", "us"]
    transfers = _get(world, "/audit/transfers", "alpha").json()
    assert len(transfers["transfers"]) == 4  # push + transfer event of two runs, eea → us
    move = transfers["transfers"][1]
    assert (move["from"], move["to"], move["mechanism"]) == ("eea", "us", "scc")
    assert "SCCs" in move["reference"]
    # each push is the move its batch's transfer event records: summed once, under its mechanism
    assert transfers["routes"] == [{"route": "eea->us hubspot (scc)", "events": 2, "records": 6}]
    art30 = _get(world, "/audit/records-of-processing", "alpha").json()
    assert art30["controller"]["tenant"] == "alpha"
    assert art30["processor"]["id"] == "crmhub"
    assert art30["categories_of_processing"][0]["purpose"] == "purpose-alpha"
    assert {r["subprocessor"] for r in art30["transfers_to_third_countries"]["permitted_routes"]} == {
        "salesforce",
        "hubspot",
    }
    assert art30["security_measures"]


def test_proofs_and_the_ledger_report_verify_offline(world) -> None:
    signer = world["signer"]
    cp = _get(world, "/audit/integrity/checkpoint", "alpha").json()["checkpoint"]
    assert cp["size"] == 6 and cp["origin"] == "crmhub/alpha"
    root = base64.b64decode(cp["root_hash"])
    inc = _get(world, "/audit/integrity/inclusion/4", "alpha").json()
    proof = inc["proof"]
    verify_inclusion(
        base64.b64decode(proof["leaf_hash"]), 4, 6, [base64.b64decode(h) for h in proof["hashes"]], root
    )
    assert '"kind":"push"' in inc["event"]
    con = _get(world, "/audit/integrity/consistency?first=3", "alpha").json()["proof"]
    first_root = Ledger(world["engine"], "alpha").root(3)
    verify_consistency(3, 6, [base64.b64decode(h) for h in con["hashes"]], first_root, root)
    assert _get(world, "/audit/integrity/inclusion/6", "alpha").status_code == 422
    report = report_from_json(_get(world, "/audit/integrity/ledger", "alpha").content)
    result = verify(report, report.checkpoints[-1], signer.public_key_pem())
    assert result.ok, result.reason
    assert len(report.checkpoints) == 2 and result.checkpoints_verified == 2


def test_a_move_across_regions_no_transfer_event_records_is_summed_as_none_recorded(world) -> None:
    (_, push, transfer) = _events("alpha", "run-alpha-bare", 3, "c")
    later = push.model_copy(update={"timestamp": T0 + timedelta(minutes=5)})  # not its transfer's batch
    other = transfer.model_copy(update={"run_id": "run-alpha-other"})  # another run's transfer
    Ledger(world["engine"], "alpha").append([later, other])
    routes = _get(world, "/audit/transfers", "alpha").json()["routes"]
    assert routes == [
        {"route": "eea->us hubspot (scc)", "events": 3, "records": 8},
        {"route": "eea->us hubspot (none recorded)", "events": 1, "records": 2},
    ]
