"""Shared fixtures for the Salesforce sandbox tests: a CA, a served org, real simple-salesforce clients."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce

from connectors.salesforce.client import pinned_session
from sandbox.salesforce import SalesforceSandbox
from sandbox.server import ServerThread
from sandbox.tls import SandboxCA


@dataclass
class Org:
    sb: SalesforceSandbox
    srv: ServerThread
    ca: SandboxCA
    token: str
    _sessions: list[requests.Session] = field(default_factory=list)

    def session(self) -> requests.Session:
        """A requests session trusting the sandbox CA (closed at teardown)."""
        s = pinned_session(self.ca.ca_path)
        self._sessions.append(s)
        return s

    def client(self, token: str | None = None) -> Any:
        """simple-salesforce against the sandbox, with a direct session id (the OAuth access token)."""
        return Salesforce(instance_url=self.srv.url, session_id=token or self.token, session=self.session())

    def close(self) -> None:
        for s in self._sessions:
            s.close()
        # A test that kept a simple-salesforce exception (pytest.raises) holds a reference cycle through
        # the traceback to the response's socket file; collect it so the socket closes and the server
        # can shut down without waiting for that keep-alive connection.
        gc.collect()


@pytest.fixture(scope="session")
def sf_ca(tmp_path_factory: pytest.TempPathFactory) -> SandboxCA:
    return SandboxCA.ensure(tmp_path_factory.mktemp("salesforce-ca"))


def serve(sb: SalesforceSandbox, ca: SandboxCA) -> Iterator[Org]:
    srv = ServerThread(sb.app(), ca, name="salesforce").start()
    sb.base_url = srv.url
    org = Org(sb, srv, ca, sb.issue_token())
    try:
        yield org
    finally:
        org.close()
        srv.stop()
        sb.store.close()


@pytest.fixture
def org(sf_ca: SandboxCA) -> Iterator[Org]:
    """A fresh org with 20 accounts, 300 contacts and 40 leads."""
    sb = SalesforceSandbox()
    sb.seed({"Account": 20, "Contact": 300, "Lead": 40}, seed=3)
    yield from serve(sb, sf_ca)


@pytest.fixture(scope="module")
def big_org(sf_ca: SandboxCA) -> Iterator[Org]:
    """A read-mostly org with 6,500 contacts (several REST pages), shared by a module's tests."""
    sb = SalesforceSandbox()
    sb.seed({"Account": 50, "Contact": 6500}, seed=11)
    yield from serve(sb, sf_ca)
