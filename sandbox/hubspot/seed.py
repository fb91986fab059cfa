"""Deterministic seed rows for the HubSpot sandbox, from :mod:`sandbox.fake`, streamed into the store.

Record *i* of a seed maps :func:`sandbox.fake.person`/:func:`sandbox.fake.company` to HubSpot
property names and string values; ``createdate``/last-modified come from the fake timestamps (so
groups of three records share a last-modified instant), and empty fake values stay unset (null).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from sandbox.fake import company, modstamp_ms, person
from sandbox.hubspot.schema import iso_ms

__all__ = ["company_rows", "contact_rows", "deal_rows"]

Row = tuple[str, str, int, int, int, dict[str, Any]]

_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)


@lru_cache(maxsize=4096)
def _company_name(seed: int, index: int) -> str:
    return company(seed, index).name


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def contact_rows(seed: int, first_num: int, first_index: int, count: int) -> Iterator[Row]:
    """``count`` contacts with ids ``first_num``.. and fake indexes ``first_index``.."""
    for k in range(count):
        i = first_index + k
        num = first_num + k
        p = person(seed, i)
        data: dict[str, Any] = {
            "firstname": p.first_name,
            "lastname": p.last_name,
            "email": p.email,
            "city": p.city,
            "country": p.country,
            "company": _company_name(seed, p.company_index % 4096),
            "lead_score": str(p.lead_score),
            "external_id": f"ext-{seed}-c{i}",
            "lifecyclestage": "customer" if p.tier else "lead",
        }
        if p.phone is not None:
            data["phone"] = p.phone
        if p.title is not None:
            data["jobtitle"] = p.title
        if p.tier is not None:
            data["customer_tier"] = p.tier
        yield ("contacts", str(num), num, p.modified_ms, p.created_ms, data)


def company_rows(seed: int, first_num: int, first_index: int, count: int) -> Iterator[Row]:
    for k in range(count):
        i = first_index + k
        num = first_num + k
        c = company(seed, i)
        data: dict[str, Any] = {
            "name": c.name,
            "domain": c.domain,
            "city": c.city,
            "country": c.country,
            "external_id": f"ext-{seed}-a{i}",
        }
        if c.industry is not None:
            data["industry"] = c.industry
        if c.employees is not None:
            data["numberofemployees"] = str(c.employees)
        if c.annual_revenue is not None:
            data["annualrevenue"] = _number(c.annual_revenue)
        yield ("companies", str(num), num, c.modified_ms, c.created_ms, data)


def deal_rows(seed: int, first_num: int, first_index: int, count: int) -> Iterator[Row]:
    for k in range(count):
        i = first_index + k
        num = first_num + k
        modified = modstamp_ms(i)
        created = modified - (i * 7919 % (86_400_000 * 60))
        data: dict[str, Any] = {
            "dealname": f"{_company_name(seed, i % 4096)} — deal {i}",
            "dealstage": _STAGES[(i * 31 + seed) % len(_STAGES)],
            "pipeline": "default",
            "closedate": iso_ms(modified + 86_400_000 * ((i % 90) + 1)),
            "external_id": f"ext-{seed}-d{i}",
        }
        if i % 11:
            data["amount"] = str(1000 + (i * 7907 + seed) % 250_000)
        yield ("deals", str(num), num, modified, created, data)
