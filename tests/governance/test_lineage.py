"""Lineage ledger: append under concurrency, signed checkpoints, proofs, offline verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import stat
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from governance.lineage import (
    CheckpointSigner,
    Ledger,
    build_report,
    load_public_key,
    report_from_json,
    report_to_json,
    verify,
    verify_checkpoint,
)
from governance.merkle import leaf_hash, verify_consistency, verify_inclusion
from schemas.errors import ConfigError, IntegrityError, PolicyError
from schemas.lineage import (
    Checkpoint,
    DatasetRef,
    EventKind,
    LedgerReport,
    LineageEvent,
    ReportEntry,
    VerificationResult,
)
from store.engine import make_engine

KEY = b"tenant-hmac-key-for-tests"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _hashes(batch: int, n: int) -> tuple[str, ...]:
    return tuple(
        hmac.new(KEY, f"003{batch:06d}{i:06d}".encode(), hashlib.sha256).hexdigest() for i in range(n)
    )


def make_event(i: int, *, tenant: str = "acme", n_records: int = 3, run: str = "run-1") -> LineageEvent:
    return LineageEvent(
        kind=EventKind.PULL,
        tenant=tenant,
        run_id=run,
        sync_id="contacts",
        instruction_version=3,
        instruction_hash="sha256:" + "ab" * 32,
        purpose="crm-sync",
        source=DatasetRef(namespace="salesforce://eu", name="Contact"),
        destination=DatasetRef(namespace="crmhub://staging", name="contacts"),
        counts={"pulled": n_records, "withheld_fields": 2},
        record_id_hashes=_hashes(i, n_records),
        timestamp=T0 + timedelta(seconds=i),
    )


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signer(signing_key: Ed25519PrivateKey) -> CheckpointSigner:
    """One key for the module (the 100k report is built once), a fresh signer — and so a fresh
    in-memory checkpoint journal — per test, since each test has a database of its own."""
    return CheckpointSigner(signing_key)


# --- events -------------------------------------------------------------------------------------


def test_canonical_bytes_are_deterministic_and_round_trip() -> None:
    event = make_event(7)
    data = event.canonical_bytes()
    assert data == make_event(7).canonical_bytes()
    assert b" " not in data
    obj = json.loads(data)
    assert list(obj) == sorted(obj)
    assert obj["timestamp"] == "2025-01-01T00:00:07.000000Z"
    assert obj["schema"] == "crmhub.lineage.event/1"
    assert LineageEvent.from_canonical(data) == event
    same_instant = event.model_copy(update={"timestamp": datetime(2025, 1, 1, 1, 0, 7, tzinfo=_plus_one())})
    assert LineageEvent.model_validate(same_instant.model_dump()).canonical_bytes() == data


def _plus_one() -> timezone:  # a non-UTC zone for the same instant
    return timezone(timedelta(hours=1))


@pytest.mark.parametrize("bad", ["jane.doe@example.com", "003000001ABCDEF", "AB" * 32, "ab" * 10])
def test_raw_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="keyed digests") as info:
        LineageEvent(kind=EventKind.PULL, tenant="acme", run_id="r", record_id_hashes=(bad,))
    assert bad not in str(info.value)


def test_naive_timestamps_and_float_details_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        LineageEvent(kind=EventKind.PULL, tenant="a", run_id="r", timestamp=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="details"):
        LineageEvent(kind=EventKind.PULL, tenant="a", run_id="r", details={"ratio": 0.5})


# --- append, proofs, checkpoints ----------------------------------------------------------------


def test_append_assigns_contiguous_indexes_and_proofs_verify(db_engine: Engine, signer) -> None:
    ledger = Ledger(db_engine, "acme")
    assert ledger.append([]) == []
    assert ledger.append([make_event(i) for i in range(5)]) == [0, 1, 2, 3, 4]
    assert ledger.append([make_event(5)]) == [5]
    assert ledger.size() == 6
    first = ledger.checkpoint(signer)
    assert (first.origin, first.size) == ("crmhub/acme", 6)
    verify_checkpoint(first, signer.public_key_pem())
    ledger.append([make_event(i) for i in range(6, 11)])
    second = ledger.checkpoint(signer)
    assert [c.size for c in ledger.checkpoints()] == [6, 11]

    proof = ledger.inclusion_proof(3)
    verify_inclusion(
        leaf_hash(make_event(3).canonical_bytes()),
        3,
        11,
        [base64.b64decode(h) for h in proof.hashes],
        second.root,
    )
    cons = ledger.consistency_proof(6, 11)
    verify_consistency(6, 11, [base64.b64decode(h) for h in cons.hashes], first.root, second.root)
    assert ledger.read_events(3, 4) == [make_event(3)]
    assert len(ledger.read_events(run_id="run-1")) == 11
    with pytest.raises(ConfigError):
        ledger.inclusion_proof(11)


def test_tenants_have_separate_trees(db_engine: Engine, signer) -> None:
    a, b = Ledger(db_engine, "tenant-a"), Ledger(db_engine, "tenant-b")
    a.append([make_event(i, tenant="tenant-a") for i in range(3)])
    assert b.append([make_event(0, tenant="tenant-b")]) == [0]
    with pytest.raises(PolicyError):
        a.append([make_event(1, tenant="tenant-b")])
    a.checkpoint(signer)
    report = a.export_report()
    assert {LineageEvent.from_canonical(e.event).tenant for e in report.entries} == {"tenant-a"}
    assert b.size() == 1


def test_export_and_offline_verify_round_trip(db_engine: Engine, signer) -> None:
    ledger = Ledger(db_engine, "acme")
    for start in range(0, 30, 10):
        ledger.append([make_event(i) for i in range(start, start + 10)])
        ledger.checkpoint(signer)
    with pytest.raises(ConfigError, match="no checkpoint"):
        Ledger(db_engine, "nobody").export_report()
    report = ledger.export_report(public_key=signer.public_key)
    data = report_to_json(report)
    # The auditor's side: only the JSON, the checkpoint and the public key.
    checkpoint = report_from_json(data).checkpoints[-1]
    result = verify(data, checkpoint, signer.public_key_b64())
    assert result.ok, result.reason
    assert result.checkpoints_verified == 3
    assert result.size == 30
    bare = verify([e.event.encode() for e in report.entries], checkpoint, signer.public_key)
    assert bare.ok
    # A checkpoint signed by someone else is refused.
    other = CheckpointSigner.generate()
    assert not verify(data, checkpoint, other.public_key).ok
    forged = checkpoint.model_copy(update={"size": 29})
    assert not verify(data, forged, signer.public_key).signature_ok


def test_tampered_database_is_detected_on_load(db_url: str, signer) -> None:
    engine = make_engine(db_url)
    try:
        Ledger(engine, "acme").append([make_event(i) for i in range(4)])
        Ledger(engine, "acme").checkpoint(signer)
        Ledger(engine, "acme").append([make_event(i) for i in range(4, 8)])
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE lineage_events SET event = :e WHERE tenant = 'acme' AND idx = 6"),
                {"e": make_event(99).canonical_bytes()},
            )
        with pytest.raises(IntegrityError, match="entry 6"):
            Ledger(engine, "acme").checkpoint(signer)
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE lineage_events SET leaf_hash = :h WHERE tenant = 'acme' AND idx = 1"),
                {"h": b"\x00" * 32},
            )
        with pytest.raises(IntegrityError, match="checkpoint at size 4"):
            Ledger(engine, "acme").root()
    finally:
        engine.dispose()


# --- concurrency ------------------------------------------------------------------------------


def _append_worker(db_url: str, worker: int, batches: int, per_batch: int) -> list[int]:
    engine = make_engine(db_url)
    try:
        ledger = Ledger(engine, "acme")
        out: list[int] = []
        for b in range(batches):
            events = [
                make_event(worker * 10_000 + b * per_batch + j, run=f"w{worker}") for j in range(per_batch)
            ]
            out.extend(ledger.append(events))
        return out
    finally:
        engine.dispose()


def _check_no_gaps(db_url: str, signer: CheckpointSigner, expected: int, indexes: list[int]) -> None:
    assert sorted(indexes) == list(range(expected))
    engine = make_engine(db_url)
    try:
        ledger = Ledger(engine, "acme")
        assert ledger.size() == expected
        cp = ledger.checkpoint(signer)
        assert verify(ledger.export_report(), cp, signer.public_key).ok
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT idx FROM lineage_events WHERE tenant='acme' ORDER BY idx"))
            assert [r[0] for r in rows] == list(range(expected))
    finally:
        engine.dispose()


def test_concurrent_appends_from_threads(db_url: str, signer) -> None:
    results: list[list[int]] = [[] for _ in range(6)]
    errors: list[BaseException] = []

    def run(w: int) -> None:
        try:
            results[w] = _append_worker(db_url, w, batches=10, per_batch=3)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:  # each worker's own indexes increase (its batches are ordered)
        assert r == sorted(r)
    _check_no_gaps(db_url, signer, 6 * 10 * 3, [i for r in results for i in r])


def test_concurrent_appends_from_processes(db_url: str, signer) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_append_worker, [(db_url, w, 15, 4) for w in range(4)])
    _check_no_gaps(db_url, signer, 4 * 15 * 4, [i for r in results for i in r])


# --- keys -------------------------------------------------------------------------------------


def test_signer_key_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "checkpoint.pem"
    first = CheckpointSigner.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CheckpointSigner.load_or_create(path)
    assert again.key_id == first.key_id
    assert load_public_key(first.public_key_pem()).public_bytes_raw() == base64.b64decode(
        first.public_key_b64()
    )
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pem"]
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        CheckpointSigner.load_or_create(path)
    with pytest.raises(ConfigError):
        load_public_key("not a key")


# --- tamper localization over 100,000 events ----------------------------------------------------

N = 100_000


@pytest.fixture(scope="module")
def big(signing_key: Ed25519PrivateKey) -> tuple[LedgerReport, Checkpoint]:
    """A 100k-entry report with checkpoints every 10k, built in memory."""
    from governance.merkle import MerkleTree

    signer = CheckpointSigner(signing_key)
    base = make_event(0, n_records=2).canonical_bytes().decode()
    # Distinct events without paying pydantic per event: vary the run id in the canonical text.
    datas = [base.replace('"run_id":"run-1"', f'"run_id":"run-{i:06d}"').encode() for i in range(N)]
    tree = MerkleTree.from_leaf_hashes([leaf_hash(d) for d in datas])
    cps = [signer.sign_checkpoint("crmhub/acme", s, tree.root(s), T0) for s in range(10_000, N + 1, 10_000)]
    return build_report("acme", datas, cps), cps[-1]


def _verify_timed(
    report: LedgerReport, checkpoint: Checkpoint, signer: CheckpointSigner
) -> tuple[VerificationResult, float]:
    start = time.perf_counter()
    result = verify(report, checkpoint, signer.public_key)
    return result, time.perf_counter() - start


def test_untampered_100k_report_verifies(big, signer) -> None:
    report, checkpoint = big
    result, elapsed = _verify_timed(report, checkpoint, signer)
    assert result.ok, result.reason
    assert result.checkpoints_verified == 10
    print(f"verify of {N} events: {elapsed * 1000:.0f} ms")


def _tamper(report: LedgerReport, how: str, pos: int) -> tuple[LedgerReport, int]:
    entries = list(report.entries)
    if how == "edit":
        e = entries[pos]
        entries[pos] = e.model_copy(update={"event": e.event.replace('"pulled":2', '"pulled":3')})
        expected = pos
    elif how == "delete":
        del entries[pos]
        expected = pos
    elif how == "swap":
        other = pos - 1 if pos == N - 1 else pos + 1
        entries[pos], entries[other] = entries[other], entries[pos]
        expected = min(pos, other)
    elif how == "edit-and-rehash":
        e = entries[pos]
        event = e.event.replace('"pulled":2', '"pulled":3')
        new_leaf = base64.b64encode(leaf_hash(event.encode())).decode()
        entries[pos] = ReportEntry(index=pos, leaf_hash=new_leaf, event=event)
        expected = -1
    else:
        raise AssertionError(how)
    return report.model_copy(update={"entries": tuple(entries)}), expected


@pytest.mark.parametrize("how", ["edit", "delete", "swap"])
@pytest.mark.parametrize("pos", [0, 1, 4_097, 54_321, N - 1])
def test_tampering_is_localized_to_first_bad_index(big, signer, how: str, pos: int) -> None:
    report, checkpoint = big
    tampered, expected = _tamper(report, how, pos)
    result = verify(tampered, checkpoint, signer.public_key)
    assert not result.ok
    assert result.first_bad_index == expected, result.reason


@given(pos=st.integers(min_value=0, max_value=N - 1), how=st.sampled_from(["edit", "delete", "swap"]))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_tampering_at_any_index_is_localized(big, signer, pos: int, how: str) -> None:
    report, checkpoint = big
    tampered, expected = _tamper(report, how, pos)
    result = verify(tampered, checkpoint, signer.public_key)
    assert not result.ok
    assert result.first_bad_index == expected


def test_rewritten_hash_column_is_bounded_by_checkpoints(big, signer) -> None:
    report, checkpoint = big
    tampered, _ = _tamper(report, "edit-and-rehash", 54_321)
    result = verify(tampered, checkpoint, signer.public_key)
    assert not result.ok
    assert result.first_bad_index is None
    assert result.bad_window == (50_000, 60_000)


def test_pseudonymizer_keyed_hashes_are_accepted_as_record_id_hashes() -> None:
    from governance.pseudonym import Pseudonymizer, StaticKeySource

    ps = Pseudonymizer(StaticKeySource({"acme": b"k" * 32}))
    hashes = tuple(ps.keyed_hash("acme", f"003{i:015d}") for i in range(3))
    event = LineageEvent(kind=EventKind.PULL, tenant="acme", run_id="r1", record_id_hashes=hashes)
    assert LineageEvent.from_canonical(event.canonical_bytes()).record_id_hashes == hashes
    with pytest.raises(ValueError, match="never raw ids"):
        LineageEvent(
            kind=EventKind.PULL, tenant="acme", run_id="r1", record_id_hashes=("003000000000000001",)
        )
