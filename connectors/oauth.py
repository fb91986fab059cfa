"""OAuth 2.0 for Salesforce and HubSpot: connect (authorization code + PKCE), refresh, revoke.

Connect (RFC 6749 §4.1 with PKCE S256, RFC 7636)::

    svc.begin_authorization(tenant, "salesforce")  → AuthorizationRequest(url, state, expires_at)
        state: 256 random bits, single use, bound to tenant + provider + redirect URI, ≤ 10 minutes;
        the database keeps only SHA-256(state) and the PKCE verifier sealed by the vault
    the user consents at the provider, which redirects to redirect_uri?code=…&state=…
    svc.complete_authorization("salesforce", tenant=…, state=…, code=…, redirect_uri=…) → ConnectionInfo
        the state is consumed first (one conditional UPDATE); missing, unknown, replayed, expired,
        other-tenant, other-provider or other-redirect-URI → OAuthCallbackError (http_status 400)
        and no token call; then the code exchange, the instance URL allowlist, sealed tokens.

Refresh is single-flight per connection, across threads and processes, with the "rejected token"
pattern: ``refresh(connection_id, rejected)`` takes a database lock, re-reads the connection and
returns the stored access token if it differs from ``rejected`` (someone else refreshed), else calls
the token endpoint once. On PostgreSQL the lock is ``SELECT … FOR UPDATE`` on the connection row,
held across the token call. On SQLite, ``BEGIN IMMEDIATE`` guards a short claim (a lease in the
row) and a short store, and the token call runs between them: a SQLite write lock held across the
call would block every other writer, the vault's key reservations included. Threads of one process
also queue on an in-memory lock first, so they do not poll. A rotated refresh token is committed
before the new access token is returned to anyone. A dead refresh token (Salesforce
``invalid_grant``, HubSpot ``BAD_REFRESH_TOKEN``) marks the connection ``reauthorization_required``
and raises :class:`~schemas.errors.ReauthorizationRequired`: it is never retried.

Errors (all from :mod:`schemas.errors`)::

    OAuthCallbackError(AuthError)   bad callback (state/redirect/code): http_status 400, no token call
    ReauthorizationRequired         refresh token dead, or the connection is not active
    RateLimited                     token endpoint answered 429 (``retry_after`` from Retry-After)
    TransientError                  5xx, timeout, network error: retry with backoff
    ConfigError                     client credentials refused, unknown provider or connection
    InstanceNotAllowed(PolicyError) a token response named an instance URL off the allowlist

Messages never contain tokens, codes, verifiers or response bodies (only the provider's error code
and a short description that is dropped if it echoes anything we sent).

Tokens at rest are vault ciphertexts (dataset ``oauth-token``, purpose ``connection-credentials``,
object id ``<connection id>/access`` or ``/refresh`` so the two cannot be swapped); the PKCE
verifier is sealed under dataset ``oauth-pkce-verifier``, object id = the state hash.

Scopes crmhub requests (and which the connected app must be allowed):

* Salesforce: ``api refresh_token`` (``offline_access`` is an alias of ``refresh_token``).
  Salesforce returns no ``expires_in``: the access token's lifetime is the org's session timeout,
  so Salesforce tokens are refreshed after a 401 only.
* HubSpot: ``crm.objects.contacts.read crm.objects.contacts.write crm.objects.companies.read
  crm.objects.companies.write crm.objects.deals.read crm.objects.deals.write
  crm.schemas.contacts.read oauth``. Access tokens live 30 minutes (``expires_in``) and are
  refreshed ahead of expiry.

Disconnect revokes at the provider (Salesforce ``POST /services/oauth2/revoke`` of the refresh
token, which also revokes its access tokens; HubSpot ``DELETE /oauth/v1/refresh-tokens/{token}``,
after which access tokens only live out their 30 minutes) and deletes the local tokens.

TLS: every client verifies certificates, against ``ca_path`` when configured (the sandbox CA),
else the default trust store; redirects are never followed. Importing this module adds a filter to
the ``httpx`` logger that redacts the token in HubSpot's refresh-token ``DELETE`` URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import quote, urlencode, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from sqlalchemy.engine import Connection, Engine

from connectors.http import parse_retry_after
from governance.vault import Vault
from schemas.errors import (
    AuthError,
    ConfigError,
    PolicyError,
    RateLimited,
    ReauthorizationRequired,
    TransientError,
)
from store import connections as store
from store.connections import ConnectionInfo, ConnectionRow, ConnectionStatus
from store.engine import is_sqlite

if TYPE_CHECKING:
    from sandbox.runtime import SandboxInfo

__all__ = [
    "HUBSPOT_SCOPES",
    "SALESFORCE_INSTANCE_ALLOWLIST",
    "SALESFORCE_SCOPES",
    "AuthorizationRequest",
    "DbTokenSource",
    "HubSpotOAuthConfig",
    "InstanceNotAllowed",
    "OAuthCallbackError",
    "OAuthProviderConfig",
    "OAuthService",
    "Provider",
    "SalesforceOAuthConfig",
    "check_instance_url",
    "configs_from_sandbox",
    "new_pkce_verifier",
    "pkce_challenge",
]

log = logging.getLogger(__name__)

SALESFORCE_SCOPES: Final = ("api", "refresh_token")
HUBSPOT_SCOPES: Final = (
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.deals.read",
    "crm.objects.deals.write",
    "crm.schemas.contacts.read",
    "oauth",
)
# Hosts a Salesforce token response may name as instance_url (My Domain, classic pods, Lightning,
# Government Cloud). "*.x" matches any subdomain of x, never x itself.
SALESFORCE_INSTANCE_ALLOWLIST: Final = (
    "*.salesforce.com",
    "*.my.salesforce.com",
    "*.force.com",
    "*.cloudforce.com",
    "*.salesforce.mil",
)
HUBSPOT_API_ALLOWLIST: Final = ("api.hubapi.com", "*.hubapi.com")

DATASET_TOKEN: Final = "oauth-token"  # noqa: S105 - a vault dataset name, not a secret
DATASET_VERIFIER: Final = "oauth-pkce-verifier"
PURPOSE: Final = "connection-credentials"
MAX_STATE_TTL_S: Final = 600
_STATE_BYTES: Final = 32  # 256 bits
_MAX_TOKEN_LEN: Final = 4096
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: nothing that could split a header
_PKCE_CHARS = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1
_HOST = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_ALLOW_ENTRY = re.compile(r"^(\*\.)?[a-z0-9.-]+(:\d{1,5})?$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Provider(StrEnum):
    """The CRMs crmhub connects to."""

    SALESFORCE = "salesforce"
    HUBSPOT = "hubspot"


class OAuthCallbackError(AuthError):
    """The OAuth callback cannot be accepted (state, redirect URI, code or a provider error).

    ``http_status`` is what a web callback should answer (400); ``reason`` is a stable code:
    ``state_missing``, ``state_unknown``, ``state_replayed``, ``state_expired``, ``state_mismatch``,
    ``redirect_uri_mismatch``, ``code_missing``, ``code_rejected``, ``access_denied`` (or the
    provider's own ``error`` code).
    """

    def __init__(self, message: str, *, reason: str, http_status: int = 400) -> None:
        super().__init__(message, code=reason)
        self.reason = reason
        self.http_status = http_status


class InstanceNotAllowed(PolicyError):
    """A token response named an instance URL that is not https or not on the allowlist."""


# ---- configuration -------------------------------------------------------------------------------


def _https_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc:
        raise ValueError(
            f"{what} must be an https:// URL without user info, e.g. https://login.salesforce.com"
        )
    return value.rstrip("/")


class OAuthProviderConfig(BaseModel):
    """One OAuth client registration at one provider. Secrets are ``SecretStr``.

    ``redirect_uri`` must equal one registered at the provider exactly; ``https``, or ``http`` on
    loopback only (RFC 8252 §7.3). ``ca_path`` is a PEM bundle to trust instead of the system store
    (the sandbox CA). ``state_ttl_s`` is how long an authorization may take (at most 600 s).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    provider: ClassVar[Provider]

    authorize_url: str
    token_url: str
    revoke_url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    scopes: tuple[str, ...]
    redirect_uri: str
    instance_allowlist: tuple[str, ...]
    ca_path: Path | None = None
    state_ttl_s: int = Field(MAX_STATE_TTL_S, ge=30, le=MAX_STATE_TTL_S)
    timeout_s: float = Field(10.0, gt=0, le=30, description="per connect/read/write phase of a token call")

    @field_validator("authorize_url", "token_url", "revoke_url")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return _https_url(v, "OAuth endpoints")

    @field_validator("redirect_uri")
    @classmethod
    def _redirect(cls, v: str) -> str:
        parts = urlsplit(v)
        loopback_http = parts.scheme == "http" and parts.hostname in _LOOPBACK
        if not (parts.scheme == "https" or loopback_http) or not parts.hostname or parts.fragment:
            raise ValueError(
                "redirect_uri must be https://…, or http://127.0.0.1:PORT/… (loopback only), "
                "without a fragment, and registered at the provider exactly"
            )
        return v

    @field_validator("instance_allowlist")
    @classmethod
    def _allowlist(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(e.strip().lower() for e in v)
        for entry in out:
            if not _ALLOW_ENTRY.match(entry):
                raise ValueError(f"allowlist entry {entry!r} must be host, *.domain or host:port")
        return out

    def verify(self) -> ssl.SSLContext | bool:
        """TLS verification for this provider's clients: the ``ca_path`` bundle, else the default store.

        The context follows :meth:`sandbox.tls.SandboxCA.client_context`: TLS 1.2 minimum, hostname
        checked. Never ``False``.
        """
        if self.ca_path is None:
            return True
        if not self.ca_path.is_file():
            raise ConfigError(
                f"OAuth ca_path {self.ca_path} does not exist; start the sandbox or fix the path"
            )
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    @property
    def instance_url_fixed(self) -> str | None:
        """The API base when the provider does not name one per connection (HubSpot), else None."""
        return None


class SalesforceOAuthConfig(OAuthProviderConfig):
    """A Salesforce connected app. Defaults are production (``login.salesforce.com``); use
    :meth:`for_login` for My Domain, ``test.salesforce.com`` or the sandbox."""

    provider: ClassVar[Provider] = Provider.SALESFORCE

    authorize_url: str = "https://login.salesforce.com/services/oauth2/authorize"
    token_url: str = "https://login.salesforce.com/services/oauth2/token"  # noqa: S105 - a URL
    revoke_url: str = "https://login.salesforce.com/services/oauth2/revoke"
    scopes: tuple[str, ...] = SALESFORCE_SCOPES
    instance_allowlist: tuple[str, ...] = SALESFORCE_INSTANCE_ALLOWLIST

    @classmethod
    def for_login(
        cls,
        login_url: str,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        extra_allowlist: Iterable[str] = (),
        **kwargs: Any,
    ) -> SalesforceOAuthConfig:
        """Endpoints under ``login_url`` (``https://login.salesforce.com``, a My Domain, the sandbox)."""
        base = _https_url(login_url, "login_url")
        return cls(
            authorize_url=f"{base}/services/oauth2/authorize",
            token_url=f"{base}/services/oauth2/token",
            revoke_url=f"{base}/services/oauth2/revoke",
            client_id=client_id,
            client_secret=SecretStr(client_secret),
            redirect_uri=redirect_uri,
            instance_allowlist=(*SALESFORCE_INSTANCE_ALLOWLIST, *extra_allowlist),
            **kwargs,
        )


class HubSpotOAuthConfig(OAuthProviderConfig):
    """A HubSpot public app. ``revoke_url`` is the refresh-token collection
    (``DELETE {revoke_url}/{token}``); ``api_url`` is the API base every connection uses and must be
    on ``instance_allowlist``."""

    provider: ClassVar[Provider] = Provider.HUBSPOT

    authorize_url: str = "https://app.hubspot.com/oauth/authorize"
    token_url: str = "https://api.hubapi.com/oauth/v1/token"  # noqa: S105 - a URL
    revoke_url: str = "https://api.hubapi.com/oauth/v1/refresh-tokens"
    api_url: str = "https://api.hubapi.com"
    scopes: tuple[str, ...] = HUBSPOT_SCOPES
    instance_allowlist: tuple[str, ...] = HUBSPOT_API_ALLOWLIST

    @model_validator(mode="after")
    def _api_allowed(self) -> HubSpotOAuthConfig:
        try:
            object.__setattr__(self, "api_url", check_instance_url(self.api_url, self.instance_allowlist))
        except InstanceNotAllowed as exc:
            raise ValueError(f"api_url: {exc.message}") from None
        return self

    @property
    def instance_url_fixed(self) -> str | None:
        return self.api_url

    @classmethod
    def for_app(
        cls,
        app_url: str,
        api_url: str,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        extra_allowlist: Iterable[str] = (),
        **kwargs: Any,
    ) -> HubSpotOAuthConfig:
        """Authorize page under ``app_url``, token/revoke/API under ``api_url`` (or the sandbox's one URL)."""
        app = _https_url(app_url, "app_url")
        api = _https_url(api_url, "api_url")
        return cls(
            authorize_url=f"{app}/oauth/authorize",
            token_url=f"{api}/oauth/v1/token",
            revoke_url=f"{api}/oauth/v1/refresh-tokens",
            api_url=api,
            client_id=client_id,
            client_secret=SecretStr(client_secret),
            redirect_uri=redirect_uri,
            instance_allowlist=(*HUBSPOT_API_ALLOWLIST, *extra_allowlist),
            **kwargs,
        )


def configs_from_sandbox(
    info: SandboxInfo, *, redirect_uri: str | None = None
) -> tuple[SalesforceOAuthConfig, HubSpotOAuthConfig]:
    """Both provider configs for a running sandbox (its CA, clients and loopback hosts allowlisted).

    ``redirect_uri`` must be one the sandbox registered; default ``http://127.0.0.1:8765/callback``
    (the CLI listener) when registered, else the first one.
    """
    registered = tuple(info.redirect_uris)
    if redirect_uri is None:
        cli_default = "http://127.0.0.1:8765/callback"
        redirect_uri = cli_default if cli_default in registered else registered[0]
    if redirect_uri not in registered:
        raise ConfigError(
            f"redirect URI {redirect_uri} is not registered with the sandbox; "
            f"use one of {', '.join(registered)}"
        )
    sf_host, hs_host = urlsplit(info.salesforce_url).netloc, urlsplit(info.hubspot_url).netloc
    ca = Path(info.ca_path)
    sf = SalesforceOAuthConfig.for_login(
        info.salesforce_url,
        client_id=info.salesforce_client_id,
        client_secret=info.salesforce_client_secret,
        redirect_uri=redirect_uri,
        extra_allowlist=(sf_host,),
        ca_path=ca,
    )
    hs = HubSpotOAuthConfig.for_app(
        info.hubspot_url,
        info.hubspot_url,
        client_id=info.hubspot_client_id,
        client_secret=info.hubspot_client_secret,
        redirect_uri=redirect_uri,
        extra_allowlist=(hs_host,),
        ca_path=ca,
    )
    return sf, hs


# ---- small pure helpers --------------------------------------------------------------------------


def new_pkce_verifier() -> str:
    """A fresh PKCE code verifier: 64 random bytes, base64url (86 characters, RFC 7636 §4.1)."""
    return secrets.token_urlsafe(64)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier``: BASE64URL(SHA256(ASCII(verifier))) without padding."""
    if not _PKCE_CHARS.match(verifier):
        raise ValueError("a PKCE verifier is 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 §4.1)")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def check_instance_url(url: object, allowlist: Iterable[str]) -> str:
    """Accept ``url`` as an API base only if it is ``https://host[:port]`` with ``host[:port]`` on
    ``allowlist``; return it canonical (``https://host`` or ``https://host:port``).

    Refused (:class:`InstanceNotAllowed`): any other scheme, user info (``https://a@b``), backslashes,
    whitespace or non-ASCII, a path, query or fragment, IP literals not listed exactly, and hosts that
    merely contain an allowed name (``salesforce.com.evil.com``). A listed entry without a port only
    allows the default port 443.
    """
    shown = repr(url)[:120]
    if not isinstance(url, str) or not url or len(url) > 500 or not url.isascii():
        raise InstanceNotAllowed(f"instance URL {shown} refused: not a short ASCII URL")
    if any(c in url for c in "\\@%") or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise InstanceNotAllowed(f"instance URL {shown} refused: user info, escapes or whitespace")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise InstanceNotAllowed(f"instance URL {shown} refused: only https is allowed")
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise InstanceNotAllowed(f"instance URL {shown} refused: it must be an origin (no path or query)")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise InstanceNotAllowed(f"instance URL {shown} refused: bad port") from None
    if not _HOST.match(host):
        raise InstanceNotAllowed(f"instance URL {shown} refused: not a plain host name")
    try:  # the parser that will actually send requests must agree
        parsed = httpx.URL(url)
        parsed_host, parsed_port = parsed.host, parsed.port
    except Exception:  # httpx.InvalidURL, or idna errors for bad punycode (raised lazily by .host)
        raise InstanceNotAllowed(f"instance URL {shown} refused: not a valid URL") from None
    if parsed_host != host or parsed_port != (None if port == 443 else port):
        raise InstanceNotAllowed(f"instance URL {shown} refused: ambiguous host")
    for entry in allowlist:
        entry_host, _, entry_port = entry.partition(":")
        if entry_port:
            if port != int(entry_port):
                continue
        elif port not in (None, 443):
            continue
        if entry_host.startswith("*."):
            suffix = entry_host[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                break
        elif host == entry_host:
            break
    else:
        raise InstanceNotAllowed(f"instance URL {shown} refused: host is not on the instance allowlist")
    return f"https://{host}" if port in (None, 443) else f"https://{host}:{port}"


def _check_token(value: object, what: str) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > _MAX_TOKEN_LEN
        or not _TOKEN_CHARS.match(value)
    ):
        raise TransientError(f"token endpoint returned a malformed {what}")
    return value


def _utcnow() -> datetime:
    return datetime.now(UTC)


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


# ---- token endpoint results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Grant:
    access_token: str
    refresh_token: str | None
    expires_in: int | None
    scopes: tuple[str, ...] | None
    instance_url: object


class _TokenRefused(Exception):
    """A 4xx from a token or revoke endpoint (internal: never leaves this module)."""

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


_CODE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


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
        error = e if isinstance(e, str) and _CODE_RE.match(e) else None
        vendor_status = s if isinstance(s, str) and _CODE_RE.match(s) else None
        d = body.get("error_description") or body.get("message")
        if isinstance(d, str):
            description = " ".join(d.split())[:160]
    if description and any(secret and secret in description for secret in sent):
        description = ""
    return _TokenRefused(response.status_code, error, vendor_status, description)


# ---- the service ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """An authorization in flight: send the user to ``url``; the ``state`` comes back on the callback."""

    url: str
    state: str
    tenant: str
    provider: Provider
    redirect_uri: str
    expires_at: datetime


class OAuthService:
    """Connect, refresh and disconnect CRM connections; one instance per process (thread-safe).

    ``configs`` holds one :class:`OAuthProviderConfig` per provider. ``clock`` is for tests.
    ``claim_s`` bounds how long a SQLite refresh claim is honoured if its holder dies.
    """

    def __init__(
        self,
        engine: Engine,
        vault: Vault,
        configs: Iterable[OAuthProviderConfig],
        *,
        clock: Callable[[], datetime] = _utcnow,
        claim_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.vault = vault
        self.configs: dict[Provider, OAuthProviderConfig] = {c.provider: c for c in configs}
        self.clock = clock
        self.claim_s = claim_s
        self._sqlite = is_sqlite(engine)
        self._http: dict[Provider, httpx.Client] = {}
        for provider, cfg in self.configs.items():
            self._http[provider] = httpx.Client(
                verify=cfg.verify(),
                timeout=httpx.Timeout(cfg.timeout_s),
                follow_redirects=False,
                headers={"Accept": "application/json", "User-Agent": "crmhub-oauth"},
                transport=transport,
            )
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        """Close the HTTP clients."""
        for client in self._http.values():
            client.close()

    def __enter__(self) -> OAuthService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def config(self, provider: str | Provider) -> OAuthProviderConfig:
        """The configuration of ``provider``; :class:`ConfigError` if it is not configured."""
        try:
            return self.configs[Provider(provider)]
        except (KeyError, ValueError):
            raise ConfigError(
                f"OAuth provider {provider!r} is not configured; configured: "
                f"{', '.join(sorted(self.configs)) or 'none'}"
            ) from None

    # ---- connect -----------------------------------------------------------------------------

    def begin_authorization(
        self, tenant: str, provider: str | Provider, *, extra_scopes: Sequence[str] = ()
    ) -> AuthorizationRequest:
        """Record a new single-use state (hash only) and sealed PKCE verifier; return the authorize URL.

        ``extra_scopes`` are asked for beside the app's own (e.g. HubSpot's ``crm.export`` when the
        customer allows exports); the connection records what the provider granted."""
        if not tenant:
            raise ConfigError("tenant must not be empty")
        cfg = self.config(provider)
        state = secrets.token_urlsafe(_STATE_BYTES)
        verifier = new_pkce_verifier()
        state_hash = _state_hash(state)
        now = self.clock()
        expires = now + timedelta(seconds=cfg.state_ttl_s)
        sealed = self.vault.seal(
            tenant, verifier.encode("ascii"), dataset=DATASET_VERIFIER, object_id=state_hash, purpose=PURPOSE
        )
        with self.engine.begin() as conn:
            store.purge_states(conn, expired_before=now - timedelta(days=1))
            store.insert_state(
                conn,
                state_hash=state_hash,
                tenant=tenant,
                provider=cfg.provider.value,
                redirect_uri=cfg.redirect_uri,
                pkce_verifier_sealed=sealed,
                created_at=now,
                expires_at=expires,
            )
        params = {
            "response_type": "code",
            "client_id": cfg.client_id,
            "redirect_uri": cfg.redirect_uri,
            "scope": " ".join(dict.fromkeys([*cfg.scopes, *extra_scopes])),
            "state": state,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        url = f"{cfg.authorize_url}?{urlencode(params, quote_via=quote)}"
        log.info("oauth authorization started: tenant=%s provider=%s", tenant, cfg.provider.value)
        return AuthorizationRequest(url, state, tenant, cfg.provider, cfg.redirect_uri, expires)

    def complete_authorization(
        self,
        provider: str | Provider,
        *,
        tenant: str,
        state: str | None,
        code: str | None,
        redirect_uri: str,
        error: str | None = None,
    ) -> ConnectionInfo:
        """Accept the callback and create an ``active`` connection with sealed tokens.

        The state is consumed before anything else is checked, so every callback burns it. Any
        problem with state or redirect URI raises :class:`OAuthCallbackError` before a token call.
        """
        cfg = self.config(provider)
        if not state:
            raise OAuthCallbackError("the callback carries no state parameter", reason="state_missing")
        row = self._consume_state(state)
        if error:
            reason = error if _CODE_RE.match(error) else "provider_error"
            raise OAuthCallbackError(f"the provider refused the authorization ({reason})", reason=reason)
        now = self.clock()
        if now >= row.expires_at:
            raise OAuthCallbackError(
                "the authorization took too long (state expired); start again", reason="state_expired"
            )
        if row.provider != cfg.provider.value or row.tenant != tenant:
            raise OAuthCallbackError(
                "the state belongs to another tenant or provider", reason="state_mismatch"
            )
        if redirect_uri != row.redirect_uri or redirect_uri != cfg.redirect_uri:
            raise OAuthCallbackError(
                "the redirect URI does not match the authorization request", reason="redirect_uri_mismatch"
            )
        if not code:
            raise OAuthCallbackError("the callback carries no authorization code", reason="code_missing")
        if row.pkce_verifier_sealed is None:  # pragma: no cover - consume_state read it before erasing
            raise OAuthCallbackError("the authorization request has no verifier", reason="state_unknown")
        verifier = self.vault.open(
            row.tenant,
            row.pkce_verifier_sealed,
            dataset=DATASET_VERIFIER,
            object_id=row.state_hash,
            purpose=PURPOSE,
        ).decode("ascii")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": row.redirect_uri,
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret.get_secret_value(),
            "code_verifier": verifier,
        }
        try:
            grant = self._token_call(cfg, form, sent=(code, verifier, cfg.client_secret.get_secret_value()))
        except _TokenRefused as refused:
            if refused.bad_client:
                raise ConfigError(
                    f"{cfg.provider.value} refused crmhub's client credentials ({refused.label}); check the "
                    "client id and secret"
                ) from None
            detail = f": {refused.description}" if refused.description else ""
            raise OAuthCallbackError(
                f"{cfg.provider.value} refused the authorization code ({refused.label}{detail}); start again",
                reason="code_rejected",
            ) from None
        if grant.refresh_token is None:
            raise ConfigError(
                f"{cfg.provider.value} issued no refresh token; the app must be allowed the scopes "
                f"{' '.join(cfg.scopes)}"
            )
        try:
            instance = cfg.instance_url_fixed or check_instance_url(
                grant.instance_url, cfg.instance_allowlist
            )
        except InstanceNotAllowed:
            self._revoke_quietly(cfg, grant.refresh_token)  # do not leave live tokens we will not store
            raise
        connection_id = str(uuid.uuid4())
        access_sealed, refresh_sealed = self._seal_tokens(row.tenant, connection_id, grant)
        assert refresh_sealed is not None  # a grant without a refresh token was refused above
        now = self.clock()
        with self.engine.begin() as conn:
            store.insert_connection(
                conn,
                id=connection_id,
                tenant=row.tenant,
                provider=cfg.provider.value,
                instance_url=instance,
                scopes=grant.scopes if grant.scopes is not None else cfg.scopes,
                access_token_sealed=access_sealed,
                refresh_token_sealed=refresh_sealed,
                access_expires_at=self._expiry(grant, now),
                now=now,
            )
            created = store.get_connection(conn, connection_id)
        assert created is not None
        log.info(
            "oauth connection created: id=%s tenant=%s provider=%s", connection_id, tenant, cfg.provider.value
        )
        return created.info()

    def _consume_state(self, state: str) -> store.OAuthStateRow:
        state_hash = _state_hash(state)
        with self.engine.begin() as conn:
            row = store.get_state(conn, state_hash)
            if row is None:
                raise OAuthCallbackError("unknown state: start the connection again", reason="state_unknown")
            if row.used_at is not None or not store.consume_state(conn, state_hash, now=self.clock()):
                raise OAuthCallbackError("this authorization was already used", reason="state_replayed")
        return row

    # ---- tokens ------------------------------------------------------------------------------

    def access_token(self, connection_id: str) -> tuple[str, datetime | None]:
        """The stored access token of an active connection and its expiry (None: unknown)."""
        with self.engine.connect() as conn:
            row = self._row(conn, connection_id)
        self._require_active(row)
        if row.access_token_sealed is None:  # pragma: no cover - active rows always hold tokens
            raise ReauthorizationRequired(f"connection {row.id} holds no access token; reconnect it")
        return self._open(row, "access", row.access_token_sealed), row.access_expires_at

    def instance_url(self, connection_id: str) -> str:
        """The API base of the connection (allowlisted at connect time)."""
        with self.engine.connect() as conn:
            row = self._row(conn, connection_id)
        if row.instance_url is None:  # pragma: no cover - set at connect
            raise ConfigError(f"connection {connection_id} has no instance URL")
        return row.instance_url

    def refresh(self, connection_id: str, rejected_access_token: str | None) -> str:
        """A valid access token for the connection, refreshing at most once across all workers.

        ``rejected_access_token`` is the token the vendor refused (or that expired); if the stored
        token differs and has not expired, someone already refreshed and it is returned without a
        token call. ``None`` forces a refresh.
        """
        return self.refresh_with_expiry(connection_id, rejected_access_token)[0]

    def refresh_with_expiry(
        self, connection_id: str, rejected_access_token: str | None
    ) -> tuple[str, datetime | None]:
        """:meth:`refresh`, also returning the new token's expiry (None: unknown)."""
        with self._local_lock(connection_id):
            if self._sqlite:
                return self._refresh_claimed(connection_id, rejected_access_token)
            return self._refresh_row_locked(connection_id, rejected_access_token)

    def _refresh_row_locked(self, connection_id: str, rejected: str | None) -> tuple[str, datetime | None]:
        """PostgreSQL: hold ``SELECT … FOR UPDATE`` across the token call; commit before returning."""
        dead: ReauthorizationRequired | None = None
        with self.engine.begin() as conn:
            row = self._row(conn, connection_id, for_update=True)
            reuse = self._reusable(row, rejected)
            if reuse is not None:
                return reuse
            cfg = self.config(row.provider)
            try:
                grant = self._refresh_call(cfg, row)
            except _DeadRefreshToken as exc:
                store.mark_reauthorization_required(conn, row.id, exc.message, now=self.clock())
                dead = ReauthorizationRequired(exc.message, code=exc.code)
            else:
                sealed = self._seal_tokens(row.tenant, row.id, grant)  # PostgreSQL: other rows, no conflict
                result = self._store_grant(conn, row, grant, sealed)
        if dead is not None:
            log.warning("oauth connection %s needs reauthorization", connection_id)
            raise dead
        return result

    def _refresh_claimed(self, connection_id: str, rejected: str | None) -> tuple[str, datetime | None]:
        """SQLite: claim under BEGIN IMMEDIATE, call the token endpoint, store under BEGIN IMMEDIATE."""
        owner = uuid.uuid4().hex
        give_up = time.monotonic() + self.claim_s + 30.0
        delay = 0.01
        while True:
            with self._write_locked() as conn:
                row = self._row(conn, connection_id)
                reuse = self._reusable(row, rejected)
                if reuse is not None:
                    return reuse
                now = self.clock()
                busy = (
                    row.refresh_claim_owner is not None
                    and row.refresh_claimed_until is not None
                    and row.refresh_claimed_until > now
                )
                if not busy:
                    store.claim_refresh(
                        conn, row.id, owner=owner, until=now + timedelta(seconds=self.claim_s)
                    )
            if not busy:
                break
            if time.monotonic() > give_up:
                raise TransientError(
                    f"connection {connection_id} is being refreshed by another worker; retry"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        cfg = self.config(row.provider)
        try:
            grant = self._refresh_call(cfg, row)
        except _DeadRefreshToken as exc:
            with self._write_locked() as conn:
                store.mark_reauthorization_required(conn, row.id, exc.message, now=self.clock())
            log.warning("oauth connection %s needs reauthorization", connection_id)
            raise ReauthorizationRequired(exc.message, code=exc.code) from None
        except BaseException:
            with self._write_locked() as conn:
                store.release_claim(conn, row.id, owner=owner)
            raise
        sealed = self._seal_tokens(row.tenant, row.id, grant)  # outside the write lock (see _store_grant)
        with self._write_locked() as conn:
            latest = self._row(conn, connection_id)
            if latest.status is not ConnectionStatus.ACTIVE:  # disconnected while we refreshed
                raise ReauthorizationRequired(
                    f"connection {connection_id} is {latest.status.value}; reconnect it",
                    code=latest.status.value,
                )
            if latest.refresh_claim_owner != owner:  # pragma: no cover - only if a claim outlived claim_s
                log.warning(
                    "oauth refresh claim of connection %s expired before the token call ended", row.id
                )
            return self._store_grant(conn, row, grant, sealed)

    def _reusable(self, row: ConnectionRow, rejected: str | None) -> tuple[str, datetime | None] | None:
        """The stored token if it is not the rejected one and not expired (someone refreshed)."""
        self._require_active(row)
        if row.access_token_sealed is None or rejected is None:
            return None
        current = self._open(row, "access", row.access_token_sealed)
        if hmac.compare_digest(current.encode(), rejected.encode()):
            return None
        if row.access_expires_at is not None and row.access_expires_at <= self.clock():
            return None
        return current, row.access_expires_at

    def _refresh_call(self, cfg: OAuthProviderConfig, row: ConnectionRow) -> _Grant:
        if row.refresh_token_sealed is None:  # pragma: no cover - active rows always hold tokens
            raise _DeadRefreshToken("the connection holds no refresh token; reconnect it", "no_refresh_token")
        refresh_token = self._open(row, "refresh", row.refresh_token_sealed)
        secret = cfg.client_secret.get_secret_value()
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": cfg.client_id,
            "client_secret": secret,
        }
        try:
            return self._token_call(cfg, form, sent=(refresh_token, secret))
        except _TokenRefused as refused:
            name = cfg.provider.value
            detail = f": {refused.description}" if refused.description else ""
            if refused.dead_refresh_token:
                raise _DeadRefreshToken(
                    f"{name} refused the stored refresh token ({refused.label}{detail}); the connection "
                    f"needs reauthorization: crmhub connect {name} --tenant {row.tenant}",
                    refused.label,
                ) from None
            if refused.bad_client:
                raise ConfigError(
                    f"{name} refused crmhub's client credentials ({refused.label}); "
                    "check client id and secret"
                ) from None
            raise AuthError(
                f"{name} refused the token refresh ({refused.label}{detail})", code=refused.label
            ) from None

    def _store_grant(
        self, conn: Connection, row: ConnectionRow, grant: _Grant, sealed: tuple[bytes, bytes | None]
    ) -> tuple[str, datetime | None]:
        """Write the sealed tokens (the rotated refresh token too) in the caller's transaction.

        ``sealed`` comes from :meth:`_seal_tokens`, called *before* a SQLite write lock is taken:
        the vault may need to write (key-use reservations) and would wait on our own lock.
        """
        now = self.clock()
        expires = self._expiry(grant, now)
        store.store_tokens(
            conn,
            row.id,
            access_token_sealed=sealed[0],
            refresh_token_sealed=sealed[1],
            access_expires_at=expires,
            now=now,
        )
        log.info(
            "oauth token refreshed: connection=%s rotated_refresh_token=%s",
            row.id,
            grant.refresh_token is not None,
        )
        return grant.access_token, expires

    # ---- disconnect --------------------------------------------------------------------------

    def disconnect(self, connection_id: str, *, force: bool = False) -> ConnectionInfo:
        """Revoke the connection's tokens at the provider, then delete them locally (status ``revoked``).

        If the provider cannot be reached the tokens are kept and the error raised, unless ``force``:
        then they are deleted anyway and ``status_message`` says revocation failed.
        """
        with self._local_lock(connection_id), self._row_locked(connection_id) as (conn, row):
            if row.status is ConnectionStatus.REVOKED:
                return row.info()
            cfg = self.config(row.provider)
            message = f"disconnected at {self.clock():%Y-%m-%dT%H:%M:%SZ}: tokens revoked and deleted"
            # The refresh token first (revoking it ends the grant). Salesforce access tokens are
            # revoked too, so a live session does not depend on the cascade; HubSpot has no
            # access-token revocation (they expire within 30 minutes).
            revocable = [("refresh", row.refresh_token_sealed)]
            if cfg.provider is Provider.SALESFORCE:
                revocable.append(("access", row.access_token_sealed))
            try:
                for kind, sealed in revocable:
                    if sealed is not None:
                        self._revoke(cfg, self._open(row, kind, sealed))
            except (TransientError, RateLimited, AuthError) as exc:
                if not force:
                    raise
                message = f"disconnected: provider revocation failed ({exc.kind.value}); local tokens deleted"
            store.delete_tokens(conn, row.id, message, now=self.clock())
            updated = self._row(conn, row.id)
        log.info("oauth connection disconnected: id=%s", connection_id)
        return updated.info()

    def _revoke(self, cfg: OAuthProviderConfig, token: str) -> None:
        client = self._http[cfg.provider]
        if cfg.provider is Provider.HUBSPOT:
            request = client.build_request("DELETE", f"{cfg.revoke_url}/{quote(token, safe='')}")
        else:
            request = client.build_request("POST", cfg.revoke_url, data={"token": token})
        response = self._send(cfg, request, what="revocation endpoint")
        if response.status_code in (400, 404):  # already invalid or unknown: nothing left to revoke
            return
        if response.status_code >= 300:
            raise AuthError(f"{cfg.provider.value} refused the revocation (HTTP {response.status_code})")

    def _revoke_quietly(self, cfg: OAuthProviderConfig, token: str) -> None:
        try:
            self._revoke(cfg, token)
        except (TransientError, RateLimited, AuthError):
            log.warning("could not revoke refused %s tokens at the provider", cfg.provider.value)

    # ---- listing -----------------------------------------------------------------------------

    def get(self, connection_id: str) -> ConnectionInfo:
        """The public view of one connection; :class:`ConfigError` if unknown."""
        with self.engine.connect() as conn:
            return self._row(conn, connection_id).info()

    def list(self, tenant: str | None = None) -> list[ConnectionInfo]:
        """Every connection (of ``tenant``), oldest first."""
        with self.engine.connect() as conn:
            return [r.info() for r in store.list_connections(conn, tenant=tenant)]

    def token_source(self, connection_id: str, *, skew_s: float = 60.0) -> DbTokenSource:
        """A :class:`DbTokenSource` for the connection."""
        return DbTokenSource(self, connection_id, skew_s=skew_s)

    # ---- internals ---------------------------------------------------------------------------

    def _token_call(
        self, cfg: OAuthProviderConfig, form: Mapping[str, str], *, sent: Iterable[str]
    ) -> _Grant:
        client = self._http[cfg.provider]
        response = self._send(
            cfg, client.build_request("POST", cfg.token_url, data=dict(form)), what="token endpoint"
        )
        if 400 <= response.status_code < 500:
            raise _refusal(response, sent)
        if response.status_code != 200:
            raise TransientError(
                f"{cfg.provider.value} token endpoint answered HTTP {response.status_code} "
                "(redirects are not followed)"
            )
        try:
            body = response.json()
        except ValueError:
            raise TransientError(
                f"{cfg.provider.value} token endpoint returned a body that is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise TransientError(f"{cfg.provider.value} token endpoint returned an unexpected JSON shape")
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
        if isinstance(body.get("scope"), str):
            scopes = tuple(body["scope"].split())
        elif isinstance(body.get("scopes"), list) and all(isinstance(s, str) for s in body["scopes"]):
            scopes = tuple(body["scopes"])
        return _Grant(access, refresh, expires_in, scopes, body.get("instance_url"))

    def _send(self, cfg: OAuthProviderConfig, request: httpx.Request, *, what: str) -> httpx.Response:
        """Send one request; 429 → RateLimited, 5xx/network → TransientError (no bodies, no URLs)."""
        name = cfg.provider.value
        try:
            response = self._http[cfg.provider].send(request)
            response.read()
        except httpx.TimeoutException:
            raise TransientError(f"{name} {what} timed out") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"{name} {what} unreachable ({type(exc).__name__})") from None
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=self.clock())
            raise RateLimited(f"{name} {what} is rate limiting crmhub (HTTP 429)", retry_after=retry_after)
        if response.status_code >= 500:
            raise TransientError(f"{name} {what} answered HTTP {response.status_code}")
        return response

    def _seal_tokens(self, tenant: str, connection_id: str, grant: _Grant) -> tuple[bytes, bytes | None]:
        access = self.vault.seal(
            tenant,
            grant.access_token.encode(),
            dataset=DATASET_TOKEN,
            object_id=f"{connection_id}/access",
            purpose=PURPOSE,
        )
        refresh = None
        if grant.refresh_token is not None:
            refresh = self.vault.seal(
                tenant,
                grant.refresh_token.encode(),
                dataset=DATASET_TOKEN,
                object_id=f"{connection_id}/refresh",
                purpose=PURPOSE,
            )
        return access, refresh

    def _open(self, row: ConnectionRow, kind: str, sealed: bytes) -> str:
        return self.vault.open(
            row.tenant, sealed, dataset=DATASET_TOKEN, object_id=f"{row.id}/{kind}", purpose=PURPOSE
        ).decode()

    @staticmethod
    def _expiry(grant: _Grant, now: datetime) -> datetime | None:
        return None if grant.expires_in is None else now + timedelta(seconds=grant.expires_in)

    @staticmethod
    def _row(conn: Connection, connection_id: str, *, for_update: bool = False) -> ConnectionRow:
        row = store.get_connection(conn, connection_id, for_update=for_update)
        if row is None:
            raise ConfigError(f"no connection {connection_id!r}; list them with: crmhub connections list")
        return row

    @staticmethod
    def _require_active(row: ConnectionRow) -> None:
        if row.status is not ConnectionStatus.ACTIVE:
            raise ReauthorizationRequired(
                f"connection {row.id} is {row.status.value}"
                + (f" ({row.status_message})" if row.status_message else "")
                + f"; reconnect with: crmhub connect {row.provider} --tenant {row.tenant}",
                code=row.status.value,
            )

    def _local_lock(self, connection_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(connection_id, threading.Lock())

    @contextmanager
    def _write_locked(self) -> Iterator[Connection]:
        """A SQLite transaction holding the database write lock from its first statement."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextmanager
    def _row_locked(self, connection_id: str) -> Iterator[tuple[Connection, ConnectionRow]]:
        """The connection row under the dialect's write lock, committed on success."""
        if self._sqlite:
            with self._write_locked() as conn:
                yield conn, self._row(conn, connection_id)
        else:
            with self.engine.begin() as conn:
                yield conn, self._row(conn, connection_id, for_update=True)


class _DeadRefreshToken(Exception):
    """The provider says the refresh token is dead (internal: becomes ReauthorizationRequired)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class DbTokenSource:
    """The :class:`~connectors.base.TokenSource` of one stored connection.

    ``access_token()`` answers from memory while the cached token is more than ``skew_s`` seconds
    from its expiry (tokens without a known expiry are used until the vendor rejects them), else it
    reads the database and refreshes through :meth:`OAuthService.refresh` if needed. After a 401 a
    connector calls ``refresh(rejected)`` once and retries the same page. Thread-safe.
    """

    def __init__(self, service: OAuthService, connection_id: str, *, skew_s: float = 60.0) -> None:
        self.service = service
        self.connection_id = connection_id
        self.skew = timedelta(seconds=skew_s)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires: datetime | None = None

    def _fresh(self, expires: datetime | None) -> bool:
        return expires is None or expires - self.skew > self.service.clock()

    def access_token(self) -> str:
        """A token that is not known to be expired (or about to be, within ``skew_s``)."""
        with self._lock:
            if self._token is not None and self._fresh(self._expires):
                return self._token
        token, expires = self.service.access_token(self.connection_id)
        if not self._fresh(expires):
            token, expires = self.service.refresh_with_expiry(self.connection_id, token)
        with self._lock:
            self._token, self._expires = token, expires
        return token

    def refresh(self, rejected: str) -> str:
        """A new access token after the vendor rejected ``rejected`` (single-flight across workers)."""
        token, expires = self.service.refresh_with_expiry(self.connection_id, rejected)
        with self._lock:
            self._token, self._expires = token, expires
        return token

    @property
    def instance_url(self) -> str:
        """The connection's API base URL (https, allowlisted)."""
        return self.service.instance_url(self.connection_id)
