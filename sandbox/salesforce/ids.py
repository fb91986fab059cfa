"""Salesforce record ids: 15-character case-sensitive ids and their 18-character case-safe form.

A 15-character id is the object's 3-character key prefix (``003`` Contact, ``001`` Account,
``00Q`` Lead), a 2-character pod/instance part and a 10-character base-62 serial. The 18-character
form appends a 3-character checksum: each 5-character chunk yields one character, a bit per
upper-case letter (first character = lowest bit), looked up in ``A..Z0..5``. Salesforce documents
the 18-character form as the case-insensitive id returned by the API:
https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/field_types.htm#i1435616
(the checksum algorithm itself is only published by third parties, e.g.
https://gist.github.com/hynekcer/0f8416c8bf05316141bed12a749af33a; the tests check it against
real ids recorded from an org).

Serials are encoded in the base-62 alphabet ``0-9A-Za-z``, which is in ASCII order, with a fixed
width, so ids of one object sort byte-wise in creation order (keyset paging on ``Id`` relies on it).
"""

from __future__ import annotations

__all__ = ["CHECKSUM_ALPHABET", "KEY_PREFIXES", "is_valid_id", "make_id", "to_18"]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
# Standard key prefixes: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_concepts.htm
KEY_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "Lead": "00Q",
    "User": "005",
    "Organization": "00D",
    "Opportunity": "006",
    "OpportunityContactRole": "00K",
}
_POD = "5d"
_SERIAL_WIDTH = 10


def _checksum(id15: str) -> str:
    out = []
    for start in (0, 5, 10):
        bits = 0
        for i, ch in enumerate(id15[start : start + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        out.append(CHECKSUM_ALPHABET[bits])
    return "".join(out)


def to_18(sf_id: str) -> str:
    """The 18-character case-safe form of a 15- or 18-character id (18 → recomputed suffix)."""
    if len(sf_id) not in (15, 18) or not sf_id.isalnum() or not sf_id.isascii():
        raise ValueError(f"not a Salesforce id: {sf_id!r}")
    return sf_id[:15] + _checksum(sf_id[:15])


def is_valid_id(sf_id: str) -> bool:
    """True for a well-formed 15-character id or an 18-character id with a correct checksum."""
    try:
        full = to_18(sf_id)
    except ValueError:
        return False
    return len(sf_id) == 15 or full == sf_id


def make_id(prefix: str, serial: int) -> str:
    """The 18-character id of serial number ``serial`` (≥ 0) for the object with key ``prefix``."""
    if serial < 0 or serial >= 62**_SERIAL_WIDTH:
        raise ValueError(f"serial out of range: {serial}")
    digits = []
    n = serial
    for _ in range(_SERIAL_WIDTH):
        n, r = divmod(n, 62)
        digits.append(BASE62[r])
    id15 = prefix + _POD + "".join(reversed(digits))
    return id15 + _checksum(id15)
