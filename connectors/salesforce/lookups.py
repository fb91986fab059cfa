"""Relationships as Salesforce lookup fields (issue 14, the HubSpot → Salesforce direction).

A child is linked to its parent by setting the child's lookup field to the parent's Id
(``Contact.AccountId``, ``Opportunity.AccountId``) through sObject Collections update
(``PATCH /composite/sobjects``, 200 records a call, ``allOrNone=false``:
:mod:`connectors.salesforce.writing`);
unlinking sets it to ``null`` (a JSON ``null`` clears a field in a REST update:
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm).
Setting the field replaces the previous parent, so a re-parented child costs one record of one call
and ``Link.previous_id`` needs no call of its own: ``ceil(links / 200)`` calls for a batch.
The lookup field is the one :data:`LOOKUP` names for the (child, parent) object pair.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.writing import write_records
from schemas.connector import Link, LinkResult, Record, WriteMode
from schemas.errors import ConfigError

__all__ = ["LOOKUP", "lookup_field", "write_lookups"]

LOOKUP: dict[tuple[str, str], str] = {
    ("Contact", "Account"): "AccountId",
    ("Opportunity", "Account"): "AccountId",
    ("Case", "Account"): "AccountId",
    ("Case", "Contact"): "ContactId",
}
"""(child object, parent object) → the child's lookup field (the standard objects' field reference)."""


def lookup_field(sobject: str, parent: str) -> str:
    """The lookup field linking ``sobject`` records to ``parent`` records (:class:`ConfigError` if none)."""
    field = LOOKUP.get((sobject, parent))
    if field is None:
        pairs = ", ".join(f"{a}.{f} → {b}" for (a, b), f in LOOKUP.items())
        raise ConfigError(f"Salesforce cannot link {sobject} to {parent}; lookups: {pairs}")
    return field


def write_lookups(client: SalesforceClient, sobject: str, parent: str, links: Sequence[Link]) -> LinkResult:
    """Set (or clear) each child's lookup field; refused records are reported by index."""
    field = lookup_field(sobject, parent)
    records: list[Record] = [{"Id": lk.child_id, field: lk.parent_id} for lk in links]
    if not records:
        return LinkResult()
    result = write_records(client, sobject, records, WriteMode.UPDATE, "Id")
    failed = {
        o.index: (o.error_code or "UNKNOWN_ERROR", o.error_message or "Salesforce refused the link")
        for o in result.outcomes
        if not o.ok
    }
    return LinkResult(failed, result.calls)
