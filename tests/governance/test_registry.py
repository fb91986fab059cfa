"""Subprocessor/transfer registry: EEA residency, recorded routes, fail-closed refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.registry import Registry, load_registry, transfer_event
from schemas.errors import ConfigError, PolicyError, TransferNotPermitted
from schemas.lineage import EventKind, TransferMechanism

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "subprocessors.yaml"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(EXAMPLE)


def test_example_loads_with_processor_and_endpoints(registry: Registry) -> None:
    assert registry.processor.id == "crmhub"
    assert registry.endpoint_region("hubspot", "eu1") == "eea"
    assert registry.endpoint_region("hubspot", "na1") == "us"
    assert registry.endpoint_region("salesforce", "eu") == "eea"
    assert registry.subprocessor("salesforce").country == "US"
    with pytest.raises(PolicyError, match="no registered region"):
        registry.endpoint_region("hubspot", "ap1")


@pytest.mark.parametrize(
    ("tenant_region", "src", "dst", "sub", "expected"),
    [
        ("eea", "eea", "eea", "hubspot", TransferMechanism.NONE),
        ("eea", "eea", "us", "salesforce", TransferMechanism.ADEQUACY),
        ("eea", "eea", "us", "hubspot", TransferMechanism.SCC),
        ("eea", "us", "us", "salesforce", TransferMechanism.ADEQUACY),  # already out: route still needed
        ("eea", "eea", "uk", "salesforce", TransferMechanism.ADEQUACY),
        ("us", "us", "us", "salesforce", TransferMechanism.NONE),
        ("us", "us", "eea", "hubspot", None),  # non-EEA tenants need a route for any move too
        ("eea", "eea", "us", "crmhub", None),  # the processor itself has no route out
        ("eea", "us", "eea", "hubspot", TransferMechanism.NONE),  # back into the EEA
    ],
)
def test_check_transfer(registry: Registry, tenant_region, src, dst, sub, expected) -> None:
    if expected is None:
        with pytest.raises(TransferNotPermitted, match="adequacy decision or SCCs"):
            registry.check_transfer(tenant_region, src, dst, sub)
    else:
        assert registry.check_transfer(tenant_region, src, dst, sub) is expected


def test_refusal_reason_is_precise(registry: Registry) -> None:
    with pytest.raises(TransferNotPermitted) as info:
        registry.check_transfer("eea", "eea", "us", "crmhub")
    message = str(info.value)
    assert "EEA tenant data is processed and stored in the EEA" in message
    assert "eea->us" in message
    assert "'crmhub'" in message
    assert info.value.code == "transfer_not_permitted"
    assert not info.value.kind.retryable


def test_unknown_and_unauthorised_parties_fail_closed(registry: Registry) -> None:
    with pytest.raises(TransferNotPermitted, match="region 'mars'"):
        registry.check_transfer("eea", "eea", "mars", "salesforce")
    with pytest.raises(PolicyError, match="not in the registry") as info:
        registry.check_transfer("eea", "eea", "eea", "pipedrive")
    assert info.value.code == "unknown_subprocessor"
    with pytest.raises(PolicyError, match="has not authorised subprocessor 'hubspot'"):
        registry.check_transfer("us", "us", "us", "hubspot", tenant="globex")
    with pytest.raises(PolicyError, match="does not process data in region 'ch'"):
        registry.check_transfer("eea", "eea", "ch", "salesforce")
    # crmhub itself is always authorised.
    assert registry.check_authorised("globex", "crmhub").role == "processor"


def test_transfer_builds_the_lineage_event(registry: Registry) -> None:
    hashes = ("ab" * 32, "cd" * 32)
    event = registry.transfer(
        tenant="acme",
        run_id="r1",
        from_region="eea",
        to_region="us",
        subprocessor="hubspot",
        record_id_hashes=hashes,
        sync_id="contacts",
        purpose="crm_sync",
    )
    assert event is not None
    assert event.kind is EventKind.TRANSFER
    assert (event.region_from, event.region_to, event.transfer_mechanism) == (
        "eea",
        "us",
        TransferMechanism.SCC,
    )
    assert event.counts == {"records": 2}
    assert event.record_id_hashes == hashes
    assert (
        registry.transfer(
            tenant="acme", run_id="r1", from_region="eea", to_region="eea", subprocessor="hubspot"
        )
        is None
    )
    with pytest.raises(TransferNotPermitted):
        registry.transfer(
            tenant="acme", run_id="r1", from_region="eea", to_region="us", subprocessor="crmhub"
        )
    direct = transfer_event(
        tenant="acme",
        run_id="r",
        subprocessor="salesforce",
        region_from="eea",
        region_to="us",
        mechanism=TransferMechanism.ADEQUACY,
        counts={"records": 5},
    )
    assert direct.counts == {"records": 5}


def test_bad_registry_files_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "regions: {eea: {name: EEA, eea: true}}\n"
        "subprocessors:\n"
        "  - {id: crmhub, role: processor, entity: x, service: y, country: DE, regions: [eea]}\n"
        "transfers:\n"
        "  - {from: eea, to: us, subprocessor: ghost, mechanism: scc, reference: r}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_registry(bad)
    assert "unknown region 'us'" in str(info.value)
    assert "unknown subprocessor 'ghost'" in str(info.value)
    bad.write_text("regions: {eea: {name: EEA, eea: true}}\nsubprocessors: []\n")
    with pytest.raises(ConfigError, match="role: processor"):
        load_registry(bad)
    bad.write_text(
        "regions: {eea: {name: EEA, eea: true}, us: {name: US, eea: false}}\n"
        "subprocessors:\n"
        "  - {id: crmhub, role: processor, entity: x, service: y, country: DE, regions: [eea]}\n"
        "transfers:\n"
        "  - {from: eea, to: us, subprocessor: crmhub, mechanism: none, reference: r}\n"
    )
    with pytest.raises(ConfigError, match="mechanism"):
        load_registry(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")
