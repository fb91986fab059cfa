"""A user gets through a schema-drift refusal with the CLI alone, on the real dev server, the sandbox
CRMs over HTTPS on loopback and the database of ``db_url``.

A full Salesforce → HubSpot run is planned (its field types fixed), then — paused before its first
pull — the source's admin retypes the synced number field to text, writes text into a few records
and renames a synced field. The run completes with those records quarantined; ``crmhub sync
status`` shows the quarantine, the drift and that the next run will be refused; ``crmhub sync run``
is refused (rule ``schema_drift``) and says what to do; the controller's new instruction (the
renamed field allowed instead of the old one) is refused for the sync until the mapping follows the
rename; ``crmhub sync set-instruction --version 2 --rename Title=Job_Title__c`` points the sync at it;
a quarantined record corrected at the source then flows with the next ``crmhub sync run``.

The sync, its direction and the sandbox control API are those of ``tests/chaos/test_schema_drift.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from api.cli import app as cli
from api.demo import _workers
from schemas.sync import SyncInput, SyncMode, sync_workflow_id
from store import dead_letters as dead_letter_store
from store import runs as run_store
from store import syncs as sync_store
from tests.chaos.test_schema_drift import SF_TO_HS, Control
from tests.sync_support import World, create_sync, worker_env
from workflows.sync import SyncWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORDS = 600
HELD = 5  # records given text in the retyped number field
d = SF_TO_HS
OLD, NEW = d.renamed  # Title → Job_Title__c


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 1, "records_per_batch": 200}


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Account": 5, "Contact": RECORDS}}


def _crmhub(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


async def crmhub(*args: str) -> Result:
    """``crmhub ARGS`` in-process (its own event loop, on a thread)."""
    return await asyncio.to_thread(_crmhub, *args)


async def _planned(world: World) -> str:
    """The id of the sync's run once its plan recorded the source schema (the run's contract)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with world.connected.engine.connect() as conn:
            runs = run_store.list_runs(conn, d.tenant, d.sync_id, limit=1)
            if runs and run_store.run_schema(conn, runs[0].run_id) is not None:
                return runs[0].run_id
        await asyncio.sleep(0.05)
    raise AssertionError("the run was not planned within 60 s")


async def test_drift_refusal_resolved_with_the_cli(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in worker_env(world.settings).items():
        if key.startswith("CRMHUB_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "250")
    await create_sync(world, d)
    sync = ["--tenant", d.tenant, "--sync", d.sync_id]
    control = Control(world.sf, world.sandbox.info.ca_path)
    ids = sorted(r["id"] for r in world.sf.live_records(d.source_stream))
    held = ids[-HELD:]
    try:
        async with _workers(world.settings):
            # paused from its start (signal-with-start): the plan fixes the types, no record is read yet
            h = await world.connected.client.start_workflow(
                SyncWorkflow.run,
                SyncInput(tenant=d.tenant, sync_id=d.sync_id, mode=SyncMode.FULL),
                id=sync_workflow_id(d.tenant, d.sync_id),
                task_queue=world.settings.temporal.control_task_queue,
                start_signal="pause",
            )
            run_id = await _planned(world)
            control.schema(d.source_stream, change="retype", field=d.number_field, type="string")
            for i, rid in enumerate(held):
                control.patch(d.source_stream, rid, {d.number_field: f"a dozen {i}"})
            control.schema(d.source_stream, change="rename", field=OLD, to=NEW)
            resumed = await crmhub("sync", "resume", *sync)
            assert resumed.exit_code == 0, resumed.output
            await asyncio.wait_for(h.result(), timeout=300)

            # -- status: the quarantine, the drift, and that the next run will be refused
            status = await crmhub("sync", "status", *sync)
            assert status.exit_code == 0, status.output
            text = status.output
            assert "completed" in text and "quarantined" in text
            assert (
                f"quarantined: {HELD} held back by the latest run, {HELD} record(s) held for the sync" in text
            )
            assert f"retyped {d.number_field}: double → string" in text
            assert f"dropped {OLD}" in text and f"added {NEW} (string)" in text
            assert f"the next run will be refused: {d.number_field} changed type" in text
            assert f"crmhub sync set-instruction --tenant {d.tenant} --sync {d.sync_id} --file" in text
            assert not any(f"a dozen {i}" in text for i in range(HELD))  # reasons name types, never values
            with world.connected.engine.connect() as conn:
                assert dead_letter_store.count_quarantined(conn, d.tenant, d.sync_id, run_id=run_id) == HELD

            # -- the next run is refused and says what to do
            refused = await crmhub("sync", "run", *sync)
            assert refused.exit_code == 1, refused.output
            out = refused.output
            assert "refused" in out and "re-issue the instruction" in out
            assert f"latest run refused (rule schema_drift: {d.number_field})" in out
            assert "to resume, the controller re-issues the instruction" in out

            # -- the controller's v2 allows the renamed field instead of the old one: the sync still
            # maps the old one, so pointing it at v2 alone is refused, naming the field and the fix
            v2 = d.instruction(version=2).model_dump(mode="json")
            v2["allowed_fields"][d.source_stream] = sorted(
                {*v2["allowed_fields"][d.source_stream]} - {OLD} | {NEW}
            )
            path = tmp_path / "instruction-v2.yaml"
            path.write_text(yaml.safe_dump(v2), encoding="utf-8")
            alone = await crmhub("sync", "set-instruction", *sync, "--file", str(path))
            assert alone.exit_code != 0
            message = str(alone.exception)
            assert f"does not allow {d.source_stream}.{OLD}" in message and f"--drop {OLD}" in message
            assert "instruction v2 of drift-sf stored" in alone.output
            with world.connected.engine.connect() as conn:
                row = sync_store.get_sync(conn, d.tenant, d.sync_id)
            assert row is not None and row.spec.instruction_version == 1  # nothing changed

            moved = await crmhub(
                "sync", "set-instruction", *sync, "--version", "2", "--rename", f"{OLD}={NEW}"
            )
            assert moved.exit_code == 0, (moved.output, moved.exception)
            assert "now cites instruction v2 (was v1)" in moved.output
            assert f"{NEW} → {d.mapping[OLD]}" in moved.output
            with world.connected.engine.connect() as conn:
                row = sync_store.get_sync(conn, d.tenant, d.sync_id)
            assert row is not None and row.spec.instruction_version == 2
            assert row.spec.mapping[NEW] == d.mapping[OLD] and OLD not in row.spec.mapping
            status = await crmhub("sync", "status", *sync)
            assert "the sync cites instruction v2 since: its next run plans again" in status.output
            assert "will be refused" not in status.output

            # -- a quarantined record corrected at the source flows with the next run
            fixed = held[0]
            control.patch(d.source_stream, fixed, {d.number_field: "13", NEW: "Chief Drift Officer"})
            after = await crmhub("sync", "run", *sync)
            assert after.exit_code == 0, after.output
            assert "completed" in after.output and "refused" not in after.output
        (source,) = [r for r in world.sf.live_records(d.source_stream) if r["id"] == fixed]
        email = str(source["Email"]).lower()
        (landed,) = [r for r in world.hs.live_records(d.destination_stream) if r.get("email") == email]
        assert str(landed.get(d.mapping[d.number_field])) in ("13", "13.0")
        assert landed.get(d.mapping[OLD]) == "Chief Drift Officer"
    finally:
        control.http.close()
