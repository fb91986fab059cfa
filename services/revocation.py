"""Revocation: end every OAuth grant of a tenant's connections at the vendors, and say how it went.

One job: for each connection of the tenant that still holds tokens, ask the vendor to end the grant
(:meth:`connectors.oauth.TokenClient.end_grant` — Salesforce: revoke the refresh token, which takes
its access tokens along, then the access token; HubSpot: uninstall the app with the access token,
then delete the refresh token), then erase the local tokens. Each connection gets one
:class:`Revocation`:

=================  ===================================================================================
``revoked``        the vendor revoked the grant now; local tokens erased
``already_invalid`` the vendor says the tokens are unknown or already invalid (counts as revoked)
``not_held``       the connection held no tokens any more (disconnected, or its refresh token died
                   earlier: ``reason`` carries its status); nothing to send
``failed``         the vendor could not be made to revoke (``reason``: why); local tokens are *kept*
                   so that a later attempt can still revoke the grant
=================  ===================================================================================

Transient failures (5xx, timeouts, dropped connections, 429) are retried a bounded number of times
(:class:`~connectors.http.RequestRetry`: ``attempts`` sends, pauses ≤ ``max_pause_s`` and
``budget_s`` in all); a refusal (client credentials, a 403) is not. If a refresh rotated the refresh
token while it was being revoked, the new one is revoked too (local tokens are erased only if they
are still the ones revoked). Every outcome is a ``revoke`` lineage event of the run. Nothing here
writes a token to a log, an exception, an event or a reason.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from connectors.http import RequestRetry, send_with_retries
from connectors.oauth import Provider
from governance.lineage import Ledger, RunRef
from schemas.errors import CrmhubError
from schemas.lineage import DatasetRef, EventKind, LineageEvent
from services.credentials import OAuthService
from store import connections as connection_store
from store.connections import ConnectionRow

__all__ = ["DEFAULT_RETRY", "Revocation", "RevokeOutcome", "revoke_tenant"]

log = logging.getLogger(__name__)

DEFAULT_RETRY: Final = RequestRetry(attempts=4, budget_s=30.0, max_pause_s=10.0, base_s=0.5, cap_s=4.0)
_ROTATION_ROUNDS: Final = 3  # a refresh rotating the token while we revoke it, at most this often


class RevokeOutcome(StrEnum):
    """How a connection's grant stands after revocation (see the module docstring)."""

    REVOKED = "revoked"
    ALREADY_INVALID = "already_invalid"
    NOT_HELD = "not_held"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Revocation:
    """One connection's outcome: ``attempts`` is how many times the vendor was asked (0: never),
    ``reason`` says why it failed or what the connection was (no tokens, ever)."""

    connection_id: str
    provider: str
    outcome: RevokeOutcome
    attempts: int
    reason: str = ""

    @property
    def ended(self) -> bool:
        """The grant no longer works (or crmhub holds nothing of it): not ``failed``."""
        return self.outcome is not RevokeOutcome.FAILED

    def as_dict(self) -> dict[str, str | int]:
        return {
            "connection": self.connection_id,
            "provider": self.provider,
            "outcome": self.outcome.value,
            "attempts": self.attempts,
            "reason": self.reason,
        }


def revoke_tenant(
    oauth: OAuthService,
    run: RunRef,
    *,
    holding_tokens_only: bool = False,
    skip: Collection[str] = (),
    retry: RequestRetry = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[Revocation]:
    """End every grant of ``run.tenant``'s connections (oldest first) and append one ``revoke``
    lineage event per connection to the tenant's ledger. Never raises for a vendor failure: that
    is a ``failed`` outcome. ``holding_tokens_only`` leaves out connections that hold no tokens
    (no ``not_held`` outcomes) and ``skip`` the connection ids given: a second pass that catches
    a connection made while the first one ran."""
    with oauth.engine.connect() as conn:
        rows = [
            r
            for r in connection_store.list_connections(conn, tenant=run.tenant)
            if r.id not in skip
            and (
                not holding_tokens_only
                or r.access_token_sealed is not None
                or r.refresh_token_sealed is not None
            )
        ]
    results = [_revoke_one(oauth, row, retry=retry, sleep=sleep, clock=clock) for row in rows]
    if results:
        at = clock()
        Ledger(oauth.engine, run.tenant).append([_event(run, r, rows[i], at) for i, r in enumerate(results)])
    for r in results:
        log.info(
            "revocation: tenant=%s connection=%s provider=%s outcome=%s attempts=%d",
            run.tenant, r.connection_id, r.provider, r.outcome.value, r.attempts,
        )  # fmt: skip
    return results


def _revoke_one(
    oauth: OAuthService,
    row: ConnectionRow,
    *,
    retry: RequestRetry,
    sleep: Callable[[float], None],
    clock: Callable[[], datetime],
) -> Revocation:
    if row.access_token_sealed is None and row.refresh_token_sealed is None:
        state = row.status.value + (f" ({row.status_message})" if row.status_message else "")
        return Revocation(row.id, row.provider, RevokeOutcome.NOT_HELD, 0, f"held no tokens: {state}")
    attempts, revoked_any = 0, False
    for _ in range(_ROTATION_ROUNDS):
        try:
            revoked, sent = _end_grant(oauth, row, retry=retry, sleep=sleep)
        except _Failed as failed:
            attempts += failed.attempts
            return Revocation(row.id, row.provider, RevokeOutcome.FAILED, attempts, failed.reason)
        attempts, revoked_any = attempts + sent, revoked_any or revoked
        outcome = RevokeOutcome.REVOKED if revoked_any else RevokeOutcome.ALREADY_INVALID
        now = clock()
        message = (
            f"grant ended at {row.provider} ({outcome.value}) by offboarding at {now:%Y-%m-%dT%H:%M:%SZ}"
        )
        with oauth.engine.begin() as conn:
            done = connection_store.delete_tokens_if_unchanged(
                conn, row.id, refresh_token_sealed=row.refresh_token_sealed, message=message, now=now
            )
            latest = None if done else connection_store.get_connection(conn, row.id)
        if latest is None or (latest.access_token_sealed is None and latest.refresh_token_sealed is None):
            return Revocation(row.id, row.provider, outcome, attempts)  # erased, by us or a disconnect
        row = latest  # a refresh rotated the token while we revoked it: revoke what it holds now
    reason = "transient: the refresh token kept rotating while it was revoked; run again"
    return Revocation(row.id, row.provider, RevokeOutcome.FAILED, attempts, reason)


class _Failed(Exception):
    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


def _end_grant(
    oauth: OAuthService, row: ConnectionRow, *, retry: RequestRetry, sleep: Callable[[float], None]
) -> tuple[bool, int]:
    """Ask the vendor to end the row's grant, retrying transient failures; (revoked now, sends)."""
    sent = 1

    def count(_error: CrmhubError, _pause: float) -> None:
        nonlocal sent
        sent += 1

    try:
        client = oauth.client(row.provider)
        access, refresh = oauth.open_tokens(row)
        instance = row.instance_url if client.config.provider is Provider.SALESFORCE else None
        revoked = send_with_retries(
            lambda: client.end_grant(refresh_token=refresh, access_token=access, instance_url=instance),
            what=f"revoking connection {row.id}",
            idempotent=True,
            policy=retry,
            sleep=sleep,
            rng=random.Random(),  # noqa: S311 - backoff jitter, not crypto
            on_retry=count,
        )
    except CrmhubError as exc:  # the vendor's refusal, the retries used up, or keys already shredded
        raise _Failed(f"{exc.kind.value}: {exc.message}"[:300], sent) from None
    return revoked, sent


def _event(run: RunRef, result: Revocation, row: ConnectionRow, at: datetime) -> LineageEvent:
    return run.event(
        EventKind.REVOKE,
        at=at,
        source=DatasetRef(namespace=row.instance_url or row.provider, name=f"connection/{row.id}"),
        subprocessor=row.provider,
        counts={"attempts": result.attempts, "ended": int(result.ended)},
        details={
            "connection": row.id,
            "provider": row.provider,
            "outcome": result.outcome.value,
            "reason": result.reason or None,
        },
    )
