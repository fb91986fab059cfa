"""CRM search (``POST /crm/v3/objects/{objectType}/search``) compiled to SQL over the record store.

Rules emulated (https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm):

* ``filterGroups`` are OR-ed, the filters inside a group AND-ed; at most 5 groups, 10 filters per
  group and 25 filters in all (https://developers.hubspot.com/changelog/breaking-change-expanded-filtering-capabilities-and-error-messaging-in-hubspots-search-api).
* Operators EQ, NEQ, LT, LTE, GT, GTE, BETWEEN (``value``..``highValue``), IN/NOT_IN (``values``),
  HAS_PROPERTY, NOT_HAS_PROPERTY, CONTAINS_TOKEN, NOT_CONTAINS_TOKEN (``*`` wildcards).
  Date properties take epoch-ms or ISO values.
* ``limit`` at most 200; ``after`` is an offset; at most 10,000 results per query: a page reaching
  past result 10,000 is a 400 (https://docs.aws.amazon.com/glue/latest/dg/hubspot-connector-limitations.html;
  Airbyte's HubSpot connector restarts its query when ``after`` reaches 10000).
* Archived records are never returned; ``total`` counts every match (it may exceed 10,000).

Every value is a bound parameter. Property names are only inlined after they matched a live
property definition (and the ``[a-z0-9_]`` name rule), so ``json_extract(data, '$.name')`` can use
the store's expression indexes. ``createdate``, the last-modified property and ``hs_object_id``
map to the indexed ``created``, ``modstamp`` and ``num`` columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.hubspot.errors import ApiError
from sandbox.hubspot.objects import canonical_number, parse_datetime_ms
from sandbox.hubspot.schema import ObjectType, PropertyDef, PropertyRegistry, iso_ms

__all__ = ["MAX_RESULTS", "SearchQuery", "compile_search"]

MAX_RESULTS = 10_000
MAX_LIMIT = 200
MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS_TOTAL = 25
_SAFE = re.compile(r"^[a-z0-9_]+$")
# Searched by ``query`` (the default searchable text properties, per the search guide).
_QUERY_PROPS = {
    "contacts": ("firstname", "lastname", "email", "phone", "company"),
    "companies": ("name", "domain", "phone"),
    "deals": ("dealname",),
}
# Text for "the request is not valid" — the generic 400 message HubSpot's search API returns
# (seen quoted in public code for a bad date filter; the exact 10k-cap body is not published).
BAD_REQUEST = "There was a problem with the request."


@dataclass(frozen=True)
class SearchQuery:
    """A compiled search: SQL ``where``/``order_by`` fragments with bound params and the page."""

    where: str
    params: tuple[Any, ...]
    order_by: str
    limit: int
    offset: int
    properties: list[str] | None


def _bad(message: str) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message)


class _Compiler:
    def __init__(self, ot: ObjectType, registry: PropertyRegistry) -> None:
        self.ot = ot
        self.live = registry.live(ot.name)

    def column(self, name: str) -> tuple[str, PropertyDef]:
        pdef = self.live.get(name)
        if pdef is None or not _SAFE.match(name):
            # HubSpot rejects filters/sorts on unknown properties with a 400.
            raise _bad(f"Property {name} does not exist")
        if name == "hs_object_id":
            return "num", pdef
        if name == self.ot.created_property:
            return "created", pdef
        if name == self.ot.modified_property:
            return "modstamp", pdef
        expr = f"json_extract(data, '$.{name}')"
        if pdef.type == "number":
            expr = f"CAST({expr} AS REAL)"
        return expr, pdef

    def value(self, col: str, pdef: PropertyDef, raw: Any) -> Any:
        if raw is None:
            raise _bad(f"Filter on {pdef.name} needs a value")
        if col in ("created", "modstamp"):
            ms = parse_datetime_ms(raw)
            if ms is None:
                raise _bad(BAD_REQUEST)
            return ms
        if col == "num" or pdef.type == "number":
            num = canonical_number(raw)
            if num is None:
                raise _bad(BAD_REQUEST)
            return float(num) if col != "num" else int(float(num))
        if pdef.type in ("datetime", "date"):
            ms = parse_datetime_ms(raw)
            if ms is None:
                raise _bad(BAD_REQUEST)
            return iso_ms(ms) if pdef.type == "datetime" else iso_ms(ms)[:10]
        if pdef.type == "bool":
            return str(raw).lower()
        return str(raw)

    def filter(self, f: Mapping[str, Any]) -> tuple[str, list[Any]]:
        name = f.get("propertyName")
        op = str(f.get("operator") or "EQ").upper()
        if not isinstance(name, str):
            raise _bad("Filter is missing propertyName")
        col, pdef = self.column(name)
        textual = col.startswith("json_extract") and pdef.type in ("string", "enumeration")
        # String comparisons are case-insensitive in HubSpot search; emails are stored lower-case.
        lhs = col if not textual or name == "email" else f"lower({col})"

        def v(raw: Any) -> Any:
            val = self.value(col, pdef, raw)
            return val.lower() if textual and isinstance(val, str) else val

        if op in ("EQ", "NEQ", "LT", "LTE", "GT", "GTE"):
            sym = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}[op]
            if op == "NEQ":
                # NEQ also matches records without a value (HubSpot treats unset as "not equal").
                return f"({col} IS NULL OR {lhs} != ?)", [v(f.get("value"))]
            return f"{lhs} {sym} ?", [v(f.get("value"))]
        if op == "BETWEEN":
            return f"{lhs} BETWEEN ? AND ?", [v(f.get("value")), v(f.get("highValue"))]
        if op in ("IN", "NOT_IN"):
            values = f.get("values")
            if not isinstance(values, list) or not values:
                raise _bad(f"{op} filter on {name} needs values")
            marks = ",".join("?" * len(values))
            if op == "IN":
                return f"{lhs} IN ({marks})", [v(x) for x in values]
            return f"({col} IS NULL OR {lhs} NOT IN ({marks}))", [v(x) for x in values]
        if op == "HAS_PROPERTY":
            return f"({col} IS NOT NULL AND {col} != '')", []
        if op == "NOT_HAS_PROPERTY":
            return f"({col} IS NULL OR {col} = '')", []
        if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            token = str(f.get("value") or "").lower()
            if not token:
                raise _bad(f"{op} filter on {name} needs a value")
            pattern = "%" + token.replace("%", r"\%").replace("_", r"\_").replace("*", "%") + "%"
            cond = f"lower({col}) LIKE ? ESCAPE '\\'"
            if op == "CONTAINS_TOKEN":
                return cond, [pattern]
            return f"({col} IS NULL OR NOT ({cond}))", [pattern]
        raise _bad(f"Unknown operator {op}")

    def sort(self, s: Any) -> str:
        if isinstance(s, str):
            # hubspot-api-client types sorts as strings: "prop" ascending, "-prop" descending.
            name, desc = (s[1:], True) if s.startswith("-") else (s, False)
        elif isinstance(s, Mapping):
            name = str(s.get("propertyName", ""))
            desc = str(s.get("direction", "ASCENDING")).upper() == "DESCENDING"
        else:
            raise _bad("Invalid sort")
        col, _ = self.column(name)
        return f"{col} {'DESC' if desc else 'ASC'}"


def compile_search(
    ot: ObjectType,
    registry: PropertyRegistry,
    body: Mapping[str, Any],
    *,
    stale_since_ms: int | None = None,
) -> SearchQuery:
    """Translate a PublicObjectSearchRequest body; raises :class:`ApiError` (400) when HubSpot would.

    ``stale_since_ms``: records archived after it still match, as stale index hits (the caller
    drops them from the results; see :mod:`sandbox.hubspot.quirks`)."""
    comp = _Compiler(ot, registry)
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list):
        raise _bad("filterGroups must be a list")
    if len(groups) > MAX_GROUPS:
        raise _bad(f"Too many filter groups: {len(groups)} (maximum is {MAX_GROUPS})")
    total_filters = 0
    clauses: list[str] = []
    params: list[Any] = []
    for g in groups:
        filters = (g or {}).get("filters") or []
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise _bad(f"Too many filters in a group: {len(filters)} (maximum is {MAX_FILTERS_PER_GROUP})")
        total_filters += len(filters)
        parts: list[str] = []
        for f in filters:
            sql, ps = comp.filter(f)
            parts.append(sql)
            params.extend(ps)
        if parts:
            clauses.append("(" + " AND ".join(parts) + ")")
    if total_filters > MAX_FILTERS_TOTAL:
        raise _bad(f"Too many filters: {total_filters} (maximum is {MAX_FILTERS_TOTAL})")
    where = "deleted = 0"
    if stale_since_ms is not None:
        where = "(deleted = 0 OR (deleted = 1 AND modstamp > ?))"
        params.insert(0, stale_since_ms)
    if clauses:
        where += " AND (" + " OR ".join(clauses) + ")"
    query = body.get("query")
    if isinstance(query, str) and query.strip():
        fields = [p for p in _QUERY_PROPS.get(ot.name, ()) if p in comp.live]
        if fields:
            pattern = "%" + query.strip().lower().replace("%", r"\%").replace("_", r"\_") + "%"
            ors = [f"lower(json_extract(data, '$.{p}')) LIKE ? ESCAPE '\\'" for p in fields]
            where += " AND (" + " OR ".join(ors) + ")"
            params.extend([pattern] * len(fields))
    sorts = body.get("sorts") or []
    if not isinstance(sorts, list):
        raise _bad("sorts must be a list")
    order = [comp.sort(s) for s in sorts[:1]]  # HubSpot honours one sort rule per search
    order.append("num ASC")
    try:
        raw_limit = body.get("limit")
        limit = 10 if raw_limit is None else int(raw_limit)
        offset = int(str(body.get("after") or 0))
    except (TypeError, ValueError) as exc:
        raise _bad(BAD_REQUEST) from exc
    if limit < 1 or limit > MAX_LIMIT or offset < 0:
        raise _bad(BAD_REQUEST)
    if offset + limit > MAX_RESULTS:
        raise _bad(BAD_REQUEST)
    props = body.get("properties")
    return SearchQuery(
        where,
        tuple(params),
        ", ".join(order),
        limit,
        offset,
        [str(p) for p in props] if isinstance(props, Sequence) and not isinstance(props, str) else None,
    )
