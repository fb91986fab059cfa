"""HubSpot's OAuth endpoints: the install/consent page, the v1 token endpoint and token metadata.

* ``GET /oauth/authorize`` — client_id, redirect_uri (exact match to a registered URI), scope,
  state, optional PKCE ``code_challenge``/``code_challenge_method``. A bad client or redirect URI
  renders an error page and never redirects (RFC 6749 §4.1.2.1). Otherwise a consent page whose
  "Connect app" form POSTs back here; granting redirects to ``redirect_uri?code=...&state=...``.
  (https://developers.hubspot.com/docs/api/oauth-quickstart-guide)
* ``POST /oauth/v1/token`` — form-encoded ``grant_type=authorization_code`` (code, redirect_uri,
  client_id, client_secret, code_verifier) or ``refresh_token``; answers the spec's
  AccessTokenResponse: ``access_token``, ``refresh_token``, ``expires_in`` (1800: access tokens
  live 30 minutes), ``token_type: bearer``, ``hub_id``, ``scopes``, ``token_use``
  (oauth_v1_token.schema.hubspot_spec.json; https://developers.hubspot.com/docs/methods/oauth2/refresh-access-token).
  HubSpot does not rotate refresh tokens: a refresh returns the same one.
* Errors are HTTP 400 with the *current* body shape of the captured BAD_REFRESH_TOKEN fixture —
  ``{"error", "error_description", "status", "message"}`` — keyed on ``status`` (BAD_REFRESH_TOKEN,
  BAD_AUTH_CODE, BAD_CLIENT_ID, BAD_CLIENT_SECRET, BAD_REDIRECT_URI, BAD_GRANT_TYPE). The legacy
  shape ``{"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}``
  (oauth_error_bad_refresh_token.legacy.captured.json) is not emitted; clients should key on
  ``status``, which both shapes carry. Only the BAD_REFRESH_TOKEN body is a captured payload; the
  other status codes follow the same envelope.
* ``GET /oauth/v1/access-tokens/{token}``, ``GET``/``DELETE /oauth/v1/refresh-tokens/{token}`` —
  token metadata and refresh-token deletion (hubspot-api-client's AccessTokensApi/RefreshTokensApi).
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sandbox.hubspot.errors import json_response
from sandbox.oauth import OAuthError, TokenGrant

if TYPE_CHECKING:
    from sandbox.hubspot.app import HubSpotSandbox

__all__ = ["OAuthPages"]

_REFRESH_MESSAGE = "refresh token is invalid, expired or revoked"


@dataclass
class _Consent:
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    challenge: str | None
    method: str | None
    expires_at: float


def token_error(status: str, error: str, message: str) -> Response:
    """400 in the current captured shape (oauth_error_bad_refresh_token.current.captured.json)."""
    return json_response(
        {"error": error, "error_description": message, "status": status, "message": message}, 400
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body>
<main>
{body}
</main>
</body></html>
"""


class OAuthPages:
    """The OAuth handlers of one HubSpot sandbox (its :class:`~sandbox.oauth.OAuthServer` holds state)."""

    def __init__(self, sandbox: HubSpotSandbox) -> None:
        self.sb = sandbox
        self._consents: dict[str, _Consent] = {}
        self._lock = threading.Lock()

    # -- consent -------------------------------------------------------------------------------

    def _error_page(self, message: str, status: int = 400) -> Response:
        body = f"<h1>Authorization failed</h1><p id='error'>{html.escape(message)}</p>"
        return HTMLResponse(_PAGE.format(title="HubSpot OAuth error", body=body), status_code=status)

    async def authorize(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._consent_post(request)
        q = request.query_params
        client_id = q.get("client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        try:
            client = self.sb.oauth.client_for_authorize(client_id, redirect_uri)
        except OAuthError as exc:
            return self._error_page(exc.description)
        method = q.get("code_challenge_method")
        challenge = q.get("code_challenge")
        if challenge is not None and method not in (None, "S256", "plain"):
            return self._error_page("unsupported code_challenge_method")
        scope = q.get("scope", "")
        consent_id = secrets.token_urlsafe(24)
        with self._lock:
            now = time.time()
            self._consents = {k: c for k, c in self._consents.items() if c.expires_at > now}
            self._consents[consent_id] = _Consent(
                client.client_id, redirect_uri, scope, q.get("state"), challenge, method, now + 600
            )
        scopes = "".join(f"<li>{html.escape(s)}</li>" for s in scope.split() if s)
        body = (
            f"<h1>Connect {html.escape(client.name)} to HubSpot sandbox portal {self.sb.portal_id}</h1>"
            f"<p>The app is requesting access to:</p><ul id='scopes'>{scopes}</ul>"
            "<form method='post' action='/oauth/authorize'>"
            f"<input type='hidden' name='consent_id' value='{consent_id}'>"
            "<button type='submit' name='decision' value='grant' id='grant'>Connect app</button>"
            "<button type='submit' name='decision' value='deny' id='deny'>Cancel</button>"
            "</form>"
        )
        return HTMLResponse(_PAGE.format(title="Grant access", body=body))

    async def _consent_post(self, request: Request) -> Response:
        form = await request.form()
        consent_id = str(form.get("consent_id", ""))
        with self._lock:
            consent = self._consents.pop(consent_id, None)
        if consent is None or consent.expires_at < time.time():
            return self._error_page("This authorization request has expired; start again.")
        params: dict[str, str] = {}
        if str(form.get("decision", "grant")) != "grant":
            params["error"] = "access_denied"
            params["error_description"] = "The user denied access"
        else:
            try:
                params["code"] = self.sb.oauth.issue_code(
                    consent.client_id,
                    consent.redirect_uri,
                    scope=consent.scope,
                    code_challenge=consent.challenge,
                    code_challenge_method=consent.method,
                )
            except OAuthError as exc:
                return self._error_page(exc.description)
        if consent.state is not None:
            params["state"] = consent.state
        sep = "&" if "?" in consent.redirect_uri else "?"
        return RedirectResponse(consent.redirect_uri + sep + urlencode(params), status_code=302)

    # -- token endpoint ------------------------------------------------------------------------

    def _grant_body(self, grant: TokenGrant) -> dict[str, Any]:
        return {
            "token_type": "bearer",
            "refresh_token": grant.refresh_token,
            "access_token": grant.access_token,
            "expires_in": grant.expires_in,
            "hub_id": self.sb.portal_id,
            "user_id": self.sb.user_id,
            "scopes": grant.scope.split(),
            "token_use": "access_token",
        }

    def _client_error(self, client_id: str) -> Response:
        if client_id not in self.sb.oauth.clients:
            return token_error("BAD_CLIENT_ID", "invalid_client", "missing or unknown client id")
        return token_error("BAD_CLIENT_SECRET", "invalid_client", "missing or invalid client secret")

    async def token(self, request: Request) -> Response:
        form = await request.form()
        q = request.query_params

        def field(name: str) -> str | None:
            v = form.get(name)
            if v is None:
                v = q.get(name)  # the spec also lists client_secret/refresh_token as query params
            return None if v is None else str(v)

        grant_type = field("grant_type")
        client_id = field("client_id") or ""
        secret = field("client_secret")
        try:
            if grant_type == "authorization_code":
                code = field("code")
                if not code:
                    return token_error("BAD_AUTH_CODE", "invalid_request", "missing or unknown auth code")
                grant = self.sb.oauth.exchange_code(
                    code=code,
                    client_id=client_id,
                    client_secret=secret,
                    redirect_uri=field("redirect_uri") or "",
                    code_verifier=field("code_verifier"),
                )
            elif grant_type == "refresh_token":
                token = field("refresh_token")
                if not token:
                    return token_error("BAD_REFRESH_TOKEN", "invalid_request", _REFRESH_MESSAGE)
                grant = self.sb.oauth.refresh(refresh_token=token, client_id=client_id, client_secret=secret)
            else:
                return token_error(
                    "BAD_GRANT_TYPE", "unsupported_grant_type", f"unsupported grant_type: {grant_type}"
                )
        except OAuthError as exc:
            if exc.error == "invalid_client":
                return self._client_error(client_id)
            if grant_type == "refresh_token":
                return token_error("BAD_REFRESH_TOKEN", "invalid_grant", _REFRESH_MESSAGE)
            if "redirect_uri" in exc.description:
                return token_error("BAD_REDIRECT_URI", "invalid_grant", exc.description)
            return token_error("BAD_AUTH_CODE", "invalid_grant", exc.description)
        return json_response(self._grant_body(grant))

    # -- token metadata ------------------------------------------------------------------------

    def _not_found(self, message: str) -> Response:
        return json_response(
            {
                "status": "error",
                "message": message,
                "correlationId": secrets.token_hex(16),
                "category": "OBJECT_NOT_FOUND",
            },
            404,
        )

    async def access_token_info(self, request: Request) -> Response:
        token = request.path_params["token"]
        tok = self.sb.oauth.lookup_access(token)
        if tok is None:
            return self._not_found("access token not found or expired")
        return json_response(
            {
                "token": token,
                "user": self.sb.user_email,
                "hub_domain": self.sb.hub_domain,
                "scopes": tok.scope.split(),
                "hub_id": self.sb.portal_id,
                "app_id": self.sb.app_id(tok.client_id),
                "expires_in": max(int(tok.expires_at - time.time()), 0),
                "user_id": self.sb.user_id,
                "token_type": "access",
            }
        )

    async def refresh_token(self, request: Request) -> Response:
        token = request.path_params["token"]
        entry = self.sb.oauth.lookup_refresh(token)
        if entry is None:
            if request.method == "DELETE":
                return Response(status_code=204)
            return token_error("BAD_REFRESH_TOKEN", "invalid_grant", _REFRESH_MESSAGE)
        if request.method == "DELETE":
            self.sb.oauth.revoke(token)
            return Response(status_code=204)
        return json_response(
            {
                "token": token,
                "user": self.sb.user_email,
                "hub_domain": self.sb.hub_domain,
                "scopes": entry.scope.split(),
                "hub_id": self.sb.portal_id,
                "client_id": entry.client_id,
                "user_id": self.sb.user_id,
                "token_type": "refresh",
            }
        )
