"""How many rows one REST query batch holds: the requested ``batchSize`` is only a hint.

Salesforce documents that the batch may be smaller than requested "based on the size and
complexity of records queried", and that a query selecting two or more custom long text fields is
held to 200 rows a batch:
https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_changing_batch_size.htm
https://developer.salesforce.com/docs/platform/api/guide/sforce-api-header-queryoptions.md

Emulated (always on): two or more custom long text fields (``textarea`` longer than 255) → at most
200 rows; one or more long text fields of any kind → at most 1,000 rows (a **guess**: the issue's
production report, no vendor page gives a number).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.salesforce.engine import Compiled

__all__ = ["LONG_TEXT_BATCH", "TWO_CUSTOM_LONG_TEXT_BATCH", "batch_size_for"]

TWO_CUSTOM_LONG_TEXT_BATCH = 200
LONG_TEXT_BATCH = 1000


def _long_text(field: Mapping[str, Any]) -> bool:
    return field.get("type") == "textarea" and int(field.get("length") or 0) > 255


def batch_size_for(requested: int, compiled: Compiled, fields: Mapping[str, Mapping[str, Any]]) -> int:
    """The batch size the org uses for ``compiled`` when ``requested`` was asked for."""
    long_text = [
        fields[c.name.lower()] for c in compiled.columns if _long_text(fields.get(c.name.lower(), {}))
    ]
    if sum(1 for f in long_text if f.get("custom")) >= 2:
        return min(requested, TWO_CUSTOM_LONG_TEXT_BATCH)
    if long_text:
        return min(requested, LONG_TEXT_BATCH)
    return requested
