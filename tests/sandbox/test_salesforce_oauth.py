"""The Salesforce emulator's OAuth 2.0 web-server flow, driven with httpx over HTTPS (sandbox CA only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pathlib
import re
import secrets
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sandbox.salesforce import SalesforceSandbox
from sandbox.tls import SandboxCA
from tests.sandbox import salesforce_support
from tests.sandbox.salesforce_support import Org, serve

sf_ca = salesforce_support.sf_ca
org = salesforce_support.org

FIXTURES = pathlib.Path("/work/shared/vendor-fixtures/salesforce")
EXPIRED_REFRESH = {"error": "invalid_grant", "error_description": "expired access/refresh token"}


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action") or ""
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.fields[a["name"] or ""] = a.get("value") or ""


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@pytest.fixture
def http(org: Org) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=org.srv.url, verify=org.ca.client_context()) as client:
        yield client


def consent(
    http: httpx.Client, org: Org, *, challenge: str | None, decision: str = "allow"
) -> httpx.Response:
    """GET the authorize page, then submit its form; returns the 302."""
    redirect = org.sb.client.redirect_uris[0]
    params = {
        "response_type": "code",
        "client_id": org.sb.client.client_id,
        "redirect_uri": redirect,
        "state": "st-42",
        "scope": "api refresh_token",
    }
    if challenge:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    page = http.get("/services/oauth2/authorize", params=params)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert 'value="allow"' in page.text
    form = _Form()
    form.feed(page.text)
    assert form.action == "/services/oauth2/authorize"
    assert form.fields["state"] == "st-42"
    resp = http.post(form.action, data={**form.fields, "decision": decision})
    assert resp.status_code == 302
    return resp


def code_from(resp: httpx.Response, redirect: str) -> str:
    loc = resp.headers["location"]
    assert loc.startswith(redirect + "?")
    q = parse_qs(urlsplit(loc).query)
    assert q["state"] == ["st-42"]
    return q["code"][0]


def exchange(http: httpx.Client, org: Org, code: str, verifier: str | None) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": org.sb.client.client_id,
        "client_secret": org.sb.client.client_secret,
        "redirect_uri": org.sb.client.redirect_uris[0],
    }
    if verifier:
        data["code_verifier"] = verifier
    return http.post("/services/oauth2/token", data=data)


def refresh(http: httpx.Client, org: Org, token: str) -> httpx.Response:
    return http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": org.sb.client.client_id,
            "client_secret": org.sb.client.client_secret,
        },
    )


def test_web_server_flow_with_pkce(http: httpx.Client, org: Org) -> None:
    verifier, challenge = pkce()
    code = code_from(consent(http, org, challenge=challenge), org.sb.client.redirect_uris[0])
    resp = exchange(http, org, code, verifier)
    assert resp.status_code == 200
    body = resp.json()
    assert list(body) == [
        "access_token",
        "refresh_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    ]
    assert "expires_in" not in body  # Salesforce does not send it
    if (FIXTURES / "oauth_token_webserver_flow.cumulusci.json").exists():
        recorded = json.loads((FIXTURES / "oauth_token_webserver_flow.cumulusci.json").read_text())
        assert set(body) == set(recorded) - {"id_token"}  # id_token only with the openid scope
    assert body["instance_url"] == org.srv.url
    assert body["token_type"] == "Bearer"
    assert body["issued_at"].isdigit()
    assert len(body["issued_at"]) == 13  # milliseconds
    assert re.fullmatch(rf"{re.escape(org.srv.url)}/id/00D\w{{15}}/005\w{{15}}", body["id"])
    expected_sig = base64.b64encode(
        hmac.new(
            org.sb.client.client_secret.encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256
        ).digest()
    ).decode()
    assert body["signature"] == expected_sig
    api = http.get("/services/data/v59.0/limits", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert api.status_code == 200
    # The code is single-use.
    assert exchange(http, org, code, verifier).json()["error"] == "invalid_grant"


def test_wrong_or_missing_pkce_verifier_is_refused(http: httpx.Client, org: Org) -> None:
    _, challenge = pkce()
    code = code_from(consent(http, org, challenge=challenge), org.sb.client.redirect_uris[0])
    resp = exchange(http, org, code, "not-the-verifier-" + "x" * 40)
    assert resp.status_code == 400
    assert resp.json() == {"error": "invalid_grant", "error_description": "invalid code verifier"}
    code2 = code_from(consent(http, org, challenge=challenge), org.sb.client.redirect_uris[0])
    assert exchange(http, org, code2, None).json()["error_description"] == "invalid code verifier"


def test_deny_redirects_with_access_denied(http: httpx.Client, org: Org) -> None:
    resp = consent(http, org, challenge=None, decision="deny")
    q = parse_qs(urlsplit(resp.headers["location"]).query)
    assert q["error"] == ["access_denied"]
    assert q["state"] == ["st-42"]


def test_bad_client_or_redirect_uri_never_redirects(http: httpx.Client, org: Org) -> None:
    good = {
        "response_type": "code",
        "client_id": org.sb.client.client_id,
        "redirect_uri": "https://evil.example/cb",
    }
    resp = http.get("/services/oauth2/authorize", params=good)
    assert resp.status_code == 400
    assert "location" not in resp.headers
    assert "redirect_uri_mismatch" in resp.text
    bad_client = {**good, "client_id": "nope", "redirect_uri": org.sb.client.redirect_uris[0]}
    resp = http.get("/services/oauth2/authorize", params=bad_client)
    assert resp.status_code == 400
    assert "location" not in resp.headers
    assert "invalid_client_id" in resp.text


def test_refresh_then_revoke(http: httpx.Client, org: Org) -> None:
    verifier, challenge = pkce()
    code = code_from(consent(http, org, challenge=challenge), org.sb.client.redirect_uris[0])
    first = exchange(http, org, code, verifier).json()
    renewed = refresh(http, org, first["refresh_token"])
    assert renewed.status_code == 200
    body = renewed.json()
    assert "refresh_token" not in body  # no rotation by default
    assert body["access_token"] != first["access_token"]
    assert body["instance_url"] == org.srv.url
    assert http.post("/services/oauth2/revoke", data={"token": first["refresh_token"]}).status_code == 200
    again = refresh(http, org, first["refresh_token"])
    assert again.status_code == 400
    assert again.json() == EXPIRED_REFRESH
    if (FIXTURES / "oauth_error_expired_refresh_token.captured.json").exists():
        assert again.json() == json.loads(
            (FIXTURES / "oauth_error_expired_refresh_token.captured.json").read_text()
        )
    assert http.post("/services/oauth2/revoke", data={"token": "unknown"}).status_code == 400


def test_revoked_access_token_is_an_invalid_session(http: httpx.Client, org: Org) -> None:
    token = org.sb.issue_token()
    auth = {"Authorization": f"Bearer {token}"}
    assert http.get("/services/oauth2/userinfo", headers=auth).json()["organization_id"].startswith("00D")
    assert http.post("/services/oauth2/revoke", data={"token": token}).status_code == 200
    resp = http.get("/services/data/v59.0/limits", headers=auth)
    assert resp.status_code == 401
    assert resp.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_refresh_token_rotation(sf_ca: SandboxCA) -> None:
    sb = SalesforceSandbox(rotate_refresh_tokens=True)
    for served in serve(sb, sf_ca):
        with httpx.Client(base_url=served.srv.url, verify=sf_ca.client_context()) as http:
            grant = sb.oauth.issue_direct(sb.client.client_id)
            assert grant.refresh_token is not None
            rotated = refresh(http, served, grant.refresh_token).json()
            assert rotated["refresh_token"] != grant.refresh_token
            assert refresh(http, served, grant.refresh_token).json() == EXPIRED_REFRESH
            assert refresh(http, served, rotated["refresh_token"]).status_code == 200


def test_unknown_client_and_grant_type(http: httpx.Client, org: Org) -> None:
    resp = http.post(
        "/services/oauth2/token", data={"grant_type": "refresh_token", "client_id": "x", "refresh_token": "y"}
    )
    assert resp.json() == {"error": "invalid_client_id", "error_description": "client identifier invalid"}
    resp = http.post("/services/oauth2/token", data={"grant_type": "password"})
    assert resp.json() == {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
    wrong_secret = http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": org.sb.client.client_id,
            "client_secret": "no",
            "refresh_token": "y",
        },
    )
    assert wrong_secret.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }


def test_revoking_a_refresh_token_revokes_its_access_tokens(http: httpx.Client, org: Org) -> None:
    """Salesforce: "If a refresh token is included, Salesforce revokes it and any associated access
    tokens" (Revoking OAuth Tokens); other grants' tokens live on."""
    verifier, challenge = pkce()
    code = code_from(consent(http, org, challenge=challenge), org.sb.client.redirect_uris[0])
    first = exchange(http, org, code, verifier).json()
    renewed = refresh(http, org, first["refresh_token"]).json()
    unrelated = org.sb.issue_token()
    tokens = (first["access_token"], renewed["access_token"])

    def limits(token: str) -> int:
        return http.get(
            "/services/data/v59.0/limits", headers={"Authorization": f"Bearer {token}"}
        ).status_code

    assert [limits(t) for t in tokens] == [200, 200]
    assert http.post("/services/oauth2/revoke", data={"token": first["refresh_token"]}).status_code == 200
    assert [limits(t) for t in tokens] == [401, 401]
    assert limits(unrelated) == 200
    again = http.post("/services/oauth2/revoke", data={"token": first["access_token"]})
    assert again.status_code == 400 and again.json()["error"] == "invalid_token"
    assert [c.status for c in org.sb.calls.all() if c.endpoint == "sf.oauth.revoke"] == [200, 400]
