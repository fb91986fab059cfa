"""Regression tests of the emulators' strict request-JSON parsing (found by tests/chaos/test_bad_input.py)."""

from __future__ import annotations

import pytest

from sandbox.jsonbody import MAX_DEPTH, BadJson, parse_body


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "Infinity"),
        (b'{"a": 1e999}', "overflows"),
        (b"[" * 10_000 + b"]" * 10_000, "nesting depth"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nesting depth"),
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b'{"a": "trunc', "Unterminated string"),
    ],
)
def test_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(BadJson, match=reason) as err:
        parse_body(raw)
    assert "\\ud800" not in err.value.reason  # the reason describes, it does not quote the body


def test_accepted_as_the_vendors_do() -> None:
    assert parse_body(b"\xef\xbb\xbf" + b'{"a": 1}') == {"a": 1}  # a BOM is skipped
    assert parse_body(b'{"a": 1, "a": 2}') == {"a": 2}  # a repeated key keeps its last value
    assert parse_body(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert parse_body(b'{"a": "\\ud83d\\ude00 \\u0000"}') == {"a": "\U0001f600 \x00"}
    assert parse_body(b"  ", empty={}) == {}
