"""Salesforce's OAuth 2.0 endpoints: authorize (consent page), token, revoke, userinfo.

Web server flow: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm&type=5
PKCE (code_challenge / code_verifier): same page, "Proof Key for Code Exchange".
Token response fields (no ``expires_in``): https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/intro_understanding_web_server_oauth_flow.htm
Refresh token flow (no new refresh token unless rotation is on):
https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_flow.htm&type=5
Revoke: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_revoke_token.htm&type=5 and
https://developer.salesforce.com/docs/platform/mobile-sdk/guide/oauth-revoking-tokens.html ("If a
refresh token is included, Salesforce revokes it and any associated access tokens").

Token-endpoint errors are HTTP 400 ``{"error", "error_description"}`` (recorded:
``oauth_error_invalid_grant.simple_salesforce.json``, ``oauth_error_expired_refresh_token.captured.json``).
The authorize endpoint never redirects to a URI that is not registered for the client: a bad
client or redirect URI gets an error page instead.
"""

from __future__ import annotations

import base64
import html
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.base import endpoint
from sandbox.oauth import OAuthError, TokenGrant
from sandbox.salesforce.engine import ORG_ID, USER_ID
from sandbox.salesforce.http import bearer_token, json_response

if TYPE_CHECKING:
    from sandbox.salesforce.app import SalesforceSandbox

__all__ = ["routes"]

_DEFAULT_SCOPE = "api refresh_token"
_REFRESH_SCOPES = frozenset({"refresh_token", "offline_access", "full"})


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return json_response({"error": error, "error_description": description}, status)


def _error_page(error: str, description: str) -> Response:
    body = (
        "<!DOCTYPE html><html><head><title>Error | Salesforce</title></head><body>"
        f"<h1>OAuth Error</h1><p>We can't authorize you because of an OAuth error.</p>"
        f"<p>error={html.escape(error)}</p><p>error_description={html.escape(description)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=400)


def _with_query(uri: str, params: dict[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


async def _form(request: Request) -> dict[str, str]:
    raw = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(raw, keep_blank_values=True))


def routes(sb: SalesforceSandbox) -> list[BaseRoute]:
    """The OAuth routes of sandbox ``sb`` (its OAuthServer state, its base URL in responses)."""
    nonces: dict[str, tuple[float, dict[str, str]]] = {}
    lock = threading.Lock()

    def check_client(client_id: str, redirect_uri: str) -> Response | None:
        client = sb.oauth.clients.get(client_id)
        if client is None:
            return _error_page("invalid_client_id", "client identifier invalid")
        if redirect_uri not in client.redirect_uris:
            return _error_page("redirect_uri_mismatch", "redirect_uri must match configuration")
        return None

    @endpoint("sf.oauth.authorize")
    async def authorize(request: Request) -> Response:
        if request.method == "POST":
            return await decide(request)
        p = dict(request.query_params)
        client_id, redirect_uri = p.get("client_id", ""), p.get("redirect_uri", "")
        if (bad := check_client(client_id, redirect_uri)) is not None:
            return bad
        state = p.get("state")
        extra = {"state": state} if state is not None else {}
        if p.get("response_type") != "code":
            return RedirectResponse(
                _with_query(
                    redirect_uri,
                    {
                        "error": "unsupported_response_type",
                        "error_description": "response type not supported",
                        **extra,
                    },
                ),
                302,
            )
        method = p.get("code_challenge_method")
        if p.get("code_challenge") and method not in (None, "S256", "plain"):
            return RedirectResponse(
                _with_query(
                    redirect_uri,
                    {
                        "error": "invalid_request",
                        "error_description": "invalid code_challenge_method",
                        **extra,
                    },
                ),
                302,
            )
        nonce = secrets.token_urlsafe(16)
        fields = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": p.get("scope", _DEFAULT_SCOPE),
            "code_challenge": p.get("code_challenge", ""),
            "code_challenge_method": method or "",
            **({"state": state} if state is not None else {}),
        }
        with lock:
            nonces[nonce] = (time.monotonic(), fields)
        app_name = sb.oauth.clients[client_id].name
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in fields.items()
        )
        page = (
            "<!DOCTYPE html><html><head><title>Allow Access? | Salesforce</title></head><body>"
            f"<h1>Allow Access?</h1><p><b>{html.escape(app_name)}</b> is asking to: "
            f"{html.escape(fields['scope'])}</p>"
            '<form id="oauth_consent" method="POST" action="/services/oauth2/authorize">'
            f'<input type="hidden" name="nonce" value="{nonce}">{hidden}'
            '<button type="submit" name="decision" value="allow" id="oaapprove">Allow</button>'
            '<button type="submit" name="decision" value="deny" id="oadeny">Deny</button>'
            "</form></body></html>"
        )
        return HTMLResponse(page)

    async def decide(request: Request) -> Response:
        form = await _form(request)
        with lock:
            entry = nonces.pop(form.get("nonce", ""), None)
        if entry is None or time.monotonic() - entry[0] > 600:
            return _error_page("invalid_request", "consent form expired or already used")
        fields = entry[1]
        redirect_uri = fields["redirect_uri"]
        if (bad := check_client(fields["client_id"], redirect_uri)) is not None:
            return bad
        extra = {"state": fields["state"]} if "state" in fields else {}
        if form.get("decision") != "allow":
            return RedirectResponse(
                _with_query(
                    redirect_uri,
                    {"error": "access_denied", "error_description": "end-user denied authorization", **extra},
                ),
                302,
            )
        try:
            code = sb.oauth.issue_code(
                fields["client_id"],
                redirect_uri,
                scope=fields["scope"],
                code_challenge=fields["code_challenge"] or None,
                code_challenge_method=fields["code_challenge_method"] or None,
            )
        except OAuthError as exc:
            return RedirectResponse(
                _with_query(
                    redirect_uri, {"error": exc.error, "error_description": exc.description, **extra}
                ),
                302,
            )
        return RedirectResponse(_with_query(redirect_uri, {"code": code, **extra}), 302)

    def grant_body(grant: TokenGrant, client_secret: str, *, with_refresh: bool) -> dict[str, str]:
        from sandbox.salesforce.app import identity_url, sign_identity

        issued_at = str(int(grant.issued_at * 1000))
        ident = identity_url(sb.base_url)
        body: dict[str, str] = {"access_token": grant.access_token}
        if (
            with_refresh
            and grant.refresh_token
            and (not grant.scope or _REFRESH_SCOPES & set(grant.scope.split()))
        ):
            body["refresh_token"] = grant.refresh_token
        body.update(
            {
                "signature": sign_identity(client_secret, ident, issued_at),
                "scope": grant.scope,
                "instance_url": sb.base_url,
                "id": ident,
                "token_type": "Bearer",
                "issued_at": issued_at,
            }
        )
        return body

    @endpoint("sf.oauth.token")
    async def token(request: Request) -> Response:
        form = await _form(request)
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, pwd = base64.b64decode(auth[6:]).decode().partition(":")
                client_id, client_secret = user, pwd
            except ValueError:
                return _oauth_error("invalid_client", "invalid client credentials")
        grant_type = form.get("grant_type")
        if grant_type not in ("authorization_code", "refresh_token"):
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        client = sb.oauth.clients.get(client_id)
        if client is None:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        try:
            if grant_type == "authorization_code":
                grant = sb.oauth.exchange_code(
                    code=form.get("code", ""),
                    client_id=client_id,
                    client_secret=client_secret,
                    redirect_uri=form.get("redirect_uri", ""),
                    code_verifier=form.get("code_verifier"),
                )
                return json_response(grant_body(grant, client.client_secret, with_refresh=True))
            grant = sb.oauth.refresh(
                refresh_token=form.get("refresh_token", ""), client_id=client_id, client_secret=client_secret
            )
            return json_response(
                grant_body(grant, client.client_secret, with_refresh=sb.oauth.rotate_refresh_tokens)
            )
        except OAuthError as exc:
            return _oauth_error(*_salesforce_error(exc))

    @endpoint("sf.oauth.revoke")
    async def revoke(request: Request) -> Response:
        form = await _form(request) if request.method == "POST" else dict(request.query_params)
        # A refresh token is revoked "and any associated access tokens"; an access token alone.
        # Errors are 400 ``invalid_token`` ("Token was invalid") or ``unsupported_token_type``
        # (Revoking OAuth Tokens, Mobile SDK guide); which one an unknown or already revoked token
        # gets is not documented — ``invalid_token`` is a guess.
        if not sb.oauth.revoke(form.get("token", ""), with_access_tokens=True):
            return _oauth_error("invalid_token", "Token was invalid")
        return Response(status_code=200)

    @endpoint("sf.oauth.userinfo")
    async def userinfo(request: Request) -> Response:
        tok = bearer_token(request)
        if tok is None or sb.oauth.authenticate(tok) is None:
            return Response("Bad_OAuth_Token", status_code=403, media_type="text/plain")
        from sandbox.salesforce.app import identity_url

        return json_response(
            {
                "sub": identity_url(sb.base_url),
                "user_id": USER_ID,
                "organization_id": ORG_ID,
                "preferred_username": "integration@crmhub-sandbox.example",
                "nickname": "integration",
                "name": "crmhub Integration",
                "email": "integration@crmhub-sandbox.example",
                "email_verified": True,
                "zoneinfo": "Europe/Berlin",
                "locale": "en_US",
                "active": True,
                "user_type": "STANDARD",
            }
        )

    table: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/services/oauth2/authorize", authorize, ["GET", "POST"]),
        ("/services/oauth2/token", token, ["POST"]),
        ("/services/oauth2/revoke", revoke, ["GET", "POST"]),
        ("/services/oauth2/userinfo", userinfo, ["GET"]),
    ]
    return [Route(path, fn, methods=methods) for path, fn, methods in table]


def _salesforce_error(exc: OAuthError) -> tuple[str, str]:
    """Map the generic OAuth server's errors onto Salesforce's (error, error_description) texts."""
    desc = exc.description
    if exc.error == "invalid_client":
        return "invalid_client", "invalid client credentials"
    if "verifier" in desc:
        return "invalid_grant", "invalid code verifier"
    if "redirect_uri" in desc:
        return "redirect_uri_mismatch", "redirect_uri must match configuration"
    if "authorization code" in desc:
        return "invalid_grant", "expired authorization code"
    if "refresh" in desc:
        return "invalid_grant", "expired access/refresh token"
    return exc.error, desc
