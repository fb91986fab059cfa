"""The connector contract suite (connectors.testing) against the HubSpot sandbox, for contacts and
companies: paging, incremental = full, shared timestamps, deletes, idempotent upserts, per-record
failures, and a 401 that refreshes once and re-reads the same page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.testing import ConnectorContract
from sandbox.hubspot.quirks import Quirks
from sandbox.tls import SandboxCA
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import HubSpotHarness, SandboxTokens, make_connector, portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca


@pytest.fixture(params=["contacts", "companies"])
def stream(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    """With production's faults on (docs/VENDOR-FAITHFULNESS.md): stale search hits (short and
    empty pages with a next cursor), URL-encoded list cursors, batch create answering 200."""
    rules = Quirks(stale_search_hits_s=3600, encoded_list_cursors=True, batch_create_status=200)
    yield from portal(hs_ca, {"contacts": 120, "companies": 60}, quirks=rules)


@pytest.fixture
def tokens(served: Served) -> SandboxTokens:
    return SandboxTokens(served.hs)


@pytest.fixture
def connector(served: Served, tokens: SandboxTokens) -> Iterator[HubSpotConnector]:
    conn = make_connector(served, tokens)
    yield conn
    conn.close()


@pytest.fixture
def harness(served: Served, stream: str) -> HubSpotHarness:
    return HubSpotHarness(served.hs, stream)


class TestHubSpotContract(ConnectorContract):
    def test_refresh_happens_once_per_expiry(
        self, connector: HubSpotConnector, harness: HubSpotHarness, tokens: SandboxTokens, stream: str
    ) -> None:
        self.test_expired_token_refreshes_and_rereads_the_same_page(connector, harness, stream)
        assert tokens.refreshes == 1
