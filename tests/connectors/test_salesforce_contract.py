"""The connector contract suite against the Salesforce sandbox: Contact, Account and Lead, with full
reads over REST and (a second run for each object) over Bulk API 2.0."""

from __future__ import annotations

import pytest

from connectors.salesforce import SalesforceConnector
from connectors.testing import ConnectorContract
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import Org, SandboxHarness

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org

pytestmark = pytest.mark.integration


class TestSalesforceContract(ConnectorContract):
    @pytest.fixture(params=["Contact", "Account", "Lead"])
    def stream(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def harness(self, org: Org) -> SandboxHarness:
        return SandboxHarness(org.sb)

    @pytest.fixture(params=["rest", "bulk"])
    def connector(self, org: Org, request: pytest.FixtureRequest) -> SalesforceConnector:
        # bulk_threshold=0: every full read goes through a Bulk API 2.0 query job.
        return org.connector(bulk_threshold=0 if request.param == "bulk" else 1_000_000)
