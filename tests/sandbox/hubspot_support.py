"""Shared fixtures for the HubSpot sandbox tests: a CA, a served sandbox, real hubspot-api-client clients."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hubspot import HubSpot
from urllib3.util.retry import Retry

from sandbox.hubspot import HubSpotSandbox
from sandbox.server import ServerThread
from sandbox.tls import SandboxCA


@dataclass
class Served:
    hs: HubSpotSandbox
    srv: ServerThread
    ca: SandboxCA
    token: str

    def client(self, token: str | None = None, *, retry: Retry | None = None) -> HubSpot:
        """hubspot-api-client over HTTPS, verifying with the sandbox CA (kwargs reach every Configuration).

        ``retry=Retry(0)`` turns off urllib3's default retries (which re-send GETs answered 429/503
        with a Retry-After header, sleeping as told).
        """
        return HubSpot(
            access_token=token or self.token, host=self.srv.url, ssl_ca_cert=str(self.ca.ca_path), retry=retry
        )


@pytest.fixture(scope="session")
def hs_ca(tmp_path_factory: pytest.TempPathFactory) -> SandboxCA:
    return SandboxCA.ensure(tmp_path_factory.mktemp("hubspot-ca"))


def serve(hs: HubSpotSandbox, ca: SandboxCA) -> Iterator[Served]:
    srv = ServerThread(hs.app(), ca, name="hubspot").start()
    hs.base_url = srv.url
    try:
        yield Served(hs, srv, ca, hs.issue_private_app_token())
    finally:
        # Client pools that tests dropped (often only reachable through exception tracebacks) still
        # hold TLS connections; uvicorn's graceful shutdown waits for their close_notify. Collect them.
        gc.collect()
        srv.stop()
        hs.store.close()


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    """A fresh portal with 250 contacts, 30 companies and 12 deals."""
    hs = HubSpotSandbox()
    hs.seed({"contacts": 250, "companies": 30, "deals": 12}, seed=7)
    yield from serve(hs, hs_ca)
