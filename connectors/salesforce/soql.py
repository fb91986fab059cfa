"""SOQL text built safely: identifiers checked, values quoted by the SOQL literal rules.

Nothing from a record or a caller reaches a query except through :func:`ident` (API names only:
letters, digits, underscores) or :func:`literal` (typed values in SOQL literal syntax):

* strings are single-quoted with ``\\``, ``'``, ``"``, newline, carriage return, tab, backspace
  and form feed escaped (Salesforce's quoted-string escape sequences:
  https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm);
* dateTime literals are unquoted ISO 8601 in UTC with milliseconds (``2024-01-01T00:00:00.000Z``),
  dates are ``YYYY-MM-DD``; naive datetimes are refused (their instant is unknown);
* numbers are written in plain decimal notation (SOQL has no exponent form); NaN and infinities
  are refused;
* ``None`` is ``null``, booleans ``true``/``false``.

A value that cannot be written (a lone surrogate, NaN, an unknown type) raises :class:`ValueError`
or :class:`TypeError` — never a best-effort rendering.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal

from connectors.values import is_utf8

__all__ = ["format_datetime", "ident", "is_ident", "literal", "parse_datetime", "quote"]

_IDENT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_ESCAPE_TABLE = str.maketrans(_ESCAPES)


def is_ident(name: object) -> bool:
    """Whether ``name`` is a plain API name (object or field, custom ``__c`` included)."""
    return isinstance(name, str) and _IDENT_RE.match(name) is not None


def ident(name: str) -> str:
    """``name`` if it is a plain API name, else ValueError."""
    if not is_ident(name):
        raise ValueError("not a Salesforce API name")
    return name


def quote(value: str) -> str:
    """``value`` as a SOQL string literal; ValueError if it cannot be sent as UTF-8 (lone surrogates)."""
    if not is_utf8(value):
        raise ValueError("string is not valid Unicode (lone surrogate)")
    return "'" + value.translate(_ESCAPE_TABLE) + "'"


def format_datetime(value: dt.datetime) -> str:
    """An aware datetime as a SOQL dateTime literal in UTC with milliseconds."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: give a timezone")
    u = value.astimezone(dt.UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond // 1000:03d}Z"
    )


def parse_datetime(text: str) -> dt.datetime:
    """A Salesforce dateTime (REST ``...000+0000`` or Bulk ``...000Z``) as an aware UTC datetime."""
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def _number(value: int | float | Decimal) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and infinities have no SOQL literal")
        value = Decimal(repr(value))
    if not value.is_finite():
        raise ValueError("NaN and infinities have no SOQL literal")
    return format(value, "f")


def literal(value: object) -> str:
    """``value`` in SOQL literal syntax (see the module docstring for each type)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return _number(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"no SOQL literal for a {type(value).__name__}")
