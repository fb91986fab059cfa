"""What a user changes on a sync after a refusal, and what they need to see to do it — shared by the
CLI (``crmhub sync set-instruction|set-mapping|status``) and the web app (syncs page, instruction
editor).

* :func:`repoint` points a sync at another instruction version and/or edits its field mapping, in
  the caller's transaction, after checking that the version exists, is the tenant's, is intact, and
  covers every field the sync reads (its mapping plus the key that fills the destination id) — a
  refusal is a :class:`NotCovered` naming the field and the fix. This is how a run refused for
  schema drift (rule ``schema_drift``) resumes: the controller re-issues the instruction and the
  sync cites the new version (docs/governance.md "Schema drift").
* :func:`sync_health` reads, from the store and the ledger (not Temporal, so it answers when no
  worker does), the latest run's quarantined records, the source drift it saw, a refusal with its
  rule and fields, and whether the next run will be refused.

Messages name fields, objects and versions — never values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection, Engine

from governance.lineage import Ledger
from governance.policy import (
    PlanRefused,
    ProcessingInstruction,
    SyncPlan,
    TransformRegistry,
    check,
    default_registry,
)
from schemas.errors import ConfigError
from schemas.lineage import EventKind
from schemas.sync import SyncStatus
from store import dead_letters as dead_letter_store
from store import instructions as instruction_store
from store import reconcile as reconcile_store
from store import runs as run_store
from store import syncs as sync_store

__all__ = [
    "MappingEdit",
    "NotCovered",
    "Refusal",
    "Repointed",
    "SyncHealth",
    "check_covers",
    "parse_pairs",
    "repoint",
    "sync_health",
]

RESUMABLE_RULES = frozenset({"schema_drift", "mapping", "transform_reads", "object", "window"})
"""Refusal rules a new instruction version (and perhaps a mapping edit) resolves."""


class NotCovered(ConfigError):
    """The instruction version does not cover the sync: ``field`` (if any) is the one it lacks."""

    def __init__(self, message: str, *, rule: str, field: str | None = None) -> None:
        super().__init__(message, code=f"not_covered.{rule}")
        self.rule = rule
        self.field = field


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    """``["A=b", …]`` → ``{"A": "b"}``; a :class:`ConfigError` names a malformed entry."""
    out: dict[str, str] = {}
    for pair in pairs:
        left, sep, right = pair.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise ConfigError(f"{what} {pair[:60]!r} must look like LEFT=RIGHT, e.g. Title=jobtitle")
        out[left.strip()] = right.strip()
    return out


@dataclass(frozen=True)
class MappingEdit:
    """Changes to a sync's mapping {source field: destination field}: ``rename`` a source field
    (old → new, the destination stays: the field was renamed at the source), ``drop`` source fields,
    ``put`` source → destination pairs (added or replaced). Applied in that order."""

    rename: Mapping[str, str] = field(default_factory=dict)
    drop: Sequence[str] = ()
    put: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rename or self.drop or self.put)

    def apply(self, mapping: Mapping[str, str]) -> dict[str, str]:
        out = dict(mapping)
        for old, new in self.rename.items():
            if old not in out:
                raise ConfigError(
                    f"cannot rename {old}: the mapping has no source field {old} ({_fields(out)})"
                )
            out = {(new if k == old else k): v for k, v in out.items()}
        for name in self.drop:
            if out.pop(name, None) is None:
                raise ConfigError(
                    f"cannot drop {name}: the mapping has no source field {name} ({_fields(out)})"
                )
        out.update(self.put)
        if not out:
            raise ConfigError("the mapping would be empty; keep at least one field")
        return out


def _fields(mapping: Mapping[str, str]) -> str:
    return "mapped: " + ", ".join(sorted(mapping))


@dataclass(frozen=True)
class Repointed:
    """What :func:`repoint` changed."""

    sync_id: str
    old_version: int
    version: int
    old_mapping: dict[str, str]
    mapping: dict[str, str]


def _instruction(row: instruction_store.InstructionRow, tenant: str) -> ProcessingInstruction:
    return ProcessingInstruction.from_stored(
        row.content, content_hash=row.content_hash, version=row.version, tenant=tenant
    )


def check_covers(
    spec: sync_store.SyncSpec, ins: ProcessingInstruction, *, at: datetime, registry: TransformRegistry
) -> None:
    """The plan check a run makes (:func:`governance.policy.check`), with the sync's mapping plus its
    key (:class:`NotCovered` naming the field and the fix). Transforms this process does not know
    are left to the worker's plan. The new-sync check (:mod:`services.sync_setup`) runs it too."""
    mapping = dict(spec.mapping)
    mapping.setdefault(spec.source_key_property, spec.destination_id_property)
    plan = SyncPlan(
        tenant=spec.tenant,
        source_object=spec.source_stream,
        destination_object=spec.destination_stream,
        field_mapping=mapping,
        transforms=tuple(t for t in spec.transforms if t in registry),
        purpose=ins.purpose,
        when=at,
        instruction_version=ins.version,
    )
    try:
        check(plan, ins, at=at, registry=registry)
    except PlanRefused as exc:
        raise _not_covered(spec, ins, exc) from None


def _not_covered(spec: sync_store.SyncSpec, ins: ProcessingInstruction, exc: PlanRefused) -> NotCovered:
    rule, obj, v = str(exc.reason["rule"]), spec.source_stream, ins.version
    name = exc.reason.get("field")
    if rule in ("mapping", "transform_reads") and isinstance(name, str):
        role = "its key" if name == spec.source_key_property else "its mapping"
        if name in spec.mapping:
            role += f" (→ {spec.mapping[name]})"
        return NotCovered(
            f"instruction v{v} does not allow {obj}.{name}, which sync {spec.id!r} reads through {role}; "
            f"fix: allow {name} in allowed_fields.{obj} of a new instruction version, or drop it from "
            "the sync's mapping",
            rule=rule,
            field=name,
        )
    if rule == "object":
        return NotCovered(
            f"instruction v{v} allows no field of {obj}, which sync {spec.id!r} reads; fix: list the "
            f"fields in allowed_fields.{obj} of a new instruction version",
            rule=rule,
        )
    if rule == "window":
        return NotCovered(
            f"instruction v{v} is not valid now ({exc.message.split(': ', 1)[-1]}); fix: issue a "
            "version whose validity window includes today",
            rule=rule,
        )
    return NotCovered(f"{exc.message}; fix: issue an instruction version that permits it", rule=rule)


def repoint(
    conn: Connection,
    tenant: str,
    sync_id: str,
    *,
    now: datetime,
    version: int | None = None,
    edit: MappingEdit | None = None,
    registry: TransformRegistry = default_registry,
) -> Repointed:
    """Point sync ``sync_id`` of ``tenant`` at instruction ``version`` (default: the one it cites)
    and apply ``edit`` to its mapping, after the checks of the module docstring. Changes nothing
    when a check fails (:class:`ConfigError`, :class:`NotCovered`, :class:`IntegrityError`)."""
    row = sync_store.get_sync(conn, tenant, sync_id)
    if row is None:
        raise ConfigError(f"tenant {tenant!r} has no sync {sync_id!r}; list them with: crmhub sync status")
    spec = row.spec
    target = spec.instruction_version if version is None else version
    ins_row = instruction_store.get_instruction(conn, tenant, target)
    if ins_row is None:
        latest = instruction_store.latest_instruction(conn, tenant)
        hint = f"the latest is v{latest.version}" if latest else "it has none yet"
        raise ConfigError(
            f"tenant {tenant!r} has no instruction v{target} ({hint}); store it first with: "
            "crmhub instruction load FILE"
        )
    ins = _instruction(ins_row, tenant)
    mapping = edit.apply(spec.mapping) if edit else dict(spec.mapping)
    changed = spec.model_copy(update={"mapping": mapping, "instruction_version": target})
    check_covers(changed, ins, at=now, registry=registry)
    if target != spec.instruction_version:
        sync_store.set_sync_instruction(conn, tenant, sync_id, target, now=now)
    if mapping != spec.mapping:
        sync_store.set_sync_mapping(conn, tenant, sync_id, mapping, now=now)
    return Repointed(sync_id, spec.instruction_version, target, dict(spec.mapping), mapping)


# ---- health ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Why the latest run was refused: the rule (``schema_drift``, ``mapping``, ``transfer`` …),
    the fields it names and the run's message. ``resumable``: a new instruction version resolves it."""

    rule: str
    fields: tuple[str, ...]
    message: str
    instruction_version: int | None = None  # the version the refused run was planned under

    @property
    def resumable(self) -> bool:
        return self.rule in RESUMABLE_RULES


@dataclass(frozen=True)
class SyncHealth:
    """A sync's state for people: the latest run and what needs their attention."""

    sync_id: str
    instruction_version: int
    latest_instruction: int | None
    last_run: run_store.RunRow | None
    quarantined_last_run: int  # records the latest run held back (a value no longer fit its type)
    quarantined_held: int  # quarantined records of the sync crmhub still holds (sealed)
    drift: tuple[str, ...]  # source schema changes seen by the latest run that planned
    refusal: Refusal | None  # the latest run was refused
    will_refuse: tuple[str, ...]  # fields retyped under the instruction cited: the next run is refused
    reconcile: str | None = None  # the source could not prove every delete: a reconciliation is owed

    @property
    def needs_instruction(self) -> bool:
        """A new instruction version (cited by the sync) is what lets the next run go."""
        r = self.refusal
        refused_here = (
            r is not None and r.resumable and r.instruction_version in (None, self.instruction_version)
        )
        return bool(self.will_refuse) or refused_here

    @property
    def repointed_since_refusal(self) -> bool:
        """The latest run was refused, and the sync cites another instruction version since."""
        r = self.refusal
        return r is not None and r.instruction_version not in (None, self.instruction_version)


def _refusal(engine: Engine, run: run_store.RunRow) -> Refusal:
    events = Ledger(engine, run.tenant).read_events(run_id=run.run_id)
    for e in reversed(events):
        if e.kind is EventKind.REFUSAL:
            listed = e.details.get("fields") or e.details.get("field") or ""
            fields = tuple(f for f in str(listed).split(",") if f)
            return Refusal(str(e.details.get("rule", "unknown")), fields, run.message, e.instruction_version)
    return Refusal("unknown", (), run.message)


def _retyped(line: str) -> tuple[str, str] | None:
    """``retyped X: a → b`` → ``(X, b)``."""
    if not line.startswith("retyped ") or ": " not in line or " → " not in line:
        return None
    name, _, change = line.removeprefix("retyped ").partition(": ")
    return name, change.rpartition(" → ")[2]


def sync_health(engine: Engine, tenant: str, sync_id: str, *, recent: int = 5) -> SyncHealth:
    """The sync's :class:`SyncHealth` (a :class:`ConfigError` for an unknown sync)."""
    with engine.connect() as conn:
        row = sync_store.get_sync(conn, tenant, sync_id)
        if row is None:
            raise ConfigError(f"tenant {tenant!r} has no sync {sync_id!r}")
        runs = [r for r in run_store.list_runs(conn, tenant, sync_id, limit=recent) if r.mode != "reconcile"]
        need = reconcile_store.reconcile_need(conn, tenant, sync_id)
        latest = instruction_store.latest_instruction(conn, tenant)
        cited = instruction_store.get_instruction(conn, tenant, row.spec.instruction_version)
        accepted = sync_store.accepted_types(conn, tenant, sync_id)
        held = dead_letter_store.count_quarantined(conn, tenant, sync_id)
        drift: tuple[str, ...] = ()
        for run in runs:  # a refused run plans nothing: the drift is the latest planned run's
            schema = run_store.run_schema(conn, run.run_id)
            if schema is not None:
                drift = tuple(schema[1])
                break
    last = runs[0] if runs else None
    refusal = _refusal(engine, last) if last and last.status == SyncStatus.REFUSED.value else None
    will_refuse: list[str] = []
    if accepted and cited and accepted[0] == cited.content_hash:
        for line in drift:
            change = _retyped(line)
            if change and change[0] in accepted[1] and accepted[1][change[0]] != change[1]:
                will_refuse.append(change[0])
    return SyncHealth(
        sync_id=sync_id,
        instruction_version=row.spec.instruction_version,
        latest_instruction=latest.version if latest else None,
        last_run=last,
        quarantined_last_run=int(last.counts.get("quarantined", 0)) if last else 0,
        quarantined_held=held,
        drift=drift,
        refusal=refusal,
        will_refuse=tuple(will_refuse),
        reconcile=need.reason if need else None,
    )
