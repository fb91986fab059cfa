"""Connections: the list (status, a "re-authorisation required" badge), the Connect buttons and the OAuth
callback.

Connect: ``POST /connections/connect/{provider}`` → :meth:`OAuthService.begin_authorization` for the
session's tenant; the state's hash is remembered in the session (the callback is only accepted in
the browser session that started it) → 303 to the provider's consent page. The provider redirects to
``/oauth/callback?code=…&state=…`` → :meth:`OAuthService.complete_authorization` with the URL the
callback was *reached at* (scheme, Host, raw path, and any query besides the authorization response's
own parameters), so a code delivered anywhere but the registered redirect URI — another scheme, host,
port, an encoded path, an added query — is refused before a token call. Behind a proxy, the proxy
must pass ``X-Forwarded-Proto`` and ``Host``, and be listed in ``web.trusted_proxies``. An
:class:`OAuthCallbackError` renders a 400 page. Codes and states never reach a log line.
"""

from __future__ import annotations

import hashlib
import logging
from enum import StrEnum
from typing import Annotated
from urllib.parse import unquote_plus, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from api.web.render import PAGE_RESPONSES, POST_RESPONSES, render
from api.web.security import csp_with_form_targets
from api.web.session import CsrfChecked
from api.web.tenancy import AdminScope, Scope
from connectors.hubspot.config import EXPORT_SCOPE
from connectors.hubspot.objects import CUSTOM_SCOPES
from connectors.oauth import OAuthCallbackError
from store import users as user_store
from store.connections import ConnectionStatus

__all__ = ["router"]

log = logging.getLogger("crmhub.web")
router = APIRouter(tags=["connections"])


class ProviderName(StrEnum):
    SALESFORCE = "salesforce"
    HUBSPOT = "hubspot"


LABELS = {"salesforce": "Salesforce", "hubspot": "HubSpot"}

# The authorization response's own parameters (RFC 6749 §4.1.2, RFC 9207 ``iss``, and Salesforce's
# Experience Cloud pair): not part of the redirect URI the vendor was given.
_RESPONSE_PARAMS = frozenset(
    {
        "code",
        "state",
        "error",
        "error_description",
        "error_uri",
        "iss",
        "sfdc_community_url",
        "sfdc_community_id",
    }
)
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _reached_at(request: Request) -> str:
    """The redirect URI this callback request was sent to, as the browser addressed it: scheme, Host
    header (default port dropped), the raw (undecoded) path and the query without the response's
    parameters."""
    scheme = request.url.scheme
    host = request.headers.get("host", "")
    if scheme in _DEFAULT_PORTS:
        host = host.removesuffix(_DEFAULT_PORTS[scheme])
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path
    query = "&".join(
        pair
        for pair in request.url.query.split("&")
        if pair and unquote_plus(pair.partition("=")[0]) not in _RESPONSE_PARAMS
    )
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


@router.get("/connections", response_class=HTMLResponse, responses=PAGE_RESPONSES)
def connections_page(request: Request, scope: Scope) -> HTMLResponse:
    """The tenant's CRM connections with their status, and the Connect buttons."""
    configured = scope.ctx.oauth.configs
    page = render(
        request,
        "connections.html",
        {
            "connections": scope.connections(),
            "providers": [(p.value, LABELS[p.value], p.value in configured) for p in ProviderName],
            "labels": LABELS,
            "reauth": ConnectionStatus.REAUTHORIZATION_REQUIRED,
        },
    )
    # the Connect buttons' POST redirects to the provider's consent page: form-action must allow it
    origins = [urlsplit(c.authorize_url) for c in configured.values()]
    page.headers["Content-Security-Policy"] = csp_with_form_targets(
        f"{o.scheme}://{o.netloc}" for o in origins
    )
    return page


@router.post(
    "/connections/connect/{provider}",
    response_class=RedirectResponse,
    status_code=303,
    responses=POST_RESPONSES,
)
def connect(
    request: Request,
    provider: ProviderName,
    scope: AdminScope,
    _csrf: CsrfChecked,
    allow_exports: Annotated[str | None, Form(max_length=8)] = None,
    allow_custom_objects: Annotated[str | None, Form(max_length=8)] = None,
) -> Response:
    """Start the OAuth flow (authorization code + PKCE): redirect to the provider's consent page.

    ``allow_exports`` (HubSpot's checkbox) also asks for ``crm.export``: full reads of large
    objects then go through HubSpot's Exports API (a Super Admin must grant it);
    ``allow_custom_objects`` asks for the custom-object scopes (the portal's custom objects are
    then offered as streams)."""
    oauth = scope.ctx.oauth
    if provider.value not in oauth.configs:
        return render(
            request,
            "error.html",
            {"title": "Not configured", "message": f"No {LABELS[provider.value]} OAuth app is configured."},
            status=400,
        )
    hubspot = provider is ProviderName.HUBSPOT
    extra = (
        *((EXPORT_SCOPE,) if allow_exports and hubspot else ()),
        *(CUSTOM_SCOPES if allow_custom_objects and hubspot else ()),
    )
    req = oauth.begin_authorization(scope.tenant, provider.value, extra_scopes=extra)
    pending = dict(scope.session.oauth_pending)
    pending[hashlib.sha256(req.state.encode()).hexdigest()] = provider.value
    with scope.ctx.engine.begin() as conn:
        user_store.set_oauth_pending(conn, scope.session.id_hash, dict(list(pending.items())[-10:]))
    return RedirectResponse(req.url, status_code=303)


@router.get(
    "/oauth/callback",
    response_class=HTMLResponse,
    responses={
        **PAGE_RESPONSES,
        303: {"description": "connected: redirect to /connections"},
        400: {"description": "bad callback"},
    },
)
def oauth_callback(
    request: Request,
    scope: AdminScope,
    state: Annotated[str | None, Query(max_length=512)] = None,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    """Where the provider sends the browser back: exchange the code, store the sealed tokens."""
    ctx = scope.ctx
    state_hash = hashlib.sha256(state.encode()).hexdigest() if state else ""
    provider = scope.session.oauth_pending.get(state_hash)
    if provider is None:
        ctx.metrics.oauth_connects.labels("unknown", "bad_callback").inc()
        return _callback_error(request, "This authorization was not started in this session; start again.")
    pending = {k: v for k, v in scope.session.oauth_pending.items() if k != state_hash}
    with ctx.engine.begin() as conn:
        user_store.set_oauth_pending(conn, scope.session.id_hash, pending)
    try:
        info = ctx.oauth.complete_authorization(
            provider,
            tenant=scope.tenant,
            state=state,
            code=code,
            redirect_uri=_reached_at(request),
            error=error,
        )
    except OAuthCallbackError as exc:
        ctx.metrics.oauth_connects.labels(provider, exc.reason).inc()
        log.info(
            "web oauth callback refused: tenant=%s provider=%s reason=%s", scope.tenant, provider, exc.reason
        )
        return _callback_error(request, exc.message)
    ctx.metrics.oauth_connects.labels(provider, "ok").inc()
    ctx.connectors.locate(info.id)  # where the vendor hosts the data; a failure is retried at new sync
    return RedirectResponse(f"/connections?connected={info.id}", status_code=303)


def _callback_error(request: Request, message: str) -> HTMLResponse:
    return render(request, "error.html", {"title": "Connection failed", "message": message}, status=400)
