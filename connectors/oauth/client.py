"""The token-endpoint client of one OAuth client registration, over httpx: the authorization-code
exchange (with the PKCE verifier), the refresh grant, revocation, and ending a whole grant
(:meth:`TokenClient.end_grant`: both tokens, and HubSpot's app uninstall). No database, no vault: what
to do with a :class:`Grant` is the caller's (:mod:`services.credentials` seals and stores it).

Errors (all from :mod:`schemas.errors`, except :class:`DeadRefreshToken`)::

    OAuthCallbackError(AuthError)   the provider refused the authorization code (code_rejected)
    DeadRefreshToken (Exception)    refresh token dead (Salesforce invalid_grant, HubSpot
                                    BAD_REFRESH_TOKEN): the caller marks the connection for
                                    reauthorization and never retries
    ConfigError                     client credentials refused (invalid_client, HTTP 401, …)
    AuthError                       any other refusal of a refresh, a revocation or an uninstall
    RateLimited                     429 (``retry_after`` from Retry-After)
    TransientError                  5xx, timeout, network error, a redirect, a malformed body

Messages never contain tokens, codes, verifiers, secrets, URLs or response bodies: only the
provider's error code and a short description, dropped if it echoes anything we sent. Redirects
are never followed (a 3xx is an error). Every client verifies TLS (:meth:`OAuthProviderConfig.verify`).

Importing this module adds a filter to the ``httpx`` logger that redacts the token in HubSpot's
refresh-token ``DELETE`` URL (httpx logs request URLs at INFO).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

import httpx

from connectors.http import parse_retry_after
from connectors.oauth.config import OAuthProviderConfig, Provider
from connectors.oauth.protocol import OAuthCallbackError, is_error_code
from schemas.errors import AuthError, ConfigError, RateLimited, TransientError

__all__ = ["DeadRefreshToken", "Grant", "TokenClient"]

log = logging.getLogger(__name__)

_MAX_TOKEN_LEN: Final = 4096
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: nothing that could split a header


@dataclass(frozen=True, slots=True)
class Grant:
    """A token endpoint's answer, checked: tokens are short visible ASCII; ``expires_in`` seconds
    (None: unknown); ``scopes`` as granted (None: not stated); ``instance_url`` unchecked (the
    caller checks it against the allowlist)."""

    access_token: str
    refresh_token: str | None
    expires_in: int | None
    scopes: tuple[str, ...] | None
    instance_url: object


class DeadRefreshToken(Exception):
    """The provider says the refresh token is dead: ``label`` is its error code, ``description`` a
    short text that echoes nothing we sent (may be empty)."""

    def __init__(self, label: str, description: str) -> None:
        super().__init__(label)
        self.label = label
        self.description = description


class _TokenRefused(Exception):
    """A 4xx from a token endpoint (internal: never leaves this module)."""

    def __init__(self, status: int, error: str | None, vendor_status: str | None, description: str) -> None:
        super().__init__(f"HTTP {status} {error or vendor_status}")
        self.status = status
        self.error = error
        self.vendor_status = vendor_status
        self.description = description

    @property
    def label(self) -> str:
        return self.error or self.vendor_status or f"HTTP {self.status}"

    @property
    def detail(self) -> str:
        return f": {self.description}" if self.description else ""

    @property
    def dead_refresh_token(self) -> bool:
        # Salesforce: {"error":"invalid_grant",...}; HubSpot: {"status":"BAD_REFRESH_TOKEN",...}
        return self.error == "invalid_grant" or self.vendor_status == "BAD_REFRESH_TOKEN"

    @property
    def bad_client(self) -> bool:
        return (
            self.status == 401
            or self.error in ("invalid_client", "unauthorized_client")
            or (self.vendor_status in ("BAD_CLIENT_ID", "BAD_CLIENT_SECRET"))
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TokenClient:
    """The token and revocation endpoints of ``config`` (one provider). Thread-safe (httpx.Client).

    ``transport`` is for tests (respx); ``clock`` reads HTTP-date ``Retry-After`` values.
    """

    def __init__(
        self,
        config: OAuthProviderConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config = config
        self.clock = clock
        self._http = httpx.Client(
            verify=config.verify(),
            timeout=httpx.Timeout(config.timeout_s),
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "crmhub-oauth"},
            transport=transport,
        )

    @property
    def name(self) -> str:
        return self.config.provider.value

    def close(self) -> None:
        """Close the HTTP client (its pooled TLS connections)."""
        self._http.close()

    def exchange_code(self, *, code: str, verifier: str, redirect_uri: str) -> Grant:
        """The authorization-code grant (RFC 6749 §4.1.3) with the PKCE verifier."""
        cfg = self.config
        secret = cfg.client_secret.get_secret_value()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": cfg.client_id,
            "client_secret": secret,
            "code_verifier": verifier,
        }
        try:
            return self._token_call(form, sent=(code, verifier, secret))
        except _TokenRefused as refused:
            if refused.bad_client:
                raise ConfigError(
                    f"{self.name} refused crmhub's client credentials ({refused.label}); check the "
                    "client id and secret"
                ) from None
            raise OAuthCallbackError(
                f"{self.name} refused the authorization code ({refused.label}{refused.detail}); start again",
                reason="code_rejected",
            ) from None

    def refresh(self, refresh_token: str) -> Grant:
        """The refresh-token grant (RFC 6749 §6); :class:`DeadRefreshToken` if the token is dead."""
        cfg = self.config
        secret = cfg.client_secret.get_secret_value()
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": cfg.client_id,
            "client_secret": secret,
        }
        try:
            return self._token_call(form, sent=(refresh_token, secret))
        except _TokenRefused as refused:
            if refused.dead_refresh_token:
                raise DeadRefreshToken(refused.label, refused.description) from None
            if refused.bad_client:
                raise ConfigError(
                    f"{self.name} refused crmhub's client credentials ({refused.label}); "
                    "check client id and secret"
                ) from None
            raise AuthError(
                f"{self.name} refused the token refresh ({refused.label}{refused.detail})", code=refused.label
            ) from None

    def revoke(self, token: str, *, instance_url: str | None = None) -> bool:
        """Revoke ``token`` at the provider; True if it was revoked now, False if the provider says
        it is already invalid or unknown (400/404: nothing left to revoke).

        Salesforce: ``POST {instance_url or login}/services/oauth2/revoke`` with ``token=…`` — a
        refresh token is revoked together with every access token issued from it; 200 on success,
        400 ``invalid_token``/``unsupported_token_type`` otherwise (developer.salesforce.com,
        "Revoking OAuth Tokens"). HubSpot: ``DELETE /oauth/v1/refresh-tokens/{token}`` — deletes
        the refresh token only; "access tokens generated with the refresh token will not be
        affected" (developers.hubspot.com, "Managing tokens"); see :meth:`uninstall`."""
        cfg = self.config
        if cfg.provider is Provider.HUBSPOT:
            request = self._http.build_request("DELETE", f"{cfg.revoke_url}/{quote(token, safe='')}")
        else:
            url = f"{instance_url}/services/oauth2/revoke" if instance_url else cfg.revoke_url
            request = self._http.build_request("POST", url, data={"token": token})
        response = self._send(request, what="revocation endpoint")
        if response.status_code in (400, 404):  # already invalid or unknown: nothing left to revoke
            return False
        if response.status_code >= 300:
            raise AuthError(f"{self.name} refused the revocation (HTTP {response.status_code})")
        return True

    def uninstall(self, access_token: str) -> bool:
        """HubSpot only: uninstall crmhub's app from the portal the access token belongs to
        (``DELETE {api_url}/appinstalls/v3/external-install``, Bearer access token with the
        ``oauth`` scope → 204; developers.hubspot.com, "App uninstalls API"). The only documented
        way to end a HubSpot grant's access tokens before they expire. False if the token itself
        was refused (401: expired or already invalid), so the caller may refresh and try again."""
        api_url = self.config.instance_url_fixed
        if self.config.provider is not Provider.HUBSPOT or api_url is None:
            raise ConfigError(f"{self.name} has no app-uninstall endpoint")
        request = self._http.build_request(
            "DELETE",
            f"{api_url}/appinstalls/v3/external-install",
            headers={"Authorization": f"Bearer {access_token}"},
        )
        response = self._send(request, what="app-uninstall endpoint")
        if response.status_code == 401:
            return False
        if response.status_code >= 300:
            raise AuthError(f"{self.name} refused to uninstall the app (HTTP {response.status_code})")
        return True

    def end_grant(
        self, *, refresh_token: str | None, access_token: str | None, instance_url: str | None = None
    ) -> bool:
        """End a whole grant at the provider so that neither token works any more; True if the
        provider revoked something now, False if it said everything was already invalid.

        Salesforce: revoke the refresh token (its access tokens go with it), then the stored
        access token (so a live session does not depend on that cascade). HubSpot: uninstall the
        app with the access token — refreshed once if it was refused — then delete the refresh
        token. Raises :class:`TransientError` / :class:`RateLimited` (worth a retry) or
        :class:`AuthError` / :class:`ConfigError` (not); never with a token in the message."""
        if self.config.provider is Provider.SALESFORCE:
            revoked = False
            for token in (refresh_token, access_token):
                if token is not None:
                    revoked = self.revoke(token, instance_url=instance_url) or revoked
            return revoked
        uninstalled = access_token is not None and self.uninstall(access_token)
        if not uninstalled and refresh_token is not None:
            try:
                uninstalled = self.uninstall(self.refresh(refresh_token).access_token)
            except DeadRefreshToken:  # the grant is already dead at HubSpot
                uninstalled = False
        deleted = refresh_token is not None and self.revoke(refresh_token)
        return uninstalled or deleted

    def revoke_quietly(self, token: str) -> None:
        """:meth:`revoke`, logging (without the token) instead of raising."""
        try:
            self.revoke(token)
        except (TransientError, RateLimited, AuthError):
            log.warning("could not revoke refused %s tokens at the provider", self.name)

    # ---- internals ---------------------------------------------------------------------------

    def _token_call(self, form: Mapping[str, str], *, sent: Iterable[str]) -> Grant:
        request = self._http.build_request("POST", self.config.token_url, data=dict(form))
        response = self._send(request, what="token endpoint")
        if 400 <= response.status_code < 500:
            raise _refusal(response, sent)
        if response.status_code != 200:
            raise TransientError(
                f"{self.name} token endpoint answered HTTP {response.status_code} "
                "(redirects are not followed)"
            )
        try:
            body = response.json()
        except ValueError:
            raise TransientError(f"{self.name} token endpoint returned a body that is not JSON") from None
        if not isinstance(body, dict):
            raise TransientError(f"{self.name} token endpoint returned an unexpected JSON shape")
        return _grant(body)

    def _send(self, request: httpx.Request, *, what: str) -> httpx.Response:
        """Send one request; 429 → RateLimited, 5xx/network → TransientError (no bodies, no URLs)."""
        try:
            response = self._http.send(request)
            response.read()
        except httpx.TimeoutException:
            raise TransientError(f"{self.name} {what} timed out") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"{self.name} {what} unreachable ({type(exc).__name__})") from None
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=self.clock())
            raise RateLimited(
                f"{self.name} {what} is rate limiting crmhub (HTTP 429)", retry_after=retry_after
            )
        if response.status_code >= 500:
            raise TransientError(f"{self.name} {what} answered HTTP {response.status_code}")
        return response


def _grant(body: Mapping[str, object]) -> Grant:
    access = _check_token(body.get("access_token"), "access token")
    refresh_raw = body.get("refresh_token")
    refresh = None if refresh_raw is None else _check_token(refresh_raw, "refresh token")
    expires_raw = body.get("expires_in")
    expires_in: int | None = None
    if (
        isinstance(expires_raw, int | str)
        and str(expires_raw).isdigit()
        and 0 < int(expires_raw) <= 366 * 86400
    ):
        expires_in = int(expires_raw)
    scopes: tuple[str, ...] | None = None
    scope, scope_list = body.get("scope"), body.get("scopes")
    if isinstance(scope, str):
        scopes = tuple(scope.split())
    elif isinstance(scope_list, list) and all(isinstance(s, str) for s in scope_list):
        scopes = tuple(scope_list)
    return Grant(access, refresh, expires_in, scopes, body.get("instance_url"))


def _check_token(value: object, what: str) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > _MAX_TOKEN_LEN
        or not _TOKEN_CHARS.match(value)
    ):
        raise TransientError(f"token endpoint returned a malformed {what}")
    return value


def _refusal(response: httpx.Response, sent: Iterable[str]) -> _TokenRefused:
    """Parse a 4xx body into codes and a short description that echoes nothing we sent."""
    error = vendor_status = None
    description = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        e, s = body.get("error"), body.get("status")
        error = e if isinstance(e, str) and is_error_code(e) else None
        vendor_status = s if isinstance(s, str) and is_error_code(s) else None
        d = body.get("error_description") or body.get("message")
        if isinstance(d, str):
            description = " ".join(d.split())[:160]
    if description and any(secret and secret in description for secret in sent):
        description = ""
    return _TokenRefused(response.status_code, error, vendor_status, description)


# ---- httpx logging: never a token in a URL ------------------------------------------------------


class _RedactTokenPaths(logging.Filter):
    """Redacts the token in ``…/refresh-tokens/<token>`` URLs that httpx logs at INFO."""

    _pattern = re.compile(r"(/refresh-tokens/)[^\s?\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                self._pattern.sub(r"\1[redacted]", str(a)) if "/refresh-tokens/" in str(a) else a
                for a in record.args
            )
        return True


def _install_log_redaction() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactTokenPaths) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactTokenPaths())


_install_log_redaction()
