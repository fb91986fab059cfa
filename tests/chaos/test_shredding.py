"""Crypto-shredding reaches running processes (issue 16, finding 3).

A long-lived worker holds a vault and a pseudonymizer with warm caches (data key, active use block,
pseudonym key and the HMAC sub-keys derived from it). Another process shreds the tenant. Within
``shred_check_s`` (default 1 s) the worker must refuse to open, seal or pseudonymize for that
tenant — not after the 300 s key cache expires — while other tenants carry on.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from governance.keys import LocalKeyringProvider
from governance.pseudonym import Pseudonymizer
from governance.vault import TenantKeysDestroyed, Vault
from store.engine import make_engine

pytestmark = [pytest.mark.chaos]

CTX = {"dataset": "salesforce.Contact", "object_id": "003A000001", "purpose": "crm-sync"}
BATCH = {"sync": "contacts", "batch": "b-1", "purpose": "crm-sync"}
SHRED_CHECK_S = 1.0
SLACK_S = 0.5  # scheduling slack on a loaded 2-core machine


def _shred_in_another_process(db_url: str, keyring: Path, tenant: str) -> None:
    code = textwrap.dedent(
        f"""
        from governance.keys import LocalKeyringProvider
        from governance.vault import Vault
        from store.engine import make_engine
        engine = make_engine({db_url!r})
        cert = Vault(engine, LocalKeyringProvider({str(keyring)!r})).shred({tenant!r})
        assert cert.keys_destroyed == 2 and cert.verify()
        engine.dispose()
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_shred_in_another_process_reaches_a_running_worker(db_url: str, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    engine = make_engine(db_url)
    try:
        worker = Vault(engine, LocalKeyringProvider(keyring))  # the defaults a worker runs with
        assert worker.shred_check_s == SHRED_CHECK_S and worker.cache_ttl == 300.0
        pseudonyms = Pseudonymizer(worker)
        sealed = worker.seal("acme", b"alice@example.com", **CTX)
        blob = worker.seal_batch("acme", b"batch of records", **BATCH)
        other = worker.seal("globex", b"bob@example.com", **CTX)
        before = pseudonyms.pseudonymize("acme", "alice@example.com")
        assert worker.open("acme", sealed, **CTX) == b"alice@example.com"
        assert pseudonyms.keyed_hash("acme", "003A000001").startswith("kh_")

        _shred_in_another_process(db_url, keyring, "acme")
        shredded = time.monotonic()
        refused_after: float | None = None
        while time.monotonic() - shredded < 10 * SHRED_CHECK_S:
            try:
                worker.open("acme", sealed, **CTX)
            except TenantKeysDestroyed:
                refused_after = time.monotonic() - shredded
                break
            time.sleep(0.05)
        assert refused_after is not None, "the running worker still opened shredded data after 10 s"
        assert refused_after <= SHRED_CHECK_S + SLACK_S
        time.sleep(SHRED_CHECK_S + 0.1)  # every cache of the worker is now past its check interval
        with pytest.raises(TenantKeysDestroyed):
            worker.open_batch("acme", blob, **BATCH)
        with pytest.raises(TenantKeysDestroyed):
            worker.seal("acme", b"new data", **CTX)
        with pytest.raises(TenantKeysDestroyed):
            pseudonyms.pseudonymize("acme", "alice@example.com")
        with pytest.raises(TenantKeysDestroyed):
            pseudonyms.keyed_hash("acme", "003A000001")
        # Another tenant is untouched.
        assert worker.open("globex", other, **CTX) == b"bob@example.com"
        assert pseudonyms.pseudonymize("globex", "alice@example.com") != before
    finally:
        engine.dispose()
