"""The credentials service (:mod:`services.credentials`): connect, refresh and revoke against
respx-mocked provider endpoints (no network), with tokens sealed in the database.

Every test runs on the ``db_engine`` fixture: SQLite by default, PostgreSQL when
CRMHUB_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import select, text

from connectors.base import TokenSource
from connectors.oauth import HUBSPOT_SCOPES, InstanceNotAllowed, OAuthCallbackError, pkce_challenge
from governance.keys import LocalKeyringProvider
from governance.vault import Vault
from schemas.errors import AuthError, ConfigError, RateLimited, ReauthorizationRequired, TransientError
from services.credentials import OAuthService
from services.token_source import DbTokenSource
from store import connections as store
from store.engine import is_sqlite, make_engine
from tests.connectors.oauth_support import (
    FIXTURES,
    HS_REFRESH_TOKENS,
    HS_SECRET,
    HS_TOKEN,
    REDIRECT,
    SF_REVOKE,
    SF_SECRET,
    SF_TOKEN,
    Clock,
    callback_params,
    form_of,
    hs_config,
    hs_grant,
    sf_config,
    sf_grant,
    shown_text,
)


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


@pytest.fixture
def vault(db_engine, keyring) -> Vault:
    return Vault(db_engine, LocalKeyringProvider(keyring))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mock():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


@pytest.fixture
def svc(db_engine, vault, clock, mock):
    service = OAuthService(db_engine, vault, [sf_config(), hs_config()], clock=clock)
    yield service
    service.close()


def connect(svc: OAuthService, mock, provider: str, body: dict[str, Any], tenant: str = "acme"):
    route = mock.post(SF_TOKEN if provider == "salesforce" else HS_TOKEN).mock(
        return_value=httpx.Response(200, json=body)
    )
    req = svc.begin_authorization(tenant, provider)
    info = svc.complete_authorization(
        provider, tenant=tenant, state=req.state, code="auth-code-xyz", redirect_uri=REDIRECT
    )
    route.reset()
    return info


def sealed_of(engine, connection_id: str) -> store.ConnectionRow:
    with engine.connect() as conn:
        row = store.get_connection(conn, connection_id)
    assert row is not None
    return row


@pytest.mark.parametrize("provider", ["salesforce", "hubspot"])
def test_authorize_url_carries_state_pkce_and_exact_redirect(svc, db_engine, clock, provider) -> None:
    req = svc.begin_authorization("acme", provider)
    params = callback_params(req.url)
    assert params["state"] == req.state and len(req.state) >= 43  # 256 bits, base64url
    assert params["code_challenge_method"] == "S256"
    assert params["redirect_uri"] == REDIRECT
    assert params["client_id"] == ("sf-client" if provider == "salesforce" else "hs-client")
    assert params["scope"].split() == list(svc.config(provider).scopes)
    assert req.expires_at - clock.now == timedelta(minutes=10)
    with db_engine.connect() as conn:
        rows = conn.execute(select(store.oauth_states)).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    # only the hash of the state is stored; the verifier is sealed and matches the challenge
    assert req.state not in json.dumps({k: str(v) for k, v in row.items()})
    verifier = svc.vault.open(
        "acme",
        bytes(row["pkce_verifier_sealed"]),
        dataset="oauth-pkce-verifier",
        object_id=row["state_hash"],
        purpose="connection-credentials",
    ).decode()
    assert pkce_challenge(verifier) == params["code_challenge"]


def test_states_are_unique(svc) -> None:
    states = {svc.begin_authorization("acme", "hubspot").state for _ in range(50)}
    assert len(states) == 50


def test_salesforce_connect_sends_verifier_and_stores_sealed_tokens(svc, mock, db_engine) -> None:
    route = mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=sf_grant()))
    req = svc.begin_authorization("acme", "salesforce")
    info = svc.complete_authorization(
        "salesforce", tenant="acme", state=req.state, code="auth-code-xyz", redirect_uri=REDIRECT
    )
    assert route.call_count == 1
    form = form_of(route.calls.last.request)
    assert form["grant_type"] == "authorization_code"
    assert form["code"] == "auth-code-xyz"
    assert form["redirect_uri"] == REDIRECT
    assert form["client_id"] == "sf-client" and form["client_secret"] == SF_SECRET
    assert pkce_challenge(form["code_verifier"]) == callback_params(req.url)["code_challenge"]
    assert route.calls.last.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert info.status == store.ConnectionStatus.ACTIVE
    assert info.instance_url == "https://acme.my.salesforce.com"
    assert info.scopes == ("api", "refresh_token")
    assert info.access_expires_at is None  # Salesforce sends no expires_in
    row = sealed_of(db_engine, info.id)
    assert row.access_token_sealed is not None and b"sf-access-1" not in row.access_token_sealed
    assert svc.access_token(info.id) == ("sf-access-1", None)


def test_hubspot_connect_records_expiry_and_api_base(svc, mock, clock) -> None:
    info = connect(svc, mock, "hubspot", hs_grant())
    assert info.instance_url == "https://api.hubapi.com"
    assert info.access_expires_at == clock.now + timedelta(seconds=1800)
    assert info.scopes == HUBSPOT_SCOPES


def test_connect_without_refresh_token_is_a_config_error(svc, mock) -> None:
    mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=sf_grant(refresh=None)))
    req = svc.begin_authorization("acme", "salesforce")
    with pytest.raises(ConfigError, match="refresh_token"):
        svc.complete_authorization(
            "salesforce", tenant="acme", state=req.state, code="c", redirect_uri=REDIRECT
        )
    assert svc.list() == []


def test_rejected_code_is_a_400_without_echoing_secrets(svc, mock) -> None:
    body = {"error": "invalid_grant", "error_description": "expired authorization code"}
    mock.post(SF_TOKEN).mock(return_value=httpx.Response(400, json=body))
    req = svc.begin_authorization("acme", "salesforce")
    with pytest.raises(OAuthCallbackError) as err:
        svc.complete_authorization(
            "salesforce", tenant="acme", state=req.state, code="the-code-123", redirect_uri=REDIRECT
        )
    assert err.value.http_status == 400 and err.value.reason == "code_rejected"
    assert "expired authorization code" in str(err.value)
    assert "the-code-123" not in shown_text(err.value)


def test_bad_client_credentials_are_a_config_error(svc, mock) -> None:
    body = {"error": "invalid_client", "error_description": "invalid client credentials"}
    mock.post(SF_TOKEN).mock(return_value=httpx.Response(400, json=body))
    req = svc.begin_authorization("acme", "salesforce")
    with pytest.raises(ConfigError, match="client id and secret"):
        svc.complete_authorization(
            "salesforce", tenant="acme", state=req.state, code="c", redirect_uri=REDIRECT
        )


def _bad_callbacks() -> list[Any]:
    def missing(svc, req, clock):
        return {"provider": "salesforce", "tenant": "acme", "state": None}

    def empty(svc, req, clock):
        return {"provider": "salesforce", "tenant": "acme", "state": ""}

    def tampered(svc, req, clock):
        flipped = ("A" if req.state[0] != "A" else "B") + req.state[1:]
        return {"provider": "salesforce", "tenant": "acme", "state": flipped}

    def unknown(svc, req, clock):
        return {"provider": "salesforce", "tenant": "acme", "state": "x" * 43}

    def expired(svc, req, clock):
        clock.advance(600)
        return {"provider": "salesforce", "tenant": "acme", "state": req.state}

    def cross_provider(svc, req, clock):
        return {"provider": "hubspot", "tenant": "acme", "state": req.state}

    def cross_tenant(svc, req, clock):
        return {"provider": "salesforce", "tenant": "globex", "state": req.state}

    def other_redirect(svc, req, clock):
        return {
            "provider": "salesforce",
            "tenant": "acme",
            "state": req.state,
            "redirect_uri": REDIRECT + "/",
        }

    def denied(svc, req, clock):
        return {"provider": "salesforce", "tenant": "acme", "state": req.state, "error": "access_denied"}

    def no_code(svc, req, clock):
        return {"provider": "salesforce", "tenant": "acme", "state": req.state, "code": ""}

    return [
        pytest.param(missing, "state_missing", id="missing"),
        pytest.param(empty, "state_missing", id="empty"),
        pytest.param(tampered, "state_unknown", id="tampered"),
        pytest.param(unknown, "state_unknown", id="unknown"),
        pytest.param(expired, "state_expired", id="expired"),
        pytest.param(cross_provider, "state_mismatch", id="cross-provider"),
        pytest.param(cross_tenant, "state_mismatch", id="cross-tenant"),
        pytest.param(other_redirect, "redirect_uri_mismatch", id="redirect-uri"),
        pytest.param(denied, "access_denied", id="denied"),
        pytest.param(no_code, "code_missing", id="no-code"),
    ]


@pytest.mark.parametrize(("make", "reason"), _bad_callbacks())
def test_bad_callbacks_are_4xx_and_make_no_token_call(svc, mock, clock, make, reason) -> None:
    sf = mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=sf_grant()))
    hs = mock.post(HS_TOKEN).mock(return_value=httpx.Response(200, json=hs_grant()))
    req = svc.begin_authorization("acme", "salesforce")
    args = {"code": "auth-code", "redirect_uri": REDIRECT, **make(svc, req, clock)}
    provider = args.pop("provider")
    with pytest.raises(OAuthCallbackError) as err:
        svc.complete_authorization(provider, **args)
    assert err.value.reason == reason
    assert 400 <= err.value.http_status < 500
    assert isinstance(err.value, AuthError)
    assert sf.call_count == 0 and hs.call_count == 0
    assert svc.list() == []


@pytest.mark.parametrize("first_error", ["state_mismatch", "ok"])
def test_a_state_is_single_use(svc, mock, first_error) -> None:
    route = mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=sf_grant()))
    req = svc.begin_authorization("acme", "salesforce")
    if first_error == "ok":
        svc.complete_authorization(
            "salesforce", tenant="acme", state=req.state, code="c", redirect_uri=REDIRECT
        )
    else:  # a failed callback burns the state too
        with pytest.raises(OAuthCallbackError):
            svc.complete_authorization(
                "salesforce", tenant="evil", state=req.state, code="c", redirect_uri=REDIRECT
            )
    calls = route.call_count
    with pytest.raises(OAuthCallbackError) as err:
        svc.complete_authorization(
            "salesforce", tenant="acme", state=req.state, code="c", redirect_uri=REDIRECT
        )
    assert err.value.reason == "state_replayed" and err.value.http_status == 400
    assert route.call_count == calls


def test_concurrent_callbacks_with_one_state_make_one_connection(svc, mock) -> None:
    route = mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=sf_grant()))
    req = svc.begin_authorization("acme", "salesforce")
    barrier = threading.Barrier(10)
    outcomes: list[str] = []

    def callback() -> None:
        barrier.wait()
        try:
            svc.complete_authorization(
                "salesforce", tenant="acme", state=req.state, code="c", redirect_uri=REDIRECT
            )
            outcomes.append("ok")
        except OAuthCallbackError as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=callback) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["state_replayed"] * 9
    assert route.call_count == 1 and len(svc.list()) == 1


@pytest.mark.parametrize(
    "instance", ["http://acme.my.salesforce.com", "https://evil.com", "https://login.salesforce.com@evil.com"]
)
def test_token_response_cannot_redirect_api_calls(svc, mock, instance) -> None:
    mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=sf_grant(instance_url=instance)))
    revoke = mock.post(SF_REVOKE).mock(return_value=httpx.Response(200))
    req = svc.begin_authorization("acme", "salesforce")
    with pytest.raises(InstanceNotAllowed):
        svc.complete_authorization(
            "salesforce", tenant="acme", state=req.state, code="c", redirect_uri=REDIRECT
        )
    assert svc.list() == []
    assert revoke.call_count == 1 and form_of(revoke.calls.last.request) == {"token": "sf-refresh-1"}


def test_refresh_response_cannot_change_the_instance(svc, mock) -> None:
    info = connect(svc, mock, "salesforce", sf_grant())
    mock.post(SF_TOKEN).mock(
        return_value=httpx.Response(200, json=sf_grant("sf-access-2", None, instance_url="https://evil.com"))
    )
    assert svc.refresh(info.id, "sf-access-1") == "sf-access-2"
    assert svc.get(info.id).instance_url == "https://acme.my.salesforce.com"


def test_unknown_provider_and_connection_are_config_errors(svc) -> None:
    with pytest.raises(ConfigError, match="not configured"):
        svc.begin_authorization("acme", "pipedrive")
    with pytest.raises(ConfigError, match="no connection"):
        svc.refresh("nope", None)


def _slow_token(body: dict[str, Any], delay: float = 0.2):
    def respond(request: httpx.Request) -> httpx.Response:
        time.sleep(delay)  # widen the race window
        return httpx.Response(200, json=body)

    return respond


def test_50_concurrent_expiries_in_threads_make_one_token_call(svc, mock, db_engine) -> None:
    info = connect(svc, mock, "hubspot", hs_grant())
    route = mock.post(HS_TOKEN).mock(side_effect=_slow_token(hs_grant("hs-access-2")))
    sources = [svc.token_source(info.id) for _ in range(50)]
    barrier = threading.Barrier(50)
    got: list[str] = []

    def worker(source: DbTokenSource) -> None:
        assert source.access_token() == "hs-access-1"
        barrier.wait()
        got.append(source.refresh("hs-access-1"))  # every worker saw a 401 for the same token

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert route.call_count == 1
    assert got == ["hs-access-2"] * 50
    assert elapsed < 5, f"50 refreshes took {elapsed:.2f}s"
    print(f"\n50 concurrent expiries, one service: {route.call_count} token call in {elapsed:.3f}s")


def test_50_threads_with_their_own_services_make_one_token_call(db_engine, keyring, clock, mock) -> None:
    """Without the in-process lock (one service per thread) only the database lock serialises."""
    vault = Vault(db_engine, LocalKeyringProvider(keyring))
    first = OAuthService(db_engine, vault, [hs_config()], clock=clock)
    info = connect(first, mock, "hubspot", hs_grant())
    route = mock.post(HS_TOKEN).mock(side_effect=_slow_token(hs_grant("hs-access-2")))
    engine = make_engine(str(db_engine.url.render_as_string(hide_password=False)), pooled=False)
    services = [OAuthService(engine, vault, [hs_config()], clock=clock) for _ in range(50)]
    barrier = threading.Barrier(50)
    got: list[str] = []

    def worker(service: OAuthService) -> None:
        barrier.wait()
        got.append(service.refresh(info.id, "hs-access-1"))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for s in [first, *services]:
        s.close()
    engine.dispose()
    assert route.call_count == 1
    assert got == ["hs-access-2"] * 50
    print(f"\n50 concurrent expiries, 50 services: {route.call_count} token call in {elapsed:.3f}s")


def _refresh_in_process(
    db_url: str, keyring: str, connection_id: str, barrier: Any, threads: int, out: Any
) -> None:
    """Child process: its own engine, vault, service and respx mock; refresh from ``threads`` threads."""
    import os

    engine = make_engine(db_url)
    vault = Vault(engine, LocalKeyringProvider(keyring))
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        route = router.post(HS_TOKEN).mock(
            side_effect=_slow_token(hs_grant(f"hs-access-from-{os.getpid()}"), 0.3)
        )
        service = OAuthService(engine, vault, [hs_config()])
        got: list[str] = []
        barrier.wait()
        started = time.perf_counter()

        def worker() -> None:
            got.append(service.refresh(connection_id, "hs-access-1"))

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        elapsed = time.perf_counter() - started
        service.close()
        out.put((route.call_count, sorted(set(got)), len(got), elapsed))
    engine.dispose()


def test_concurrent_expiries_across_processes_make_one_token_call(svc, mock, db_url, keyring) -> None:
    info = connect(svc, mock, "hubspot", hs_grant())
    ctx = multiprocessing.get_context("spawn")
    procs_n, threads_n = 4, 10
    barrier = ctx.Barrier(procs_n)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_refresh_in_process, args=(db_url, str(keyring), info.id, barrier, threads_n, out))
        for _ in range(procs_n)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    elapsed = time.perf_counter() - started
    calls = sum(r[0] for r in results)
    tokens = {t for r in results for t in r[1]}
    assert calls == 1, results
    assert len(tokens) == 1 and next(iter(tokens)).startswith("hs-access-from-")
    assert sum(r[2] for r in results) == procs_n * threads_n
    assert svc.access_token(info.id)[0] == next(iter(tokens))
    slowest = max(r[3] for r in results)
    print(
        f"\n{procs_n} processes x {threads_n} threads: {calls} token call; slowest process "
        f"{slowest:.3f}s from the barrier (token endpoint takes 0.3 s); {elapsed:.1f}s incl. spawn"
    )


def test_refresh_returns_the_stored_token_when_someone_else_refreshed(svc, mock) -> None:
    info = connect(svc, mock, "salesforce", sf_grant())
    route = mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=sf_grant("sf-access-2", None)))
    assert svc.refresh(info.id, "sf-access-1") == "sf-access-2"
    assert svc.refresh(info.id, "sf-access-1") == "sf-access-2"  # a late worker with the old token
    assert route.call_count == 1
    assert svc.refresh(info.id, None) == "sf-access-2"  # None forces a refresh
    assert route.call_count == 2


def test_rotated_refresh_token_is_committed_before_it_is_used(svc, mock, db_engine, db_url) -> None:
    info = connect(svc, mock, "salesforce", sf_grant())
    observer = make_engine(db_url, pooled=False)
    seen: list[str] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        form = form_of(request)
        seen.append(form["refresh_token"])
        # whichever refresh token we are sent must already be the committed one
        row = sealed_of(observer, info.id)
        assert row.refresh_token_sealed is not None
        committed = svc.vault.open(
            "acme",
            row.refresh_token_sealed,
            dataset="oauth-token",
            object_id=f"{info.id}/refresh",
            purpose="connection-credentials",
        ).decode()
        assert committed == form["refresh_token"]
        n = len(seen)
        return httpx.Response(200, json=sf_grant(f"sf-access-{n + 1}", f"sf-refresh-{n + 1}"))

    mock.post(SF_TOKEN).mock(side_effect=token_endpoint)
    assert svc.refresh(info.id, "sf-access-1") == "sf-access-2"
    # committed: a separate connection already sees the rotated refresh token
    row = sealed_of(observer, info.id)
    assert row.refresh_token_sealed is not None
    assert (
        svc.vault.open(
            "acme",
            row.refresh_token_sealed,
            dataset="oauth-token",
            object_id=f"{info.id}/refresh",
            purpose="connection-credentials",
        )
        == b"sf-refresh-2"
    )
    assert svc.refresh(info.id, "sf-access-2") == "sf-access-3"
    assert seen == ["sf-refresh-1", "sf-refresh-2"]
    observer.dispose()


def test_sealed_tokens_cannot_be_swapped(svc, mock, db_engine) -> None:
    info = connect(svc, mock, "salesforce", sf_grant())
    row = sealed_of(db_engine, info.id)
    with db_engine.begin() as conn:
        conn.execute(
            store.connections.update()
            .where(store.connections.c.id == info.id)
            .values(access_token_sealed=row.refresh_token_sealed)
        )
    with pytest.raises(Exception, match="failed to verify"):
        svc.access_token(info.id)


def _fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return body


@pytest.mark.parametrize(
    ("provider", "fixture", "label"),
    [
        ("salesforce", "salesforce/oauth_error_expired_refresh_token.captured.json", "invalid_grant"),
        ("salesforce", "salesforce/oauth_error_invalid_grant.simple_salesforce.json", "invalid_grant"),
        ("hubspot", "hubspot/oauth_error_bad_refresh_token.current.captured.json", "invalid_grant"),
        ("hubspot", "hubspot/oauth_error_bad_refresh_token.legacy.captured.json", "BAD_REFRESH_TOKEN"),
    ],
)
def test_dead_refresh_token_requires_reauthorization_without_retrying(
    svc, mock, provider, fixture, label
) -> None:
    info = connect(svc, mock, provider, sf_grant() if provider == "salesforce" else hs_grant())
    route = mock.post(SF_TOKEN if provider == "salesforce" else HS_TOKEN).mock(
        return_value=httpx.Response(400, json=_fixture(fixture))
    )
    old = "sf-access-1" if provider == "salesforce" else "hs-access-1"
    with pytest.raises(ReauthorizationRequired) as err:
        svc.refresh(info.id, old)
    assert route.call_count == 1
    assert label in str(err.value) and f"crmhub connect {provider} --tenant acme" in str(err.value)
    assert not err.value.kind.retryable
    after = svc.get(info.id)
    assert after.status == store.ConnectionStatus.REAUTHORIZATION_REQUIRED
    assert after.status_message is not None and label in after.status_message
    # later workers learn it from the database, not from the provider
    with pytest.raises(ReauthorizationRequired):
        svc.refresh(info.id, old)
    with pytest.raises(ReauthorizationRequired):
        svc.token_source(info.id).access_token()
    assert route.call_count == 1


def test_a_dead_refresh_token_notifies_the_controller_once(svc, mock, db_engine) -> None:
    from governance.lineage import Ledger
    from schemas.lineage import EventKind

    info = connect(svc, mock, "salesforce", sf_grant())
    mock.post(SF_TOKEN).mock(
        return_value=httpx.Response(
            400, json=_fixture("salesforce/oauth_error_invalid_grant.simple_salesforce.json")
        )
    )
    for _ in range(2):
        with pytest.raises(ReauthorizationRequired):
            svc.refresh(info.id, "sf-access-1")
    notices = [e for e in Ledger(db_engine, "acme").read_events() if e.kind is EventKind.NOTICE]
    assert [(e.details["notice_kind"], e.details["fact_connection_id"]) for e in notices] == [
        ("reauthorization_needed", info.id)
    ]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "7"}, 7.0), ({"Retry-After": "Mon, 05 Jan 2026 12:00:30 GMT"}, 30.0), ({}, None)],
)
def test_token_endpoint_429_is_rate_limited_and_retryable(svc, mock, headers, expected) -> None:
    info = connect(svc, mock, "hubspot", hs_grant())
    route = mock.post(HS_TOKEN).mock(
        side_effect=[
            httpx.Response(429, headers=headers, json={"status": "error"}),
            httpx.Response(200, json=hs_grant("hs-access-2")),
        ]
    )
    with pytest.raises(RateLimited) as err:
        svc.refresh(info.id, "hs-access-1")
    assert err.value.retry_after == expected and err.value.kind.retryable
    assert svc.get(info.id).status == store.ConnectionStatus.ACTIVE
    assert svc.refresh(info.id, "hs-access-1") == "hs-access-2"  # the claim was released
    assert route.call_count == 2


@pytest.mark.parametrize(
    "effect",
    [
        httpx.Response(503, text="upstream down hs-refresh-1"),
        httpx.Response(502),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(200, text="<html>not json hs-refresh-1</html>"),
        httpx.Response(200, json={"access_token": "bad token\r\nX-Injected: 1"}),
        httpx.Response(302, headers={"Location": "https://evil.com/token"}),
    ],
)
def test_5xx_and_network_errors_are_transient(svc, mock, effect) -> None:
    info = connect(svc, mock, "hubspot", hs_grant())
    mock.post(HS_TOKEN).mock(side_effect=[effect])
    with pytest.raises(TransientError) as err:
        svc.refresh(info.id, "hs-access-1")
    text_ = shown_text(err.value)
    assert "hs-refresh-1" not in text_ and "hs-access-1" not in text_ and HS_SECRET not in text_
    assert svc.get(info.id).status == store.ConnectionStatus.ACTIVE


def test_other_refusals_are_auth_errors_without_echoed_secrets(svc, mock) -> None:
    info = connect(svc, mock, "salesforce", sf_grant())
    body = {"error": "invalid_request", "error_description": "bad refresh_token sf-refresh-1 for client"}
    mock.post(SF_TOKEN).mock(return_value=httpx.Response(400, json=body))
    with pytest.raises(AuthError) as err:
        svc.refresh(info.id, "sf-access-1")
    assert "invalid_request" in str(err.value)
    assert "sf-refresh-1" not in shown_text(err.value)
    assert svc.get(info.id).status == store.ConnectionStatus.ACTIVE


def test_token_source_caches_and_refreshes_ahead_of_expiry(svc, mock, clock) -> None:
    info = connect(svc, mock, "hubspot", hs_grant())
    route = mock.post(HS_TOKEN).mock(return_value=httpx.Response(200, json=hs_grant("hs-access-2")))
    source: TokenSource = svc.token_source(info.id, skew_s=60)
    assert source.access_token() == "hs-access-1"
    clock.advance(1700)
    assert source.access_token() == "hs-access-1"  # 100 s left: still fresh
    assert route.call_count == 0
    clock.advance(50)  # 50 s left: inside the skew
    assert source.access_token() == "hs-access-2"
    assert source.access_token() == "hs-access-2"
    assert route.call_count == 1


def test_token_source_uses_salesforce_tokens_until_rejected(svc, mock, clock) -> None:
    info = connect(svc, mock, "salesforce", sf_grant())
    route = mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=sf_grant("sf-access-2", None)))
    source = svc.token_source(info.id)
    clock.advance(86400)
    assert source.access_token() == "sf-access-1"  # no expiry known: used until a 401
    assert source.refresh("sf-access-1") == "sf-access-2"
    assert source.access_token() == "sf-access-2"
    assert route.call_count == 1
    assert source.instance_url == "https://acme.my.salesforce.com"


def test_salesforce_disconnect_revokes_the_refresh_token_and_deletes_tokens(svc, mock, db_engine) -> None:
    info = connect(svc, mock, "salesforce", sf_grant())
    revoke = mock.post(SF_REVOKE).mock(return_value=httpx.Response(200))
    after = svc.disconnect(info.id)
    assert [form_of(c.request) for c in revoke.calls] == [{"token": "sf-refresh-1"}, {"token": "sf-access-1"}]
    assert after.status == store.ConnectionStatus.REVOKED
    row = sealed_of(db_engine, info.id)
    assert row.access_token_sealed is None and row.refresh_token_sealed is None
    with pytest.raises(ReauthorizationRequired, match="revoked"):
        svc.token_source(info.id).access_token()
    assert svc.disconnect(info.id).status == store.ConnectionStatus.REVOKED  # idempotent
    assert revoke.call_count == 2


def test_hubspot_disconnect_deletes_the_refresh_token(svc, mock, db_engine) -> None:
    info = connect(svc, mock, "hubspot", hs_grant(refresh="hs-refresh/+1"))
    delete = mock.delete(url__startswith=HS_REFRESH_TOKENS + "/").mock(return_value=httpx.Response(204))
    svc.disconnect(info.id)
    assert delete.call_count == 1
    assert delete.calls.last.request.url.raw_path == b"/oauth/v1/refresh-tokens/hs-refresh%2F%2B1"
    row = sealed_of(db_engine, info.id)
    assert row.status == store.ConnectionStatus.REVOKED and row.refresh_token_sealed is None


def test_disconnect_keeps_tokens_when_the_provider_is_down_unless_forced(svc, mock, db_engine) -> None:
    info = connect(svc, mock, "salesforce", sf_grant())
    mock.post(SF_REVOKE).mock(return_value=httpx.Response(503))
    with pytest.raises(TransientError):
        svc.disconnect(info.id)
    assert sealed_of(db_engine, info.id).refresh_token_sealed is not None
    after = svc.disconnect(info.id, force=True)
    assert after.status == store.ConnectionStatus.REVOKED
    assert after.status_message is not None and "revocation failed" in after.status_message
    assert sealed_of(db_engine, info.id).refresh_token_sealed is None


def test_disconnect_of_an_already_revoked_token_succeeds(svc, mock) -> None:
    info = connect(svc, mock, "salesforce", sf_grant())
    mock.post(SF_REVOKE).mock(
        return_value=httpx.Response(400, json={"error": "unsupported_token_type", "error_description": "x"})
    )
    assert svc.disconnect(info.id).status == store.ConnectionStatus.REVOKED


def test_no_plaintext_token_in_database_bytes_or_logs(svc, mock, db_engine, db_url, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secrets_: list[str] = []
    # connect both providers, refresh with rotation, fail a refresh, disconnect
    sf = connect(svc, mock, "salesforce", sf_grant("SFACCESSaaaa1111", "SFREFRESHbbbb2222"))
    hs = connect(svc, mock, "hubspot", hs_grant("HSACCESScccc3333", "HSREFRESHdddd4444"))
    mock.post(SF_TOKEN).mock(
        return_value=httpx.Response(200, json=sf_grant("SFACCESSeeee5555", "SFREFRESHffff6666"))
    )
    assert svc.refresh(sf.id, "SFACCESSaaaa1111") == "SFACCESSeeee5555"
    mock.post(HS_TOKEN).mock(return_value=httpx.Response(503, text="HSREFRESHdddd4444"))
    with pytest.raises(TransientError):
        svc.refresh(hs.id, "HSACCESScccc3333")
    pending = svc.begin_authorization("acme", "salesforce")  # a state left in flight, verifier sealed
    with db_engine.connect() as conn:
        verifier_row = (
            conn.execute(select(store.oauth_states).where(store.oauth_states.c.used_at.is_(None)))
            .mappings()
            .one()
        )
    verifier = svc.vault.open(
        "acme",
        bytes(verifier_row["pkce_verifier_sealed"]),
        dataset="oauth-pkce-verifier",
        object_id=verifier_row["state_hash"],
        purpose="connection-credentials",
    ).decode()
    mock.delete(url__startswith=HS_REFRESH_TOKENS).mock(return_value=httpx.Response(204))
    svc.disconnect(hs.id)
    secrets_ += [
        "SFACCESSaaaa1111",
        "SFREFRESHbbbb2222",
        "HSACCESScccc3333",
        "HSREFRESHdddd4444",
        "SFACCESSeeee5555",
        "SFREFRESHffff6666",
        pending.state,
        verifier,
        SF_SECRET,
        HS_SECRET,
    ]
    # every row of every table, as text
    dumped: list[str] = []
    with db_engine.connect() as conn:
        for table in (store.connections, store.oauth_states):
            for row in conn.execute(select(table)).mappings():
                dumped.append(repr(dict(row)))
    blob = "\n".join(dumped)
    # and, on SQLite, the raw bytes of the database files (WAL included)
    raw = b""
    if is_sqlite(db_url):
        path = Path(db_engine.url.database or "")
        for suffix in ("", "-wal", "-shm"):
            f = Path(str(path) + suffix)
            if f.exists():
                raw += f.read_bytes()
        assert len(raw) > 0
    logs = caplog.text
    assert "oauth token refreshed" in logs  # the logs did capture the flows
    assert "/refresh-tokens/[redacted]" in logs  # httpx's request line, redacted
    for s in secrets_:
        assert s not in blob, s
        assert s.encode() not in raw, s
        assert s not in logs, s


def test_migration_creates_both_tables(db_engine) -> None:
    with db_engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM connections")).scalar_one() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM oauth_states")).scalar_one() == 0
