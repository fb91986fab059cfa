"""Offboarding ends everything of the tenant, everywhere (issue 16, findings 1 and 4b) — against the
sandbox CRMs over HTTPS on loopback, the database of ``db_url`` and ``crmhub tenant offboard`` run as
an operator runs it (a subprocess).

Finding 1: after offboarding, every old token is refused by the vendors — checked by using them (a
direct refresh-token grant, an API call with each access token ever issued) and reading the answers
from the sandboxes' call logs: Salesforce 400 ``invalid_grant`` / 401, HubSpot 400
``BAD_REFRESH_TOKEN`` / 401. The certificate (format /2) lists each connection as ``revoked``. A
revoke endpoint that keeps failing (sandbox fault injection: 503 on ``sf.oauth.revoke``) blocks the
certificate: exit 1 naming the connection, bounded retries in the call log, nothing deleted; once the
vendor answers, running it again completes. ``--allow-unrevoked`` goes on and the certificate says
``failed`` for that connection.

Finding 4b: the tenant's web users and sessions are gone — an existing session cookie is refused
(redirect to the login page, a run-now POST never reaches Temporal) and the user cannot log in.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.web import create_app
from api.web.session import SESSION_COOKIE
from connectors.oauth import DeadRefreshToken, TokenClient
from governance.lineage import Ledger
from sandbox.faults import CallRecord
from sandbox.runtime import RunningSandbox
from schemas.lineage import EventKind
from schemas.settings import Settings
from services.credentials import DATASET_TOKEN, PURPOSE, OAuthService
from store import connections as connection_store
from store import users as user_store
from store.connections import ConnectionStatus
from tests.api.web.conftest import PASSWORD, asgi_client, login, no_temporal, page_csrf
from tests.stack import sandbox_oauth_configs
from tests.sync_support import DEMO_SYNC
from workers.client import Connected

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TENANT = "leaving-chaos"
EMAIL = "ops@leaving.example"


@pytest.fixture
def demo_tenant() -> str:
    return TENANT


@dataclass
class Grant:
    """What crmhub held of one connection before offboarding: every access token it ever had."""

    connection_id: str
    provider: str
    instance_url: str
    refresh_token: str
    access_tokens: list[str]


def _grants(demo: Connected, sandbox: RunningSandbox) -> dict[str, Grant]:
    """Each connection's tokens — after one forced refresh, so there are two access tokens each."""
    out: dict[str, Grant] = {}
    with OAuthService(demo.engine, demo.vault, sandbox_oauth_configs(sandbox)) as oauth:
        for info in oauth.list(TENANT):
            with demo.engine.connect() as conn:
                row = connection_store.get_connection(conn, info.id)
            assert row is not None
            first, refresh = _open(demo, row.id, "access"), _open(demo, row.id, "refresh")
            second = oauth.refresh(info.id, first)
            assert second != first
            out[info.provider] = Grant(
                info.id, info.provider, oauth.instance_url(info.id), refresh, [first, second]
            )
    assert set(out) == {"salesforce", "hubspot"}
    return out


def _open(demo: Connected, connection_id: str, kind: str) -> str:
    """A stored token in the clear, the way crmhub's token store seals it (kind: access, refresh)."""
    with demo.engine.connect() as conn:
        row = connection_store.get_connection(conn, connection_id)
    assert row is not None
    sealed = row.access_token_sealed if kind == "access" else row.refresh_token_sealed
    assert sealed is not None
    object_id = f"{connection_id}/{kind}"
    return demo.vault.open(
        TENANT, sealed, dataset=DATASET_TOKEN, object_id=object_id, purpose=PURPOSE
    ).decode()


def _faults(sandbox: RunningSandbox, crm: str, plan: dict[str, Any] | None) -> None:
    """Set (or with None clear) a CRM's fault plan through the sandbox control API, as an operator."""
    info = sandbox.info
    url = info.salesforce_url if crm == "salesforce" else info.hubspot_url
    token = info.salesforce_control_token if crm == "salesforce" else info.hubspot_control_token
    with httpx.Client(
        headers={"Authorization": f"Bearer {token}"}, verify=sandbox.ca.client_context()
    ) as http:
        r = http.put(f"{url}/__sandbox/faults", json=plan) if plan else http.delete(f"{url}/__sandbox/faults")
    assert r.status_code == 200, r.text


def _crmhub(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(CRMHUB_DATA_DIR=str(settings.data_dir), CRMHUB_DATABASE_URL=settings.effective_database_url)
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _offboard(settings: Settings, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _crmhub(
        settings, "tenant", "offboard", "--tenant", TENANT, "--out", str(out), "--yes", "--json", *extra
    )


def _tag(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _since(sandbox: RunningSandbox, crm: str, t0: float) -> list[CallRecord]:
    sb = sandbox.salesforce if crm == "salesforce" else sandbox.hubspot
    return [c for c in sb.calls.all() if c.at >= t0]


def _assert_refused_everywhere(sandbox: RunningSandbox, grants: dict[str, Grant]) -> None:
    """Use every old token the way a thief would; the vendors' call logs show each one refused."""
    t0 = time.monotonic()
    configs = {c.provider.value: c for c in sandbox_oauth_configs(sandbox)}
    verify = sandbox.ca.client_context()
    api_path = {"salesforce": "/services/data/v59.0/limits", "hubspot": "/crm/v3/objects/contacts"}
    for crm, grant in grants.items():
        client = TokenClient(configs[crm])
        try:
            with pytest.raises(DeadRefreshToken):
                client.refresh(grant.refresh_token)
        finally:
            client.close()
        with httpx.Client(base_url=grant.instance_url, verify=verify) as http:
            for token in grant.access_tokens:
                r = http.get(api_path[crm], headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 401, (crm, r.status_code, r.text)
        calls = _since(sandbox, crm, t0)
        token_endpoint = "sf.oauth.token" if crm == "salesforce" else "hs.oauth.token"
        refreshes = [c for c in calls if c.endpoint == token_endpoint]
        assert [c.status for c in refreshes] == [400], (crm, refreshes)
        for token in grant.access_tokens:
            used = [c for c in calls if c.token == _tag(token)]
            assert [c.status for c in used] == [401], (crm, used)


def _revoke_events(demo: Connected) -> list[dict[str, Any]]:
    return [dict(e.details) for e in Ledger(demo.engine, TENANT).read_events() if e.kind is EventKind.REVOKE]


async def test_offboarding_ends_every_grant_at_both_vendors(
    settings: Settings, sandbox: RunningSandbox, demo: Connected, tmp_path: Path
) -> None:
    grants = _grants(demo, sandbox)
    t0 = time.monotonic()
    res = _offboard(settings, tmp_path / "out")
    assert res.returncode == 0, res.stderr
    _assert_refused_everywhere(sandbox, grants)
    cert = json.loads(res.stdout)
    assert cert["format"] == "crmhub.offboarding.certificate/2"
    outcomes = {c["provider"]: (c["connection"], c["outcome"]) for c in cert["connections"]}
    assert outcomes == {crm: (g.connection_id, "revoked") for crm, g in grants.items()}
    assert cert["unrevoked_allowed"] is False
    # The revocations the vendors saw: Salesforce revoke of the refresh token (200) and of the access
    # token (already gone with it: 400); HubSpot app uninstall (204) and refresh-token delete (204).
    sf = [(c.endpoint, c.status) for c in _since(sandbox, "salesforce", t0) if "revoke" in c.endpoint]
    assert sf == [("sf.oauth.revoke", 200), ("sf.oauth.revoke", 400)]
    hs = [(c.endpoint, c.status) for c in _since(sandbox, "hubspot", t0) if c.endpoint.startswith("hs.")]
    assert ("hs.appinstalls.uninstall", 204) in hs and ("hs.oauth.refresh_token", 204) in hs
    with demo.engine.connect() as conn:
        rows = connection_store.list_connections(conn, tenant=TENANT)
    assert {r.status for r in rows} == {ConnectionStatus.REVOKED}
    assert all(r.access_token_sealed is None and r.refresh_token_sealed is None for r in rows)
    assert sorted(e["outcome"] for e in _revoke_events(demo)) == ["revoked", "revoked"]
    secrets = [g.refresh_token for g in grants.values()] + [
        t for g in grants.values() for t in g.access_tokens
    ]
    blob = res.stdout + res.stderr + (tmp_path / "out" / f"{TENANT}-deletion-certificate.json").read_text()
    assert not any(s in blob for s in secrets)  # no token in the output or the certificate


async def test_a_failed_revocation_blocks_the_certificate(
    settings: Settings, sandbox: RunningSandbox, demo: Connected, tmp_path: Path
) -> None:
    grants = _grants(demo, sandbox)
    sf_id = grants["salesforce"].connection_id
    _faults(
        sandbox, "salesforce", {"seed": 1, "rules": [{"endpoint": "sf.oauth.revoke", "server_error": 1.0}]}
    )
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = _offboard(settings, out)
    assert res.returncode == 1, res.stdout + res.stderr
    message = " ".join(res.stderr.split())
    assert sf_id in message and "--allow-unrevoked" in message and "offboard --tenant" in message
    assert not (out / f"{TENANT}-deletion-certificate.json").exists()
    assert not (out / f"{TENANT}-export.json").exists()
    revokes = [c.status for c in _since(sandbox, "salesforce", t0) if c.endpoint == "sf.oauth.revoke"]
    assert revokes == [503] * 4  # bounded: 4 sends, then reported
    with demo.engine.connect() as conn:
        sf_row = connection_store.get_connection(conn, sf_id)
    assert sf_row is not None and sf_row.status is ConnectionStatus.ACTIVE  # kept, to retry
    assert sf_row.refresh_token_sealed is not None
    assert sorted(e["outcome"] for e in _revoke_events(demo)) == ["failed", "revoked"]

    # The vendor answers again: the same command completes; HubSpot was revoked the first time.
    _faults(sandbox, "salesforce", None)
    res = _offboard(settings, out)
    assert res.returncode == 0, res.stderr
    cert = json.loads(res.stdout)
    outcomes = {c["provider"]: c["outcome"] for c in cert["connections"]}
    assert outcomes == {"salesforce": "revoked", "hubspot": "not_held"}
    assert "hubspot (revoked)" in next(c["reason"] for c in cert["connections"] if c["provider"] == "hubspot")
    _assert_refused_everywhere(sandbox, grants)


async def test_allow_unrevoked_records_the_failed_grant(
    settings: Settings, sandbox: RunningSandbox, demo: Connected, tmp_path: Path
) -> None:
    grants = _grants(demo, sandbox)
    _faults(
        sandbox,
        "hubspot",
        {"seed": 1, "rules": [{"endpoint": "hs.appinstalls.uninstall", "server_error": 1.0}]},
    )
    res = _offboard(settings, tmp_path / "out", "--allow-unrevoked")
    assert res.returncode == 0, res.stderr
    cert = json.loads(res.stdout)
    assert cert["unrevoked_allowed"] is True
    by = {c["provider"]: c for c in cert["connections"]}
    assert by["salesforce"]["outcome"] == "revoked"
    assert by["hubspot"]["outcome"] == "failed" and by["hubspot"]["attempts"] == 4
    assert "HTTP 503" in by["hubspot"]["reason"]
    with demo.engine.connect() as conn:  # crmhub holds nothing of it any more, and says so
        hs_row = connection_store.get_connection(conn, grants["hubspot"].connection_id)
    assert hs_row is not None and hs_row.refresh_token_sealed is None
    assert hs_row.status_message is not None and "NOT be revoked" in hs_row.status_message


@pytest.fixture
async def browser(settings: Settings, demo: Connected) -> AsyncIterator[httpx.AsyncClient]:
    """The tenant's web user, logged in to the web app (in-process, over this test's database)."""
    from api.cli_web import add_user

    add_user(settings, TENANT, EMAIL, PASSWORD)
    app = create_app(settings, engine=demo.engine, temporal=no_temporal, oauth_configs=[])
    try:
        async with asgi_client(app) as client:
            r = await login(client, TENANT, EMAIL)
            assert r.status_code == 303 and r.headers["location"] == "/", r.text
            yield client
    finally:
        app.state.web.close()


async def test_offboarded_web_users_and_sessions_are_refused(
    settings: Settings, demo: Connected, browser: httpx.AsyncClient, tmp_path: Path
) -> None:
    csrf = await page_csrf(browser, "/syncs")  # the session works before
    res = _offboard(settings, tmp_path / "out")
    assert res.returncode == 0, res.stderr
    page = await browser.get("/syncs")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    run = await browser.post(f"/syncs/{DEMO_SYNC}/run", data={"csrf_token": csrf})
    assert run.status_code in (303, 403) and run.headers.get("location", "/login").startswith("/login")
    browser.cookies.clear()
    again = await login(browser, TENANT, EMAIL)  # the right password, the user is gone: no session
    assert again.status_code != 303 and SESSION_COOKIE not in browser.cookies, again.status_code
    assert (await browser.get("/syncs")).status_code == 303
    cert = json.loads(res.stdout)
    assert cert["stores"]["web_users"] == 1 and cert["stores"]["web_sessions"] >= 1
    with demo.engine.connect() as conn:
        sessions = user_store.web_sessions
        users = user_store.web_users
        assert conn.execute(sessions.select().where(sessions.c.tenant == TENANT)).all() == []
        assert conn.execute(users.select().where(users.c.tenant == TENANT)).all() == []


async def test_a_connection_made_while_offboarding_runs_is_revoked_too(
    settings: Settings, sandbox: RunningSandbox, demo: Connected, tmp_path: Path
) -> None:
    """A user connects a CRM after the first revocation pass (here: while the export runs): the
    second pass revokes it before anything is deleted, and the certificate lists it."""
    from api.demo import connect_crm
    from api.offboard import offboard_tenant
    from governance.lineage import CheckpointSigner
    from sandbox.tls import SandboxCA

    grants = _grants(demo, sandbox)
    signer = CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)
    late: list[str] = []
    with OAuthService(demo.engine, demo.vault, sandbox_oauth_configs(sandbox)) as oauth:

        def meanwhile(step: str, done: int, total: int) -> None:
            if step == "syncs" and not late:
                ca = SandboxCA(Path(sandbox.info.ca_path).parent)
                late.append(connect_crm(oauth, TENANT, "salesforce", ca))
                late.append(_open(demo, late[0], "refresh"))

        cert = offboard_tenant(
            demo.engine, demo.vault, signer, TENANT, tmp_path / "out", oauth=oauth, progress=meanwhile
        )
    assert len(late) == 2
    outcomes = {c["connection"]: c["outcome"] for c in cert["connections"]}
    assert outcomes == {
        grants["salesforce"].connection_id: "revoked",
        grants["hubspot"].connection_id: "revoked",
        late[0]: "revoked",
    }
    client = TokenClient(next(c for c in sandbox_oauth_configs(sandbox) if c.provider.value == "salesforce"))
    try:
        with pytest.raises(DeadRefreshToken):
            client.refresh(late[1])
    finally:
        client.close()
