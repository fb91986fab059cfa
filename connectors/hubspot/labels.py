"""HubSpot association labels (CRM associations v4 schema): a label name → its USER_DEFINED type id.

A custom label is an association *type* of one object pair and direction (deal→contact "Decision
Maker"), made once per portal: ``POST /crm/v4/associations/{from}/{to}/labels`` with ``label`` (the
text shown) and ``name`` (the definition's unique identifier); ``GET .../labels`` lists every type
of the direction, each ``{"category", "typeId", "label"}`` (API reference "Create association
label" / "Retrieve association labels", associations v4 schema). A pair is labeled by creating it
with ``{"associationCategory": "USER_DEFINED", "associationTypeId": <type id>}``.

:class:`Labels` lists a direction's labels once (one ``GET``) and creates each missing one (one
``POST`` a label). HubSpot answers a create with the type ids of *both* directions and documents
no order among them (guess: the guide's example lists two USER_DEFINED results), so after creating
it lists the direction once more to learn the asked direction's id: ``1`` call when every label
exists, ``2 + missing`` when some are made, ``0`` once a name is known to this instance (one
connector, i.e. one activity).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from connectors.hubspot.client import HubSpotClient
from schemas.errors import TransientError

__all__ = ["Labels", "label_name"]

_NOT_NAME = re.compile(r"[^a-z0-9]+")


def label_name(label: str) -> str:
    """The definition ``name`` crmhub gives a label it creates: lower case, runs of other characters
    as ``_`` (guess: HubSpot's docs name no rule for ``name``; internal names of its properties are
    lower-case ``[a-z0-9_]``)."""
    return _NOT_NAME.sub("_", label.strip().lower()).strip("_") or "label"


class Labels:
    """One portal's association labels, resolved by name (see the module docstring)."""

    def __init__(self, client: HubSpotClient) -> None:
        self.client = client
        self._known: dict[tuple[str, str], dict[str, int]] = {}

    def type_ids(self, from_type: str, to_type: str, labels: Iterable[str]) -> dict[str, int]:
        """USER_DEFINED type id (``from_type`` → ``to_type``) of each label, made when missing."""
        wanted = sorted({lb for lb in labels if lb})
        known = self._known.setdefault((from_type, to_type), {})
        if any(lb not in known for lb in wanted):
            known |= self._list(from_type, to_type)
            missing = [lb for lb in wanted if lb not in known]
            for lb in missing:
                self.client.associations(from_type, to_type, "label", {"label": lb, "name": label_name(lb)})
            if missing:
                known |= self._list(from_type, to_type)
        lost = [lb for lb in wanted if lb not in known]
        if lost:
            # a label made but not listed yet: the next attempt finds it (no second create)
            raise TransientError(
                f"HubSpot lists no {from_type}→{to_type} label it just created ({len(lost)})"
            )
        return {lb: known[lb] for lb in wanted}

    def _list(self, from_type: str, to_type: str) -> dict[str, int]:
        _, body = self.client.associations(from_type, to_type, "labels")
        out: dict[str, int] = {}
        for item in (body or {}).get("results") or []:
            if _user_defined(item):
                out.setdefault(str(item["label"]), int(item["typeId"]))
        return out


def _user_defined(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and item.get("category") == "USER_DEFINED"
        and isinstance(item.get("label"), str)
        and str(item.get("typeId", "")).isdigit()
    )
