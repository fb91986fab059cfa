"""SOQL execution over the record store: compile a parsed query to SQL, page it by keyset, render rows.

A compiled query keeps everything needed to continue it later (the WHERE fragment and its bound
parameters, the ORDER BY keys with ``Id`` as the final tie-break), so a query cursor is just the
compiled query plus the sort key of the last row served: fetching page *k* of a million-row result
costs the same as fetching page 1, and nothing is materialised beyond one page.

Field semantics emulated (SOQL reference:
https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select.htm):
text comparisons with ``=``/``!=``/``IN`` are case-insensitive, ``LIKE`` is case-insensitive with
``%``/``_`` wildcards, ``= null``/``!= null`` test for (non-)null, ``!=``/``NOT IN`` also match
null values; compound fields (addresses) can be selected but not filtered or sorted
(https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/compound_fields_limitations.htm).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.records import RecordRow, RecordStore
from sandbox.salesforce.describe import Schema
from sandbox.salesforce.ids import to_18
from sandbox.salesforce.soql import (
    And,
    Cmp,
    DateLiteral,
    DateTimeLiteral,
    Expr,
    FieldRef,
    In,
    Like,
    Literal,
    Not,
    Or,
    Query,
    SoqlError,
    soql_error_message,
)

__all__ = [
    "ADDRESS_KEYS",
    "Column",
    "Compiled",
    "column_for",
    "compile_query",
    "fetch_page",
    "format_datetime",
    "format_datetime_bulk",
    "render_record",
    "sort_key",
]

_COLUMN_FIELDS = {
    "Id": "id",
    "IsDeleted": "deleted",
    "SystemModstamp": "modstamp",
    "LastModifiedDate": "modstamp",
    "CreatedDate": "created",
}
_NON_NULL_COLUMNS = frozenset({"id", "deleted", "modstamp", "created"})
_TEXT = frozenset({"string", "picklist", "email", "phone", "textarea", "url", "multipicklist", "combobox"})
_NUMERIC = frozenset({"double", "int", "currency", "percent", "long"})
# Address components, in the key order of the REST API's address value.
ADDRESS_KEYS = (
    ("city", "City"),
    ("country", "Country"),
    ("geocodeAccuracy", "GeocodeAccuracy"),
    ("latitude", "Latitude"),
    ("longitude", "Longitude"),
    ("postalCode", "PostalCode"),
    ("state", "State"),
    ("street", "Street"),
)
# The org's single integration user owns and modifies every record unless the data says otherwise.
ORG_ID = "00D5d000000XyZaEAK"
USER_ID = "0055d000001AbCdAAK"
_USER_DEFAULTS = {"OwnerId", "CreatedById", "LastModifiedById"}


@functools.lru_cache(maxsize=65536)
def format_datetime(ms: int) -> str:
    """REST dateTime format, e.g. ``2024-01-01T00:00:00.000+0000``."""
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0000"


@functools.lru_cache(maxsize=65536)
def format_datetime_bulk(ms: int) -> str:
    """Bulk API 2.0 CSV dateTime format, e.g. ``2024-01-01T00:00:00.000Z``."""
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Column:
    """A resolved field: canonical API name, describe type, and where its value comes from."""

    name: str
    type: str
    source: str  # "id" | "deleted" | "modstamp" | "created" | "json" | "address"
    compound_prefix: str = ""  # address only: component name prefix ("Mailing", "Billing", "")

    @property
    def sql(self) -> str:
        if self.source in _NON_NULL_COLUMNS:
            return self.source
        if self.name in _USER_DEFAULTS:
            return f"coalesce(json_extract(data, '$.{self.name}'), '{USER_ID}')"
        return f"json_extract(data, '$.{self.name}')"


@dataclass(frozen=True, slots=True)
class OrderKey:
    column: Column
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class Compiled:
    """A query ready to run page by page (see module docstring)."""

    sobject: str
    columns: tuple[Column, ...]
    count_only: bool
    where_sql: str
    params: tuple[Any, ...]
    order: tuple[OrderKey, ...]  # always ends with Id (unique), so it is a total order
    limit: int | None
    offset: int

    @property
    def order_sql(self) -> str:
        parts = []
        for k in self.order:
            direction = "DESC" if k.descending else "ASC"
            nulls = (
                ""
                if k.column.source in _NON_NULL_COLUMNS
                else (" NULLS LAST" if k.nulls_last else " NULLS FIRST")
            )
            parts.append(f"{k.column.sql} {direction}{nulls}")
        return ", ".join(parts)


def _invalid_field(q: Query, ref: FieldRef) -> SoqlError:
    reason = (
        f"No such column '{ref.name}' on entity '{q.sobject}'. If you are attempting to use a custom "
        "field, be sure to append the '__c' after the custom field name. Please reference your WSDL or "
        "the describe call for the appropriate names."
    )
    return SoqlError("INVALID_FIELD", soql_error_message(q.soql, ref.pos, reason))


def column_for(f: Mapping[str, Any]) -> Column:
    """The :class:`Column` of a describe field object."""
    name = str(f["name"])
    if f["type"] == "address":
        return Column(name, "address", "address", name[: -len("Address")])
    return Column(name, str(f["type"]), _COLUMN_FIELDS.get(name, "json"))


class _Compiler:
    def __init__(self, q: Query, schema: Schema, obj: str) -> None:
        self.q = q
        self.obj = obj
        self.fields = schema.field_map(obj)
        self.params: list[Any] = []

    def column(self, ref: FieldRef) -> Column:
        f = self.fields.get(ref.name.lower())
        if f is None:
            raise _invalid_field(self.q, ref)
        return column_for(f)

    def filterable(self, ref: FieldRef) -> Column:
        col = self.column(ref)
        f = self.fields[col.name.lower()]
        if col.source == "address" or not f.get("filterable", True):
            reason = f"field '{col.name}' can not be filtered in query call"
            raise SoqlError("INVALID_FIELD", soql_error_message(self.q.soql, ref.pos, reason))
        return col

    def value(self, col: Column, v: Literal, pos: int) -> Any:
        """The SQL parameter for literal ``v`` compared with ``col`` (type errors in Salesforce's words)."""
        if v is None:
            return None
        if col.type == "datetime":
            if isinstance(v, DateTimeLiteral):
                return v.ms if col.source in ("modstamp", "created") else format_datetime(v.ms)
            if isinstance(v, DateLiteral):
                raise self._type_error(col, pos, "dateTime")
            raise self._type_error(col, pos, "dateTime", quotes=isinstance(v, str))
        if col.type == "date":
            if isinstance(v, DateLiteral):
                return v.text
            raise self._type_error(col, pos, "date", quotes=isinstance(v, str))
        if col.type == "boolean":
            if isinstance(v, bool):
                return int(v)
            raise self._type_error(col, pos, "boolean", quotes=isinstance(v, str))
        if col.type in _NUMERIC:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise self._type_error(
                    col, pos, "number" if col.type != "int" else "int", quotes=isinstance(v, str)
                )
            return v
        if not isinstance(v, str):
            raise SoqlError(
                "INVALID_FIELD",
                soql_error_message(
                    self.q.soql,
                    pos,
                    f"value of filter criterion for field '{col.name}' must be of type string "
                    "and should be enclosed in quotes",
                ),
            )
        if col.type in ("id", "reference") and len(v) == 15 and v.isalnum() and v.isascii():
            return to_18(v)
        return v

    def _type_error(self, col: Column, pos: int, want: str, *, quotes: bool = False) -> SoqlError:
        tail = " and should not be enclosed in quotes" if quotes else ""
        reason = f"value of filter criterion for field '{col.name}' must be of type {want}{tail}"
        return SoqlError("INVALID_FIELD", soql_error_message(self.q.soql, pos, reason))

    def _nocase(self, col: Column) -> str:
        return " COLLATE NOCASE" if col.type in _TEXT else ""

    def expr(self, e: Expr) -> str:
        if isinstance(e, And):
            return "(" + " AND ".join(self.expr(i) for i in e.items) + ")"
        if isinstance(e, Or):
            return "(" + " OR ".join(self.expr(i) for i in e.items) + ")"
        if isinstance(e, Not):
            return f"(NOT {self.expr(e.item)})"
        if isinstance(e, Cmp):
            col = self.filterable(e.field)
            value = self.value(col, e.value, e.value_pos)
            sql = col.sql
            if value is None:
                if e.op == "=":
                    return f"({sql} IS NULL)"
                if e.op == "!=":
                    return f"({sql} IS NOT NULL)"
                return "(0)"
            self.params.append(value)
            if e.op == "=":
                return f"({sql} = ?{self._nocase(col)})"
            if e.op == "!=":
                return f"({sql} IS NULL OR {sql} != ?{self._nocase(col)})"
            return f"({sql} {e.op} ?)"
        if isinstance(e, In):
            col = self.filterable(e.field)
            values = [self.value(col, v, e.field.pos) for v in e.values]
            has_null = any(v is None for v in values)
            values = [v for v in values if v is not None]
            sql = col.sql
            marks = ", ".join("?" for _ in values)
            self.params.extend(values)
            lhs = f"{sql}{self._nocase(col)}"
            if e.negate:
                inner = f"{lhs} NOT IN ({marks})" if values else "1"
                return f"({sql} IS NOT NULL AND {inner})" if has_null else f"({sql} IS NULL OR {inner})"
            inner = f"{lhs} IN ({marks})" if values else "0"
            return f"({inner} OR {sql} IS NULL)" if has_null else f"({inner})"
        if isinstance(e, Like):
            col = self.filterable(e.field)
            self.params.append(e.pattern)
            return f"({col.sql} LIKE ? ESCAPE '\\')"
        raise AssertionError(f"unknown expression {e!r}")


def compile_query(q: Query, schema: Schema, *, include_deleted: bool) -> Compiled:
    """Resolve ``q`` against ``schema``; raises :class:`SoqlError` (INVALID_TYPE, INVALID_FIELD)."""
    obj = schema.canonical_object(q.sobject)
    if obj is None:
        reason = (
            f"sObject type '{q.sobject}' is not supported. If you are attempting to use a custom object, be "
            "sure to append the '__c' after the entity name. Please reference your WSDL or the describe call "
            "for the appropriate names."
        )
        raise SoqlError("INVALID_TYPE", soql_error_message(q.soql, q.sobject_pos, reason))
    c = _Compiler(q, schema, obj)
    columns = tuple(c.column(ref) for ref in q.fields)
    where = c.expr(q.where) if q.where is not None else "1"
    if not include_deleted:
        where = f"deleted = 0 AND ({where})"
    order: list[OrderKey] = []
    for item in q.order_by:
        col = c.column(item.field)
        f = c.fields[col.name.lower()]
        if col.source == "address" or not f.get("sortable", True):
            reason = f"field '{col.name}' can not be sorted in a query call"
            raise SoqlError("INVALID_FIELD", soql_error_message(q.soql, item.field.pos, reason))
        order.append(OrderKey(col, item.descending, item.nulls_last))
    if not any(k.column.source == "id" for k in order):
        order.append(OrderKey(Column("Id", "id", "id"), False, False))
    return Compiled(obj, columns, q.count, where, tuple(c.params), tuple(order), q.limit, q.offset or 0)


def sort_key(compiled: Compiled, row: RecordRow) -> tuple[Any, ...]:
    """The values of the ORDER BY keys for ``row`` (as SQLite compares them)."""
    out: list[Any] = []
    for k in compiled.order:
        src = k.column.source
        if src == "id":
            out.append(row.id)
        elif src == "modstamp":
            out.append(row.modstamp)
        elif src == "created":
            out.append(row.created)
        elif src == "deleted":
            out.append(int(row.deleted))
        else:
            v = row.data.get(k.column.name)
            if v is None and k.column.name in _USER_DEFAULTS:
                v = USER_ID
            out.append(int(v) if isinstance(v, bool) else v)
    return tuple(out)


def _after(compiled: Compiled, key: Sequence[Any]) -> tuple[str, list[Any]]:
    """SQL for "sorts strictly after ``key``" in the compiled order (nulls placed as ORDER BY places them)."""
    order = compiled.order
    if all(not k.descending and k.column.source in _NON_NULL_COLUMNS for k in order):
        # Row values let SQLite start an index range scan right at the key.
        cols = ", ".join(k.column.sql for k in order)
        marks = ", ".join("?" for _ in order)
        return f"({cols}) > ({marks})", list(key)
    ors: list[str] = []
    params: list[Any] = []
    for i, k in enumerate(order):
        terms: list[str] = []
        p: list[Any] = []
        for j in range(i):
            terms.append(f"{order[j].column.sql} IS ?")
            p.append(key[j])
        sql, v = order[i].column.sql, key[i]
        nullable = k.column.source not in _NON_NULL_COLUMNS
        op = "<" if k.descending else ">"
        if v is None:
            if k.nulls_last:
                continue  # nothing sorts after a null placed last
            terms.append(f"{sql} IS NOT NULL")
        else:
            cond = f"{sql} {op} ?"
            p.append(v)
            if nullable and k.nulls_last:
                cond = f"({cond} OR {sql} IS NULL)"
            terms.append(cond)
        ors.append("(" + " AND ".join(terms) + ")")
        params.extend(p)
    return ("(" + " OR ".join(ors) + ")" if ors else "0"), params


def fetch_page(
    store: RecordStore, compiled: Compiled, *, after: Sequence[Any] | None, offset: int, limit: int
) -> list[RecordRow]:
    """Up to ``limit`` rows sorting after key ``after`` (or from the start, skipping ``offset``)."""
    where, params = compiled.where_sql, list(compiled.params)
    if after is not None:
        cond, extra = _after(compiled, after)
        where = f"({where}) AND {cond}"
        params.extend(extra)
    return store.select(
        compiled.sobject, where, params, order_by=compiled.order_sql, limit=limit, offset=offset
    )


def iter_rows(
    store: RecordStore, compiled: Compiled, *, after: Sequence[Any] | None, count: int, chunk: int = 2000
) -> Iterator[RecordRow]:
    """``count`` rows after key ``after``, fetched ``chunk`` at a time (bounded memory)."""
    left = count
    while left > 0:
        rows = fetch_page(store, compiled, after=after, offset=0, limit=min(chunk, left))
        if not rows:
            return
        yield from rows
        left -= len(rows)
        after = sort_key(compiled, rows[-1])


def field_value(col: Column, row: RecordRow) -> Any:
    """The REST JSON value of ``col`` for ``row``."""
    src = col.source
    if src == "id":
        return row.id
    if src == "deleted":
        return row.deleted
    if src == "modstamp":
        return format_datetime(row.modstamp)
    if src == "created":
        return format_datetime(row.created)
    if src == "address":
        parts = {key: row.data.get(col.compound_prefix + suffix) for key, suffix in ADDRESS_KEYS}
        return parts if any(v is not None for v in parts.values()) else None
    v = row.data.get(col.name)
    if v is None and col.name in _USER_DEFAULTS:
        return USER_ID
    return v


def render_record(compiled: Compiled, row: RecordRow, version: str) -> dict[str, Any]:
    """One query result record: ``attributes`` then the selected fields in SELECT order."""
    out: dict[str, Any] = {
        "attributes": {
            "type": compiled.sobject,
            "url": f"/services/data/{version}/sobjects/{compiled.sobject}/{row.id}",
        }
    }
    for col in compiled.columns:
        out[col.name] = field_value(col, row)
    return out
