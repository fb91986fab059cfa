"""Unit tests of the Salesforce emulator's SOQL parser, error texts and record ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.salesforce.describe import Schema
from sandbox.salesforce.engine import compile_query
from sandbox.salesforce.ids import is_valid_id, make_id, to_18
from sandbox.salesforce.soql import (
    And,
    Cmp,
    DateTimeLiteral,
    In,
    Like,
    Not,
    Or,
    SoqlError,
    parse,
    quote_string,
    tokenize,
)

# Real ids recorded from orgs, in /work/shared/vendor-fixtures/salesforce:
# composite_sobjects_upsert_*.cumulusci.response.json (A-rec), bulk2_query_job_create.airbyte.json,
# describe_contact.cumulusci.full.json (recordTypeId), bulk2_query_results.simple_salesforce.csv.
REAL_IDS = [
    "0035500001H9cakAAB",
    "0035500001H9caxAAB",
    "0015500001QdQWaAAN",
    "750Tn000004ZoR3IAK",
    "0050900000Bf63SAAR",
    "012000000000000AAA",
    "001xx000003DHP0AAO",
    "001xx000003DHP1AAO",
]

# The recorded INVALID_FIELD message (error_invalid_field.cumulusci.json).
FIXTURE_INVALID_FIELD = (
    "\nSELECT SetupOwnerId FROM npe5__Affiliation__c\n       ^\nERROR at Row:1:Column:8\n"
    "No such column 'SetupOwnerId' on entity 'npe5__Affiliation__c'. If you are attempting to use a custom "
    "field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
    "describe call for the appropriate names."
)


@pytest.mark.parametrize("sf_id", REAL_IDS)
def test_checksum_matches_real_ids(sf_id: str) -> None:
    assert to_18(sf_id[:15]) == sf_id
    assert is_valid_id(sf_id)
    assert is_valid_id(sf_id[:15])


def test_bad_checksum_and_shapes_are_rejected() -> None:
    assert not is_valid_id("0035500001H9cakAAA")
    assert not is_valid_id("003-not-an-id")
    with pytest.raises(ValueError, match="not a Salesforce id"):
        to_18("short")


def test_generated_ids_sort_in_creation_order_and_verify() -> None:
    ids = [make_id("003", n) for n in (0, 1, 9, 10, 35, 36, 61, 62, 3843, 3844, 10**9)]
    assert ids == sorted(ids)  # byte order == creation order
    assert all(len(i) == 18 and i.startswith("003") and is_valid_id(i) for i in ids)


def test_incremental_keyset_query_parses() -> None:
    q = parse(
        "SELECT Id, SystemModstamp FROM Contact WHERE SystemModstamp > 2024-01-01T00:00:00Z OR "
        "(SystemModstamp = 2024-01-01T00:00:00.000+0000 AND Id > '0035d0000000001AAA') "
        "ORDER BY SystemModstamp, Id LIMIT 200"
    )
    assert [f.name for f in q.fields] == ["Id", "SystemModstamp"]
    assert q.sobject == "Contact"
    assert q.limit == 200
    assert [(o.field.name, o.descending) for o in q.order_by] == [("SystemModstamp", False), ("Id", False)]
    assert isinstance(q.where, Or)
    first, second = q.where.items
    assert isinstance(first, Cmp)
    assert first.value == DateTimeLiteral(1704067200000, "2024-01-01T00:00:00Z")
    assert isinstance(second, And)
    stamp, ident = second.items
    assert isinstance(stamp, Cmp)
    assert isinstance(stamp.value, DateTimeLiteral)
    assert stamp.value.ms == 1704067200000
    assert isinstance(ident, Cmp)
    assert (ident.op, ident.value) == (">", "0035d0000000001AAA")


def test_operators_in_like_not_null_and_literals() -> None:
    q = parse(
        "select Id from Lead where not (Email like '%\\_x%') and Lead_Score__c in (1, 2.5, -3) "
        "and Title <> null and IsConverted = false and Country not in ('France') "
        "order by Lead_Score__c desc nulls last limit 5 offset 10"
    )
    assert isinstance(q.where, And)
    neg, score, title, conv, country = q.where.items
    assert isinstance(neg, Not)
    assert isinstance(neg.item, Like)
    assert neg.item.pattern == "%\\_x%"  # \_ stays an escaped literal underscore for SQL LIKE
    assert isinstance(score, In)
    assert score.values == (1, 2.5, -3)
    assert isinstance(title, Cmp)
    assert (title.op, title.value) == ("!=", None)
    assert isinstance(conv, Cmp)
    assert conv.value is False
    assert isinstance(country, In)
    assert country.negate
    assert q.order_by[0].descending
    assert q.order_by[0].nulls_last
    assert (q.limit, q.offset) == (5, 10)


def test_count_query() -> None:
    q = parse("SELECT COUNT() FROM Contact WHERE IsDeleted = true")
    assert q.count
    assert q.fields == ()


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("'O\\'Brien'", "O'Brien"),
        ("'back\\\\slash'", "back\\slash"),
        ("'line\\nbreak\\ttab'", "line\nbreak\ttab"),
        ("'quote\\\"d'", 'quote"d'),
        ("'Zoë Müller 李'", "Zoë Müller 李"),
    ],
)
def test_string_escapes(literal: str, value: str) -> None:
    q = parse(f"SELECT Id FROM Contact WHERE LastName = {literal}")  # noqa: S608 - SOQL, not SQL
    assert isinstance(q.where, Cmp)
    assert q.where.value == value


def test_invalid_escape_is_malformed_query() -> None:
    with pytest.raises(SoqlError) as err:
        parse("SELECT Id FROM Contact WHERE LastName = 'a\\qb'")
    assert err.value.code == "MALFORMED_QUERY"
    assert "ERROR at Row:1:Column:" in err.value.message


@given(st.text())
def test_quote_string_round_trips(value: str) -> None:
    q = parse(f"SELECT Id FROM Contact WHERE LastName = {quote_string(value)}")  # noqa: S608 - SOQL, not SQL
    assert isinstance(q.where, Cmp)
    assert q.where.value == value


@pytest.mark.parametrize(
    ("soql", "column", "token"),
    [
        ("SELECT Id, FROM Contact", 12, "'FROM'"),
        ("SELECT Id FROM", 15, "<EOF>"),
        ("SELECT Id FROM Contact WHERE", 29, "<EOF>"),
        ("SELECT Id FROM Contact LIMIT x", 30, "'x'"),
        ("SELECT Id FROM Contact WHERE Name = 'open", 37, "<EOF>"),
    ],
)
def test_syntax_errors_name_the_token_and_column(soql: str, column: int, token: str) -> None:
    with pytest.raises(SoqlError) as err:
        parse(soql)
    assert err.value.code == "MALFORMED_QUERY"
    assert err.value.message.startswith(f"\n{soql}\n{' ' * (column - 1)}^\nERROR at Row:1:Column:{column}\n")
    assert err.value.message.endswith(f"unexpected token: {token}")


def test_multiline_query_error_points_at_the_row() -> None:
    with pytest.raises(SoqlError) as err:
        parse("SELECT Id\nFROM Contact\nWHERE = 1")
    assert "\nWHERE = 1\n      ^\nERROR at Row:3:Column:7\n" in err.value.message


def test_invalid_field_message_has_the_recorded_layout() -> None:
    with pytest.raises(SoqlError) as err:
        compile_query(parse("SELECT SetupOwnerId FROM Contact"), Schema(), include_deleted=False)
    assert err.value.code == "INVALID_FIELD"
    assert err.value.message == FIXTURE_INVALID_FIELD.replace("npe5__Affiliation__c", "Contact")


def test_unknown_object_compound_filter_and_type_errors() -> None:
    schema = Schema()
    with pytest.raises(SoqlError, match="sObject type 'Foo' is not supported") as e1:
        compile_query(parse("SELECT Id FROM Foo"), schema, include_deleted=False)
    assert e1.value.code == "INVALID_TYPE"
    with pytest.raises(SoqlError, match="can not be filtered") as e2:
        compile_query(
            parse("SELECT Id FROM Contact WHERE MailingAddress = 'x'"), schema, include_deleted=False
        )
    assert e2.value.code == "INVALID_FIELD"
    with pytest.raises(SoqlError, match="must be of type dateTime and should not be enclosed in quotes"):
        compile_query(
            parse("SELECT Id FROM Contact WHERE SystemModstamp > '2024-01-01'"), schema, include_deleted=False
        )


def test_field_names_are_case_insensitive_and_canonicalised() -> None:
    c = compile_query(
        parse("select id, lastname from contact where EMAIL != null"), Schema(), include_deleted=False
    )
    assert c.sobject == "Contact"
    assert [col.name for col in c.columns] == ["Id", "LastName"]
    assert c.where_sql.startswith("deleted = 0")


def test_tokenizer_positions() -> None:
    toks = tokenize("SELECT Id FROM Contact WHERE CreatedDate >= 2024-05-01T10:00:00+02:00")
    assert [t.text for t in toks[-3:-1]] == [">=", "2024-05-01T10:00:00+02:00"]
    assert toks[1].pos == 7
