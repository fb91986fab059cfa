"""Association streams read at HubSpot (issue 14): ``deals/contacts`` — one record per deal↔contact
pair, the source of a HubSpot → Salesforce ``OpportunityContactRole`` sync.

A page is a page of deals (read like the ``deals`` stream: full through the list API, incremental
through keyset search on ``hs_lastmodifieddate``; only the id and the modification date are asked
for), then **one** associations v4 batch read (deal→contact, type 3) for the page's deals
(:meth:`connectors.hubspot.associations.Linker.read_links`: ≤ 1,000 ids a call, so one call a page).
Each pair becomes a record ``{"id": "<deal>:<contact>", "@deals": deal, "@contacts": contact}``
keyed by the pair; :attr:`schemas.connector.Page.owners` lists every deal read (and every deal
archived since the cursor), so the caller sees the deals whose pairs all vanished. HubSpot moves no
modification date when only an association changes (see :mod:`workflows.reverse_links`), so an
incremental page alone never carries a re-association: the caller sweeps
(:mod:`workflows.pair_source`). Labels are not read: a deal→contact pair carries no HubSpot-defined
role.

Pairs by id (:func:`read_pairs_by_ids`, a retry of refused pairs): the ids ``<deal>:<contact>`` name
their deals, whose contacts are read in associations batch reads (1,000 deals a call); a pair the
deal no longer has is ``missing``. Every live pair id (:func:`list_pair_ids`, a reconciliation): a
page of live deal ids through the list API (100 a call), then one associations batch read for them,
so a purged deal's pairs are not listed — 2 calls per 100 deals.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.hubspot.associations import Linker
from connectors.hubspot.reader import ID_PROPERTY, MODIFIED_PROPERTY, StreamReader
from schemas.connector import (
    FieldSpec,
    IdPage,
    Page,
    RecordsById,
    StreamSchema,
    StreamSpec,
    StreamState,
)
from schemas.errors import ConfigError

__all__ = [
    "PAIR_KEY",
    "PAIR_STREAMS",
    "list_pair_ids",
    "pair_schema",
    "pair_specs",
    "read_pairs",
    "read_pairs_by_ids",
]

PAIR_KEY = "id"
"""The key field of a pair record: ``<owner id>:<other id>``."""
PAIR_STREAMS: dict[str, tuple[str, str]] = {"deals/contacts": ("deals", "contacts")}
"""Association streams readable at HubSpot: stream → (owner object, other object)."""


def pair_specs() -> list[StreamSpec]:
    """The association streams (read-only: written as associations by :mod:`workflows.junctions`)."""
    out = []
    for name, (owner, other) in PAIR_STREAMS.items():
        label = f"{owner.capitalize()} ↔ {other} associations"
        out.append(
            StreamSpec(name=name, primary_key=PAIR_KEY, cursor_field=MODIFIED_PROPERTY[owner],
                       writable=False, supports_deletes=False, label=label)
        )  # fmt: skip
    return out


def pair_schema(stream: str) -> StreamSchema:
    """The fields of a pair record (no vendor call: they are the pair's two ends)."""
    owner, other = PAIR_STREAMS[stream]
    fields = [
        FieldSpec(name=PAIR_KEY, type="string", label="Pair", nullable=False),
        FieldSpec(name=f"@{owner}", type="string", label=f"{owner} id", nullable=False),
        FieldSpec(name=f"@{other}", type="string", label=f"{other} id", nullable=False),
    ]
    return StreamSchema(stream=stream, fields=tuple(sorted(fields, key=lambda f: f.name)))


def read_pairs(reader: StreamReader, linker: Linker, stream: str, state: StreamState, page_size: int) -> Page:
    """One page of owners and their pairs (module docstring)."""
    owner, _ = PAIR_STREAMS[stream]
    page = reader.read_page(owner, state, page_size, [ID_PROPERTY])
    ids = [str(r.get(ID_PROPERTY) or r.get("id") or "") for r in page.records]
    ids = [i for i in ids if i]
    calls = linker.client.calls
    records = _pairs(linker, stream, ids)
    return Page(
        records, page.next_state, page.has_more, [], page.calls + linker.client.calls - calls,
        reconcile=page.reconcile, owners=list(dict.fromkeys([*ids, *page.deleted_ids])),
    )  # fmt: skip


def _pairs(linker: Linker, stream: str, owner_ids: Sequence[str]) -> list[dict[str, str]]:
    """The pair records of these owners (one associations batch read per 1,000)."""
    owner, other = PAIR_STREAMS[stream]
    found = linker.read_links(owner, other, owner_ids) if owner_ids else {}
    return [
        {PAIR_KEY: f"{o}:{c}", f"@{owner}": o, f"@{other}": c}
        for o in owner_ids
        for c in dict.fromkeys(found.get(o) or [])
    ]


def read_pairs_by_ids(linker: Linker, stream: str, ids: Sequence[str]) -> RecordsById:
    """The live pairs among ``ids`` (``<owner>:<other>``) and the ids no longer paired (module
    docstring)."""
    wanted = list(dict.fromkeys(str(i) for i in ids))
    owners = [i.partition(":")[0] for i in wanted]
    if any(not o.isdigit() or not i.partition(":")[2].isdigit() for o, i in zip(owners, wanted, strict=True)):
        raise ConfigError(f"read_by_ids: a {stream} id is <owner id>:<other id>, both numbers")
    calls = linker.client.calls
    live = {str(r[PAIR_KEY]): r for r in _pairs(linker, stream, list(dict.fromkeys(owners)))}
    records = [live[i] for i in wanted if i in live]
    missing = [i for i in wanted if i not in live]
    return RecordsById(records, missing, calls=linker.client.calls - calls)


def list_pair_ids(
    reader: StreamReader, linker: Linker, stream: str, state: StreamState, page_size: int
) -> IdPage:
    """One page of live owners' pair ids (module docstring); the list cursor resumes in
    ``state.page_token``."""
    owner, _ = PAIR_STREAMS[stream]
    calls = linker.client.calls
    owners, after = reader.id_page(owner, state.page_token, page_size)
    ids = [str(r[PAIR_KEY]) for r in _pairs(linker, stream, owners)]
    nxt = state.model_copy(update={"page_token": after})
    return IdPage(ids, nxt, after is not None, linker.client.calls - calls)
