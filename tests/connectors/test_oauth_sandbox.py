"""OAuth against the sandbox CRMs over real HTTPS: consent page, code exchange, refresh, revoke.

The consent form is driven with httpx (GET the authorize URL, submit the form, read the redirect),
like a browser would, for both Salesforce and HubSpot.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.oauth import OAuthCallbackError
from governance.keys import LocalKeyringProvider
from governance.vault import Vault
from sandbox.consent import press_consent
from sandbox.runtime import RunningSandbox, start_sandbox
from sandbox.tls import SandboxCA
from schemas.errors import ReauthorizationRequired, TransientError
from services.credentials import OAuthService
from store import connections as store
from tests.stack import sandbox_oauth_configs

pytestmark = pytest.mark.integration

PROVIDERS = ["salesforce", "hubspot"]


def consent(authorize_url: str, ca: ssl.SSLContext, *, allow: bool = True) -> dict[str, str]:
    return press_consent(authorize_url, ca, allow=allow)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with start_sandbox(tmp_path_factory.mktemp("sandbox"), seed_counts=None) as running:
        yield running


@pytest.fixture
def ca(sandbox: RunningSandbox) -> ssl.SSLContext:
    return SandboxCA(Path(sandbox.info.ca_path).parent).client_context()


@pytest.fixture
def svc(db_engine, tmp_path, sandbox) -> Iterator[OAuthService]:
    vault = Vault(db_engine, LocalKeyringProvider(tmp_path / "keyring.json"))
    service = OAuthService(db_engine, vault, sandbox_oauth_configs(sandbox))
    yield service
    service.close()


def oauth_of(sandbox: RunningSandbox, provider: str) -> Any:
    return (sandbox.salesforce if provider == "salesforce" else sandbox.hubspot).oauth


def connect(svc: OAuthService, ca: ssl.SSLContext, provider: str, tenant: str = "acme") -> Any:
    req = svc.begin_authorization(tenant, provider)
    params = consent(req.url, ca)
    assert params["state"] == req.state
    return svc.complete_authorization(
        provider, tenant=tenant, state=params["state"], code=params["code"], redirect_uri=req.redirect_uri
    )


def api_accepts(sandbox: RunningSandbox, provider: str, ca: ssl.SSLContext, token: str) -> bool:
    """Does the sandbox API accept ``token``? (Salesforce userinfo / HubSpot access-token info.)"""
    if provider == "salesforce":
        url = f"{sandbox.info.salesforce_url}/services/oauth2/userinfo"
    else:
        url = f"{sandbox.info.hubspot_url}/oauth/v1/access-tokens/{token}"
    r = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, verify=ca, timeout=10)
    return r.status_code == 200


def stored_refresh_token(svc: OAuthService, connection_id: str) -> str:
    with svc.engine.connect() as conn:
        row = store.get_connection(conn, connection_id)
    assert row is not None and row.refresh_token_sealed is not None
    return svc.vault.open(
        row.tenant,
        row.refresh_token_sealed,
        dataset="oauth-token",
        object_id=f"{connection_id}/refresh",
        purpose="connection-credentials",
    ).decode()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_connect_use_refresh_and_revoke(svc, sandbox, ca, provider) -> None:
    oauth = oauth_of(sandbox, provider)
    info = connect(svc, ca, provider)
    base = sandbox.info.salesforce_url if provider == "salesforce" else sandbox.info.hubspot_url
    assert info.status == store.ConnectionStatus.ACTIVE and info.instance_url == base
    source = svc.token_source(info.id)
    first = source.access_token()
    assert api_accepts(sandbox, provider, ca, first)

    oauth.expire_all_access_tokens()
    assert not api_accepts(sandbox, provider, ca, first)  # the connector would see a 401 here
    calls = oauth.token_calls
    second = source.refresh(first)
    assert second != first and api_accepts(sandbox, provider, ca, second)
    assert oauth.token_calls == calls + 1

    refresh_token = stored_refresh_token(svc, info.id)
    assert oauth.lookup_refresh(refresh_token) is not None
    after = svc.disconnect(info.id)
    assert after.status == store.ConnectionStatus.REVOKED
    assert oauth.lookup_refresh(refresh_token) is None  # revoked at the provider
    if provider == "salesforce":  # crmhub revokes the access token too
        assert not api_accepts(sandbox, provider, ca, second)
    with pytest.raises(ReauthorizationRequired):
        source.refresh(second)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_concurrent_refreshes_make_one_token_call(svc, sandbox, ca, provider) -> None:
    oauth = oauth_of(sandbox, provider)
    info = connect(svc, ca, provider)
    old = svc.token_source(info.id).access_token()
    oauth.expire_all_access_tokens()
    calls = oauth.token_calls
    barrier = threading.Barrier(20)
    got: list[str] = []

    def worker() -> None:
        source = svc.token_source(info.id)
        barrier.wait()
        got.append(source.refresh(old))

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert oauth.token_calls == calls + 1
    assert len(set(got)) == 1 and len(got) == 20
    assert api_accepts(sandbox, provider, ca, got[0])


def test_salesforce_refresh_token_rotation(svc, sandbox, ca) -> None:
    oauth = oauth_of(sandbox, "salesforce")
    info = connect(svc, ca, "salesforce")
    oauth.rotate_refresh_tokens = True
    try:
        first_rt = stored_refresh_token(svc, info.id)
        token = svc.refresh(info.id, None)
        second_rt = stored_refresh_token(svc, info.id)
        assert second_rt != first_rt
        assert oauth.lookup_refresh(first_rt) is None  # the old one is dead: only the stored one works
        token2 = svc.refresh(info.id, token)
        assert token2 != token and api_accepts(sandbox, "salesforce", ca, token2)
        assert stored_refresh_token(svc, info.id) not in (first_rt, second_rt)
    finally:
        oauth.rotate_refresh_tokens = False


@pytest.mark.parametrize("provider", PROVIDERS)
def test_revoked_refresh_token_requires_reauthorization(svc, sandbox, ca, provider) -> None:
    oauth = oauth_of(sandbox, provider)
    info = connect(svc, ca, provider)
    old = svc.token_source(info.id).access_token()
    assert oauth.revoke(stored_refresh_token(svc, info.id))  # e.g. the admin revoked the app
    calls = oauth.token_calls
    with pytest.raises(ReauthorizationRequired) as err:
        svc.refresh(info.id, old)
    assert oauth.token_calls == calls + 1
    label = "invalid_grant"  # both sandboxes send the current body shape
    assert label in str(err.value)
    assert svc.get(info.id).status == store.ConnectionStatus.REAUTHORIZATION_REQUIRED
    with pytest.raises(ReauthorizationRequired):
        svc.refresh(info.id, old)
    assert oauth.token_calls == calls + 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_denied_consent_is_a_400(svc, sandbox, ca, provider) -> None:
    oauth = oauth_of(sandbox, provider)
    req = svc.begin_authorization("acme", provider)
    params = consent(req.url, ca, allow=False)
    calls = oauth.token_calls
    with pytest.raises(OAuthCallbackError) as err:
        svc.complete_authorization(
            provider,
            tenant="acme",
            state=params.get("state"),
            code=params.get("code"),
            redirect_uri=req.redirect_uri,
            error=params.get("error"),
        )
    assert err.value.reason == "access_denied" and err.value.http_status == 400
    assert oauth.token_calls == calls


def test_tls_is_verified_against_the_configured_ca(db_engine, tmp_path, sandbox, ca) -> None:
    other_ca = SandboxCA.ensure(tmp_path / "other-ca")
    sf, hs = sandbox_oauth_configs(sandbox)
    wrong = sf.model_copy(update={"ca_path": other_ca.ca_path})
    vault = Vault(db_engine, LocalKeyringProvider(tmp_path / "keyring.json"))
    with OAuthService(db_engine, vault, [wrong, hs]) as service:
        req = service.begin_authorization("acme", "salesforce")
        params = consent(req.url, ca)
        with pytest.raises(TransientError, match="unreachable"):
            service.complete_authorization(
                "salesforce",
                tenant="acme",
                state=params["state"],
                code=params["code"],
                redirect_uri=req.redirect_uri,
            )
