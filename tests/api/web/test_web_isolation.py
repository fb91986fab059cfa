"""Tenant isolation: walk every route of the app (``app.routes``, flattened) as tenant A's user, with
A's ids and with tenant B's ids, and prove that no response carries any of B's data and that B's
ids answer 404 — B is seeded with distinctive canary names everywhere."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.engine import Engine

from api.cli_web import add_user
from api.demo import demo_instruction
from api.web.context import LazyTemporal
from schemas.settings import Settings
from store import connections as connection_store
from store import instructions as instruction_store
from store import runs as run_store
from store import syncs as sync_store
from tests.api.web.conftest import AppFactory, app_routes, asgi_client, login, make_tenant, page_csrf
from tests.stack import stack_settings

CANARY = "zebracanary"
B = "tenantb"


def _seed(engine: Engine, settings: Settings, tenant: str, name: str, marker: str) -> dict[str, str]:
    """A tenant with a user, an active connection, an instruction, a sync and a run, every name
    carrying ``marker``."""
    make_tenant(engine, tenant, f"{marker} Holdings")
    add_user(settings, tenant, f"{marker}@{tenant}.example", "correct horse battery staple")
    now = datetime.now(UTC)
    conn_id = str(uuid.uuid4())
    ins = demo_instruction(tenant).model_copy(update={"purpose": f"{marker}-purpose"})
    ins = type(ins).model_validate(ins.model_dump())
    sync_id = f"{marker}-sync"
    with engine.begin() as conn:
        connection_store.insert_connection(
            conn,
            id=conn_id,
            tenant=tenant,
            provider="salesforce",
            instance_url=f"https://{marker}.my.salesforce.com",
            scopes=["api", "refresh_token"],
            access_token_sealed=b"sealed",
            refresh_token_sealed=b"sealed",
            access_expires_at=None,
            now=now,
        )
        instruction_store.add_instruction(
            conn, tenant=tenant, version=1, content=ins.model_dump(mode="json"),
            content_hash=ins.content_hash, now=now,
        )  # fmt: skip
        sync_store.create_sync(
            conn,
            sync_store.SyncSpec(
                tenant=tenant,
                id=sync_id,
                name=f"{marker} {name} sync",
                source_connection_id=conn_id,
                source_stream="Contact",
                destination_connection_id=conn_id,
                destination_stream=f"{marker}_objects",
                mapping={"Email": f"{marker}_email"},
                destination_id_property=f"{marker}_id",
                source_key_property="Email",
                instruction_version=1,
            ),
            now=now,
        )
        run_store.start_run(
            conn, run_id=f"run-{marker}", tenant=tenant, sync_id=sync_id, mode="full", trigger="manual",
            status="completed", now=now, message=f"{marker} run message",
        )  # fmt: skip
    return {"connection": conn_id, "sync": sync_id, "run": f"run-{marker}"}


def _db_snapshot(engine: Engine, tenant: str) -> list[Any]:
    with engine.connect() as conn:
        return [
            sorted(map(tuple, conn.execute(select(t).where(t.c.tenant == tenant)).all()), key=repr)
            for t in (
                sync_store.syncs,
                instruction_store.instructions,
                connection_store.connections,
                run_store.sync_runs,
            )
        ]


# For each route: the requests that exercise it, built from a tenant's ids ({connection}, {sync}).
GET_QUERIES: dict[str, list[dict[str, str]]] = {
    "/instructions/edit": [{"connection_id": "{connection}", "stream": "Contact"}],
    "/oauth/callback": [{"state": "{sync}", "code": "x"}],
}


LIVE_DESCRIBE = {"/instructions/edit", "/instructions/preview"}


def _form(path: str, ids: dict[str, str]) -> dict[str, Any]:
    instruction = {
        "connection_id": ids["connection"],
        "stream": "Contact",
        "purpose": "p",
        "retention_days": "5",
        "permitted_regions": "eea",
        "allowed": ["Id", "Email"],
    }
    forms: dict[str, dict[str, Any]] = {
        "/syncs": {
            "sync_id": "stolen",
            "source_connection_id": ids["connection"],
            "source_stream": "Contact",
            "destination_connection_id": ids["connection"],
            "destination_stream": "contacts",
            "mapping": "Email=email",
            "source_key_property": "Email",
            "destination_id_property": "email",
        },
        "/instructions/preview": instruction,
        "/instructions/save": instruction,
        "/syncs/{sync_id}/schedule": {"every": "1h", "paused": "true"},  # paused: it never fires
    }
    return forms.get(path, {})


def _fill(path: str, ids: dict[str, str]) -> str:
    filled = path.replace("{sync_id}", ids["sync"]).replace("{provider}", "salesforce")
    return filled.replace("{index}", "0").replace("{run_id}", ids["run"])


async def test_every_route_as_tenant_a_reads_nothing_of_tenant_b(
    app_factory: AppFactory, web_settings: Settings, db_engine: Engine, temporal_env: Any
) -> None:
    a = _seed(db_engine, web_settings, "acme", "Acme", "acmemarker")
    b = _seed(db_engine, web_settings, B, "Tenant B", CANARY)
    before_b = _db_snapshot(db_engine, B)

    # crmhub's own Temporal client (encrypted converter) on the session dev server, queues of its own
    settings = stack_settings(web_settings.data_dir, web_settings.database_url, temporal_env)
    app: FastAPI = app_factory(settings=settings, temporal=LazyTemporal(settings))
    routes = app_routes(app)
    assert len(routes) >= 20
    bodies: list[str] = []
    checked: list[str] = []
    async with asgi_client(app) as client:
        assert (
            await login(client, "acme", "acmemarker@acme.example", "correct horse battery staple")
        ).status_code == 303
        for path, methods in routes:
            if path in ("/logout", "/login"):
                continue  # exercised last / before login
            for method in sorted(methods - {"HEAD"}):
                for who, ids in (("B", b), ("A", a)):
                    url = _fill(path, ids)
                    if method == "GET":
                        queries = [
                            {k: v.format(**ids) for k, v in q.items()} for q in GET_QUERIES.get(path, [{}])
                        ]
                        responses = [await client.get(url, params=q) for q in queries]
                    else:
                        data = {"csrf_token": await page_csrf(client), **_form(path, ids)}
                        responses = [await client.post(url, data=data)]
                    for r in responses:
                        # A's run was started above with no worker polling: its progress query is unanswered
                        unanswered = (
                            who == "A" and path == "/api/syncs/{sync_id}/progress" and r.status_code == 503
                        )
                        # A's seeded connection has no real tokens: its live describe fails with an error page
                        no_crm = (
                            who == "A"
                            and path in LIVE_DESCRIBE
                            and r.status_code == 502
                            and "Cannot do" in r.text
                        )
                        assert r.status_code < 500 or unanswered or no_crm, (
                            method,
                            path,
                            who,
                            r.status_code,
                            r.text[:300],
                        )
                        bodies.append(r.text + repr(r.headers))
                        uses_b_id = who == "B" and (
                            "{sync_id}" in path
                            or (method == "GET" and path in GET_QUERIES)
                            or (method == "POST" and bool(_form(path, ids)))
                        )
                        if uses_b_id and path != "/oauth/callback":
                            assert r.status_code == 404, (method, path, r.status_code, r.text[:300])
                        if who == "A" and path.startswith("/syncs/{sync_id}") and method == "GET":
                            assert r.status_code == 200 and "acmemarker" in r.text
                    checked.append(f"{method} {path} as {who}")
        bodies.append((await client.get("/openapi.json")).text)
        r = await client.post("/logout", data={"csrf_token": await page_csrf(client)})
        assert r.status_code == 303
    assert len(checked) == 2 * len([p for p, _ in routes if p not in ("/login", "/logout")])
    leaked = [body[:200] for body in bodies if CANARY in body or B in body]
    assert leaked == []
    assert any("acmemarker" in body for body in bodies)  # A's own data is shown: the walk was logged in
    assert _db_snapshot(db_engine, B) == before_b  # A changed nothing of B's (and created no sync "stolen")
