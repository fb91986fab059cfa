"""Vendor-neutral OAuth 2.0 authorization-server state for the sandbox CRMs (RFC 6749 + PKCE, RFC 7636).

Each vendor app renders its own endpoints and error bodies (Salesforce ``/services/oauth2/*``,
HubSpot ``/oauth/v1/*``) on top of this: registered clients with exact redirect URIs, single-use
authorization codes bound to client, redirect URI and PKCE challenge, expiring access tokens,
refresh tokens with optional rotation, revocation, a per-token call counter for the
"token expires after N calls" fault, and a trigger that expires every access token (optionally
revoking the refresh tokens) at the k-th call to an endpoint — a token dying mid-read.

Errors are :class:`OAuthError` with the RFC 6749 ``error`` code (``invalid_grant``,
``invalid_client``, ``invalid_request``, ...); the vendor app maps them to its documented shape.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field

__all__ = ["AccessToken", "OAuthClient", "OAuthError", "OAuthServer", "TokenGrant"]

CODE_TTL_S = 600.0  # authorization codes live at most 10 minutes (RFC 6749 §4.1.2 recommends ≤ 10 min)


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    name: str = "crmhub"


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str | None
    method: str | None
    scope: str
    expires_at: float
    used: bool = False


@dataclass
class AccessToken:
    token: str
    client_id: str
    scope: str
    expires_at: float
    calls: int = 0
    revoked: bool = False
    refresh_token: str | None = None  # the refresh token of the grant this token was issued under


@dataclass
class _Refresh:
    token: str
    client_id: str
    scope: str
    revoked: bool = False
    issued_at: float = field(default_factory=time.time)


@dataclass
class _ExpiryTrigger:
    """Expire every access token when the ``at_call``-th call to an ``endpoint`` (fnmatch) arrives."""

    endpoint: str
    at_call: int
    revoke_refresh: bool
    seen: int = 0


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    refresh_token: str | None
    expires_in: int
    scope: str
    issued_at: float


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OAuthServer:
    """In-memory authorization server state. Thread-safe."""

    def __init__(
        self,
        *,
        access_ttl_s: int,
        rotate_refresh_tokens: bool = False,
        require_pkce: bool = False,
        token_prefix: str = "",
    ) -> None:
        self.access_ttl_s = access_ttl_s
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.require_pkce = require_pkce
        self.token_prefix = token_prefix
        self.expire_after_calls: int | None = None
        self.clients: dict[str, OAuthClient] = {}
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._lock = threading.Lock()
        self._trigger: _ExpiryTrigger | None = None
        self.token_calls = 0  # number of token-endpoint calls (for single-flight refresh checks)

    # -- clients ------------------------------------------------------------------------------

    def register_client(
        self,
        redirect_uris: list[str],
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        name: str = "crmhub",
    ) -> OAuthClient:
        client = OAuthClient(
            client_id or secrets.token_urlsafe(24),
            client_secret or secrets.token_urlsafe(32),
            list(redirect_uris),
            name,
        )
        with self._lock:
            self.clients[client.client_id] = client
        return client

    def client_for_authorize(self, client_id: str, redirect_uri: str) -> OAuthClient:
        """Validate an authorize request's client and redirect URI (exact string match)."""
        client = self.clients.get(client_id)
        if client is None:
            raise OAuthError("invalid_client", "unknown client_id", 400)
        if redirect_uri not in client.redirect_uris:
            raise OAuthError("redirect_uri_mismatch", "redirect_uri must match a registered URI exactly")
        return client

    def _authenticate(self, client_id: str, client_secret: str | None) -> OAuthClient:
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, client_secret or ""):
            raise OAuthError("invalid_client", "invalid client credentials", 401)
        return client

    # -- grants -------------------------------------------------------------------------------

    def issue_code(
        self,
        client_id: str,
        redirect_uri: str,
        *,
        scope: str,
        code_challenge: str | None,
        code_challenge_method: str | None,
    ) -> str:
        self.client_for_authorize(client_id, redirect_uri)
        if code_challenge is None and self.require_pkce:
            raise OAuthError("invalid_request", "code_challenge is required")
        if code_challenge is not None and code_challenge_method not in ("S256", "plain", None):
            raise OAuthError("invalid_request", "unsupported code_challenge_method")
        code = self.token_prefix + secrets.token_urlsafe(32)
        with self._lock:
            self._codes[code] = _Code(
                client_id,
                redirect_uri,
                code_challenge,
                code_challenge_method or "plain" if code_challenge else None,
                scope,
                time.time() + CODE_TTL_S,
            )
        return code

    def exchange_code(
        self,
        *,
        code: str,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        code_verifier: str | None,
    ) -> TokenGrant:
        with self._lock:
            self.token_calls += 1
        client = self._authenticate(client_id, client_secret)
        with self._lock:
            entry = self._codes.get(code)
            if (
                entry is None
                or entry.used
                or entry.expires_at < time.time()
                or entry.client_id != client.client_id
            ):
                if entry is not None and entry.used:
                    # RFC 6749 §4.1.2: a replayed code revokes what it issued; we just refuse it.
                    pass
                raise OAuthError("invalid_grant", "authorization code is invalid, expired or already used")
            entry.used = True
        if entry.redirect_uri != redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if entry.challenge is not None:
            if not code_verifier:
                raise OAuthError("invalid_grant", "code_verifier is required")
            expected = _s256(code_verifier) if entry.method == "S256" else code_verifier
            if not secrets.compare_digest(expected, entry.challenge):
                raise OAuthError("invalid_grant", "invalid code verifier")
        return self._grant(client.client_id, entry.scope, with_refresh=True)

    def refresh(self, *, refresh_token: str, client_id: str, client_secret: str | None) -> TokenGrant:
        with self._lock:
            self.token_calls += 1
        client = self._authenticate(client_id, client_secret)
        with self._lock:
            entry = self._refresh.get(refresh_token)
            if entry is None or entry.revoked or entry.client_id != client.client_id:
                raise OAuthError("invalid_grant", "expired access/refresh token")
            if self.rotate_refresh_tokens:
                entry.revoked = True
        grant = self._grant(
            client.client_id, entry.scope, with_refresh=self.rotate_refresh_tokens, under=refresh_token
        )
        if not self.rotate_refresh_tokens:
            grant = TokenGrant(
                grant.access_token, refresh_token, grant.expires_in, grant.scope, grant.issued_at
            )
        return grant

    def _grant(
        self, client_id: str, scope: str, *, with_refresh: bool, under: str | None = None
    ) -> TokenGrant:
        """New tokens; the access token remembers the refresh token of its grant (the new one, or
        ``under``: the one it was refreshed with), so revoking that refresh token can take it along."""
        now = time.time()
        access = self.token_prefix + secrets.token_urlsafe(32)
        refresh = self.token_prefix + secrets.token_urlsafe(40) if with_refresh else None
        with self._lock:
            self._access[access] = AccessToken(
                access, client_id, scope, now + self.access_ttl_s, refresh_token=refresh or under
            )
            if refresh is not None:
                self._refresh[refresh] = _Refresh(refresh, client_id, scope)
        return TokenGrant(access, refresh, self.access_ttl_s, scope, now)

    def issue_direct(self, client_id: str, scope: str = "api refresh_token") -> TokenGrant:
        """Mint tokens without the browser flow (tests, benchmarks, the demo's fast path)."""
        return self._grant(client_id, scope, with_refresh=True)

    # -- use ----------------------------------------------------------------------------------

    def authenticate(self, access_token: str) -> AccessToken | None:
        """The live token, counting one call; None if unknown, expired, revoked or worn out."""
        with self._lock:
            tok = self._access.get(access_token)
            if tok is None or tok.revoked or tok.expires_at < time.time():
                return None
            tok.calls += 1
            if self.expire_after_calls is not None and tok.calls > self.expire_after_calls:
                tok.revoked = True
                return None
            return tok

    def lookup_refresh(self, refresh_token: str) -> _Refresh | None:
        with self._lock:
            entry = self._refresh.get(refresh_token)
            return entry if entry is not None and not entry.revoked else None

    def peek_access(self, access_token: str) -> AccessToken | None:
        """The access-token record whatever its state (expired/revoked included), without counting a call.

        Vendor apps need it to render "expired N seconds ago"-style 401 bodies; None if never issued.
        """
        with self._lock:
            return self._access.get(access_token)

    def lookup_access(self, access_token: str) -> AccessToken | None:
        with self._lock:
            tok = self._access.get(access_token)
            return tok if tok is not None and not tok.revoked and tok.expires_at >= time.time() else None

    def revoke(self, token: str, *, with_access_tokens: bool = False) -> bool:
        """Revoke a live access or refresh token; False if it is unknown or already revoked.

        Revoking a refresh token ends its renewal; ``with_access_tokens`` also revokes every access
        token issued under it (Salesforce's documented revoke; HubSpot's refresh-token delete
        leaves them to expire)."""
        with self._lock:
            if (tok := self._access.get(token)) is not None:
                was_live = not tok.revoked
                tok.revoked = True
                return was_live
            if (entry := self._refresh.get(token)) is not None:
                was_live = not entry.revoked
                entry.revoked = True
                if with_access_tokens:
                    for access in self._access.values():
                        if access.refresh_token == token:
                            access.revoked = True
                return was_live
            return False

    def revoke_client(self, client_id: str) -> int:
        """Revoke every access and refresh token issued to ``client_id`` (an app uninstalled from
        the org/portal this sandbox is); returns how many were live."""
        with self._lock:
            live: list[AccessToken | _Refresh] = [
                t for t in self._access.values() if t.client_id == client_id
            ]
            live += [t for t in self._refresh.values() if t.client_id == client_id]
            count = sum(not t.revoked for t in live)
            for t in live:
                t.revoked = True
            return count

    def expire_all_access_tokens(self) -> None:
        """Fault helper: every issued access token is now expired."""
        with self._lock:
            for tok in self._access.values():
                tok.expires_at = 0.0

    def expire_at_call(self, endpoint: str, at_call: int, *, revoke_refresh: bool = False) -> None:
        """Fault helper: when the ``at_call``-th call (from now) to an endpoint matching ``endpoint``
        (fnmatch, e.g. ``"sf.query"``) arrives, expire every access token before it is handled — so
        that call is refused — and, with ``revoke_refresh``, revoke every refresh token too. Fires once."""
        if at_call < 1:
            raise ValueError("at_call counts from 1")
        with self._lock:
            self._trigger = _ExpiryTrigger(endpoint, at_call, revoke_refresh)

    def note_call(self, endpoint: str) -> None:
        """Called by the vendor app before it handles a call to ``endpoint``: fires an armed trigger."""
        with self._lock:
            trigger = self._trigger
            if trigger is None or not fnmatch.fnmatchcase(endpoint, trigger.endpoint):
                return
            trigger.seen += 1
            if trigger.seen < trigger.at_call:
                return
            self._trigger = None
            for tok in self._access.values():
                tok.expires_at = 0.0
            if trigger.revoke_refresh:
                for entry in self._refresh.values():
                    entry.revoked = True
