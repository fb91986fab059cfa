"""The bad-input corpus of issue 7, scenario 7: naughty strings (blns, vendored in ``data/``), the
special strings the issue names, and malformed JSON documents. Deterministic: no randomness here;
suites that sample it take a seeded ``random.Random``."""

from __future__ import annotations

import json
import unicodedata
from functools import cache
from pathlib import Path

__all__ = ["BAD_JSON", "SPECIAL", "TWO_MB", "naughty_strings", "nfc_nfd_pair"]

DATA = Path(__file__).parent / "data"
TWO_MB = 2 * 1024 * 1024


@cache
def naughty_strings() -> tuple[str, ...]:
    """The Big List of Naughty Strings, duplicates removed, in file order."""
    strings: list[str] = json.loads((DATA / "blns.json").read_text(encoding="utf-8"))
    return tuple(dict.fromkeys(strings))


def nfc_nfd_pair(text: str = "Zoë Ångström-Café") -> tuple[str, str]:
    """The same text composed (NFC) and decomposed (NFD): equal to a reader, different code points."""
    nfc, nfd = unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text)
    assert nfc != nfd
    return nfc, nfd


# Strings the issue names, beyond blns (which has no NUL: it would make the file binary).
SPECIAL: dict[str, str] = {
    "nul": "before\x00after",
    "line_separators": "line\u2028separator\u2029paragraph",
    "rtl_override": "invoice\u202egnp.exe",
    "emoji_4_byte": "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f600 \U0001d573",
    "bom_inside": "\ufeffstarts with a BOM",
    "zero_width": "zero\u200bwidth\u200djoin",
    "control_chars": "tab\there\r\nCRLF\x1b[31mANSI",
    "nfc": nfc_nfd_pair()[0],
    "nfd": nfc_nfd_pair()[1],
}

_DEEP = 10_000
BAD_JSON: dict[str, bytes] = {
    "truncated": b'{"inputs":[{"id":"1","properties":{"email":"trunc',
    "invalid": b"{inputs: ]",
    "empty_array_top": b"[]",
    "string_top": b'"just a string"',
    "nan": b'{"inputs":[{"id":"1","properties":{"lead_score":NaN}}],"records":[{"x":NaN}]}',
    "infinity": b'{"inputs":[{"id":"1","properties":{"lead_score":-Infinity}}],"records":[{"x":Infinity}]}',
    "overflow": b'{"inputs":[{"id":"1","properties":{"lead_score":1e999}}],"records":[{"x":1e999}]}',
    "huge_int": b'{"limit":1' + b"0" * 5000 + b"}",
    "duplicate_keys": b'{"inputs":[],"inputs":[{"id":"1","properties":{"firstname":"a","firstname":"b"}}]}',
    "deep_arrays": b"[" * _DEEP + b"]" * _DEEP,
    "deep_objects": b'{"a":' * _DEEP + b"1" + b"}" * _DEEP,
    "bom_prefixed": b"\xef\xbb\xbf" + b'{"inputs":[]}',
    "raw_nul": b'{"inputs":[\x00]}',
    "escaped_nul": b'{"inputs":[{"id":"1","properties":{"firstname":"a\\u0000b"}}]}',
    "lone_surrogate": b'{"inputs":[{"id":"1","properties":{"firstname":"\\ud800"}}],"q":"\\udfff"}',
    "not_utf8": b'{"inputs":[{"id":"1","properties":{"firstname":"\xff\xfe\xc0"}}]}',
    "utf16": '{"inputs":[]}'.encode("utf-16"),
    "two_mb": json.dumps({"inputs": [{"id": "1", "properties": {"firstname": "x" * TWO_MB}}]}).encode(),
    "wrong_types": b'{"inputs":"x","records":{"a":1},"allOrNone":"maybe","properties":7,"idProperty":[1]}',
    "nested_wrong_types": b'{"inputs":[{"idProperty":{"a":1},"id":[1],"properties":[1,2]}],'
    b'"records":[1,null,"x",{"attributes":{"type":{"a":1}},"LastName":{"a":[1]}}]}',
}
