"""SOQL quoting and literals: round trips through the sandbox's SOQL parser (the emulated Salesforce one)."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.salesforce.soql import format_datetime, ident, literal, parse_datetime, quote
from sandbox.salesforce.soql import And, Cmp, DateLiteral, DateTimeLiteral, parse

# Every Unicode code point a JSON/HTTP request can carry (no lone surrogates).
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60)


def _value(soql_literal: str) -> object:
    q = parse(f"SELECT Id FROM Contact WHERE LastName = {soql_literal}")  # noqa: S608 - the test subject
    assert isinstance(q.where, Cmp)
    return q.where.value


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_quoted_strings_round_trip(value: str) -> None:
    assert _value(quote(value)) == value


@settings(max_examples=2_000, deadline=None)
@given(TEXT, TEXT)
def test_a_quoted_value_cannot_leave_its_literal(a: str, b: str) -> None:
    # Whatever the values hold (quotes, backslashes, "OR", parentheses), the WHERE clause stays two
    # comparisons joined by AND.
    q = parse(f"SELECT Id FROM Contact WHERE LastName = {quote(a)} AND FirstName = {quote(b)}")  # noqa: S608
    assert isinstance(q.where, And)
    assert [c.value for c in q.where.items if isinstance(c, Cmp)] == [a, b]


@settings(max_examples=3_000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(min_value=-(10**18), max_value=10**18))
def test_numbers_round_trip(value: float) -> None:
    parsed = _value(literal(value))
    assert isinstance(parsed, int | float)
    if isinstance(value, float):
        # Plain decimal notation of the shortest repr reads back as the same double (a parser may
        # keep a dot-less literal as an integer; compared as a double field would be).
        assert float(parsed) == value
    else:
        assert parsed == value


@settings(max_examples=2_000, deadline=None)
@given(
    st.datetimes(
        min_value=dt.datetime(1700, 1, 1),
        max_value=dt.datetime(4000, 12, 31),
        timezones=st.timezones(),
    )
)
def test_datetimes_are_unquoted_iso_utc_and_round_trip(value: dt.datetime) -> None:
    text = literal(value)
    assert text.endswith("Z") and "'" not in text
    parsed = _value(text)
    assert isinstance(parsed, DateTimeLiteral)
    expected_ms = math.floor(value.timestamp() * 1000)
    assert abs(parsed.ms - expected_ms) <= 1
    assert parse_datetime(text) == value.astimezone(dt.UTC).replace(
        microsecond=value.microsecond // 1000 * 1000
    )


def test_other_literals() -> None:
    assert literal(None) == "null"
    assert literal(True) == "true"
    assert literal(False) == "false"
    assert literal(dt.date(2024, 2, 29)) == "2024-02-29"
    assert isinstance(_value(literal(dt.date(2024, 2, 29))), DateLiteral)
    assert literal(Decimal("12.50")) == "12.50"
    assert literal(1e20) == "100000000000000000000"
    assert literal(-1e-7) == "-0.0000001"
    assert _value(literal(-5)) == -5


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("Infinity")])
def test_nan_and_infinities_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="NaN"):
        literal(bad)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        quote("a\ud800b")
    with pytest.raises(ValueError, match="naive"):
        format_datetime(dt.datetime(2024, 1, 1))
    with pytest.raises(TypeError):
        literal(object())
    with pytest.raises(TypeError):
        literal([1, 2])


@pytest.mark.parametrize("name", ["Contact", "External_Id__c", "ns__Field__c", "MailingAddress"])
def test_api_names_pass(name: str) -> None:
    assert ident(name) == name


@pytest.mark.parametrize(
    "name", ["", "1abc", "Id, Email", "Name FROM User --", "Account.Name", "Lead'", "_x", "a b", "Ünïcode"]
)
def test_anything_else_is_not_an_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="API name"):
        ident(name)


def test_rest_and_bulk_datetime_forms_parse_to_the_same_instant() -> None:
    assert parse_datetime("2024-01-01T00:00:00.000+0000") == parse_datetime("2024-01-01T00:00:00.000Z")
