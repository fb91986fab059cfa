"""workflows.context.endpoint_of: the registry endpoint a run's transfer check uses for a connection —
the sync's named instance, else the region the vendor reported at connect (stored with the
connection), else the host's; none of them → ``unknown_endpoint`` naming the fix."""

from __future__ import annotations

from dataclasses import replace

import pytest

from governance.registry import Registry, load_registry
from schemas.errors import PolicyError
from services.wiring import default_subprocessors_file
from store.connections import ConnectionRow
from tests.services.test_connectors import connection_row
from workflows.context import endpoint_of


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(default_subprocessors_file())


def row(provider: str, url: str, region: str | None) -> ConnectionRow:
    return replace(connection_row(provider, url), region_instance=region)


def test_the_stored_region_is_used_when_the_sync_names_none(registry: Registry) -> None:
    sandbox_sf = row("salesforce", "https://127.0.0.1:8443", "eu")  # a host no endpoint names
    assert endpoint_of(registry, sandbox_sf, None).region == "eea"
    assert endpoint_of(registry, sandbox_sf, "na").region == "us"  # the sync's named instance wins
    hubspot = row("hubspot", "https://127.0.0.1:8444", "na1")
    assert (endpoint_of(registry, hubspot, None).instance, endpoint_of(registry, hubspot, None).region) == (
        "na1",
        "us",
    )


def test_without_a_stored_region_the_host_decides_or_the_fix_is_named(registry: Registry) -> None:
    by_host = row("hubspot", "https://api-eu1.hubapi.com", None)
    assert endpoint_of(registry, by_host, None).instance == "eu1"
    unknown = row("salesforce", "https://acme.my.salesforce.com", None)
    with pytest.raises(PolicyError, match="has no registered region: name its endpoint instance") as err:
        endpoint_of(registry, unknown, None)
    assert err.value.code == "unknown_endpoint"
    with pytest.raises(PolicyError, match="endpoint salesforce/ap has no registered region"):
        endpoint_of(registry, replace(unknown, region_instance="ap"), None)
