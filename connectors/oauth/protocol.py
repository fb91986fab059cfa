"""The OAuth 2.0 protocol pieces crmhub relies on, as pure functions: PKCE (RFC 7636, S256), the
``state`` (256 random bits; only its SHA-256 is ever stored), the authorize URL, the instance URL
allowlist, and the two errors of the connect flow.

State rules (enforced by the token store in :mod:`services.credentials` with these helpers): a
state is single use, bound to tenant + provider + redirect URI, and lives at most
:data:`MAX_STATE_TTL_S` seconds. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, urlencode, urlsplit

import httpx

from schemas.errors import AuthError, PolicyError

if TYPE_CHECKING:
    from connectors.oauth.config import Provider

__all__ = [
    "MAX_STATE_TTL_S",
    "AuthorizationRequest",
    "InstanceNotAllowed",
    "OAuthCallbackError",
    "authorize_url",
    "check_instance_url",
    "is_error_code",
    "new_pkce_verifier",
    "new_state",
    "pkce_challenge",
    "state_hash",
]

MAX_STATE_TTL_S: Final = 600
_STATE_BYTES: Final = 32  # 256 bits
_PKCE_CHARS = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1
_CODE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_HOST = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


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


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """An authorization in flight: send the user to ``url``; the ``state`` comes back on the callback."""

    url: str
    state: str
    tenant: str
    provider: Provider
    redirect_uri: str
    expires_at: datetime


def new_pkce_verifier() -> str:
    """A fresh PKCE code verifier: 64 random bytes, base64url (86 characters, RFC 7636 §4.1)."""
    return secrets.token_urlsafe(64)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier``: BASE64URL(SHA256(ASCII(verifier))) without padding."""
    if not _PKCE_CHARS.match(verifier):
        raise ValueError("a PKCE verifier is 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 §4.1)")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """A fresh ``state``: 256 random bits, base64url."""
    return secrets.token_urlsafe(_STATE_BYTES)


def state_hash(state: str) -> str:
    """What is stored of a ``state`` (hex SHA-256): a database reader cannot replay it."""
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def is_error_code(value: str) -> bool:
    """Whether ``value`` looks like an OAuth/vendor error code (short, no spaces): safe to show."""
    return _CODE_RE.match(value) is not None


def authorize_url(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Iterable[str],
    state: str,
    verifier: str,
) -> str:
    """The authorization-code request with PKCE S256 (RFC 6749 §4.1.1, RFC 7636 §4.3); scopes once each."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(dict.fromkeys(scopes)),
        "state": state,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    return f"{endpoint}?{urlencode(params, quote_via=quote)}"


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
