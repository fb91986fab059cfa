"""The syncs pages as ops use them (issue 17, item 3): the buttons a sync's state allows, the schedule
shown and edited (CSRF, tenant-scoped) on the session Temporal dev server, one banner and disabled
buttons when Temporal is unreachable, and a run's page with its dead letters (codes and reasons,
never values) and the retry."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from api import syncops
from api.web.context import LazyTemporal
from api.web.routes_syncs import SyncView
from schemas.errors import ConfigError
from schemas.settings import Settings
from schemas.sync import Progress, RunCounts, SyncPhase, SyncStatus
from store import dead_letters as dead_letter_store
from store import syncs as sync_store
from tests.api.web.conftest import AppFactory, asgi_client, csrf_of, login, make_tenant, page_csrf
from tests.api.web.test_web_drift import HELD, SYNC, seed_drifted_sync
from tests.stack import stack_settings

FULL_RUN = f"run-full-{SYNC}"
# What a vendor refusal looks like once push has redacted it (workflows/push.py): code and reason only.
REFUSED = dead_letter_store.DeadLetter(
    "push-acme-1", "acme", SYNC, FULL_RUN, "batch-0", "kh_" + "f" * 32, b"sealed-record-bytes",
    "INVALID_EMAIL", "upsert refused: INVALID_EMAIL (Email is not a valid address)", datetime.now(UTC),
)  # fmt: skip


def _forms(page: str, sync_id: str = SYNC) -> set[str]:
    return set(re.findall(rf'action="/syncs/{sync_id}/(run|pause|resume)"', page))


def _progress(status: SyncStatus) -> Progress:
    return Progress(
        tenant="acme", sync_id=SYNC, run_id="r1", status=status, phase=SyncPhase.PUSHING, counts=RunCounts()
    )


@pytest.mark.parametrize(
    ("status", "actions"),
    [
        (None, ("run",)),
        (SyncStatus.RUNNING, ("pause",)),
        (SyncStatus.WAITING, ("pause",)),
        (SyncStatus.PAUSED, ("resume",)),
        (SyncStatus.COMPLETED, ("run",)),
        (SyncStatus.FAILED, ("run",)),
        (SyncStatus.REFUSED, ("run",)),
    ],
)
def test_the_buttons_follow_the_state(
    db_engine: Engine, status: SyncStatus | None, actions: tuple[str, ...]
) -> None:
    make_tenant(db_engine, "acme")
    seed_drifted_sync(db_engine, "acme")
    with db_engine.connect() as conn:
        row = sync_store.get_sync(conn, "acme", SYNC)
    assert row is not None
    progress = _progress(status) if status is not None else None
    assert SyncView(row, progress, None, "none").actions == actions
    assert SyncView(row, progress, "down", "unknown", temporal_down=True).actions == ()


async def test_temporal_down_is_one_banner_and_disabled_buttons(
    client: httpx.AsyncClient, db_engine: Engine, tenant_user: tuple[str, str]
) -> None:
    seed_drifted_sync(db_engine, "acme")
    assert (await login(client, *tenant_user)).status_code == 303
    for path in ("/syncs", f"/syncs/{SYNC}"):
        page = (await client.get(path)).text
        assert page.count('id="temporal-down"') == 1, path
        assert "Temporal is unreachable" in page
        assert "progress unavailable" not in page and "no worker answered" not in page
        assert _forms(page) == set()  # nothing to post...
        assert re.search(r"<button type=\"button\" disabled[^>]*>Run now</button>", page)  # ...shown disabled
        assert re.search(r'<input name="every"[^>]* disabled>', page)
    # the run report still comes from crmhub's own records
    assert f'href="/syncs/{SYNC}/runs/{FULL_RUN}"' in (await client.get(f"/syncs/{SYNC}")).text
    r = await client.post(
        f"/syncs/{SYNC}/schedule", data={"csrf_token": await page_csrf(client, "/syncs"), "every": "1h"}
    )
    assert r.status_code == 503 and "the schedule was not changed" in r.text


async def test_run_page_lists_dead_letters_without_values_and_offers_the_retry(
    client: httpx.AsyncClient, db_engine: Engine, web_settings: Settings, tenant_user: tuple[str, str]
) -> None:
    seed_drifted_sync(db_engine, "acme")
    make_tenant(db_engine, "other")
    seed_drifted_sync(db_engine, "other", sync_id="theirs")
    assert (await login(client, *tenant_user)).status_code == 303

    page = (await client.get(f"/syncs/{SYNC}/runs/{FULL_RUN}")).text
    assert f"Dead letters ({HELD})" in page
    assert f"<code>{dead_letter_store.QUARANTINED}</code> \u00d7 {HELD}" in page
    assert "Lead_Score__c: planned type double, observed text" in page
    assert "Retry with a full run" not in page  # only quarantined: fixed at the source, not by a retry
    assert "once their values are fixed at the source" in page
    assert "pulled <strong>10</strong>" in page and "pushed <strong>7</strong>" in page

    with db_engine.begin() as conn:
        dead_letter_store.add_dead_letters(conn, [REFUSED])
    page = (await client.get(f"/syncs/{SYNC}/runs/{FULL_RUN}")).text
    assert f"Dead letters ({HELD + 1})" in page
    assert "<code>INVALID_EMAIL</code> \u00d7 1" in page and "Email is not a valid address" in page
    assert "sealed-record-bytes" not in page  # the record itself is never shown
    assert "the 1 refused record(s) are tried once more" in " ".join(page.split())
    form = re.search(
        rf'<form method="post" action="/syncs/{SYNC}/run" class="inline">(.*?)</form>', page, re.S
    )
    assert form is not None and 'name="mode" value="full"' in form.group(1)
    assert "disabled" in form.group(1)  # Temporal is down in this test: the retry cannot start

    for path in (
        f"/syncs/{SYNC}/runs/no-such-run",
        f"/syncs/{SYNC}/runs/run-full-theirs",  # another tenant's run under our sync id
        "/syncs/theirs/runs/run-full-theirs",  # another tenant's sync
    ):
        assert (await client.get(path)).status_code == 404, path


async def test_schedule_is_shown_and_edited_with_csrf_and_tenant_scope(
    app_factory: AppFactory, web_settings: Settings, db_engine: Engine, temporal_env: Any,
    tenant_user: tuple[str, str],
) -> None:  # fmt: skip
    seed_drifted_sync(db_engine, "acme")
    make_tenant(db_engine, "other")
    seed_drifted_sync(db_engine, "other", sync_id="theirs")
    settings = stack_settings(web_settings.data_dir, web_settings.database_url, temporal_env)
    temporal = LazyTemporal(settings)
    app = app_factory(settings=settings, temporal=temporal)
    async with asgi_client(app) as client:
        assert (await login(client, *tenant_user)).status_code == 303
        page = (await client.get("/syncs")).text
        assert 'id="temporal-down"' not in page
        assert "none (runs on demand)" in page
        assert _forms(page) == {"run"}  # no run in Temporal: Run now only
        # crmhub has runs of this sync: the page never says it never ran (live progress, from an
        # earlier test's workflow of the same id on the session server, or crmhub's run records)
        assert "not run yet" not in page
        csrf = csrf_of(page)

        async def post(sync_id: str, **data: str) -> httpx.Response:
            return await client.post(f"/syncs/{sync_id}/schedule", data={"csrf_token": csrf, **data})

        r = await post(SYNC, every="2h", back="list")
        assert r.status_code == 303 and r.headers["location"] == "/syncs"
        page = (await client.get("/syncs")).text
        assert "every 2h" in page and 'value="2h"' in page and "(paused)" not in page

        assert (await post(SYNC, every="30m", paused="true")).status_code == 303
        detail = (await client.get(f"/syncs/{SYNC}")).text
        assert "schedule: every 30m (paused)" in detail
        assert re.search(r'name="paused" value="true" checked', detail)

        bad = await post(SYNC, every="2 hours")
        assert bad.status_code == 400 and "must look like 15m, 1h or 1d" in bad.text
        too_often = await post(SYNC, every="30s")
        assert too_often.status_code == 400 and "at least 1 minute" in too_often.text
        no_csrf = await client.post(f"/syncs/{SYNC}/schedule", data={"every": "1h"})
        assert no_csrf.status_code == 403
        assert (await post("theirs", every="1h")).status_code == 404  # another tenant's sync

        temporal_client = await temporal()
        info = await syncops.schedule(temporal_client, "acme", SYNC)
        assert (info.every.total_seconds(), info.paused) == (1800, True)
        with pytest.raises(ConfigError, match="no schedule"):
            await syncops.schedule(temporal_client, "other", "theirs")
        await syncops.delete_schedule(temporal_client, "acme", SYNC)
