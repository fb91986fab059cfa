"""Attacks on the lineage ledger and on the reports auditors verify (issue 16, findings 1 and 2).

* A report with events appended after its last signed checkpoint must not verify: ``crmhub audit
  verify`` exits 1 and names the unsigned tail.
* Someone with write access to the database rewrites (or truncates) a tenant's lineage and deletes
  the checkpoint rows that would betray it: crmhub must refuse to sign the forgery
  (``ledger_inconsistent``), because the checkpoints it signed are also kept in an append-only,
  signed journal beside its signing key; the auditor API answers 409; and an auditor who pins the
  key and the last checkpoint they saw (``--known-checkpoint``) rejects a report of another history.
* Report format 2 carries RFC 9162 consistency proofs between its checkpoints; a broken proof fails.
"""

from __future__ import annotations

import base64
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, text, update
from typer.testing import CliRunner

from api.audit import AuditServices, router
from api.cli import app as cli_app
from governance.lineage import (
    CheckpointSigner,
    Ledger,
    LedgerInconsistent,
    build_report,
    report_from_json,
    report_to_json,
    verify,
)
from governance.merkle import MerkleTree, leaf_hash, verify_consistency
from governance.registry import load_registry
from schemas.errors import IntegrityError
from services.wiring import default_subprocessors_file
from store import auditors
from store import lineage as ledger_store
from store import tenants as tenant_store
from tests.governance.test_lineage import make_event
from tests.governance.vectors import VECTORS

pytestmark = [pytest.mark.chaos]


def _signer(tmp_path: Path) -> CheckpointSigner:
    """A signer as a deployment has it: key file (and checkpoint journal) under the data dir."""
    return CheckpointSigner.load_or_create(tmp_path / "data" / "ledger-signing.pem")


def _grow(ledger: Ledger, signer: CheckpointSigner, sizes: list[int]) -> None:
    n = ledger.size()
    for k in sizes:
        ledger.append([make_event(i) for i in range(n, n + k)])
        n += k
        ledger.checkpoint(signer)


def _cli_verify(report: Path, key: Path, *extra: str) -> Any:
    return CliRunner().invoke(cli_app, ["audit", "verify", str(report), "--public-key", str(key), *extra])


def _rewrite_history(engine: Any, tenant: str, index: int) -> None:
    """What a database writer can do: replace entry ``index`` (event and leaf hash agree, so the
    rows look sound) and delete every checkpoint row that would contradict it."""
    forged = make_event(1000 + index).canonical_bytes()
    with engine.begin() as conn:
        conn.execute(
            update(ledger_store.events)
            .where(ledger_store.events.c.tenant == tenant, ledger_store.events.c.idx == index)
            .values(event=forged, leaf_hash=leaf_hash(forged))
        )
        conn.execute(delete(ledger_store.checkpoints).where(ledger_store.checkpoints.c.tenant == tenant))


# -- finding 1: events after the signed checkpoint --------------------------------------------------


def test_a_report_with_events_after_its_signed_checkpoint_fails_verify(db_engine, tmp_path) -> None:
    signer = _signer(tmp_path)
    ledger = Ledger(db_engine, "acme")
    _grow(ledger, signer, [6, 4])
    doc = json.loads(report_to_json(ledger.export_report(public_key=signer.public_key)))
    # Three well-formed entries appended to the file: right indexes, right leaf hashes, no signature.
    for i in range(10, 13):
        data = make_event(500 + i).canonical_bytes()
        doc["entries"].append(
            {"index": i, "leaf_hash": base64.b64encode(leaf_hash(data)).decode(), "event": data.decode()}
        )
    report_file, key_file = tmp_path / "report.json", tmp_path / "crmhub.pub.pem"
    report_file.write_text(json.dumps(doc))
    key_file.write_text(signer.public_key_pem())

    result = _cli_verify(report_file, key_file)
    assert result.exit_code == 1, result.output
    assert "NOT verified" in result.output
    assert "3 entries" in result.output and "10..12" in result.output
    assert "not covered by any signed checkpoint" in result.output
    as_json = _cli_verify(report_file, key_file, "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.output)
    assert data["ok"] is False and data["unverified_tail"] == 3 and data["unverified_indexes"] == [10, 13]
    # The library says the same: no report entry may lie outside the signature.
    loaded = report_from_json(json.dumps(doc))
    outcome = verify(loaded, loaded.checkpoints[-1], signer.public_key)
    assert not outcome.ok and outcome.unverified_tail == 3
    # Without the appended entries it verifies (the check is not vacuous).
    doc["entries"] = doc["entries"][:10]
    report_file.write_text(json.dumps(doc))
    assert _cli_verify(report_file, key_file).exit_code == 0


# -- finding 2: a database writer rewrites history -------------------------------------------------


def test_crmhub_refuses_to_sign_a_rewritten_ledger(db_engine, tmp_path) -> None:
    signer = _signer(tmp_path)
    _grow(Ledger(db_engine, "acme"), signer, [5, 5])
    _rewrite_history(db_engine, "acme", 3)
    # A fresh process: new ledger cache, signer (and journal) loaded from the files again.
    with pytest.raises(LedgerInconsistent) as refused:
        Ledger(db_engine, "acme").checkpoint(_signer(tmp_path))
    err = refused.value
    assert isinstance(err, IntegrityError) and err.code == "ledger_inconsistent"
    assert not err.kind.retryable
    assert "size 10" in str(err)
    with db_engine.connect() as conn:
        assert ledger_store.list_checkpoints(conn, "acme") == []  # nothing was signed


def test_crmhub_refuses_to_sign_a_truncated_ledger(db_engine, tmp_path) -> None:
    signer = _signer(tmp_path)
    _grow(Ledger(db_engine, "acme"), signer, [8])
    with db_engine.begin() as conn:
        conn.execute(text("DELETE FROM lineage_events WHERE tenant = 'acme' AND idx >= 5"))
        conn.execute(text("UPDATE lineage_heads SET size = 5 WHERE tenant = 'acme'"))
        conn.execute(text("DELETE FROM lineage_checkpoints WHERE tenant = 'acme'"))
    with pytest.raises(LedgerInconsistent, match="8"):
        Ledger(db_engine, "acme").checkpoint(_signer(tmp_path))


def test_the_journal_is_append_only_signed_and_private(db_engine, tmp_path) -> None:
    signer = _signer(tmp_path)
    _grow(Ledger(db_engine, "acme"), signer, [3, 4])
    journal = tmp_path / "data" / "ledger-checkpoints.jsonl"
    assert signer.journal.path == journal
    assert journal.stat().st_mode & 0o777 == 0o600
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(c["origin"], c["size"]) for c in lines] == [("crmhub/acme", 3), ("crmhub/acme", 7)]
    # A line changed by hand is refused, not trusted.
    lines[1]["size"] = 6
    journal.write_text("".join(json.dumps(c) + "\n" for c in lines))
    with pytest.raises(IntegrityError, match="line 2"):
        Ledger(db_engine, "acme").checkpoint(_signer(tmp_path))


def test_the_auditor_api_detects_a_rewritten_ledger(db_engine, tmp_path) -> None:
    signer = _signer(tmp_path)
    from datetime import UTC, datetime

    now = datetime(2025, 3, 1, tzinfo=UTC)
    with db_engine.begin() as conn:
        tenant_store.create_tenant(conn, id="acme", name="Acme", home_region="eea",
                                   authorised_subprocessors=[], now=now)  # fmt: skip
        _, token = auditors.create_token(conn, tenant="acme", name="auditor", now=now)
    ledger = Ledger(db_engine, "acme")
    _grow(ledger, signer, [4, 4])
    app = FastAPI()
    app.include_router(router, prefix="/audit")
    app.state.audit_services = AuditServices(
        db_engine,
        load_registry(default_subprocessors_file()),
        signer.public_key_pem(),
        journal=signer.journal,
    )
    client = TestClient(app)
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/audit/integrity/ledger", headers=auth).status_code == 200
    # The writer rewrites entry 2 and re-inserts a checkpoint row copied from the old one at size 4,
    # so the database alone looks consistent up to size 4 and has no trace of size 8.
    with db_engine.connect() as conn:
        kept = ledger_store.list_checkpoints(conn, "acme")[0]
    _rewrite_history(db_engine, "acme", 6)
    with db_engine.begin() as conn:
        ledger_store.insert_checkpoint(conn, "acme", kept)
    for path in (
        "/audit/integrity/ledger",
        "/audit/integrity/checkpoint",
        "/audit/integrity/consistency?first=4",
    ):
        response = client.get(path, headers=auth)
        assert response.status_code == 409, (path, response.text)
        assert "ledger_inconsistent" in response.text


def test_pinning_a_known_checkpoint_rejects_another_history_and_a_rollback(db_engine, tmp_path) -> None:
    signer = _signer(tmp_path)
    ledger = Ledger(db_engine, "acme")
    _grow(ledger, signer, [5])
    key_file = tmp_path / "crmhub.pub.pem"
    key_file.write_text(signer.public_key_pem())
    first = tmp_path / "first.json"
    first.write_bytes(report_to_json(ledger.export_report(public_key=signer.public_key)))
    known = tmp_path / "known-checkpoint.json"
    saved = _cli_verify(first, key_file, "--save-checkpoint", str(known))
    assert saved.exit_code == 0, saved.output
    _grow(ledger, signer, [3, 2])
    later = tmp_path / "later.json"
    later.write_bytes(report_to_json(ledger.export_report(public_key=signer.public_key)))
    ok = _cli_verify(later, key_file, "--known-checkpoint", str(known))
    assert ok.exit_code == 0, ok.output
    assert "consistent with the known checkpoint at size 5" in ok.output

    # What a signer that does not check consistency (crmhub before issue 16) would publish after a
    # rewrite: a well-signed report of another history.
    forked = [make_event(i + (100 if i == 2 else 0)).canonical_bytes() for i in range(10)]
    tree = MerkleTree(leaf_hash(d) for d in forked)
    cp = signer.sign_checkpoint("crmhub/acme", 10, tree.root())
    other = tmp_path / "forked.json"
    other.write_bytes(report_to_json(build_report("acme", forked, [cp], public_key=signer.public_key)))
    assert _cli_verify(other, key_file).exit_code == 0  # alone it proves only itself
    refused = _cli_verify(other, key_file, "--known-checkpoint", str(known))
    assert refused.exit_code == 1, refused.output
    assert "not consistent with the known checkpoint at size 5" in refused.output
    # A report older than what the auditor already saw is a rollback.
    newer = tmp_path / "newer-checkpoint.json"
    assert _cli_verify(later, key_file, "--save-checkpoint", str(newer)).exit_code == 0
    rollback = _cli_verify(first, key_file, "--known-checkpoint", str(newer))
    assert rollback.exit_code == 1 and "rolled back" in rollback.output
    # The pinned key is the one used: a report verified with another key fails.
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(CheckpointSigner.generate().public_key_pem())
    assert _cli_verify(later, stranger).exit_code == 1


def test_report_format_2_carries_verified_consistency_proofs(db_engine, tmp_path) -> None:
    signer = _signer(tmp_path)
    ledger = Ledger(db_engine, "acme")
    _grow(ledger, signer, [3, 5, 1, 7])
    report = ledger.export_report(public_key=signer.public_key)
    assert report.format == "crmhub.lineage.report/2"
    assert [(p.size1, p.size2) for p in report.consistency] == [(3, 8), (8, 9), (9, 16)]
    for proof, (old, new) in zip(report.consistency, pairwise(report.checkpoints), strict=True):
        verify_consistency(
            old.size, new.size, [base64.b64decode(h) for h in proof.hashes], old.root, new.root
        )
    assert verify(report, report.checkpoints[-1], signer.public_key).ok
    # One flipped proof hash breaks the chain, though the entries still reproduce every root.
    broken = report.consistency[1]
    bad = base64.b64decode(broken.hashes[0])
    flipped = broken.model_copy(update={"hashes": (base64.b64encode(bytes([bad[0] ^ 1]) + bad[1:]).decode(),
                                                   *broken.hashes[1:])})  # fmt: skip
    tampered = report.model_copy(
        update={"consistency": (report.consistency[0], flipped, report.consistency[2])}
    )
    result = verify(tampered, tampered.checkpoints[-1], signer.public_key)
    assert not result.ok and "8" in result.reason and "9" in result.reason
    # A format-1 report (no proofs) still verifies, by recomputing every root.
    legacy = report.model_copy(update={"format": "crmhub.lineage.report/1", "consistency": ()})
    assert verify(legacy, legacy.checkpoints[-1], signer.public_key).ok


def test_generated_consistency_proofs_match_the_rfc9162_vectors() -> None:
    # The vectors' trees are built from the RFC 6962 test inputs (8 leaves).
    inputs = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
              b"\x50\x51\x52\x53\x54\x55\x56\x57",
              b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"]  # fmt: skip
    tree = MerkleTree(leaf_hash(x) for x in inputs)
    matched = 0
    for path in sorted((VECTORS / "merkle" / "consistency").rglob("happy-path.json")):
        case = json.loads(path.read_text())
        size1, size2 = case["size1"], case["size2"]
        if not 0 < size1 <= size2 <= tree.size:
            continue
        assert base64.b64encode(tree.root(size1)).decode() == case["root1"], path
        proof = tree.consistency_proof(size1, size2)
        assert [base64.b64encode(p).decode() for p in proof] == (case["proof"] or []), path
        verify_consistency(size1, size2, proof, tree.root(size1), tree.root(size2))
        matched += 1
    assert matched == 5
