"""What the OAuth tests share: provider configs with test secrets, token-endpoint bodies in each
vendor's shape, a settable clock, and helpers to read forms and what an exception would show.
Used by tests/connectors/test_oauth.py (the pure protocol) and tests/services/test_credentials.py
(the sealed token store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from connectors.oauth import HUBSPOT_SCOPES, HubSpotOAuthConfig, SalesforceOAuthConfig

FIXTURES = Path("/work/shared/vendor-fixtures")


REDIRECT = "http://127.0.0.1:8765/callback"


SF_TOKEN = "https://login.salesforce.com/services/oauth2/token"


SF_REVOKE = "https://login.salesforce.com/services/oauth2/revoke"


HS_TOKEN = "https://api.hubapi.com/oauth/v1/token"


HS_REFRESH_TOKENS = "https://api.hubapi.com/oauth/v1/refresh-tokens"


HS_UNINSTALL = "https://api.hubapi.com/appinstalls/v3/external-install"


SF_INSTANCE = "https://acme.my.salesforce.com"  # the instance_url of sf_grant()


SF_INSTANCE_REVOKE = f"{SF_INSTANCE}/services/oauth2/revoke"


SF_SECRET = "sf-client-secret-0123456789"


HS_SECRET = "hs-client-secret-0123456789"


class Clock:
    """A settable UTC clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sf_config() -> SalesforceOAuthConfig:
    return SalesforceOAuthConfig(client_id="sf-client", client_secret=SF_SECRET, redirect_uri=REDIRECT)


def hs_config() -> HubSpotOAuthConfig:
    return HubSpotOAuthConfig(client_id="hs-client", client_secret=HS_SECRET, redirect_uri=REDIRECT)


def sf_grant(
    access: str = "sf-access-1", refresh: str | None = "sf-refresh-1", **extra: Any
) -> dict[str, Any]:
    body = {
        "access_token": access,
        "signature": "c2ln",
        "scope": "api refresh_token",
        "instance_url": "https://acme.my.salesforce.com",
        "id": "https://login.salesforce.com/id/00D/005",
        "token_type": "Bearer",
        "issued_at": "1767614400000",
        **extra,
    }
    if refresh is not None:
        body["refresh_token"] = refresh
    return body


def hs_grant(
    access: str = "hs-access-1", refresh: str = "hs-refresh-1", expires_in: int = 1800
) -> dict[str, Any]:
    return {
        "token_type": "bearer",
        "refresh_token": refresh,
        "access_token": access,
        "expires_in": expires_in,
        "hub_id": 1234,
        "scopes": list(HUBSPOT_SCOPES),
        "token_use": "access_token",
    }


def callback_params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def shown_text(exc: BaseException) -> str:
    """Everything a log line or traceback would show of ``exc``: messages of the displayed chain."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        parts += [str(current), repr(current), repr(current.args)]
        nxt = current.__cause__
        if nxt is None and not current.__suppress_context__:
            nxt = current.__context__
        current = nxt
    return "\n".join(parts)
