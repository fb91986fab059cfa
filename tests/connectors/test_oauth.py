"""The pure OAuth protocol package (:mod:`connectors.oauth`): PKCE, the instance URL allowlist, client
configuration, and the token client over respx-mocked provider endpoints (no network, no database).
The sealed token store built on it is tested in tests/services/test_credentials.py."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import httpx
import pytest
import respx
import trustme
from pydantic import ValidationError

from connectors.oauth import (
    DeadRefreshToken,
    HubSpotOAuthConfig,
    InstanceNotAllowed,
    OAuthCallbackError,
    SalesforceOAuthConfig,
    TokenClient,
    check_instance_url,
    pkce_challenge,
)
from schemas.errors import AuthError, ConfigError, RateLimited, TransientError
from tests.connectors.oauth_support import (
    HS_REFRESH_TOKENS,
    HS_TOKEN,
    HS_UNINSTALL,
    REDIRECT,
    SF_INSTANCE,
    SF_INSTANCE_REVOKE,
    SF_REVOKE,
    SF_SECRET,
    SF_TOKEN,
    form_of,
    hs_config,
    hs_grant,
    sf_config,
    sf_grant,
    shown_text,
)


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    # RFC 7636 Appendix B: this verifier (32 octets base64url-encoded) hashes to this challenge.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    # a look-alike verifier (one that is sometimes misquoted) must not produce the same challenge
    assert (
        pkce_challenge("dBjftJeZ4CVP-mJ92K9VIK-3ebZ-qb7WGl9DfYf1Fl8")
        != "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "a" * 42 + "!"])
def test_pkce_refuses_verifiers_outside_rfc7636(verifier: str) -> None:
    with pytest.raises(ValueError, match="RFC 7636"):
        pkce_challenge(verifier)


ALLOW = ("*.salesforce.com", "*.force.com", "127.0.0.1:8701")


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://acme.my.salesforce.com", "https://acme.my.salesforce.com"),
        ("https://na15.salesforce.com/", "https://na15.salesforce.com"),
        ("https://ACME.lightning.force.com", "https://acme.lightning.force.com"),
        ("https://na15.salesforce.com:443", "https://na15.salesforce.com"),
        ("https://127.0.0.1:8701", "https://127.0.0.1:8701"),
    ],
)
def test_instance_allowlist_accepts(url: str, canonical: str) -> None:
    assert check_instance_url(url, ALLOW) == canonical


@pytest.mark.parametrize(
    "url",
    [
        "http://na15.salesforce.com",
        "https://evil.com",
        "https://salesforce.com.evil.com",
        "https://salesforce.com",  # "*.x" is subdomains only
        "https://evilsalesforce.com",
        "https://login.salesforce.com@evil.com",
        "https://evil.com@login.salesforce.com",
        "https://evil.com\\@login.salesforce.com",
        "https://evil.com#.salesforce.com",
        "https://evil.com?.salesforce.com",
        "https://evil.com/.salesforce.com",
        "https://na15.salesforce.com/services/data",
        "https://na15.salesforce.com:8443",
        "https://127.0.0.1:8702",
        "https://127.0.0.1",
        "https://na15.salesforce.com.",
        "https://na15%2esalesforce.com",
        "https://na15.salesforce.com\t",
        "https://xn--salesforce.com.evil.com",
        "javascript:alert(1)//.salesforce.com",
        "https://[::1]:8701",
        "",
        None,
        42,
    ],
)
def test_instance_allowlist_refuses(url: object) -> None:
    with pytest.raises(InstanceNotAllowed):
        check_instance_url(url, ALLOW)


@pytest.mark.parametrize(
    "change",
    [
        {"redirect_uri": "http://crmhub.example.com/callback"},  # plain http off loopback
        {"redirect_uri": "https://crmhub.example.com/callback#x"},
        {"token_url": "http://login.salesforce.com/services/oauth2/token"},
        {"authorize_url": "https://user@login.salesforce.com/services/oauth2/authorize"},
        {"state_ttl_s": 601},
        {"instance_allowlist": ("https://*.salesforce.com",)},
        {"client_id": ""},
    ],
)
def test_config_validation(change: dict[str, Any]) -> None:
    base = {"client_id": "c", "client_secret": "s", "redirect_uri": REDIRECT}
    with pytest.raises(ValidationError):
        SalesforceOAuthConfig(**{**base, **change})


def test_hubspot_api_base_must_be_allowlisted() -> None:
    with pytest.raises(ValidationError, match="allowlist"):
        HubSpotOAuthConfig(
            client_id="c", client_secret="s", redirect_uri=REDIRECT, api_url="https://api.evil.com"
        )


def test_client_secret_is_never_printed() -> None:
    cfg = sf_config()
    assert SF_SECRET not in repr(cfg) and SF_SECRET not in str(cfg.model_dump())


# ---- the token client (respx, no database) -------------------------------------------------------


@pytest.fixture
def mock():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


@pytest.fixture
def sf_client():
    client = TokenClient(sf_config())
    yield client
    client.close()


@pytest.fixture
def hs_client():
    client = TokenClient(hs_config())
    yield client
    client.close()


def test_code_exchange_parses_the_grant(sf_client, mock) -> None:
    route = mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=sf_grant()))
    grant = sf_client.exchange_code(code="the-code", verifier="v" * 43, redirect_uri=REDIRECT)
    assert (grant.access_token, grant.refresh_token) == ("sf-access-1", "sf-refresh-1")
    assert grant.scopes == ("api", "refresh_token") and grant.expires_in is None
    assert grant.instance_url == "https://acme.my.salesforce.com"  # unchecked here: the caller checks
    assert form_of(route.calls.last.request) == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": REDIRECT,
        "client_id": "sf-client",
        "client_secret": SF_SECRET,
        "code_verifier": "v" * 43,
    }


def test_hubspot_grant_has_an_expiry_and_a_scope_list(hs_client, mock) -> None:
    mock.post(HS_TOKEN).mock(return_value=httpx.Response(200, json=hs_grant(expires_in=1800)))
    grant = hs_client.refresh("hs-refresh-1")
    assert grant.expires_in == 1800 and grant.scopes is not None and "oauth" in grant.scopes


@pytest.mark.parametrize(
    "body",
    [
        {"access_token": "a b"},  # could split a header
        {"access_token": ""},
        {"access_token": "x" * 5000},
        {"access_token": "ok", "refresh_token": 7},
        {"refresh_token": "r"},
    ],
)
def test_a_malformed_grant_is_transient_and_not_echoed(sf_client, mock, body: dict[str, Any]) -> None:
    mock.post(SF_TOKEN).mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(TransientError, match="malformed") as err:
        sf_client.refresh("sf-refresh-1")
    assert "sf-refresh-1" not in shown_text(err.value)


def test_refusals_are_classified_without_echoing_what_was_sent(sf_client, hs_client, mock) -> None:
    echo = {"error": "invalid_request", "error_description": "bad token sf-refresh-1"}
    mock.post(SF_TOKEN).mock(
        side_effect=[
            httpx.Response(
                400, json={"error": "invalid_grant", "error_description": "expired access/refresh token"}
            ),
            httpx.Response(
                400, json={"error": "invalid_client", "error_description": "invalid client credentials"}
            ),
            httpx.Response(400, json=echo),
            httpx.Response(
                400, json={"error": "invalid_grant", "error_description": "authentication failure"}
            ),
        ]
    )
    with pytest.raises(DeadRefreshToken) as dead:
        sf_client.refresh("sf-refresh-1")
    assert dead.value.label == "invalid_grant" and dead.value.description == "expired access/refresh token"
    with pytest.raises(ConfigError, match="client credentials"):
        sf_client.refresh("sf-refresh-1")
    with pytest.raises(AuthError) as other:
        sf_client.refresh("sf-refresh-1")
    assert "invalid_request" in other.value.message and "sf-refresh-1" not in shown_text(other.value)
    with pytest.raises(OAuthCallbackError) as code:
        sf_client.exchange_code(code="c0de", verifier="v" * 43, redirect_uri=REDIRECT)
    assert code.value.reason == "code_rejected" and code.value.http_status == 400
    mock.post(HS_TOKEN).mock(return_value=httpx.Response(400, json={"status": "BAD_REFRESH_TOKEN"}))
    with pytest.raises(DeadRefreshToken, match="BAD_REFRESH_TOKEN"):
        hs_client.refresh("hs-refresh-1")


def test_redirects_are_never_followed(sf_client, mock) -> None:
    elsewhere = mock.post("https://evil.example.com/token").mock(
        return_value=httpx.Response(200, json=sf_grant())
    )
    mock.post(SF_TOKEN).mock(
        return_value=httpx.Response(307, headers={"Location": "https://evil.example.com/token"})
    )
    with pytest.raises(TransientError, match="redirects are not followed") as err:
        sf_client.refresh("sf-refresh-1")
    assert elsewhere.call_count == 0 and "evil" not in shown_text(err.value)


def test_429_names_the_wait_and_5xx_or_network_errors_are_transient(hs_client, mock) -> None:
    mock.post(HS_TOKEN).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(503),
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
        ]
    )
    with pytest.raises(RateLimited) as limited:
        hs_client.refresh("hs-refresh-1")
    assert limited.value.retry_after == 7
    for match in ("HTTP 503", "unreachable", "timed out"):
        with pytest.raises(TransientError, match=match):
            hs_client.refresh("hs-refresh-1")


def test_revocation_and_the_httpx_log_never_show_the_token(hs_client, sf_client, mock, caplog) -> None:
    token = "hs-refresh/with?odd=chars"
    route = mock.delete(url__startswith=f"{HS_REFRESH_TOKENS}/").mock(return_value=httpx.Response(204))
    with caplog.at_level(logging.INFO, logger="httpx"):
        hs_client.revoke(token)
    assert route.calls.last.request.url.raw_path.endswith(b"/hs-refresh%2Fwith%3Fodd%3Dchars")
    assert "hs-refresh" not in caplog.text and "[redacted]" in caplog.text
    mock.post(SF_REVOKE).mock(side_effect=[httpx.Response(400), httpx.Response(403)])
    assert sf_client.revoke("already-invalid") is False  # 400: nothing left to revoke
    with pytest.raises(AuthError, match="HTTP 403"):
        sf_client.revoke("sf-refresh-1")


def test_tls_is_always_verified_against_the_configured_ca(tmp_path) -> None:
    assert sf_config().verify() is True  # the system store
    missing = SalesforceOAuthConfig(
        client_id="c", client_secret="s", redirect_uri=REDIRECT, ca_path=tmp_path / "nope.pem"
    )
    with pytest.raises(ConfigError, match="ca_file"):
        missing.verify()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    pinned = SalesforceOAuthConfig(
        client_id="c", client_secret="s", redirect_uri=REDIRECT, ca_path=tmp_path / "ca.pem"
    )
    ctx = pinned.verify()
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2 and ctx.check_hostname
    assert ctx.verify_mode is ssl.CERT_REQUIRED


# ---- ending a whole grant (offboarding) ----------------------------------------------------------


def test_revoke_says_whether_the_provider_revoked_and_salesforce_revokes_at_the_instance(
    sf_client, hs_client, mock
) -> None:
    invalid = httpx.Response(400, json={"error": "invalid_token", "error_description": "Token was invalid"})
    at_instance = mock.post(SF_INSTANCE_REVOKE).mock(side_effect=[httpx.Response(200), invalid])
    assert sf_client.revoke("sf-refresh-1", instance_url=SF_INSTANCE) is True
    assert sf_client.revoke("sf-refresh-1", instance_url=SF_INSTANCE) is False
    assert [form_of(c.request) for c in at_instance.calls] == [{"token": "sf-refresh-1"}] * 2
    mock.delete(url__startswith=f"{HS_REFRESH_TOKENS}/").mock(
        side_effect=[httpx.Response(204), httpx.Response(404)]
    )
    assert hs_client.revoke("hs-refresh-1") is True
    assert hs_client.revoke("hs-refresh-1") is False


def test_salesforce_end_grant_revokes_the_refresh_token_then_the_access_token(sf_client, mock) -> None:
    route = mock.post(SF_INSTANCE_REVOKE).mock(side_effect=[httpx.Response(200), httpx.Response(400)])
    assert sf_client.end_grant(
        refresh_token="sf-refresh-1", access_token="sf-access-1", instance_url=SF_INSTANCE
    )
    assert [form_of(c.request)["token"] for c in route.calls] == ["sf-refresh-1", "sf-access-1"]
    route.mock(side_effect=[httpx.Response(400), httpx.Response(400)])
    assert not sf_client.end_grant(
        refresh_token="sf-refresh-1", access_token="sf-access-1", instance_url=SF_INSTANCE
    )  # both already invalid


def test_hubspot_end_grant_uninstalls_the_app_then_deletes_the_refresh_token(hs_client, mock) -> None:
    uninstall = mock.delete(HS_UNINSTALL).mock(return_value=httpx.Response(204))
    delete = mock.delete(url__startswith=f"{HS_REFRESH_TOKENS}/").mock(return_value=httpx.Response(204))
    assert hs_client.end_grant(refresh_token="hs-refresh-1", access_token="hs-access-1")
    assert uninstall.calls.last.request.headers["Authorization"] == "Bearer hs-access-1"
    assert delete.calls.last.request.url.path == "/oauth/v1/refresh-tokens/hs-refresh-1"


def test_hubspot_end_grant_refreshes_a_refused_access_token_once(hs_client, mock) -> None:
    uninstall = mock.delete(HS_UNINSTALL).mock(side_effect=[httpx.Response(401), httpx.Response(204)])
    token = mock.post(HS_TOKEN).mock(return_value=httpx.Response(200, json=hs_grant(access="hs-access-2")))
    mock.delete(url__startswith=f"{HS_REFRESH_TOKENS}/").mock(return_value=httpx.Response(204))
    assert hs_client.end_grant(refresh_token="hs-refresh-1", access_token="hs-access-1")
    assert token.call_count == 1 and form_of(token.calls.last.request)["refresh_token"] == "hs-refresh-1"
    assert [c.request.headers["Authorization"] for c in uninstall.calls] == [
        "Bearer hs-access-1",
        "Bearer hs-access-2",
    ]


def test_hubspot_end_grant_of_a_dead_grant_is_already_invalid(hs_client, mock) -> None:
    mock.delete(HS_UNINSTALL).mock(return_value=httpx.Response(401))
    mock.post(HS_TOKEN).mock(
        return_value=httpx.Response(
            400, json={"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown"}
        )
    )
    mock.delete(url__startswith=f"{HS_REFRESH_TOKENS}/").mock(return_value=httpx.Response(404))
    assert hs_client.end_grant(refresh_token="hs-refresh-1", access_token="hs-access-1") is False


def test_end_grant_failures_keep_their_retry_meaning_and_show_no_token(sf_client, hs_client, mock) -> None:
    mock.delete(HS_UNINSTALL).mock(side_effect=[httpx.Response(403), httpx.Response(503)])
    with pytest.raises(AuthError, match="uninstall the app") as refused:
        hs_client.end_grant(refresh_token="hs-refresh-1", access_token="hs-access-1")
    with pytest.raises(TransientError, match="HTTP 503") as down:
        hs_client.end_grant(refresh_token="hs-refresh-1", access_token="hs-access-1")
    mock.post(SF_INSTANCE_REVOKE).mock(return_value=httpx.Response(429, headers={"Retry-After": "3"}))
    with pytest.raises(RateLimited) as limited:
        sf_client.end_grant(refresh_token="sf-refresh-1", access_token=None, instance_url=SF_INSTANCE)
    assert limited.value.retry_after == 3
    for exc in (refused.value, down.value, limited.value):
        assert "refresh-1" not in shown_text(exc) and "access-1" not in shown_text(exc)
    with pytest.raises(ConfigError, match="no app-uninstall"):
        sf_client.uninstall("sf-access-1")
