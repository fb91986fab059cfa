"""Fixtures for the HubSpot connector tests: a served sandbox portal, an OAuth TokenSource that
re-mints through the sandbox's OAuth server (counting refreshes), and a SourceHarness."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from connectors.hubspot import HubSpotConfig, HubSpotConnector
from connectors.hubspot.reader import MODIFIED_PROPERTY
from sandbox.hubspot import HubSpotSandbox
from sandbox.tls import SandboxCA
from schemas.connector import Record
from tests.sandbox.hubspot_support import Served, serve

__all__ = ["HubSpotHarness", "SandboxTokens", "connect", "hs_ca", "make_connector", "portal"]

_counter = itertools.count(1)


class SandboxTokens:
    """A TokenSource over the sandbox's OAuth server: ``refresh`` re-mints via the refresh token,
    single-flight by the rejected token, and counts how often it had to."""

    def __init__(
        self, hs: HubSpotSandbox, scope: str = "crm.objects.contacts.read crm.objects.contacts.write"
    ) -> None:
        self.hs = hs
        self.app = hs.register_app(["https://crmhub.test/oauth/callback"])
        grant = hs.issue_oauth_tokens(self.app.client_id, scope)
        self._access = grant.access_token
        self._refresh = grant.refresh_token or ""
        self.refreshes = 0

    def access_token(self) -> str:
        return self._access

    def refresh(self, rejected: str) -> str:
        if rejected != self._access:  # someone already refreshed
            return self._access
        grant = self.hs.oauth.refresh(
            refresh_token=self._refresh, client_id=self.app.client_id, client_secret=self.app.client_secret
        )
        self.refreshes += 1
        self._access = grant.access_token
        return self._access


def make_connector(served: Served, tokens: SandboxTokens, **overrides: Any) -> HubSpotConnector:
    """A connector on the served sandbox; tests that do not test pacing lift the search limit."""
    options: dict[str, Any] = {
        "base_url": served.srv.url,
        "ca_bundle": served.ca.ca_path,
        "search_settle_s": 0.0,
        "search_rate_per_s": 100.0,
    }
    client_options = {k: overrides.pop(k) for k in ("sleep", "now") if k in overrides}
    options.update(overrides)
    return HubSpotConnector(HubSpotConfig(**options), tokens, **client_options)


def portal(hs_ca: SandboxCA, counts: dict[str, int], **sandbox_options: Any) -> Iterator[Served]:
    """A served sandbox seeded with ``counts``; limits off unless ``sandbox_options`` set them."""
    options: dict[str, Any] = {"burst_limit": None, "search_per_second": None, **sandbox_options}
    hs = HubSpotSandbox(**options)
    hs.seed(counts, seed=3)
    yield from serve(hs, hs_ca)


_FIELDS = {
    "contacts": ["email", "firstname", "lastname", "city"],
    "companies": ["name", "domain", "city"],
    "deals": ["dealname", "amount", "dealstage"],
}
_EXTERNAL_ID = {"contacts": "email", "companies": "external_id", "deals": "external_id"}


@dataclass
class HubSpotHarness:
    """SourceHarness over the sandbox's Python handle (one stream per harness)."""

    hs: HubSpotSandbox
    stream: str
    primary_key: str = "hs_object_id"
    cursor_field: str = field(init=False)
    external_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.cursor_field = MODIFIED_PROPERTY[self.stream]
        self.external_id = _EXTERNAL_ID[self.stream]

    def live_ids(self, stream: str) -> set[str]:
        return {r.id for r in self.hs.store.dump(stream) if not r.deleted}

    def create(self, stream: str, count: int) -> list[str]:
        return [self.hs.create_record(stream, r) for r in self.new_records(stream, count)]

    def modify(self, stream: str, ids: Sequence[str]) -> None:
        for i in ids:
            assert self.hs.update_record(stream, i, {"city": f"Moved {next(_counter)}"})

    def delete(self, stream: str, ids: Sequence[str]) -> None:
        for i in ids:
            assert self.hs.delete_record(stream, i)

    def freeze_clock(self) -> None:
        self.hs.store.clock.freeze()

    def unfreeze_clock(self) -> None:
        self.hs.store.clock.unfreeze()

    def new_records(self, stream: str, count: int) -> list[Record]:
        tag = uuid.uuid4().hex[:8]
        out: list[Record] = []
        for k in range(count):
            n = f"{tag}-{k}"
            if stream == "contacts":
                out.append({"email": f"new-{n}@example.com", "firstname": "Nova", "lastname": f"N{n}"})
            elif stream == "companies":
                out.append({"external_id": f"ext-new-{n}", "name": f"Newco {n}", "domain": f"{n}.example"})
            else:
                out.append({"external_id": f"ext-new-{n}", "dealname": f"Deal {n}", "amount": 100 + k})
        return out

    def invalid_record(self, stream: str) -> tuple[Record, str]:
        if stream == "contacts":
            return {"email": f"not-an-email-{uuid.uuid4().hex[:6]}", "firstname": "Bad"}, "INVALID_EMAIL"
        return {"external_id": f"ext-bad-{uuid.uuid4().hex[:6]}", "city": "X", "no_such_prop": "1"}, (
            "PROPERTY_DOESNT_EXIST"
        )

    def expire_tokens(self) -> None:
        self.hs.oauth.expire_all_access_tokens()

    def fields(self, stream: str) -> list[str]:
        return list(_FIELDS[stream])


@pytest.fixture
def connect() -> Iterator[Callable[..., HubSpotConnector]]:
    """``connect(served, tokens=None, **config)``: connectors closed at teardown (before the portal,
    when the test asked for the portal first), so no pooled TLS connection outlives its server."""
    made: list[HubSpotConnector] = []

    def factory(served: Served, tokens: SandboxTokens | None = None, **overrides: Any) -> HubSpotConnector:
        conn = make_connector(served, tokens or SandboxTokens(served.hs), **overrides)
        made.append(conn)
        return conn

    yield factory
    for conn in made:
        conn.close()


@pytest.fixture(scope="session")
def hs_ca(tmp_path_factory: pytest.TempPathFactory) -> SandboxCA:
    return SandboxCA.ensure(tmp_path_factory.mktemp("hubspot-connector-ca"))
