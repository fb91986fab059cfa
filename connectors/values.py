"""Date and time values converted to what the *destination's* described field type accepts, and
whether a string can be sent to a vendor at all (:func:`is_utf8`).

Pure functions (no I/O, no vendor SDK). A writer looks up each field's type in its own describe
(HubSpot properties, Salesforce describe) and passes the value through :func:`for_hubspot` or
:func:`for_salesforce`; values of other types, ``None`` and values that are no date at all come back
unchanged (the vendor refuses those with its own per-record code).

What each side sends and accepts (evidence in docs/VENDOR-FAITHFULNESS.md):

* HubSpot ``date``: epoch milliseconds at **midnight UTC** of the day; any other time of day is
  refused with ``INVALID_DATE`` ("1641038400000 is at 12:0:0.0 UTC, not midnight!";
  https://developers.hubspot.com/docs/faq/how-should-timestamps-be-formatted-for-hubspots-apis).
  An instant becomes midnight UTC of its UTC day.
* HubSpot ``datetime``: any epoch-millisecond instant (sent as a decimal string).
* Salesforce ``datetime``: ISO 8601 in UTC with milliseconds, ``2024-05-01T13:45:00.000Z``.
* Salesforce ``date``: ``YYYY-MM-DD`` (the UTC day of an instant).

What can arrive (:func:`parse_instant`): ``datetime``/``date`` objects (naive = UTC), epoch
milliseconds as int, float or digit string (HubSpot returns some datetime properties so, and some
as float strings: airbytehq/airbyte PRs #58105, #60962), ISO 8601 with or without milliseconds,
``Z`` or an offset (HubSpot returns some without milliseconds), and ``YYYY-MM-DD``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

__all__ = ["DATE_TYPES", "for_hubspot", "for_salesforce", "is_utf8", "parse_instant"]

DATE_TYPES = frozenset({"date", "datetime"})
"""Destination types this module converts (HubSpot and Salesforce describe both by these names)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_EPOCH_MS = re.compile(r"^-?\d{1,16}(\.\d+)?$")
_MIN_MS, _MAX_MS = -62_135_596_800_000, 253_402_300_799_999
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def parse_instant(value: Any) -> datetime | date | None:
    """A timezone-aware UTC ``datetime`` (an instant) or a ``date`` (a calendar day), or None.

    Numbers are epoch milliseconds. Booleans, empty text and anything unreadable are None.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(value, date):
        return value
    if isinstance(value, int | float):
        return _from_ms(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _EPOCH_MS.match(text):
        return _from_ms(float(text) if "." in text else int(text))
    day = _DAY.match(text)
    if day:
        try:
            return date(int(day[1]), int(day[2]), int(day[3]))
        except ValueError:
            return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _from_ms(ms: float) -> datetime | None:
    if ms != ms or not _MIN_MS <= ms <= _MAX_MS:  # NaN, or outside years 1..9999
        return None
    try:
        return _EPOCH + timedelta(milliseconds=int(ms))
    except OverflowError:
        return None


def _day_of(instant: datetime | date) -> date:
    return instant.date() if isinstance(instant, datetime) else instant


def _instant_of(instant: datetime | date) -> datetime:
    if isinstance(instant, datetime):
        return instant
    return datetime.combine(instant, time(0), tzinfo=UTC)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def _by_type(
    value: Any,
    type_: str | None,
    on_date: Callable[[date], str],
    on_datetime: Callable[[datetime], str],
) -> Any:
    if type_ not in DATE_TYPES:
        return value
    instant = parse_instant(value)
    if instant is None:
        return value
    return on_date(_day_of(instant)) if type_ == "date" else on_datetime(_instant_of(instant))


def for_hubspot(value: Any, hubspot_type: str | None) -> Any:
    """``value`` as a HubSpot property of ``hubspot_type`` takes it (see the module docstring)."""
    return _by_type(value, hubspot_type, lambda day: str(_ms(_instant_of(day))), lambda m: str(_ms(m)))


def for_salesforce(value: Any, salesforce_type: str | None) -> Any:
    """``value`` as a Salesforce field of ``salesforce_type`` takes it (see the module docstring)."""
    return _by_type(value, salesforce_type, date.isoformat, _iso_z)


def _iso_z(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 — false for lone surrogates, which neither vendor's JSON or
    SOQL can carry. Answers without raising, so a caller's error never holds the text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
