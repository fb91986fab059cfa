"""Passwords, session tokens, CSRF tokens and security headers of the web app.

* Passwords: ``hashlib.scrypt`` (n=2**14, r=8, p=1, 16-byte salt, 32-byte key), stored as
  ``scrypt$n$r$p$salt$hash`` (base64), compared in constant time.
* Session cookie: 256 random bits; the database keeps only its SHA-256. HttpOnly, SameSite=Lax,
  Secure when the request came over https.
* CSRF: a logged-in form carries HMAC-SHA256(session token, "csrf") — derivable only from the cookie,
  stored nowhere. The login form (no session yet) uses a double-submit cookie.
* Headers on every response: a CSP without inline scripts, X-Frame-Options DENY, Referrer-Policy,
  X-Content-Type-Options nosniff.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "CSP",
    "RejectNulBytes",
    "SecurityHeaders",
    "csrf_for_session",
    "hash_password",
    "login_key",
    "new_token",
    "token_hash",
    "verify_password",
]

_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
_MAXMEM = 64 * 1024 * 1024

# 'form-action https:' lets the Connect buttons' POST redirect on to the provider's consent page.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self' https:"
)


# The auditors' HTML reports are standalone files (styled inline so they read the same offline).
AUDIT_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password`` in the self-describing ``scrypt$…`` format."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN, maxmem=_MAXMEM)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=_MAXMEM,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# A hash to check against when the user does not exist, so both cases take the same time.
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_for_session(session_token: str) -> str:
    """The CSRF token of a session: only someone holding the session cookie can compute it."""
    return hmac.new(session_token.encode("utf-8"), b"crmhub-csrf", hashlib.sha256).hexdigest()


def login_key(tenant: str, email: str, ip: str) -> str:
    """The rate-limit key of a login attempt (a hash: no email or IP is stored)."""
    material = f"{tenant}\x00{email.strip().lower()}\x00{ip}".encode()
    return hashlib.sha256(material).hexdigest()


class RejectNulBytes:
    """400 for a URL whose path or query holds a NUL byte: no store accepts one (PostgreSQL text
    refuses it), so such a request can only be a probe. Pure ASGI, before anything reads the URL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = bytes(scope.get("query_string", b"")).lower()
            if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
                body = b'{"detail":"the URL contains a NUL byte"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body)),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class SecurityHeaders(BaseHTTPMiddleware):
    """Adds the security headers to every response."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        csp = AUDIT_CSP if request.url.path.startswith("/audit/") else CSP
        response.headers.setdefault("Content-Security-Policy", csp)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if (
            request.url.path not in ("/healthz", "/readyz", "/metrics")
            and "cache-control" not in response.headers
        ):
            response.headers["Cache-Control"] = "no-store"
        return response
