"""Where the sandbox CRMs say their data lives, as the vendors do: HubSpot's account information API
(``GET /account-info/v3/details`` → ``dataHostingLocation``) and Salesforce's ``Organization``
object (``SELECT InstanceName FROM Organization``); both configurable, defaulting to the demo's EU
tenant's locations, both behind the usual bearer-token check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.salesforce.client import pinned_session
from sandbox.hubspot import HubSpotSandbox
from sandbox.salesforce import SalesforceSandbox
from sandbox.tls import SandboxCA
from tests.sandbox import hubspot_support, salesforce_support
from tests.sandbox.hubspot_support import Served, hs_ca  # noqa: F401 - fixture
from tests.sandbox.salesforce_support import Org, sf_ca  # noqa: F401 - fixture


@pytest.fixture(params=[None, "na1"], ids=["default", "na1"])
def portal(request: pytest.FixtureRequest, hs_ca: SandboxCA) -> Iterator[Served]:  # noqa: F811
    options = {} if request.param is None else {"data_hosting_location": request.param}
    yield from hubspot_support.serve(HubSpotSandbox(**options), hs_ca)


def test_hubspot_account_details_name_the_data_hosting_location(portal: Served) -> None:
    url = f"{portal.srv.url}/account-info/v3/details"
    with pinned_session(portal.ca.ca_path) as s:  # REQUESTS_CA_BUNDLE would override plain verify=
        anonymous = s.get(url, timeout=10)
        assert anonymous.status_code == 401
        r = s.get(url, headers={"Authorization": f"Bearer {portal.token}"}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dataHostingLocation"] == (portal.hs.data_hosting_location)
    assert portal.hs.data_hosting_location in ("eu1", "na1")
    assert body["portalId"] == portal.hs.portal_id and body["accountType"] == "STANDARD"
    assert {"timeZone", "companyCurrency", "uiDomain", "utcOffset"} <= body.keys()


@pytest.fixture(params=[None, "NA135"], ids=["default", "NA135"])
def org(request: pytest.FixtureRequest, sf_ca: SandboxCA) -> Iterator[Org]:  # noqa: F811
    options = {} if request.param is None else {"instance_name": request.param}
    yield from salesforce_support.serve(SalesforceSandbox(**options), sf_ca)


def test_salesforce_organization_names_the_instance(org: Org) -> None:
    sf = org.client()
    body = sf.query("SELECT InstanceName, IsSandbox FROM Organization")
    assert body["totalSize"] == 1 and body["done"] is True
    (row,) = body["records"]
    assert row["InstanceName"] == org.sb.instance_name and org.sb.instance_name in ("EU44", "NA135")
    assert row["IsSandbox"] is False and row["attributes"]["type"] == "Organization"
    s = org.session()
    bad = s.get(
        f"{org.srv.url}/services/data/v59.0/query",
        params={"q": "SELECT Secret__c FROM Organization"},
        headers={"Authorization": f"Bearer {org.token}"},
        timeout=10,
    )
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"
    anonymous = s.get(
        f"{org.srv.url}/services/data/v59.0/query",
        params={"q": "SELECT InstanceName FROM Organization"},
        timeout=10,
    )
    assert anonymous.status_code == 401
