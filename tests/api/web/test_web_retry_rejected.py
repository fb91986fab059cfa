"""The run page's "Retry rejected" button (issue 14 item 4) through the ASGI app on the session
Temporal dev server: CSRF-checked, tenant-scoped, admin/editor only (tests/api/web/test_web_roles.py),
it starts the sync's run with ``retry_rejected`` set; a second press while that run is in progress
is refused (joining it would not retry every letter)."""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

from sqlalchemy.engine import Engine

from api import syncops
from api.web.context import LazyTemporal
from schemas.settings import Settings
from schemas.sync import SyncInput
from store import dead_letters as dead_letter_store
from tests.api.web.conftest import AppFactory, asgi_client, csrf_of, login, make_tenant
from tests.api.web.test_web_drift import seed_drifted_sync
from tests.api.web.test_web_syncs_ops import REFUSED
from tests.stack import stack_settings


async def test_retry_rejected_starts_a_run_that_retries_every_letter(
    app_factory: AppFactory, web_settings: Settings, db_engine: Engine, temporal_env: Any,
    tenant_user: tuple[str, str],
) -> None:  # fmt: skip
    sync_id = f"retry-{uuid.uuid4().hex[:8]}"  # the session server outlives this test's database
    seed_drifted_sync(db_engine, "acme", sync_id=sync_id)
    make_tenant(db_engine, "other")
    seed_drifted_sync(db_engine, "other", sync_id="theirs")
    run_id = f"run-full-{sync_id}"
    with db_engine.begin() as conn:
        letter = dataclasses.replace(REFUSED, id=f"letter-{sync_id}", sync_id=sync_id, run_id=run_id)
        dead_letter_store.add_dead_letters(conn, [letter])
    settings = stack_settings(web_settings.data_dir, web_settings.database_url, temporal_env)
    temporal = LazyTemporal(settings)
    app = app_factory(settings=settings, temporal=temporal)
    async with asgi_client(app) as client:
        assert (await login(client, *tenant_user)).status_code == 303
        page = (await client.get(f"/syncs/{sync_id}/runs/{run_id}")).text
        form = re.search(
            rf'<form method="post" action="/syncs/{sync_id}/retry-rejected"[^>]*>(.*?)</form>', page, re.S
        )
        assert form is not None and "Retry rejected" in form.group(1) and "disabled" not in form.group(1)
        csrf = csrf_of(page)
        assert (await client.post(f"/syncs/{sync_id}/retry-rejected", data={})).status_code == 403  # no CSRF
        assert (
            await client.post("/syncs/theirs/retry-rejected", data={"csrf_token": csrf})
        ).status_code == 404
        pressed = await client.post(f"/syncs/{sync_id}/retry-rejected", data={"csrf_token": csrf})
        assert pressed.status_code == 303 and pressed.headers["location"] == f"/syncs/{sync_id}"
        temporal_client = await temporal()
        handle = syncops.handle(temporal_client, "acme", sync_id)
        history = await handle.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        (inp,) = await temporal_client.data_converter.decode(started.input.payloads, [SyncInput])
        assert inp == SyncInput(tenant="acme", sync_id=sync_id, retry_rejected=True)
        again = await client.post(f"/syncs/{sync_id}/retry-rejected", data={"csrf_token": csrf})
        assert again.status_code == 400 and "is in progress" in again.text  # no worker: still running
        await handle.terminate("test over")
