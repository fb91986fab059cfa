"""Webhook signatures of controller notices, the Standard Webhooks scheme (Stripe's, with an id).

Spec: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
(the same construction as Stripe's ``Stripe-Signature``, https://docs.stripe.com/webhooks#verify-events,
which signs ``timestamp.body``; Standard Webhooks adds the message id in front):

- headers ``webhook-id`` (the notice id: identical on every retry), ``webhook-timestamp`` (integer
  Unix seconds of this attempt) and ``webhook-signature`` (space-separated ``v1,<base64>``);
- signature = base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), key = base64-decoded secret
  after its ``whsec_`` prefix;
- the receiver rejects a timestamp more than :data:`TOLERANCE_S` (5 minutes, the spec's advice) from
  its clock and remembers ids it accepted (:class:`ReplayGuard`), so a captured request replayed
  within the window is refused too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Final

from schemas.errors import AuthError, ConfigError

__all__ = [
    "TOLERANCE_S",
    "ReplayGuard",
    "WebhookRejected",
    "new_secret",
    "sign",
    "signed_headers",
    "verify",
]

TOLERANCE_S: Final = 300
_PREFIX: Final = "whsec_"


class WebhookRejected(AuthError):
    """A delivery whose headers, timestamp or signature do not verify (``code`` says which)."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return _PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(secret: str) -> bytes:
    if not secret.startswith(_PREFIX):
        raise ConfigError(
            "webhook secret must start with whsec_ (make one with services.webhook_signing.new_secret)"
        )
    try:
        return base64.b64decode(secret[len(_PREFIX) :], validate=True)
    except ValueError as exc:
        raise ConfigError("webhook secret after whsec_ must be base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a delivery (plus its content type)."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


class ReplayGuard:
    """The ids a receiver accepted within the tolerance window (older ones fail the timestamp check)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def admit(self, msg_id: str, timestamp: int, now: int) -> bool:
        """True the first time ``msg_id`` is seen; forgets ids older than twice the tolerance."""
        self._seen = {k: t for k, t in self._seen.items() if now - t <= 2 * TOLERANCE_S}
        if msg_id in self._seen:
            return False
        self._seen[msg_id] = timestamp
        return True


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: int,
    guard: ReplayGuard | None = None,
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """Check one delivery; returns its id. Raises :class:`WebhookRejected` naming what failed."""
    lower = {k.lower(): v for k, v in headers.items()}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not lower.get(name):
            raise WebhookRejected(f"header {name} missing", code="missing_header")
    msg_id = lower["webhook-id"]
    try:
        timestamp = int(lower["webhook-timestamp"])
    except ValueError as exc:
        raise WebhookRejected("webhook-timestamp is not integer seconds", code="invalid_timestamp") from exc
    if abs(now - timestamp) > tolerance_s:
        raise WebhookRejected("webhook-timestamp outside the tolerance", code="timestamp_out_of_tolerance")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, s) for s in lower["webhook-signature"].split()):
        raise WebhookRejected("no matching v1 signature", code="no_matching_signature")
    if guard is not None and not guard.admit(msg_id, timestamp, now):
        raise WebhookRejected("webhook-id already accepted (replay)", code="replayed")
    return msg_id
