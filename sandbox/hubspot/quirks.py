"""HubSpot behaviours seen in production that the happy path does not show, as switches of one portal.

Each switch is either how HubSpot always behaves (on by default) or a fault reported from production
portals (off by default; the contract tests turn them on). Evidence per rule is cited here and in
docs/VENDOR-FAITHFULNESS.md.

* ``stale_search_hits_s`` (fault): records archived within the last N seconds still count in the
  search index: they take their place in ``total`` and in the offset paging but are dropped from
  ``results``, so a page comes back short or empty while ``paging.next.after`` is still set. Reported
  from production portals by other connectors' maintainers (airbytehq/airbyte PRs #80744 and #80745,
  "continue CRM search pagination on short pages": pages "underfilled or empty" with a next cursor).
  That stale index hits are the *cause* is our guess; the shape (short/empty page + next) is reported.
* ``encoded_list_cursors`` (fault): the list API's ``paging.next.after`` is an opaque, URL-encoded
  token, as in HubSpot's own spec example (``"after": "NTI1Cg%3D%3D"``, base64 of ``525\\n``, in
  /work/shared/vendor-fixtures/hubspot/paging_next_page.example.hubspot_spec.json). A client that
  sends it back through an SDK that encodes query parameters sends ``%253D``: refused with a 400
  (the refusal's text is a guess). Off by default because live list pages usually carry plain
  numeric cursors (e.g. ``"after": "123456789"`` in public captures).
* ``batch_create_status`` (default 201): HubSpot's spec and a 2026 report on objects batch create
  (HubSpot/hubspot-api-php#603: "the HubSpot API returns 201 Created for batch-create") say 201;
  associations batch create switched to 200 on 2025-08-21 (HubSpot/hubspot-api-python#448,
  HubSpot/hubspot-api-php#506). Set 200 to emulate that switch reaching objects (a guess).
* ``retry_after_header`` (default off): HubSpot documents ``Retry-After`` for 477 only, not for its
  429s (https://developers.hubspot.com/docs/api-reference/error-handling); a 429 of the rate limiter
  carries it only when this is on. Injected ``rate_limit`` faults (sandbox.faults) always carry it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["Quirks", "decode_list_cursor", "encode_list_cursor"]


@dataclass
class Quirks:
    """The switches of one emulated portal (see the module docstring); change them at any time."""

    stale_search_hits_s: float = 0.0
    encoded_list_cursors: bool = False
    batch_create_status: int = 201
    retry_after_header: bool = False


def encode_list_cursor(next_num: int, *, encoded: bool) -> str:
    """The list API's ``after`` for the page starting at record number ``next_num``."""
    if not encoded:
        return str(next_num)
    return quote(base64.b64encode(f"{next_num}\n".encode()).decode(), safe="")


def decode_list_cursor(after: str) -> int | None:
    """The record number an ``after`` (as the server receives it, URL-decoded once) points at; None
    for a token that is neither a number nor HubSpot's base64 form (e.g. one encoded twice)."""
    text = after.strip()
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    try:
        raw = base64.b64decode(text, validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(raw) if raw.isdigit() else None
