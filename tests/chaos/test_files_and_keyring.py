"""Files a local attacker or an operator's slip could exploit (issue 16, finding 4).

* A fresh data dir, its SQLite database (and ``-wal``/``-shm``), keyring, signing key and checkpoint
  journal are private to crmhub's user (0700 / 0600) whatever the umask; an older, world-readable
  database file is tightened on start.
* A deleted keyring is not silently replaced by a new one while the database holds keys it wrapped
  (that data would be unreadable): a :class:`ConfigError` names the fix.
* Auditor CSV cells that a spreadsheet would run as a formula (``= + - @``, tab, CR) are neutralised
  as OWASP recommends (a leading ``'``).
"""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.audit import reports
from governance.lineage import CheckpointSigner, Ledger
from governance.vault import Vault
from schemas.errors import ConfigError
from schemas.settings import Settings
from services.wiring import key_provider, make_vault
from store.engine import make_engine
from store.migrate import upgrade
from tests.governance.test_lineage import make_event

pytestmark = [pytest.mark.chaos]

CTX = {"dataset": "salesforce.Contact", "object_id": "003A000001", "purpose": "crm-sync"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the common default: files 0644, dirs 0755
    try:
        yield
    finally:
        os.umask(old)


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


def test_data_dir_database_and_key_files_are_private(tmp_path: Path, loose_umask: None) -> None:
    settings = _settings(tmp_path / "state" / "crmhub")
    url = settings.effective_database_url
    upgrade(url)
    engine = make_engine(url)
    try:
        vault = make_vault(settings, engine)
        vault.seal("acme", b"alice@example.com", **CTX)  # the WAL and shared-memory files exist now
        signer = CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)
        ledger = Ledger(engine, "acme")
        ledger.append([make_event(0)])
        ledger.checkpoint(signer)
        data_dir = settings.data_dir
        assert _mode(data_dir) == 0o700
        db = data_dir / "crmhub.db"
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert path.exists(), path
            assert _mode(path) == 0o600, (path, oct(_mode(path)))
        for name in ("keyring.json", "ledger-signing.pem", "ledger-checkpoints.jsonl"):
            assert _mode(data_dir / name) == 0o600, name
    finally:
        engine.dispose()


def test_a_world_readable_database_file_is_tightened(tmp_path: Path, loose_umask: None) -> None:
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    upgrade(url)  # as an older crmhub left it
    os.chmod(db, 0o644)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert _mode(db) == 0o600
    finally:
        engine.dispose()


def test_a_deleted_keyring_is_refused_while_the_database_holds_sealed_data(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    url = settings.effective_database_url
    upgrade(url)
    engine = make_engine(url)
    try:
        sealed = make_vault(settings, engine).seal("acme", b"alice@example.com", **CTX)
        keyring = settings.data_dir / settings.governance.keyring_file
        backup = keyring.read_bytes()
        keyring.unlink()
        with pytest.raises(ConfigError) as refused:
            make_vault(settings, engine)
        message = str(refused.value)
        assert str(keyring) in message and "restore" in message and "backup" in message
        assert not keyring.exists(), "a fresh keyring was left behind: the next start would use it"
        # An empty database next to a missing keyring is a first start: a keyring is created.
        fresh = _settings(tmp_path / "fresh")
        upgrade(fresh.effective_database_url)
        other = make_engine(fresh.effective_database_url)
        try:
            Vault(other, key_provider(fresh)).seal("acme", b"x", **CTX)
        finally:
            other.dispose()
        # With the keyring restored from backup, the data opens again.
        keyring.write_bytes(backup)
        keyring.chmod(0o600)
        assert make_vault(settings, engine).open("acme", sealed, **CTX) == b"alice@example.com"
    finally:
        engine.dispose()


def test_auditor_csv_cells_cannot_run_as_formulas(db_engine) -> None:
    dangerous = ['=HYPERLINK("http://x.invalid","x")', "+SUM(1,2)", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]
    ledger = Ledger(db_engine, "acme")
    events = []
    for i, value in enumerate(dangerous):
        event = make_event(i, run=f"run-{i}")
        events.append(event.model_copy(update={"purpose": value, "sync_id": value}))
    ledger.append(events)
    text = reports.lineage_csv(reports.lineage_report(db_engine, "acme"))
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(dangerous)
    cells = [cell for row in rows for cell in row.values()]
    for cell in cells:
        assert not cell or cell[0] not in "=+-@\t\r", repr(cell)
    assert sorted(row["sync_id"] for row in rows) == sorted("'" + v for v in dangerous)
    assert sorted(int(row["first_index"]) for row in rows) == list(
        range(len(dangerous))
    )  # numbers as they are
