"""A flood of denied requests at the auditor API (issue 16, "anonymous requests writing unbounded
rows"), through the web app as ``crmhub web`` builds it (in-process, so a test can be many client
addresses):

* 2,000 denied requests (no token, a made-up token, one of our ids with a wrong secret) from one
  address and from 500 addresses make at most ``DENIED_ROWS_PER_BUCKET + 3`` rows in their hour,
  whose counts add up to 2,000; the access log of granted requests gains nothing from them.
* No client address is stored in plaintext: neither in any row nor in the database file's bytes;
  the granted auditor's row carries the keyed hash of its address.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from api.web import create_app
from schemas.settings import Settings, load_settings
from store import auditors
from tests.api.web.conftest import make_tenant, no_temporal

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

NOW = datetime(2026, 3, 2, 10, 17, tzinfo=UTC)
ONE = "192.0.2.7"
MANY = [f"198.18.{i // 200}.{i % 200 + 1}" for i in range(500)]


@pytest.fixture
def app(tmp_path: Path, db_url: str, db_engine: Engine) -> Iterator[FastAPI]:
    settings: Settings = load_settings(data_dir=tmp_path / "data", database_url=db_url)
    make_tenant(db_engine, "acme")
    app = create_app(settings, engine=db_engine, temporal=no_temporal, oauth_configs=[])
    app.state.audit_services = dataclasses.replace(app.state.audit_services, clock=lambda: NOW)
    yield app
    app.state.web.close()


def _from(app: FastAPI, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url="http://testserver"
    )


async def test_two_thousand_denied_requests_make_bounded_rows_and_store_no_address(
    app: FastAPI, db_url: str, db_engine: Engine
) -> None:
    with db_engine.begin() as conn:
        _, token = auditors.create_token(conn, tenant="acme", name="auditor", now=NOW)
    wrong_secret = token[: token.rindex("_") + 1] + "x" * 43
    kinds = [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {wrong_secret}"}]
    codes: list[int] = []
    async with _from(app, ONE) as c:
        for i in range(1500):
            codes.append((await c.get("/audit/whoami", headers=kinds[i % 3])).status_code)
        granted = await c.get("/audit/whoami", headers={"Authorization": f"Bearer {token}"})
    for i, address in enumerate(MANY):
        async with _from(app, address) as c:
            codes.append((await c.get("/audit/transfers", headers=kinds[i % 3])).status_code)
    assert codes == [401] * 2000
    assert granted.status_code == 200 and granted.json()["tenant"] == "acme"

    d = auditors.audit_access_denied
    with db_engine.connect() as conn:
        rows = [dict(m) for m in conn.execute(select(d)).mappings()]
        log = [dict(m) for m in conn.execute(select(auditors.audit_access_log)).mappings()]
        listed = auditors.list_access(conn, limit=10_000)
    assert len(rows) <= auditors.DENIED_ROWS_PER_BUCKET + 3, len(rows)
    assert sum(r["count"] for r in rows) == 2000
    assert {r["reason"] for r in rows} == {"no_token", "not_a_token", "rejected"}
    assert sum(r["count"] for r in rows if r["client_hash"] == auditors.OVERFLOW_CLIENT) == (
        500 - (auditors.DENIED_ROWS_PER_BUCKET - 3)
    )
    ones = [r for r in rows if r["count"] == 500 and r["route"] == "GET /audit/whoami"]
    assert len(ones) == 3 and len({r["client_hash"] for r in ones}) == 1  # one address, three reasons
    assert [(r["outcome"], r["tenant"]) for r in log] == [("granted", "acme")]  # the auditor's, complete
    assert log[0]["client"] == ones[0]["client_hash"]  # the same keyed hash, not the address
    assert sum(r.count for r in listed if r.outcome == "denied") == 2000
    stored = {str(v) for row in rows + log for v in row.values()}
    for address in [ONE, *MANY]:
        assert not any(address in v for v in stored), address
    if db_url.startswith("sqlite"):
        db_engine.dispose()  # checkpoint and close: the bytes below are all there is
        path = Path(db_url.removeprefix("sqlite:///"))
        data = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        for address in [ONE, *MANY]:
            assert address.encode() not in data, address


async def test_denied_hours_past_the_retention_are_deleted(app: FastAPI, db_engine: Engine) -> None:
    services = app.state.audit_services
    async with _from(app, ONE) as c:
        assert (await c.get("/audit/whoami")).status_code == 401
        app.state.audit_services = dataclasses.replace(
            services, clock=lambda: NOW + auditors.DENIED_RETENTION + timedelta(hours=1)
        )
        assert (await c.get("/audit/whoami")).status_code == 401
    with db_engine.connect() as conn:
        buckets = conn.execute(select(auditors.audit_access_denied.c.bucket)).scalars().all()
        n = conn.execute(select(func.count()).select_from(auditors.audit_access_denied)).scalar_one()
    assert n == 1 and len(buckets) == 1
