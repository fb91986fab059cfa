"""The Opportunity and OpportunityContactRole objects of the emulated org (issue 14: deals ↔
Opportunity with ``Opportunity.AccountId``; deal ↔ contact associations ↔ OpportunityContactRole).

Fields from the object reference
(https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_opportunity.htm):
``Name`` (120 characters), ``StageName`` (picklist) and ``CloseDate`` (date) are required on create;
``AccountId`` is the lookup to Account; ``Amount`` currency, ``Probability`` percent; ``IsClosed`` /
``IsWon`` are read-only. Key prefix ``006``. Guess: ``StageName`` is an unrestricted picklist here
(an org's stages are its own; the emulator checks no picklist values), so HubSpot deal stages are
accepted as they are.

OpportunityContactRole (the junction of Opportunity and Contact), from its object reference
(https://developer.salesforce.com/docs/platform/object-reference/references/standard-objects/object-opportunitycontactrole.html;
supported calls create, delete, describeSObjects, getDeleted, getUpdated, query, retrieve, update,
upsert): ``OpportunityId`` is required, non-nullable and cannot be updated ("You must provide a
value ... when you create"); ``ContactId`` is a lookup that can be updated; ``Role`` an optional
picklist (255); ``IsPrimary`` a boolean defaulted to false. No owner, no name field, key prefix
``00K``. Guess: ``ContactId`` is required on create too (the reference does not say "Required"
for it, but Setup offers no contact role without a contact; the emulator refuses one with
REQUIRED_FIELD_MISSING). Not emulated: "each Opportunity has only one primary contact" (a second
``IsPrimary`` is accepted as it is).
"""

from __future__ import annotations

from typing import Any

from sandbox.salesforce.describe import make_field, system_fields

__all__ = ["CONTACT_ROLES", "STAGES", "contact_role_fields", "opportunity_fields"]

STAGES = [
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Closed Won",
    "Closed Lost",
]


CONTACT_ROLES = [
    "Business User",
    "Decision Maker",
    "Economic Buyer",
    "Economic Decision Maker",
    "Evaluator",
    "Executive Sponsor",
    "Influencer",
    "Technical Buyer",
    "Other",
]
"""The ``Role`` picklist of a new org (the object reference's examples: business user, decision maker)."""


def contact_role_fields() -> list[dict[str, Any]]:
    head, tail = system_fields("Contact Role")
    return [
        *head,
        make_field(
            "OpportunityId", "reference", "Opportunity ID", nillable=False, updateable=False,
            reference_to=["Opportunity"], relationship_name="Opportunity",
        ),
        make_field(
            "ContactId", "reference", "Contact ID", reference_to=["Contact"], relationship_name="Contact"
        ),
        make_field("Role", "picklist", "Role", picklist=CONTACT_ROLES),
        make_field(
            "IsPrimary", "boolean", "Primary", nillable=False, defaulted=True, default_value=False
        ),
        *tail[1:],  # no OwnerId: a contact role is owned through its opportunity
    ]  # fmt: skip


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
