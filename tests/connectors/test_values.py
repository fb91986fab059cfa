"""Property-based tests of :mod:`connectors.values`: every date/time shape either vendor hands over
becomes what the destination's described type accepts, and the HubSpot sandbox (which refuses a
non-midnight ``date`` as HubSpot does) accepts every converted value."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from connectors.values import for_hubspot, for_salesforce, parse_instant
from sandbox.hubspot.objects import parse_datetime_ms

DAY_MS = 86_400_000
instants = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 12, 31), timezones=st.just(dt.UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
days = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 12, 31))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)


def _ms(d: dt.datetime) -> int:
    return (d - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def _shapes(d: dt.datetime, tz: dt.tzinfo) -> list[object]:
    """The forms one instant arrives in from Salesforce or HubSpot."""
    local = d.astimezone(tz)
    return [
        d,
        local,
        d.replace(tzinfo=None),  # naive = UTC
        str(_ms(d)),  # HubSpot epoch-ms string
        _ms(d),
        f"{_ms(d)}.0",  # epoch ms as a float string (airbytehq/airbyte#60962)
        d.isoformat(timespec="milliseconds").replace("+00:00", "Z"),  # Salesforce DateTime
        d.isoformat(timespec="seconds").replace("+00:00", "Z"),  # ISO without milliseconds
        local.isoformat(timespec="milliseconds"),  # with an offset
    ]


@given(instants, offsets)
def test_every_shape_of_an_instant_parses_to_that_instant(d: dt.datetime, tz: dt.tzinfo) -> None:
    for shape in _shapes(d, tz):
        got = parse_instant(shape)
        if isinstance(shape, str) and "T" in shape and "." not in shape.split("T")[1]:
            assert got == d.replace(microsecond=0)
        else:
            assert got == d, shape


@given(instants, offsets)
def test_a_hubspot_date_is_midnight_utc_of_the_instants_utc_day(d: dt.datetime, tz: dt.tzinfo) -> None:
    for shape in _shapes(d, tz):
        value = for_hubspot(shape, "date")
        assert isinstance(value, str) and int(value) % DAY_MS == 0
        assert dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC).date() == d.date()
        assert for_hubspot(value, "date") == value  # idempotent
        assert parse_datetime_ms(value) == int(value)  # the sandbox takes it (no INVALID_DATE)


@given(days)
def test_a_calendar_day_keeps_its_day_on_both_sides(day: dt.date) -> None:
    for shape in (day, day.isoformat()):
        assert for_salesforce(shape, "date") == day.isoformat()
        ms = int(for_hubspot(shape, "date"))
        assert ms % DAY_MS == 0 and for_salesforce(str(ms), "date") == day.isoformat()
        assert for_salesforce(shape, "datetime") == f"{day.isoformat()}T00:00:00.000Z"


@given(instants, offsets)
def test_datetimes_round_trip_between_the_vendors_to_the_millisecond(d: dt.datetime, tz: dt.tzinfo) -> None:
    iso = for_salesforce(str(_ms(d)), "datetime")  # HubSpot epoch ms → Salesforce DateTime
    assert iso == d.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso.endswith("Z") and "T" in iso
    assert for_hubspot(iso, "datetime") == str(_ms(d))  # and back
    assert for_hubspot(d.astimezone(tz), "datetime") == str(_ms(d))
    assert for_salesforce(iso, "datetime") == iso


@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none()))
def test_other_types_and_non_dates_pass_through_unchanged(value: object) -> None:
    for type_ in ("string", "number", "enumeration", "bool", "double", None):
        assert for_hubspot(value, type_) is value and for_salesforce(value, type_) is value
    if parse_instant(value) is None:
        assert for_hubspot(value, "date") is value and for_salesforce(value, "datetime") is value


def test_unreadable_and_impossible_values() -> None:
    for value in ("2024-02-30", "next week", "", True, "1e400", float("nan"), "99999999999999999"):
        assert parse_instant(value) is None
        assert for_hubspot(value, "date") is value
