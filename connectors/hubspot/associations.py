"""Relationships as HubSpot associations (CRM associations v4, batch endpoints only).

:meth:`Linker.write_links` archives each re-parented child's previous association
(``POST /crm/v4/associations/{from}/{to}/batch/archive``) and creates the new ones
(``.../batch/create``), :data:`BATCH` pairs a call: ``ceil(archived / BATCH) + ceil(linked / BATCH)``
calls for a batch of links. :meth:`Linker.read_links` reads children's parents
(``.../batch/read``, at most 1,000 ids a call: developer changelog "Bug Fix: Batch Read Limit for
HubSpot Associations API", 2025-02-10), following each child's ``paging.next.after`` (present only
when more associations follow): ``ceil(children / BATCH)`` calls, plus one per 1,000 children that
have more than a page of parents.

A link with a ``label`` is created with that USER_DEFINED label's type id beside the HubSpot-defined
type (:class:`~connectors.hubspot.labels.Labels` makes a missing label first); a link's ``unlabel``
(a label type id) is taken off its pair with ``.../batch/labels/archive``, the association staying:
``+ ceil(unlabeled / BATCH)`` calls, plus the labels calls.

The association type is the *primary* one where HubSpot has it (a Salesforce ``Contact.AccountId``
is the contact's one account): contact→company ``1``, deal→company ``5``; else the unlabeled type
(deal→contact ``3``). Type ids: https://developers.hubspot.com/docs/api-reference/crm-associations-v4/guide
("Association type id values").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.labels import Labels
from schemas.connector import Link, LinkResult
from schemas.errors import ConfigError

__all__ = ["ASSOCIATION_TYPE", "BATCH", "Linker"]

BATCH = 1_000
"""Pairs per batch create/archive/read call (read's documented maximum; create/archive accept at
least as many)."""

ASSOCIATION_TYPE: dict[tuple[str, str], int] = {
    ("contacts", "companies"): 1,  # primary company
    ("deals", "companies"): 5,  # primary company
    ("deals", "contacts"): 3,
}


def _type_of(stream: str, parent_stream: str) -> int:
    kind = ASSOCIATION_TYPE.get((stream, parent_stream))
    if kind is None:
        pairs = ", ".join(f"{a}→{b}" for a, b in ASSOCIATION_TYPE)
        raise ConfigError(f"HubSpot cannot link {stream} to {parent_stream}; relationships: {pairs}")
    return kind


class Linker:
    """Writes and reads one portal's associations through :class:`HubSpotClient`."""

    def __init__(self, client: HubSpotClient) -> None:
        self.client = client
        self.labels = Labels(client)

    def write_links(self, stream: str, parent_stream: str, links: Sequence[Link]) -> LinkResult:
        kind = _type_of(stream, parent_stream)
        calls = self.client.calls
        failed: dict[int, tuple[str, str]] = {}
        labels = self.labels.type_ids(stream, parent_stream, (lk.label for lk in links if lk.label))
        unlink = [(i, lk) for i, lk in enumerate(links) if lk.previous_id and lk.previous_id != lk.parent_id]
        for start in range(0, len(unlink), BATCH):
            chunk = unlink[start : start + BATCH]
            inputs = [{"from": {"id": lk.child_id}, "to": [{"id": lk.previous_id}]} for _, lk in chunk]
            self.client.associations(stream, parent_stream, "archive", inputs)
        off = [lk for lk in links if lk.parent_id and lk.unlabel]
        for start in range(0, len(off), BATCH):
            inputs = [
                {"from": {"id": lk.child_id}, "to": {"id": lk.parent_id}, "types": [_user(lk.unlabel or "")]}
                for lk in off[start : start + BATCH]
            ]
            self.client.associations(stream, parent_stream, "archive_labels", inputs)
        link = [(i, lk) for i, lk in enumerate(links) if lk.parent_id and (lk.label or not lk.unlabel)]
        for start in range(0, len(link), BATCH):
            chunk = link[start : start + BATCH]
            inputs = [
                {
                    "from": {"id": lk.child_id},
                    "to": {"id": lk.parent_id},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": kind}]
                    + ([_user(str(labels[lk.label]))] if lk.label else []),
                }
                for _, lk in chunk
            ]
            _, body = self.client.associations(stream, parent_stream, "create", inputs)
            failed |= _refused(chunk, body)
        return LinkResult(failed, self.client.calls - calls, {lb: str(x) for lb, x in labels.items()})

    def read_links(self, stream: str, parent_stream: str, child_ids: Sequence[str]) -> dict[str, list[str]]:
        """Parent ids of each child (children without a parent are absent), primary first."""
        kind = _type_of(stream, parent_stream)
        found: dict[str, list[dict[str, Any]]] = {}
        todo: list[dict[str, str]] = [{"id": cid} for cid in dict.fromkeys(child_ids)]
        while todo:  # a child with more associations than a page is asked again with its ``after``
            more: list[dict[str, str]] = []
            for start in range(0, len(todo), BATCH):
                _, body = self.client.associations(stream, parent_stream, "read", todo[start : start + BATCH])
                for result in (body or {}).get("results") or []:
                    child = str((result.get("from") or {}).get("id", ""))
                    found.setdefault(child, []).extend(
                        t for t in result.get("to") or [] if isinstance(t, dict)
                    )
                    after = ((result.get("paging") or {}).get("next") or {}).get("after")
                    if after:
                        more.append({"id": child, "after": str(after)})
            todo = more
        out: dict[str, list[str]] = {}
        for child, to in found.items():
            to.sort(key=lambda t: not any(x.get("typeId") == kind for x in t.get("associationTypes") or []))
            out[child] = [str(t.get("toObjectId")) for t in to]
        return out


def _user(type_id: str) -> dict[str, Any]:
    return {"associationCategory": "USER_DEFINED", "associationTypeId": int(type_id)}


def _ids(context: Any, key: str) -> set[str] | None:
    values = context.get(key) if isinstance(context, dict) else None
    return {str(v) for v in values} if isinstance(values, list) else None


def _refused(chunk: Sequence[tuple[int, Link]], body: Any) -> dict[int, tuple[str, str]]:
    """Links a 207 answer lists in ``errors``. An error names the inputs it refuses by their ids in
    its ``context`` (guess: ``fromObjectId`` / ``toObjectId`` lists, as the sandbox answers); a link
    is refused when its child is among the ``from`` ids *and* its parent among the ``to`` ids, so one
    refused pair fails neither the other children of its parent nor a record of the other object
    that happens to share a number. An error naming one side only refuses the links on that side;
    one naming neither (another shape) refuses the links whose child or parent it names anywhere."""
    out: dict[int, tuple[str, str]] = {}
    for err in (body or {}).get("errors") or []:
        if not isinstance(err, dict):
            continue
        context = err.get("context") or {}
        froms, tos = _ids(context, "fromObjectId"), _ids(context, "toObjectId")
        named = {str(v) for vs in context.values() if isinstance(vs, list) for v in vs}
        code = str(err.get("category") or "ERROR")
        for i, lk in chunk:
            if froms is None and tos is None:
                hit = lk.child_id in named or (lk.parent_id or "") in named
            else:
                hit = (froms is None or lk.child_id in froms) and (tos is None or (lk.parent_id or "") in tos)
            if hit:
                out.setdefault(i, (code, f"HubSpot refused this association ({code})"))
    return out
