"""Deterministic seeding of the Salesforce emulator from :mod:`sandbox.fake` people and companies.

Records are generated lazily and bulk-inserted in one transaction per object, so a million
Contacts take seconds, not minutes. Record *i* of an object gets ``SystemModstamp =
LastModifiedDate = modstamp_ms(i)`` — consecutive records share timestamps in groups of three, so
keyset pages on ``SystemModstamp`` end inside ties.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sandbox.fake import company, person
from sandbox.salesforce.ids import KEY_PREFIXES, make_id

if TYPE_CHECKING:
    from sandbox.salesforce.app import SalesforceSandbox

__all__ = ["seed_records"]

_TIERS = ("Gold", "Silver", "Bronze", None)
_LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other", None)
_LEAD_STATUS = ("Open - Not Contacted", "Working - Contacted", "Closed - Not Converted")
# Seed Accounts first so Contacts can point at them.
_ORDER = {"Account": 0, "Contact": 1, "Lead": 2}


def _contact(seed: int, i: int, accounts: int) -> tuple[dict[str, Any], int, int]:
    p = person(seed, i)
    data: dict[str, Any] = {
        "FirstName": p.first_name,
        "LastName": p.last_name,
        "Name": f"{p.first_name} {p.last_name}",
        "Email": p.email,
        "Phone": p.phone,
        "Title": p.title,
        "MailingCity": p.city,
        "MailingCountry": p.country,
        "External_Id__c": f"C-{seed}-{i}",
        "Customer_Tier__c": p.tier,
        "Lead_Score__c": float(p.lead_score),
    }
    if accounts:
        data["AccountId"] = make_id(KEY_PREFIXES["Account"], 1 + p.company_index % accounts)
    return data, p.created_ms, p.modified_ms


def _lead(seed: int, i: int) -> tuple[dict[str, Any], int, int]:
    p = person(seed + 7, i)
    return (
        {
            "FirstName": p.first_name,
            "LastName": p.last_name,
            "Name": f"{p.first_name} {p.last_name}",
            "Company": f"{p.last_name} {p.city} #{p.company_index}",
            "Email": p.email,
            "Phone": p.phone,
            "Title": p.title,
            "City": p.city,
            "Country": p.country,
            "Status": _LEAD_STATUS[i % len(_LEAD_STATUS)],
            "LeadSource": _LEAD_SOURCES[i % len(_LEAD_SOURCES)],
            "IsConverted": False,
            "External_Id__c": f"L-{seed}-{i}",
            "Customer_Tier__c": p.tier,
            "Lead_Score__c": float(p.lead_score),
        },
        p.created_ms,
        p.modified_ms,
    )


def _account(seed: int, i: int) -> tuple[dict[str, Any], int, int]:
    c = company(seed, i)
    return (
        {
            "Name": c.name,
            "Website": f"https://{c.domain}",
            "Industry": c.industry,
            "NumberOfEmployees": c.employees,
            "AnnualRevenue": c.annual_revenue,
            "BillingCity": c.city,
            "BillingCountry": c.country,
            "External_Id__c": f"A-{seed}-{i}",
            "Customer_Tier__c": _TIERS[i % len(_TIERS)],
        },
        c.created_ms,
        c.modified_ms,
    )


def seed_records(sandbox: SalesforceSandbox, counts: Mapping[str, int], *, seed: int = 1) -> dict[str, int]:
    """Insert ``counts`` fake records per object (Contact, Account, Lead); returns counts added."""
    added: dict[str, int] = {}
    for obj_name in sorted(counts, key=lambda o: _ORDER.get(o, 9)):
        obj = sandbox.schema.canonical_object(obj_name)
        n = counts[obj_name]
        if obj is None or obj not in _ORDER:
            raise ValueError(f"cannot seed {obj_name!r}: Contact, Account and Lead are seedable")
        if n <= 0:
            added[obj] = 0
            continue
        first = sandbox.store.next_num(obj, n)
        prefix = KEY_PREFIXES[obj]
        accounts = sandbox.store.count("Account") if obj == "Contact" else 0

        def rows(
            obj: str = obj, first: int = first, n: int = n, prefix: str = prefix, accounts: int = accounts
        ) -> Iterator[tuple[str, str, int, int, int, Mapping[str, Any]]]:
            for k in range(n):
                serial = first + k
                i = serial - 1  # record index: 0-based position in the object's creation order
                if obj == "Contact":
                    data, created, modified = _contact(seed, i, accounts)
                elif obj == "Lead":
                    data, created, modified = _lead(seed, i)
                else:
                    data, created, modified = _account(seed, i)
                yield obj, make_id(prefix, serial), serial, modified, created, data

        added[obj] = sandbox.store.insert_many(rows())
    return added
