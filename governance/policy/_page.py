"""The governance step of one page of source records, in one call.

:class:`PageProcessor` holds what a pull settled once per activity (the instruction, the object,
its key field, the run's planned and live field types, the checked transforms, the tenant's
pseudonymizer); :meth:`PageProcessor.process` takes a page as the connector returned it and does,
in this order: the keyed hash of every record's source id (before anything else — the id itself
leaves only if the instruction allows it), the suppression list (a record whose keyed hash names a
restricted, objecting or erased data subject is dropped here and only counted), the type contract
(:func:`screen`: a record whose value no longer fits its planned type is quarantined), the
projection to the allowed fields with pseudonymization (:func:`project`, quarantined records too:
the quarantine holds nothing the staging would not), the declared transforms
(:func:`apply_transforms`) and the keyed hashes of the deleted ids. The :class:`GovernedPage` it
returns is everything the pull stages and records in lineage: records with their keys, quarantined
records with theirs and why, deleted keys, how many records were suppressed, and what was withheld
or pseudonymized (names and counts, never values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from governance.policy._contract import screen
from governance.policy._instruction import ProcessingInstruction
from governance.policy._plan import CheckResult
from governance.policy._projection import project
from governance.policy._transforms import Transform, TransformRegistry, apply_transforms
from governance.pseudonym import Pseudonymizer
from schemas.connector import Record
from schemas.errors import ConfigError, DataError

__all__ = ["GovernedPage", "PageProcessor", "Quarantined"]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A record held back by the type contract: its keyed hash, the record projected to the
    instruction (and pseudonymized) and why (field, planned and observed type — never the value)."""

    key: str
    record: Record
    reason: str


@dataclass(frozen=True, slots=True)
class GovernedPage:
    """One page after governance. ``keys[i]`` is the keyed hash of ``records[i]``'s source id."""

    records: list[Record]
    keys: list[str]
    quarantined: list[Quarantined]
    deleted: list[str]  # keyed hashes of the page's deleted source ids
    withheld_fields: tuple[str, ...]  # names of fields the instruction kept out
    withheld_values: int
    pseudonymized: int  # values replaced by pseudonyms
    suppressed: int = 0  # records of suppressed data subjects dropped (counted, never kept)

    @property
    def read(self) -> int:
        """Records the page brought (staged and quarantined)."""
        return len(self.records) + len(self.quarantined)


@dataclass(frozen=True, slots=True)
class PageProcessor:
    """The governance of one run's pages of ``source_object`` (see the module docstring); thread-safe and
    cheap to build (the allowlist is compiled once per instruction and object)."""

    instruction: ProcessingInstruction
    source_object: str  # the instruction's name of the records' object
    key_field: str  # the source primary key: its value is hashed, never kept as such
    pseudonymizer: Pseudonymizer
    transforms: Sequence[Transform] = ()
    planned_types: Mapping[str, str] | None = None  # the run's type contract (None: not checked)
    live_types: Mapping[str, str] | None = None  # the describe types now, named in a reason
    suppressed: frozenset[str] = frozenset()  # keyed hashes a data-subject request suppressed

    @classmethod
    def for_check(
        cls,
        checked: CheckResult,
        instruction: ProcessingInstruction,
        registry: TransformRegistry,
        *,
        key_field: str,
        pseudonymizer: Pseudonymizer,
        planned_types: Mapping[str, str] | None = None,
        live_types: Mapping[str, str] | None = None,
        suppressed: frozenset[str] = frozenset(),
    ) -> PageProcessor:
        """The processor of a plan that passed :func:`~governance.policy.check` under
        ``instruction``, its transforms taken from ``registry``."""
        transforms: list[Transform] = []
        for ref in checked.transforms:
            t = registry.get(ref)
            if t is None:  # pragma: no cover - check() refused unknown transforms already
                raise ConfigError(f"transform {ref} is not registered")
            transforms.append(t)
        return cls(
            instruction, checked.source_object, key_field, pseudonymizer, tuple(transforms),
            planned_types, live_types, suppressed,
        )  # fmt: skip

    def process(self, records: Sequence[Record], deleted_ids: Sequence[object] = ()) -> GovernedPage:
        """Govern one page. :class:`~schemas.errors.DataError` for a record without its key;
        :class:`PlanRefused` for an object the instruction does not cover."""
        tenant = self.instruction.tenant
        keyed_hash = self.pseudonymizer.keyed_hash
        keys: list[str] = []
        for rec in records:
            rid = rec.get(self.key_field)
            if rid is None or rid == "":
                raise DataError(f"a {self.source_object} record came without its key {self.key_field}")
            keys.append(keyed_hash(tenant, str(rid)))
        dropped = 0
        if self.suppressed:
            kept_pairs = [(k, r) for k, r in zip(keys, records, strict=True) if k not in self.suppressed]
            dropped = len(keys) - len(kept_pairs)
            if dropped:
                keys, records = [k for k, _ in kept_pairs], [r for _, r in kept_pairs]
        screened = screen(records, self.planned_types or {}, live=self.live_types)
        held: list[Quarantined] = []
        if screened.held:
            picked = project(
                [records[i] for i, _ in screened.held],
                self.instruction,
                self.source_object,
                pseudonymizer=self.pseudonymizer,
            )
            held = [
                Quarantined(keys[i], rec, "; ".join(m.reason for m in misfits))
                for (i, misfits), rec in zip(screened.held, picked.records, strict=True)
            ]
        kept = project(screened.kept, self.instruction, self.source_object, pseudonymizer=self.pseudonymizer)
        return GovernedPage(
            records=apply_transforms(kept.records, self.transforms),
            keys=[keys[i] for i in screened.kept_positions],
            quarantined=held,
            deleted=[keyed_hash(tenant, str(d)) for d in deleted_ids],
            withheld_fields=kept.withheld_fields,
            withheld_values=kept.withheld_values,
            pseudonymized=sum(kept.pseudonymized.values()),
            suppressed=dropped,
        )
