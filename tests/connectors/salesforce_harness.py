"""A served sandbox org, a counting TokenSource and a SourceHarness for the Salesforce connector tests."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from connectors.salesforce import SalesforceConfig, SalesforceConnector
from sandbox.salesforce import SalesforceSandbox
from sandbox.server import ServerThread
from sandbox.tls import SandboxCA
from schemas.connector import Record

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

FIELDS = {
    "Contact": ["FirstName", "LastName", "Email", "MailingAddress", "External_Id__c", "Lead_Score__c"],
    "Account": ["Name", "Industry", "NumberOfEmployees", "AnnualRevenue", "BillingAddress", "External_Id__c"],
    "Lead": ["FirstName", "LastName", "Company", "Email", "Address", "IsConverted", "External_Id__c"],
}


class CountingTokens:
    """A TokenSource that re-mints a sandbox token on refresh and counts refreshes."""

    def __init__(self, sb: SalesforceSandbox) -> None:
        self.sb = sb
        self.token = sb.issue_token()
        self.refreshes = 0
        self.rejected: list[str] = []

    def access_token(self) -> str:
        return self.token

    def refresh(self, rejected: str) -> str:
        self.refreshes += 1
        self.rejected.append(rejected)
        if rejected == self.token:
            self.token = self.sb.issue_token()
        return self.token


@dataclass
class Org:
    sb: SalesforceSandbox
    srv: ServerThread
    ca: SandboxCA
    _connectors: list[SalesforceConnector] = field(default_factory=list)

    def config(self, **overrides: Any) -> SalesforceConfig:
        base: dict[str, Any] = {
            "instance_url": self.srv.url,
            "ca_bundle": self.ca.ca_path,
            "bulk_threshold": 1_000_000,
            "timeout_s": 30.0,
        }
        return SalesforceConfig(**{**base, **overrides})

    def connector(self, tokens: CountingTokens | None = None, **overrides: Any) -> SalesforceConnector:
        c = SalesforceConnector(
            self.config(**overrides), tokens or CountingTokens(self.sb), sleep=lambda _s: None
        )
        self._connectors.append(c)
        return c

    def close(self) -> None:
        for c in self._connectors:
            c.close()
        gc.collect()


def serve(sb: SalesforceSandbox, ca: SandboxCA) -> Iterator[Org]:
    srv = ServerThread(sb.app(), ca, name="salesforce").start()
    sb.base_url = srv.url
    org = Org(sb, srv, ca)
    try:
        yield org
    finally:
        org.close()
        srv.stop()
        sb.store.close()


@pytest.fixture(scope="session")
def sf_ca(tmp_path_factory: pytest.TempPathFactory) -> SandboxCA:
    return SandboxCA.ensure(tmp_path_factory.mktemp("salesforce-connector-ca"))


@pytest.fixture
def org(sf_ca: SandboxCA) -> Iterator[Org]:
    """A fresh org: 120 accounts, 300 contacts, 150 leads (seeded timestamps tie in groups of 3)."""
    sb = SalesforceSandbox()
    sb.seed({"Account": 120, "Contact": 300, "Lead": 150}, seed=5)
    yield from serve(sb, sf_ca)


def required(stream: str, tag: str) -> Record:
    """Fields a new record of ``stream`` needs, with a unique external id."""
    base: Record = {"External_Id__c": f"T-{tag}"}
    if stream == "Account":
        return {**base, "Name": f"Acme {tag}"}
    if stream == "Lead":
        return {**base, "LastName": f"Lead {tag}", "Company": f"Co {tag}"}
    return {**base, "LastName": f"Person {tag}", "FirstName": "Test", "Email": f"p{tag}@example.com"}


class SandboxHarness:
    """:class:`connectors.testing.SourceHarness` over the sandbox's python handle."""

    primary_key = "Id"
    cursor_field = "SystemModstamp"
    external_id = "External_Id__c"

    def __init__(self, sb: SalesforceSandbox) -> None:
        self.sb = sb

    def live_ids(self, stream: str) -> set[str]:
        return {r.id for r in self.sb.store.dump(stream, include_deleted=False)}

    def create(self, stream: str, count: int) -> list[str]:
        return [self.sb.create_record(stream, required(stream, uuid.uuid4().hex[:12])) for _ in range(count)]

    def modify(self, stream: str, ids: Sequence[str]) -> None:
        for rid in ids:
            assert self.sb.update_record(stream, rid, {"Customer_Tier__c": "Gold"})

    def delete(self, stream: str, ids: Sequence[str]) -> None:
        for rid in ids:
            assert self.sb.delete_record(stream, rid)

    def freeze_clock(self) -> None:
        self.sb.store.clock.freeze()

    def unfreeze_clock(self) -> None:
        self.sb.store.clock.unfreeze()

    def new_records(self, stream: str, count: int) -> list[Record]:
        return [required(stream, uuid.uuid4().hex[:12]) for _ in range(count)]

    def invalid_record(self, stream: str) -> tuple[Record, str]:
        rec = required(stream, uuid.uuid4().hex[:12])
        if stream == "Account":
            return {**rec, "NumberOfEmployees": "lots"}, "INVALID_TYPE_ON_FIELD_IN_RECORD"
        return {**rec, "Email": "not an address"}, "INVALID_EMAIL_ADDRESS"

    def expire_tokens(self) -> None:
        self.sb.oauth.expire_all_access_tokens()

    def fields(self, stream: str) -> list[str]:
        return list(FIELDS[stream])
