"""Cross-tenant sweep (issue 7, scenario 10): every route of the web app (``api/web``) and of the
auditor API mounted under ``/audit`` (``api/audit``), called as tenant A's user and as tenant A's
auditor with every identifier of tenant B substituted into each path, query and id-like form
parameter → 0 reads of B.

Tenant B is real: both sandbox CRMs connected through OAuth and a Salesforce → HubSpot sync run to
completion by an in-process worker on the session dev server (contacts, lineage, a signed checkpoint,
dead letters of contacts without an email), plus a user, an auditor token and a data-subject export.
Tenant A has its own OAuth connections, sync, user, auditor token and a signed ledger.

* The routes are enumerated from the app object (``iter_route_contexts``): every route is either in
  :data:`PUBLIC` (deliberately reachable without a login) or swept — a new route cannot be missed.
* Each protected route answers an anonymous caller, A's auditor on a web page and A's user on an
  audit route with the login redirect or 401/403 — never the page.
* With B's sync or connection id the web routes answer 404 (as for an unknown id); no response body
  or header carries any of B's markers (ids, names, emails, hashes, tokens), except a value the
  request itself sent (echoed in an error) or A itself stored with an earlier form.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from starlette.routing import Mount

from api import syncops
from api.cli_web import add_user
from api.demo import _workers
from api.web import create_app
from api.web.context import LazyTemporal
from governance.lineage import CheckpointSigner, Ledger
from sandbox import faithful
from sandbox.runtime import RunningSandbox, start_sandbox
from schemas.settings import Settings
from schemas.sync import SyncMode, SyncStatus
from store import auditors
from store import connections as connection_store
from store import dead_letters as dead_letter_store
from store import instructions as instruction_store
from store import runs as run_store
from tests.api.audit.test_audit_api import _events
from tests.api.web.conftest import PASSWORD, asgi_client, login, page_csrf
from tests.api.web.test_web_isolation import _db_snapshot
from tests.chaos.test_web_oauth_attacks import ORIGIN, REGISTERED, _allowed_location
from tests.stack import connect_demo_tenant, sandbox_oauth_configs, stack_settings

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

A, A_SYNC, A_USER = "acme", "acmesync", "ana@acme.example"
B, B_SYNC, B_USER = "tenantzebra", "zebrasync", "zed@zebra.example"
CONTACTS, NO_EMAIL = 12, 2

# Reachable without a login by design; everything else the app routes is swept.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/openapi.json"),
    ("MOUNT", "/static"),
}
ID_FORM_FIELDS = {"connection_id", "source_connection_id", "destination_connection_id", "sync_id", "version"}
TENANT_PARAMS = ("tenant", "tenant_id", "organisation")  # a tenant named in the URL must change nothing


def routes_of(app: FastAPI) -> dict[tuple[str, str], Any]:
    """Every (method, path) the app serves → its route (mounts as ``MOUNT``), included routers flattened."""
    out: dict[tuple[str, str], Any] = {}
    for ctx in iter_route_contexts(app.routes):
        route, path = ctx.original_route, ctx.path or ""
        if isinstance(route, Mount):
            out[("MOUNT", path)] = route
        for method in getattr(ctx, "methods", None) or ():
            if method != "HEAD":
                out[(str(method), path)] = route
    return out


def params_of(route: Any) -> tuple[list[str], list[str], list[str]]:
    """Path, query and form parameter names of a route, its dependencies' included."""
    found: tuple[list[str], list[str], list[str]] = ([], [], [])
    todo = [getattr(route, "dependant", None)]
    while todo:
        dep = todo.pop()
        if dep is None:
            continue
        for names, fields in zip(found, (dep.path_params, dep.query_params, dep.body_params), strict=True):
            names.extend(n for f in fields for n in _field_names(f) if n not in names)
        todo.extend(dep.dependencies)
    return found


def _field_names(field: Any) -> list[str]:
    """The names a parameter stands for in the request: its alias, or a form model's field names
    (``Annotated[Model, Form()]`` is one body parameter whose fields are the form's inputs)."""
    model = field.field_info.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [info.alias or name for name, info in model.model_fields.items()]
    return [field.alias]


def _own_query(path: str, a: dict[str, str]) -> dict[str, str]:
    """The query parameters a route requires, with A's values."""
    if path == "/instructions/edit":
        return {"connection_id": a["connection_id"]}
    return {"first": a["first"]} if path.endswith("/consistency") else {}


@dataclass
class Tenants:
    a: dict[str, str]  # A's own values for every parameter a route may need
    b_ids: list[str]  # every identifier of B, substituted into the parameters
    b_syncs: set[str]
    b_connections: set[str]
    markers: set[str]  # strings only B's data contains
    a_token: str
    b_token: str
    b_runs: set[str]
    b_users: set[str]
    stored_by_a: set[str] = field(default_factory=set)


@pytest.fixture
def stack(tmp_path: Path, db_url: str, temporal_env: Any) -> Settings:
    return stack_settings(tmp_path / "data", db_url, temporal_env)


@pytest.fixture
def crms(stack: Settings) -> Iterator[RunningSandbox]:
    with (
        start_sandbox(stack.data_dir, seed_counts={"salesforce": {"Contact": CONTACTS}}) as sb,
        faithful.faithful(sb),  # the vendors' production faults, as every chaos suite (conftest)
    ):
        yield sb


async def _seed(settings: Settings, sandbox: RunningSandbox, engine: Engine) -> Tenants:
    sf: Any = sandbox.salesforce
    contacts = sorted(sf.live_records("Contact"), key=lambda r: r["id"])
    for c in contacts[:NO_EMAIL]:
        sf.update_record("Contact", c["id"], {"Email": None})
    b = await connect_demo_tenant(settings, sandbox, B, B_SYNC)
    a = await connect_demo_tenant(settings, sandbox, A, A_SYNC)
    a.engine.dispose()
    try:
        async with _workers(settings):
            handle = await syncops.start(
                b.client, B, B_SYNC, mode=SyncMode.FULL, task_queue=settings.temporal.control_task_queue
            )
            await asyncio.wait_for(handle.result(), timeout=120)
            progress = await syncops.progress(b.client, B, B_SYNC)
            assert progress is not None and progress.status is SyncStatus.COMPLETED
    finally:
        b.engine.dispose()
    signer = CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)
    Ledger(engine, A).append(_events(A, "run-acme-1", 3, "a"))
    for tenant in (A, B):
        Ledger(engine, tenant).checkpoint(signer)
    add_user(settings, A, A_USER, PASSWORD)
    b_user_id = add_user(settings, B, B_USER, PASSWORD)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        _, a_token = auditors.create_token(conn, tenant=A, name="auditor of acme", now=now)
        b_token_row, b_token = auditors.create_token(conn, tenant=B, name="zebra auditor", now=now)
        auditors.put_dsr_export(
            conn, request_id="dsr-zebra-0001", tenant=B, sealed=b"zebra-export", now=now,
            expires_at=now + timedelta(days=1),
        )  # fmt: skip
        run_store.start_run(
            conn, run_id="run-acme-1", tenant=A, sync_id=A_SYNC, mode="full", trigger="manual",
            status="running", now=now,
        )  # fmt: skip
        run_store.finish_run(
            conn, "run-acme-1", status="completed", counts={"pulled": 3}, message="", now=now
        )
        a_conns = connection_store.list_connections(conn, tenant=A)
        b_conns = connection_store.list_connections(conn, tenant=B)
        runs = run_store.list_runs(conn, B, B_SYNC)
        letters = dead_letter_store.list_dead_letters(conn, B, B_SYNC)
        b_ins = instruction_store.latest_instruction(conn, B)
        a_ins = instruction_store.latest_instruction(conn, A)
    assert len(letters) == NO_EMAIL and runs and b_ins is not None and a_ins is not None
    events = Ledger(engine, B).read_events()
    b_cps = Ledger(engine, B).checkpoints()
    hashes = [h for e in events for h in e.record_id_hashes][:5]
    b_ids = sorted(
        {B, B_SYNC, "dsr-zebra-0001", b_token_row.id, b_user_id, *hashes}
        | {c.id for c in b_conns}
        | {r.run_id for r in runs}
        | {d.id for d in letters}
        | {d.batch_id for d in letters}
        | {str(b_ins.version), str(len(events) - 1), *(str(cp.size) for cp in b_cps)}
    )
    # the token's whole secret: token_urlsafe may itself hold "_", so splitting on the last one
    # could leave a two-letter fragment that any page happens to contain
    b_secret = b_token.removeprefix(f"{auditors.TOKEN_PREFIX}{b_token_row.id}_")
    assert len(b_secret) >= 40
    markers = (
        {B, B_SYNC, B_USER, b_user_id, b_token_row.id, b_secret, b_ins.content_hash}
        | {c.id for c in b_conns}
        | {r.run_id for r in runs}
        | {d.id for d in letters}
        | {d.batch_id for d in letters}
        | set(hashes)
        | {str(cp.model_dump(mode="json")["root_hash"]) for cp in b_cps}
        | {c["Email"] for c in contacts[NO_EMAIL:]}
        | {c["id"] for c in contacts}
    )
    sf_a = next(c.id for c in a_conns if c.provider == "salesforce")
    hs_a = next(c.id for c in a_conns if c.provider == "hubspot")
    a_values = {
        "sync_id": A_SYNC,
        "provider": "salesforce",
        "connection_id": sf_a,
        "source_connection_id": sf_a,
        "destination_connection_id": hs_a,
        "stream": "Contact",
        "source_stream": "Contact",
        "destination_stream": "contacts",
        "mapping": "Email=email",
        "source_key_property": "Email",
        "destination_id_property": "email",
        "name": "acme probe",
        "purpose": "crm-sync",
        "retention_days": "30",
        "permitted_regions": "eea",
        "allowed": "Email",
        "version": str(a_ins.version),
        "index": "0",
        "first": "1",
        "run_id": "run-acme-1",  # A's run page
        "every": "1h",  # a schedule form (on A's "nosuchsync" when swept with POST)
        "user_id": "nosuchuser",  # ending A's own user's sessions would end the sweep
    }
    b_runs = {r.run_id for r in runs}
    return Tenants(
        a_values, b_ids, {B_SYNC}, {c.id for c in b_conns}, markers, a_token, b_token, b_runs, {b_user_id}
    )


@dataclass
class Sweep:
    app: FastAPI
    t: Tenants
    user: httpx.AsyncClient  # A's logged-in user
    auditor: httpx.AsyncClient  # A's auditor token, no session
    anonymous: httpx.AsyncClient
    requests: int = 0
    leaks: list[str] = field(default_factory=list)

    async def csrf(self) -> str:
        """The CSRF token of A's session (logging in again after the sweep of ``POST /logout``)."""
        if (await self.user.get("/connections")).status_code == 303:
            assert (await login(self.user, A, A_USER)).status_code == 303
        return await page_csrf(self.user, "/connections")

    async def call(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        query: dict[str, str],
        form: dict[str, str],
    ) -> httpx.Response:
        self.requests += 1
        if method == "GET":
            r = await client.get(path, params=query)
        else:
            csrf = await self.csrf() if client is self.user else "none"
            r = await client.post(path, params=query, data={"csrf_token": csrf, **form})
            if r.status_code < 400:
                self.t.stored_by_a.update(form.values())  # A's own data from now on
        sent = {*query.values(), *form.values(), *path.split("/")}
        text = r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        echoed = {m for m in self.t.markers if any(m in v for v in sent | self.t.stored_by_a)}
        found = sorted(m for m in self.t.markers - echoed if m in text)
        if found:
            self.leaks.append(f"{method} {path} {query} {form} → {r.status_code}: {found}")
        if "location" in r.headers:
            assert _allowed_location(r.headers["location"], self.app), (method, path, r.headers["location"])
        return r


def _fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def _words(html: str) -> list[str]:
    return re.findall(r"[\w-]+", html)


def _gate(r: httpx.Response) -> bool:
    """The answer to a caller without the right credentials: the login redirect, 401 or 403."""
    return (r.status_code == 303 and r.headers["location"] == "/login") or r.status_code in (401, 403)


async def _sweep_route(s: Sweep, method: str, path: str, route: Any) -> int:
    """Every substitution of B's identifiers into one route's parameters, as A. Returns the count."""
    path_params, query_params, form_params = params_of(route)
    is_audit = path.startswith("/audit/")
    client = s.auditor if is_audit else s.user
    a = dict(s.t.a)
    if method == "POST":
        a["sync_id"] = "nosuchsync"  # a POST on A's own sync would start or change it
    base_path = {p: a[p] for p in path_params}
    base_query = _own_query(path, a)
    base_form = {p: a[p] for p in form_params if p in a}
    if path == "/syncs" and method == "POST":
        base_form["sync_id"] = "acme-probe"
    targets = [("path", p) for p in path_params] + [("query", p) for p in query_params]
    targets += [("form", p) for p in form_params if p in ID_FORM_FIELDS]
    targets += [("query", p) for p in TENANT_PARAMS]
    n = 0
    for where, name in targets:
        for value in [B] if name in TENANT_PARAMS else s.t.b_ids:  # a tenant parameter names a tenant
            pv, qv, fv = dict(base_path), dict(base_query), dict(base_form)
            {"path": pv, "query": qv, "form": fv}[where][name] = value
            r = await s.call(client, method, _fill(path, pv), qv, fv)
            n += 1
            assert r.status_code < 500, (method, path, where, name, value, r.status_code, r.text[:300])
            b_id = (
                (name == "sync_id" and value in s.t.b_syncs)
                or (name.endswith("connection_id") and value in s.t.b_connections)
                or (name == "user_id" and value in s.t.b_users)
            )
            creates_own = path == "/syncs" and method == "POST" and name == "sync_id"  # A's id space
            if b_id and not creates_own and not is_audit:
                assert r.status_code == 404, (method, path, name, value, r.status_code, r.text[:300])
            if is_audit:
                assert r.status_code in (200, 404, 422), (path, name, value, r.status_code, r.text[:300])
    return n


async def test_every_route_as_tenant_a_reads_nothing_of_tenant_b(
    stack: Settings, crms: RunningSandbox, db_engine: Engine
) -> None:
    t = await _seed(stack, crms, db_engine)
    before_b = _db_snapshot(db_engine, B)
    configs = sandbox_oauth_configs(crms, redirect_uri=REGISTERED)
    app = create_app(stack, oauth_configs=configs, engine=db_engine, temporal=LazyTemporal(stack))
    routes = routes_of(app)
    assert set(routes) >= PUBLIC, PUBLIC - set(routes)  # the public list names real routes
    bearer = {"Authorization": f"Bearer {t.a_token}"}
    try:
        async with (
            asgi_client(app, ORIGIN) as user,
            asgi_client(app, ORIGIN) as anonymous,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=ORIGIN, headers=bearer
            ) as auditor,
        ):
            assert (await login(user, A, A_USER)).status_code == 303
            s = Sweep(app, t, user, auditor, anonymous)
            swept: set[tuple[str, str]] = set()
            counts: dict[str, int] = {}
            # creating A's own sync with B's sync id (A's id space), and logging out, come last
            last = [("POST", "/syncs"), ("POST", "/logout")]
            order = sorted(routes.items(), key=lambda kv: (last.index(kv[0]) if kv[0] in last else -1, kv[0]))
            for (method, path), route in order:
                if (method, path) in PUBLIC:
                    if method == "GET":
                        for client in (anonymous, user, auditor):
                            assert (await s.call(client, method, path, {}, {})).status_code < 500, path
                    continue
                filled = _fill(path, {**t.a, "sync_id": A_SYNC})
                # the gate: no session, or the wrong kind of credential
                wrong = [anonymous, user if path.startswith("/audit/") else auditor]
                for client in wrong:
                    r = await s.call(
                        client, method, filled, {"first": "1"} if "consistency" in path else {}, {}
                    )
                    assert _gate(r), (method, path, r.status_code, r.text[:200])
                # A's own view works (the sweep is logged in), then B's identifiers
                if method == "GET":
                    as_a = auditor if path.startswith("/audit/") else user
                    own = await s.call(as_a, method, filled, _own_query(path, t.a), {})
                    expected = 400 if path == "/oauth/callback" else 200  # no Connect pending: refused
                    assert own.status_code == expected, (path, own.status_code, own.text[:300])
                counts[f"{method} {path}"] = await _sweep_route(s, method, path, route)
                swept.add((method, path))
            assert set(routes) == swept | PUBLIC  # every route is swept or deliberately public
            # the markers are observable: B's own user and auditor do see them
            async with asgi_client(app, ORIGIN) as b_user:
                assert (await login(b_user, B, B_USER)).status_code == 303
                assert B_SYNC in (await b_user.get("/syncs")).text
                assert t.b_connections <= set(_words((await b_user.get("/connections")).text))
            b_auth = {"Authorization": f"Bearer {t.b_token}"}
            b_lineage = (await anonymous.get("/audit/lineage", headers=b_auth)).text
            assert t.b_runs and all(run in b_lineage for run in t.b_runs)
    finally:
        app.state.web.close()
    assert s.leaks == [], "\n".join(s.leaks)
    assert _db_snapshot(db_engine, B) == before_b  # A changed nothing of B's
    params = sum(len(p) for route in routes.values() for p in params_of(route)[:2])  # path + query
    assert sum(counts.values()) >= params * len(t.b_ids) + len(swept) * len(TENANT_PARAMS)
    print(f"isolation sweep: {len(routes)} routes ({len(swept)} swept, {len(PUBLIC)} public), "
          f"{len(t.b_ids)} B identifiers, {s.requests} requests, 0 reads of B")  # fmt: skip
