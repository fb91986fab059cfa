"""Shared inputs of the policy tests: an instruction, a plan and a record (no fixtures here)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from governance.policy import ProcessingInstruction, SyncPlan
from governance.pseudonym import Pseudonymizer, StaticKeySource

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "instruction.yaml"
NOW = datetime(2025, 6, 1, tzinfo=UTC)
PS = Pseudonymizer(StaticKeySource({"acme": b"k" * 32}))

BASE: dict[str, Any] = {
    "tenant": "acme",
    "version": 3,
    "purpose": "crm_sync",
    "data_categories": ["contact_details"],
    "allowed_fields": {"Contact": ["Id", "Email", "FirstName", "LastName"]},
    "pseudonymize": {"Contact": ["Email"]},
    "retention_days": 30,
    "permitted_regions": ["eea"],
    "permitted_subprocessors": ["salesforce", "hubspot"],
    "valid_from": "2025-01-01T00:00:00Z",
    "valid_to": "2026-01-01T00:00:00Z",
}


def instruction(**changes: Any) -> ProcessingInstruction:
    return ProcessingInstruction.model_validate({**BASE, **changes})


def plan(**changes: Any) -> SyncPlan:
    base: dict[str, Any] = {
        "tenant": "acme",
        "source_object": "Contact",
        "destination_object": "contacts",
        "field_mapping": {"Id": "salesforce_id", "Email": "email"},
        "transforms": (),
        "purpose": "crm_sync",
        "when": NOW,
    }
    return SyncPlan.model_validate({**base, **changes})


RECORD = {
    "Id": "003A1",
    "Email": "alice@example.com",
    "FirstName": "Alice",
    "LastName": "Liddell",
    "Phone": "+44 1",
    "Birthdate": "1852-05-04",
}
