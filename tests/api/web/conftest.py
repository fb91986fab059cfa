"""Fixtures of the web app tests: an app over this test's database, a tenant with a user, and an
httpx client that talks to the app in-process (ASGI)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api.cli_web import add_user
from api.web import create_app
from schemas.errors import TransientError
from schemas.settings import Settings, load_settings
from store import tenants as tenant_store

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def no_temporal() -> Client:
    raise TransientError("Temporal is not part of this test")


def make_tenant(engine: Engine, tenant: str, name: str | None = None) -> None:
    with engine.begin() as conn:
        tenant_store.create_tenant(
            conn,
            id=tenant,
            name=name or f"{tenant} Ltd",
            home_region="eea",
            authorised_subprocessors=["salesforce", "hubspot"],
            now=datetime.now(UTC),
        )


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def login(
    client: httpx.AsyncClient, tenant: str, email: str, password: str = PASSWORD
) -> httpx.Response:
    page = await client.get("/login")
    return await client.post(
        "/login",
        data={"csrf_token": csrf_of(page.text), "organisation": tenant, "email": email, "password": password},
    )


async def page_csrf(client: httpx.AsyncClient, path: str = "/") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


@pytest.fixture
def web_settings(tmp_path: Path, db_url: str) -> Settings:
    return load_settings(data_dir=tmp_path / "data", database_url=db_url)


AppFactory = Callable[..., FastAPI]


@pytest.fixture
def app_factory(web_settings: Settings, db_engine: Engine) -> Iterator[AppFactory]:
    apps: list[FastAPI] = []

    def make(
        *,
        settings: Settings | None = None,
        temporal: Callable[[], Awaitable[Client]] | None = None,
        **kw: Any,
    ) -> FastAPI:
        kw.setdefault("oauth_configs", [])
        app = create_app(settings or web_settings, engine=db_engine, temporal=temporal or no_temporal, **kw)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.web.close()


@pytest.fixture
def app(app_factory: AppFactory) -> FastAPI:
    return app_factory()


@pytest.fixture
def tenant_user(web_settings: Settings, db_engine: Engine) -> tuple[str, str]:
    make_tenant(db_engine, "acme", "Acme GmbH")
    add_user(web_settings, "acme", "ana@acme.example", PASSWORD)
    return "acme", "ana@acme.example"


def app_routes(app: FastAPI) -> list[tuple[str, set[str]]]:
    """Every route of ``app`` as (path, methods), included routers flattened (``app.routes`` holds
    FastAPI's lazy included-router entries; ``iter_route_contexts`` resolves them)."""
    out = []
    for ctx in iter_route_contexts(app.routes):
        methods = getattr(ctx, "methods", None)
        if ctx.path and methods:
            out.append((ctx.path, set(methods)))
    return out


def asgi_client(app: FastAPI, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c
