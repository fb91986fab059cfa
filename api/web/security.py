"""Passwords, session tokens, CSRF tokens and security headers of the web app.

* Passwords: ``hashlib.scrypt`` (n=2**14, r=8, p=1, 16-byte salt, 32-byte key: 16 MiB and ~50 ms a
  hash), stored as ``scrypt$n$r$p$salt$hash`` (base64), compared in constant time. The web app hashes
  through :class:`PasswordHashing`: at most ``web.password_hash_slots`` at once, so a flood of
  logins cannot exhaust memory or CPU — beyond that a login waits briefly, then gets a 503.
* Session cookie: 256 random bits; the database keeps only its SHA-256. HttpOnly, SameSite=Lax,
  Secure when the request came over https.
* CSRF: a logged-in form carries HMAC-SHA256(session token, "csrf") — derivable only from the cookie,
  stored nowhere. The login form (no session yet) uses a double-submit cookie.
* Headers on every response: a CSP without inline scripts, ``frame-ancestors 'none'`` and
  ``form-action 'self'`` (the connections page adds the configured OAuth providers' authorize origins,
  where its Connect buttons' POST redirects to: :func:`csp_with_form_targets`), X-Frame-Options DENY,
  Referrer-Policy, X-Content-Type-Options nosniff; over https also Strict-Transport-Security.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterable

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "CSP",
    "DUMMY_HASH",
    "MIN_PASSWORD",
    "PasswordHashBusy",
    "PasswordHashing",
    "RejectNulBytes",
    "SecurityHeaders",
    "csp_with_form_targets",
    "csrf_for_session",
    "hash_password",
    "new_token",
    "token_hash",
    "verify_password",
]

_N, _R, _P, _DKLEN = 2**14, 8, 1, 32

MIN_PASSWORD = 12
"""The shortest password crmhub accepts for a web user (CLI and password page alike)."""
_MAXMEM = 64 * 1024 * 1024

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def csp_with_form_targets(origins: Iterable[str]) -> str:
    """:data:`CSP` whose ``form-action`` also allows ``origins`` (browsers apply ``form-action`` to
    the redirects a form submission follows, so a page whose form POST redirects to a provider's
    consent page must name that origin)."""
    extra = " ".join(sorted(set(origins)))
    return f"{CSP} {extra}" if extra else CSP


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


class PasswordHashBusy(Exception):
    """Every password-hash slot stayed taken for the whole wait: answer 503 and let the client retry."""


class PasswordHashing:
    """Password hashing and checking with at most ``slots`` hashes computing at once (thread-safe);
    a call that finds no free slot within ``wait_s`` raises :class:`PasswordHashBusy`."""

    def __init__(self, *, slots: int, wait_s: float) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self.wait_s = wait_s

    def _take(self) -> None:
        if not self._slots.acquire(timeout=self.wait_s):
            raise PasswordHashBusy

    def verify(self, password: str, stored: str) -> bool:
        """:func:`verify_password` within a slot."""
        self._take()
        try:
            return verify_password(password, stored)
        finally:
            self._slots.release()

    def hash(self, password: str) -> str:
        """:func:`hash_password` within a slot."""
        self._take()
        try:
            return hash_password(password)
        finally:
            self._slots.release()


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_for_session(session_token: str) -> str:
    """The CSRF token of a session: only someone holding the session cookie can compute it."""
    return hmac.new(session_token.encode("utf-8"), b"crmhub-csrf", hashlib.sha256).hexdigest()


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
    """Adds the security headers to every response (HSTS with ``hsts_max_age`` seconds on https; 0
    omits it). A response that set its own CSP keeps it."""

    def __init__(self, app: ASGIApp, *, hsts_max_age: int = 0) -> None:
        super().__init__(app)
        self.hsts = f"max-age={hsts_max_age}; includeSubDomains" if hsts_max_age else None

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        csp = AUDIT_CSP if request.url.path.startswith("/audit/") else CSP
        response.headers.setdefault("Content-Security-Policy", csp)
        if self.hsts and request.url.scheme == "https":
            response.headers["Strict-Transport-Security"] = self.hsts
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if (
            request.url.path not in ("/healthz", "/readyz", "/metrics")
            and "cache-control" not in response.headers
        ):
            response.headers["Cache-Control"] = "no-store"
        return response
