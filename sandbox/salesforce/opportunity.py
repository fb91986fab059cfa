"""The Opportunity object of the emulated org (issue 14: deals ↔ Opportunity with
``Opportunity.AccountId``).

Fields from the object reference
(https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_opportunity.htm):
``Name`` (120 characters), ``StageName`` (picklist) and ``CloseDate`` (date) are required on create;
``AccountId`` is the lookup to Account; ``Amount`` currency, ``Probability`` percent; ``IsClosed`` /
``IsWon`` are read-only. Key prefix ``006``. Guess: ``StageName`` is an unrestricted picklist here
(an org's stages are its own; the emulator checks no picklist values), so HubSpot deal stages are
accepted as they are.
"""

from __future__ import annotations

from typing import Any

from sandbox.salesforce.describe import make_field, system_fields

__all__ = ["STAGES", "opportunity_fields"]

STAGES = [
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Closed Won",
    "Closed Lost",
]


def opportunity_fields() -> list[dict[str, Any]]:
    head, tail = system_fields("Opportunity")
    return [
        *head,
        make_field(
            "AccountId", "reference", "Account ID", reference_to=["Account"], relationship_name="Account"
        ),
        make_field("Name", "string", "Name", length=120, nillable=False, name_field=True),
        make_field("Description", "textarea", "Description", length=32000, filterable=False),
        make_field("StageName", "picklist", "Stage", nillable=False, picklist=STAGES),
        make_field("Amount", "currency", "Amount", precision=18, scale=2),
        make_field("Probability", "percent", "Probability (%)", precision=3, scale=0),
        make_field("CloseDate", "date", "Close Date", nillable=False),
        make_field("Type", "picklist", "Opportunity Type", picklist=["Existing Business", "New Business"]),
        make_field(
            "IsClosed",
            "boolean",
            "Closed",
            nillable=False,
            createable=False,
            updateable=False,
            defaulted=True,
            default_value=False,
        ),
        make_field(
            "IsWon",
            "boolean",
            "Won",
            nillable=False,
            createable=False,
            updateable=False,
            defaulted=True,
            default_value=False,
        ),
        *tail,
        make_field("External_Id__c", "string", "External Id", length=64, external_id=True, unique=True),
    ]
