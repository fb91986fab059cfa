"""Projection: every record cut down to the fields the instruction allows, before anything else.

:func:`project` keeps only the allowed top-level fields of an object's records (the allowlist is
compiled once per instruction hash and object) and replaces the fields marked for pseudonymization
with keyed pseudonyms; the :class:`Projection` it returns says what was withheld (field names and
counts, never values). Input records are not modified.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from governance.policy._instruction import ProcessingInstruction
from governance.policy._plan import PlanRefused
from governance.pseudonym import Pseudonymizer
from schemas.connector import Record
from schemas.errors import ConfigError

__all__ = ["Projection", "project"]


@dataclass(frozen=True, slots=True)
class Projection:
    """Projected records plus what was withheld (names and counts only) for lineage."""

    records: list[Record]
    object: str
    instruction_version: int
    instruction_hash: str
    records_in: int
    withheld_fields: tuple[str, ...]
    withheld_values: int
    pseudonymized: dict[str, int]

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts for a lineage event (no record content)."""
        return {
            "object": self.object,
            "instruction_version": self.instruction_version,
            "instruction_hash": self.instruction_hash,
            "records": self.records_in,
            "withheld_fields": list(self.withheld_fields),
            "withheld_values": self.withheld_values,
            "pseudonymized": dict(self.pseudonymized),
        }


@dataclass(frozen=True, slots=True)
class _Compiled:
    allowed: frozenset[str]
    allowed_order: tuple[str, ...]
    pseudonymize: tuple[str, ...]


_compiled_cache: dict[tuple[str, str], _Compiled] = {}
_compiled_lock = threading.Lock()


def _compile(instruction: ProcessingInstruction, obj: str) -> _Compiled:
    key = (instruction.content_hash, obj)
    compiled = _compiled_cache.get(key)
    if compiled is not None:
        return compiled
    fields = instruction.allowed_fields.get(obj)
    if fields is None:
        raise PlanRefused.under(
            instruction,
            "object",
            f"object {obj!r} is not in allowed_fields of instruction v{instruction.version}",
            source_object=obj,
        )
    compiled = _Compiled(frozenset(fields), fields, instruction.pseudonymize.get(obj, ()))
    with _compiled_lock:
        if len(_compiled_cache) > 1024:
            _compiled_cache.clear()
        _compiled_cache[key] = compiled
    return compiled


def project(
    records: Sequence[Mapping[str, Any]],
    instruction: ProcessingInstruction,
    object: str,
    *,
    pseudonymizer: Pseudonymizer | None = None,
) -> Projection:
    """Keep only the fields ``instruction`` allows for ``object`` (top-level keys), then replace
    fields marked for pseudonymization with keyed pseudonyms. Input records are not modified.

    Raises :class:`PlanRefused` for an object the instruction does not cover and
    :class:`ConfigError` if pseudonymization is required but no ``pseudonymizer`` is given.
    """
    c = _compile(instruction, object)
    allowed = c.allowed
    order = c.allowed_order
    n_allowed = len(order)
    out: list[Record] = []
    append = out.append
    total_in = 0
    for rec in records:
        size = len(rec)
        total_in += size
        if size > n_allowed:
            append({k: rec[k] for k in order if k in rec})
        else:
            append({k: v for k, v in rec.items() if k in allowed})
    seen: set[str] = set()
    seen.update(*records)
    withheld = tuple(sorted(seen - allowed))
    total_out = sum(map(len, out))
    counts: dict[str, int] = {}
    if c.pseudonymize:
        if pseudonymizer is None:
            raise ConfigError(
                f"instruction v{instruction.version} pseudonymizes fields of {object!r}; pass a Pseudonymizer"
            )
        tenant = instruction.tenant
        ps = pseudonymizer.pseudonymize
        for f in c.pseudonymize:
            n = 0
            for rec in out:
                v = rec.get(f)
                # "" is no value in either CRM (HubSpot clears the property, Salesforce stores null):
                # a pseudonym of it would invent a value the source does not have.
                if v is not None and v != "":
                    rec[f] = ps(tenant, v)
                    n += 1
            counts[f] = n
    return Projection(
        records=out,
        object=object,
        instruction_version=instruction.version,
        instruction_hash=instruction.content_hash,
        records_in=len(out),
        withheld_fields=withheld,
        withheld_values=total_in - total_out,
        pseudonymized=counts,
    )
