"""``Connector.hosting_instance``: where the vendor says a connection's data lives, as the registry
names endpoint instances — HubSpot's ``dataHostingLocation`` as is, Salesforce's
``Organization.InstanceName`` mapped by prefix (a guess, see connectors/salesforce/connector.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.salesforce.connector import instance_region
from sandbox.salesforce import SalesforceSandbox
from sandbox.tls import SandboxCA
from tests.connectors.hubspot_harness import connect, hs_ca, portal  # noqa: F401 - fixtures
from tests.connectors.salesforce_harness import Org, serve, sf_ca  # noqa: F401 - fixtures


@pytest.mark.parametrize("location", ["eu1", "na1", "ap1"])
def test_hubspot_reads_the_data_hosting_location(
    hs_ca: SandboxCA,  # noqa: F811
    connect: Callable[..., HubSpotConnector],  # noqa: F811
    location: str,
) -> None:
    hosted = location.upper() if location == "ap1" else location  # any case from the vendor
    with contextlib.contextmanager(portal)(hs_ca, {}, data_hosting_location=hosted) as served:
        connector = connect(served)
        try:
            before = connector.client.calls
            assert connector.hosting_instance() == location  # lower-cased as the registry names them
            assert connector.client.calls == before + 1
        finally:
            connector.close()  # before the portal stops: no pooled TLS connection outlives it


@pytest.fixture(params=["EU44", "NA135", "USA244S", "GBR12S", "AP9"])
def org(request: pytest.FixtureRequest, sf_ca: SandboxCA) -> Iterator[Org]:  # noqa: F811
    yield from serve(SalesforceSandbox(instance_name=request.param), sf_ca)


def test_salesforce_reads_the_org_instance(org: Org) -> None:
    expected = {"EU44": "eu", "NA135": "na", "USA244S": "na", "GBR12S": "uk", "AP9": None}
    assert org.connector().hosting_instance() == expected[org.sb.instance_name]


def test_instance_prefixes() -> None:
    names = ("eu44", " EU9 ", "NA1", "UK3", "DEU2S", "FRA4S", "GBR1S", "USA12S")
    assert [instance_region(n) for n in names] == ["eu", "eu", "na", "uk", "eu", "eu", "uk", "na"]
    for unmapped in ("EUROPA", "CS42", "AP9", ""):  # no digit after a prefix, or a prefix not mapped
        assert instance_region(unmapped) is None
