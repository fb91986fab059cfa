"""The tenant's subprocessor page (Art. 28(2)): an admin objects to a proposed registry version from
the web; the objection is recorded like the CLI's (``by=web:<user id>``, a ``registry`` ledger
event), the page then shows the effective version, and an objection after the window is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.engine import Engine

from governance.lineage import Ledger
from governance.registry import Registry, load_registry
from schemas.lineage import EventKind
from services.subprocessor_changes import close, propose
from services.wiring import default_subprocessors_file
from store import subprocessor_versions as version_store
from tests.api.web.conftest import login, page_csrf


def _proposed(engine: Engine, window: timedelta) -> Registry:
    configured = load_registry(default_subprocessors_file())
    data = configured.model_dump(by_alias=True)
    for s in data["subprocessors"]:
        if s["id"] == "temporal":
            s["country"] = "US"
    propose(engine, configured, Registry.model_validate(data), summary="Temporal Cloud", window=window,
            now=datetime.now(UTC))  # fmt: skip
    return configured


async def test_an_admin_objects_from_the_web(
    client: httpx.AsyncClient, db_engine: Engine, tenant_user: tuple[str, str]
) -> None:
    tenant, email = tenant_user
    configured = _proposed(db_engine, timedelta(hours=1))
    await login(client, tenant, email)
    page = await client.get("/subprocessors")
    assert page.status_code == 200
    assert "Proposed: version 2" in page.text and "Temporal Cloud" in page.text
    csrf = await page_csrf(client, "/subprocessors")
    answer = await client.post(
        "/subprocessors/object", data={"csrf_token": csrf, "version": "2", "choice": "stop"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/subprocessors?objected=2"
    with db_engine.connect() as conn:
        (objection,) = version_store.list_objections(conn, tenant=tenant)
    assert (objection.version, objection.choice.value) == (2, "stop")
    assert objection.by.startswith("web:")
    (event,) = [
        e for e in Ledger(db_engine, tenant).read_events()
        if e.kind is EventKind.REGISTRY and e.details["step"] == "objection"
    ]  # fmt: skip
    assert event.details["by"] == objection.by and event.details["choice"] == "stop"
    again = await client.post(
        "/subprocessors/object", data={"csrf_token": csrf, "version": "2", "choice": "keep"}
    )
    assert again.status_code == 400 and "already objected" in again.text

    # once the window closed the page says the syncs are stopped, and offers no form
    with db_engine.begin() as conn:
        conn.execute(version_store.versions.update().values(window_closes=datetime.now(UTC)))
    close(db_engine, configured, 2, now=datetime.now(UTC))
    after = await client.get("/subprocessors")
    assert "held back by your objection to version 2 — your syncs are stopped" in after.text
    assert "Proposed: version 2" not in after.text


async def test_an_objection_after_the_window_is_refused(
    client: httpx.AsyncClient, db_engine: Engine, tenant_user: tuple[str, str]
) -> None:
    tenant, email = tenant_user
    _proposed(db_engine, timedelta(0))
    await login(client, tenant, email)
    csrf = await page_csrf(client, "/subprocessors")
    answer = await client.post(
        "/subprocessors/object", data={"csrf_token": csrf, "version": "2", "choice": "keep"}
    )
    assert answer.status_code == 400 and "objections are no longer accepted" in answer.text
    with db_engine.connect() as conn:
        assert version_store.list_objections(conn, tenant=tenant) == []
