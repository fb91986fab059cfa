"""The type contract of a run: the field types it saw at plan time, held to on every record.

:func:`screen` holds back (quarantines) a record whose allowed field carries a value that no longer
fits its planned describe type (:func:`fits`: a number field now carrying text, a date field a
non-date, a checkbox a string), naming field, planned and observed kind (:func:`value_kind`) —
never the value. :func:`check_types` refuses the next run while a field it reads has another type
at the source than the one accepted under the same instruction (the controller re-issues it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from governance.policy._instruction import ProcessingInstruction
from governance.policy._plan import PlanRefused
from schemas.connector import Record

__all__ = ["Misfit", "Screening", "check_types", "fits", "screen", "value_kind"]


# Vendor describe types (Salesforce field ``type``, HubSpot property ``type``) by what a value of
# theirs looks like on the wire. Types not listed (address, location, base64, anyType …) are not
# checked: crmhub cannot tell a misfit from their wire form.
_NUMBER_TYPES = frozenset({"double", "currency", "percent", "int", "long", "number"})
_BOOLEAN_TYPES = frozenset({"boolean", "bool"})
_DATE_TYPES = frozenset({"date"})
_DATETIME_TYPES = frozenset({"datetime"})
_TEXT_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox",
     "enumeration", "id", "reference", "encryptedstring"}
)  # fmt: skip
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?")
_EPOCH_MS_RE = re.compile(r"-?\d{1,15}")


def value_kind(value: Any) -> str:
    """What a value is, in words that say nothing about the value itself: ``boolean``, ``number``,
    ``text``, ``object`` or ``list`` (a vendor's JSON kinds)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "object"
    return "list" if isinstance(value, list | tuple) else type(value).__name__


def _number_text(text: str) -> bool:
    try:
        f = float(text.strip())
    except ValueError:
        return False
    return math.isfinite(f)


def _date_text(text: str, *, with_time: bool) -> bool:
    t = text.strip()
    if _EPOCH_MS_RE.fullmatch(t):  # HubSpot writes and may return date(-time)s as epoch ms
        return True
    if not (_DATETIME_RE.fullmatch(t) or (not with_time and _DATE_RE.fullmatch(t))):
        return False
    try:
        datetime.fromisoformat(t.replace("Z", "+00:00").replace("+0000", "+00:00"))
    except ValueError:
        return False
    return True


def fits(value: Any, planned: str) -> bool:
    """Whether ``value`` (as a connector returned it) fits the describe type ``planned``.

    ``None`` always fits (no value). Numbers fit number types, and so does text that reads as a
    finite number (HubSpot returns every value as text); booleans fit checkboxes, as does the text
    ``true``/``false``; ISO dates (or epoch milliseconds) fit date and datetime types; text fits
    text types. Anything else does not fit.
    """
    if value is None:
        return True
    t = planned.lower()
    if t in _NUMBER_TYPES:
        if isinstance(value, bool):
            return False
        if isinstance(value, int | float):
            return math.isfinite(value)
        return isinstance(value, str) and _number_text(value)
    if t in _BOOLEAN_TYPES:
        if isinstance(value, bool):
            return True
        return isinstance(value, str) and value.strip().lower() in ("true", "false")
    if t in _DATE_TYPES or t in _DATETIME_TYPES:
        return isinstance(value, str) and _date_text(value, with_time=t in _DATETIME_TYPES)
    if t in _TEXT_TYPES:
        return isinstance(value, str)
    return True


@dataclass(frozen=True, slots=True)
class Misfit:
    """One field of one record whose value does not fit the planned type (never the value)."""

    field: str
    planned: str
    observed: str  # value_kind() of the value, plus the live describe type when it changed

    @property
    def reason(self) -> str:
        return f"{self.field}: planned type {self.planned}, observed {self.observed}"


@dataclass(frozen=True, slots=True)
class Screening:
    """Records split by the type contract: ``kept`` go on, ``held`` are quarantined with why."""

    kept: list[Record]
    kept_positions: list[int]
    held: list[tuple[int, list[Misfit]]]  # (position in the input, the record's misfits)

    def reasons(self) -> dict[str, int]:
        """How many held records each misfit reason covers (for lineage and progress)."""
        out: dict[str, int] = {}
        for _, misfits in self.held:
            for m in misfits:
                out[m.reason] = out.get(m.reason, 0) + 1
        return dict(sorted(out.items()))


def screen(
    records: Sequence[Record], planned: Mapping[str, str], *, live: Mapping[str, str] | None = None
) -> Screening:
    """Split ``records`` by ``planned`` (field → describe type at plan time): a record with any value
    that does not :func:`fits` its field's planned type is held. ``live`` (the describe types now) is
    named in the reason when it differs. Fields not in ``planned`` are not checked here (projection
    drops those outside the instruction)."""
    kept: list[Record] = []
    positions: list[int] = []
    held: list[tuple[int, list[Misfit]]] = []
    checks = tuple(planned.items())
    for i, rec in enumerate(records):
        misfits: list[Misfit] = []
        for name, ftype in checks:
            value = rec.get(name)
            if value is not None and not fits(value, ftype):
                observed = value_kind(value)
                now = (live or {}).get(name)
                if now is not None and now != ftype:
                    observed = f"{observed} (the field is now {now})"
                misfits.append(Misfit(name, ftype, observed))
        if misfits:
            held.append((i, misfits))
        else:
            kept.append(rec)
            positions.append(i)
    return Screening(kept, positions, held)


def check_types(
    instruction: ProcessingInstruction,
    source_object: str,
    accepted: Mapping[str, str],
    live: Mapping[str, str],
) -> None:
    """Refuse (:class:`PlanRefused`, rule ``schema_drift``) a plan whose fields have another type at
    the source than the one ``accepted`` under this instruction: a field retyped from number to text
    may now hold other data than the controller instructed for. Re-issuing the instruction (a new
    version the sync cites) accepts the live types. Fields gone from the source are not judged
    here (the plan's field check names them)."""
    retyped = sorted((f, t, live[f]) for f, t in accepted.items() if f in live and live[f] != t)
    if not retyped:
        return
    field, was, now = retyped[0]
    listing = ", ".join(f"{f} {a} → {b}" for f, a, b in retyped)
    raise PlanRefused.under(
        instruction,
        "schema_drift",
        f"plan refused under instruction v{instruction.version}: the source changed the type of "
        f"{listing} since runs under this instruction began; the controller must re-issue the "
        "instruction (a new version the sync cites) to accept the new types",
        source_object=source_object,
        field=field,
        planned_type=was,
        live_type=now,
        fields=[f for f, _, _ in retyped],
    )
