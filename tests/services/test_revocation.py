"""Revocation (:mod:`services.revocation`): every grant of a tenant ended at respx-mocked vendors, one
outcome per connection, bounded retries, local tokens erased only once the vendor revoked, and a
``revoke`` lineage event per connection — never a token in an event, a reason or a log line.

Runs on the ``db_engine`` fixture (SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL). The same
against the sandbox vendors over HTTPS: tests/chaos/test_offboarding.py.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
import pytest

from governance.lineage import Ledger, RunRef
from schemas.lineage import EventKind
from services.credentials import DATASET_TOKEN, PURPOSE, OAuthService
from services.revocation import RevokeOutcome, revoke_tenant
from store import connections as store
from tests.connectors.oauth_support import (
    HS_REFRESH_TOKENS,
    HS_UNINSTALL,
    SF_INSTANCE_REVOKE,
    form_of,
    hs_grant,
    sf_config,
    sf_grant,
)
from tests.services.test_credentials import clock, connect, keyring, mock, sealed_of, svc, vault

__all__ = ["clock", "keyring", "mock", "svc", "vault"]  # fixtures shared with test_credentials

RUN = RunRef(tenant="acme", run_id="offboard:acme:2026-01-05T12:00:00.000000Z")
TOKENS = ("sf-access-1", "sf-refresh-1", "hs-access-1", "hs-refresh-1", "sf-access-2", "sf-refresh-2")


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _events(db_engine) -> list[dict[str, object]]:
    return [dict(e.details) for e in Ledger(db_engine, "acme").read_events() if e.kind is EventKind.REVOKE]


def test_every_grant_is_ended_and_only_then_its_tokens_erased(svc, mock, db_engine, caplog) -> None:
    sf = connect(svc, mock, "salesforce", sf_grant())
    hs = connect(svc, mock, "hubspot", hs_grant())
    connect(svc, mock, "hubspot", hs_grant("hs-other-a", "hs-other-r"), tenant="globex")
    sf_revoke = mock.post(SF_INSTANCE_REVOKE).mock(side_effect=[httpx.Response(200), httpx.Response(400)])
    uninstall = mock.delete(HS_UNINSTALL).mock(return_value=httpx.Response(204))
    delete = mock.delete(url__startswith=f"{HS_REFRESH_TOKENS}/").mock(return_value=httpx.Response(204))
    with caplog.at_level(logging.DEBUG):
        results = revoke_tenant(svc, RUN, sleep=Sleeps())
    assert sorted((r.connection_id, r.provider, r.outcome, r.attempts) for r in results) == sorted(
        [(sf.id, "salesforce", RevokeOutcome.REVOKED, 1), (hs.id, "hubspot", RevokeOutcome.REVOKED, 1)]
    )
    assert [form_of(c.request)["token"] for c in sf_revoke.calls] == ["sf-refresh-1", "sf-access-1"]
    assert uninstall.call_count == 1 and delete.call_count == 1  # globex untouched
    for info in (sf, hs):
        row = sealed_of(db_engine, info.id)
        assert row.status is store.ConnectionStatus.REVOKED
        assert row.access_token_sealed is None and row.refresh_token_sealed is None
        assert row.status_message is not None and "by offboarding" in row.status_message
    assert svc.list("globex")[0].status is store.ConnectionStatus.ACTIVE
    assert [e["outcome"] for e in _events(db_engine)] == ["revoked", "revoked"]
    shown = caplog.text + "".join(
        e.canonical_bytes().decode() for e in Ledger(db_engine, "acme").read_events()
    )
    assert not any(t in shown for t in TOKENS)


def test_a_vendor_that_says_already_invalid_counts_as_revoked(svc, mock, db_engine) -> None:
    sf = connect(svc, mock, "salesforce", sf_grant())
    mock.post(SF_INSTANCE_REVOKE).mock(return_value=httpx.Response(400, json={"error": "invalid_token"}))
    (result,) = revoke_tenant(svc, RUN)
    assert result.outcome is RevokeOutcome.ALREADY_INVALID and result.ended
    assert sealed_of(db_engine, sf.id).refresh_token_sealed is None


def test_transient_failures_are_retried_a_bounded_number_of_times_then_reported(svc, mock, db_engine) -> None:
    sf = connect(svc, mock, "salesforce", sf_grant())
    route = mock.post(SF_INSTANCE_REVOKE).mock(return_value=httpx.Response(503))
    sleeps = Sleeps()
    (result,) = revoke_tenant(svc, RUN, sleep=sleeps)
    assert result.outcome is RevokeOutcome.FAILED and not result.ended
    assert result.attempts == 4 and route.call_count == 4 and len(sleeps) == 3
    assert sum(sleeps) <= 30 and result.reason.startswith("transient:") and "HTTP 503" in result.reason
    row = sealed_of(db_engine, sf.id)  # kept: a later attempt must still be able to revoke
    assert row.status is store.ConnectionStatus.ACTIVE and row.refresh_token_sealed is not None
    assert _events(db_engine)[-1]["outcome"] == "failed"
    # The vendor is back: running it again revokes.
    route.mock(side_effect=[httpx.Response(200), httpx.Response(400)])
    (again,) = revoke_tenant(svc, RUN, sleep=sleeps)
    assert again.outcome is RevokeOutcome.REVOKED
    # ...and once more, nothing is held any more.
    (third,) = revoke_tenant(svc, RUN)
    assert third.outcome is RevokeOutcome.NOT_HELD and "revoked" in third.reason and third.attempts == 0


def test_a_rate_limit_is_waited_out_and_a_refusal_is_not_retried(svc, mock) -> None:
    connect(svc, mock, "salesforce", sf_grant())
    mock.post(SF_INSTANCE_REVOKE).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(200),
            httpx.Response(400),
        ]
    )
    sleeps = Sleeps()
    (limited,) = revoke_tenant(svc, RUN, sleep=sleeps)
    assert limited.outcome is RevokeOutcome.REVOKED and limited.attempts == 2 and sleeps == [2.0]
    connect(svc, mock, "hubspot", hs_grant())
    route = mock.delete(HS_UNINSTALL).mock(return_value=httpx.Response(403))
    (refused,) = [r for r in revoke_tenant(svc, RUN, sleep=sleeps) if r.provider == "hubspot"]
    assert refused.outcome is RevokeOutcome.FAILED and refused.attempts == 1 and route.call_count == 1
    assert refused.reason.startswith("auth:") and "HTTP 403" in refused.reason


def test_connections_without_tokens_are_reported_not_held(svc, mock, db_engine, clock) -> None:
    hs = connect(svc, mock, "hubspot", hs_grant())
    with db_engine.begin() as conn:
        store.mark_reauthorization_required(conn, hs.id, "refresh token dead", now=clock())
    (result,) = revoke_tenant(svc, RUN)
    assert result.outcome is RevokeOutcome.NOT_HELD and result.attempts == 0 and result.ended
    assert "reauthorization_required" in result.reason


def test_a_provider_that_is_not_configured_fails_only_its_connection(svc, mock, db_engine, vault) -> None:
    connect(svc, mock, "salesforce", sf_grant())
    hs = connect(svc, mock, "hubspot", hs_grant())
    mock.post(SF_INSTANCE_REVOKE).mock(side_effect=[httpx.Response(200), httpx.Response(400)])
    with OAuthService(db_engine, vault, [sf_config()]) as only_salesforce:
        by = {r.provider: r for r in revoke_tenant(only_salesforce, RUN)}
    sf_result, hs_result = by["salesforce"], by["hubspot"]
    assert sf_result.outcome is RevokeOutcome.REVOKED
    assert hs_result.outcome is RevokeOutcome.FAILED and "not configured" in hs_result.reason
    assert sealed_of(db_engine, hs.id).refresh_token_sealed is not None


def test_a_refresh_token_rotated_while_it_was_revoked_is_revoked_too(svc, mock, db_engine, clock) -> None:
    sf = connect(svc, mock, "salesforce", sf_grant())
    seen: list[str] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        seen.append(form_of(request)["token"])
        if len(seen) == 1:  # a worker's refresh rotates the grant while we revoke the old one
            seal = svc.vault.seal
            with db_engine.begin() as conn:
                store.store_tokens(
                    conn,
                    sf.id,
                    access_token_sealed=seal(
                        "acme",
                        b"sf-access-2",
                        dataset=DATASET_TOKEN,
                        object_id=f"{sf.id}/access",
                        purpose=PURPOSE,
                    ),
                    refresh_token_sealed=seal(
                        "acme",
                        b"sf-refresh-2",
                        dataset=DATASET_TOKEN,
                        object_id=f"{sf.id}/refresh",
                        purpose=PURPOSE,
                    ),
                    access_expires_at=clock() + timedelta(hours=1),
                    now=clock(),
                )
        return httpx.Response(200)

    mock.post(SF_INSTANCE_REVOKE).mock(side_effect=vendor)
    (result,) = revoke_tenant(svc, RUN)
    assert result.outcome is RevokeOutcome.REVOKED and result.attempts == 2
    assert seen == ["sf-refresh-1", "sf-access-1", "sf-refresh-2", "sf-access-2"]
    assert sealed_of(db_engine, sf.id).refresh_token_sealed is None


@pytest.mark.parametrize("tenant", ["nobody"])
def test_a_tenant_without_connections_revokes_nothing(svc, db_engine, tenant) -> None:
    assert revoke_tenant(svc, RunRef(tenant=tenant, run_id="offboard:nobody:t")) == []
    assert Ledger(db_engine, tenant).read_events() == []
