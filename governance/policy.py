"""Purpose limitation: processing instructions, transforms, plan checks and projection.

The controller's :class:`ProcessingInstruction` says what crmhub may do. Enforcement happens twice:

1. **Before a run** — :func:`check` rejects a :class:`SyncPlan` whose mapping or transforms read a
   field the instruction does not allow, whose transforms do not serve the instruction's purpose,
   or that runs outside the instruction's validity window. It raises :class:`PlanRefused` (a
   :class:`~schemas.errors.PurposeViolation`) whose ``reason`` dict is ready to be written as a
   lineage ``refusal`` event.
2. **On every record** — :func:`project` keeps only allowed fields *before* any transform sees
   them and replaces fields marked for pseudonymization with keyed pseudonyms; it reports what it
   withheld (names and counts, never values). :func:`apply_transforms` then gives each transform
   only the fields it declared it reads and keeps only the fields it declared it writes.

The field types a run saw at plan time are its contract: :func:`screen` holds back (quarantines) a
record whose allowed field carries a value that no longer fits its planned type (a number field now
carrying text, a date field a non-date, a checkbox a string), naming field, planned and observed
type — never the value. :func:`check_types` refuses the next run while a field it reads has another
type than the one accepted under the same instruction (the controller re-issues the instruction).

Error messages name fields, objects, transforms and purposes — never field values.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from governance.pseudonym import Pseudonymizer
from schemas.errors import ConfigError, DataError, IntegrityError, PurposeViolation

__all__ = [
    "CheckResult",
    "Misfit",
    "PlanRefused",
    "ProcessingInstruction",
    "Projection",
    "Record",
    "Screening",
    "SyncPlan",
    "Transform",
    "TransformRegistry",
    "apply_transforms",
    "check",
    "check_types",
    "default_registry",
    "fits",
    "load_instruction",
    "project",
    "register_transform",
    "screen",
    "value_kind",
]

Record = dict[str, Any]


# ---- the instruction -------------------------------------------------------------------------


def _clean_names(value: Iterable[str], where: str) -> tuple[str, ...]:
    names = list(value)
    if any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValueError(f"{where}: every entry must be a non-empty string")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: duplicate entries {dupes}")
    return tuple(sorted(names))


class ProcessingInstruction(BaseModel):
    """The controller's documented instruction (GDPR Art. 28(3)(a)), versioned and hashed.

    Field lists are normalised (sorted, duplicates refused) so :attr:`content_hash` depends on
    content, not on order. Treat instances as immutable.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1)
    version: int = Field(ge=1)
    purpose: str = Field(min_length=1)
    data_categories: tuple[str, ...] = ()
    allowed_fields: dict[str, tuple[str, ...]] = Field(min_length=1)
    pseudonymize: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    retention_days: int = Field(ge=1, le=36_500)
    permitted_regions: tuple[str, ...] = Field(min_length=1)
    permitted_subprocessors: tuple[str, ...] = ()
    valid_from: AwareDatetime
    valid_to: AwareDatetime | None = None

    _hash: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("data_categories", "permitted_regions", "permitted_subprocessors"):
            if isinstance(data.get(key), list | tuple):
                data[key] = _clean_names(data[key], key)
        for key in ("allowed_fields", "pseudonymize"):
            value = data.get(key)
            if isinstance(value, dict):
                data[key] = {
                    obj: _clean_names(fields, f"{key}.{obj}") if isinstance(fields, list | tuple) else fields
                    for obj, fields in value.items()
                }
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ProcessingInstruction:
        for obj, fields in self.allowed_fields.items():
            if not fields:
                raise ValueError(f"allowed_fields.{obj}: list at least one field (or remove the object)")
        for obj, fields in self.pseudonymize.items():
            allowed = self.allowed_fields.get(obj)
            if allowed is None:
                raise ValueError(f"pseudonymize.{obj}: object is not in allowed_fields")
            extra = sorted(set(fields) - set(allowed))
            if extra:
                raise ValueError(f"pseudonymize.{obj}: fields {extra} are not in allowed_fields.{obj}")
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be later than valid_from")
        return self

    def model_post_init(self, context: Any, /) -> None:
        canonical = json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        self._hash = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def content_hash(self) -> str:
        """``sha256:<hex>`` over the canonical JSON of the instruction (sorted keys, no spaces)."""
        return self._hash

    @classmethod
    def from_stored(
        cls, content: Mapping[str, Any], *, content_hash: str, version: int, tenant: str
    ) -> ProcessingInstruction:
        """A stored version, re-validated and checked against the hash and tenant it was stored
        under; :class:`IntegrityError` (naming the version and tenant, no content) if either fails."""
        try:
            ins = cls.model_validate(content)
        except ValidationError:
            raise IntegrityError(
                f"stored instruction v{version} of tenant {tenant!r} no longer validates"
            ) from None
        if ins.content_hash != content_hash or ins.tenant != tenant:
            raise IntegrityError(f"stored instruction v{version} of tenant {tenant!r} was altered")
        return ins

    def is_valid_at(self, at: datetime) -> bool:
        """True if ``at`` (timezone-aware) lies in ``[valid_from, valid_to)``."""
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


_FIXES: dict[str, str] = {
    "tenant": "set tenant to the controller's tenant id (a non-empty string)",
    "version": "set version to a whole number ≥ 1, increased on every change",
    "purpose": "set purpose to the one purpose the controller instructed, e.g. crm_sync",
    "data_categories": "list the categories of personal data, e.g. [contact_details]",
    "allowed_fields": (
        "map each source object to the list of fields that may be processed, e.g. Contact: [Id, Email]"
    ),
    "pseudonymize": (
        "map objects to fields to pseudonymize; each must also be in allowed_fields for that object"
    ),
    "retention_days": "set retention_days to a whole number of days between 1 and 36500",
    "permitted_regions": "list at least one region code, e.g. [eea]",
    "permitted_subprocessors": (
        "list the subprocessor ids the controller authorised, e.g. [salesforce, hubspot]"
    ),
    "valid_from": "use an ISO 8601 timestamp with a timezone, e.g. 2025-01-01T00:00:00Z",
    "valid_to": "use an ISO 8601 timestamp with a timezone later than valid_from, or leave it out",
}


def _describe_errors(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        top = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            known = ", ".join(ProcessingInstruction.model_fields)
            fix = f"remove it or fix its spelling; known fields: {known}"
            parts.append(f"field {loc!r} is not part of an instruction; {fix}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        fix = _FIXES.get(top, "")
        if not top:  # model-level validator: the message names the field
            first = msg.split(":", 1)[0].split(".", 1)[0].split(" ", 1)[0]
            fix = _FIXES.get(first, "")
            parts.append(f"{msg}" + (f"; fix: {fix}" if fix else ""))
        else:
            parts.append(f"field {loc!r}: {msg}" + (f"; fix: {fix}" if fix else ""))
    return f"{source}: invalid processing instruction: " + " | ".join(parts)


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _InstructionLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML would keep the
    last one silently, so ``tenant:`` or ``allowed_fields:`` written twice would mean whichever
    came last — an instruction must say one thing."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise _DuplicateKey(None, None, f"key {str(key)[:80]!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_instruction(path: str | Path) -> ProcessingInstruction:
    """Read and validate an instruction from YAML; every problem is a :class:`ConfigError` that
    names the field and the fix (never echoing values)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{p}: cannot read processing instruction ({exc.strerror}); check the path"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text; save the instruction as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_InstructionLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) if isinstance(exc, _DuplicateKey) else None
        raise ConfigError(f"{p}: not valid YAML{where}{f' ({problem})' if problem else ''}; fix it") from None
    except RecursionError:
        raise ConfigError(f"{p}: the YAML nests too deeply for an instruction; fix the structure") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: a processing instruction must be a YAML mapping (tenant:, version:, purpose:, ...)"
        )
    try:
        return ProcessingInstruction.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_errors(str(p), exc)) from None


# ---- transforms ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transform:
    """A named, versioned record function with its declared purposes and field footprint.

    ``fn`` receives only the fields in ``reads`` (those present) and returns a dict whose keys
    must be within ``writes``; :func:`apply_transforms` merges that back into the record.
    """

    name: str
    version: int
    purposes: frozenset[str]
    reads: frozenset[str]
    writes: frozenset[str]
    fn: Callable[[Record], Record] = field(compare=False)

    @property
    def ref(self) -> str:
        """``name@version`` — how plans and lineage cite this transform."""
        return f"{self.name}@{self.version}"


class TransformRegistry:
    """Transforms by name and version. Registering the same name@version twice is a ConfigError."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, dict[int, Transform]] = {}

    def register(self, transform: Transform) -> Transform:
        """Add ``transform``; returns it (so it can be used at module level)."""
        with self._lock:
            versions = self._by_name.setdefault(transform.name, {})
            if transform.version in versions:
                raise ConfigError(f"transform {transform.ref} is already registered; bump its version")
            versions[transform.version] = transform
        return transform

    def get(self, ref: str) -> Transform | None:
        """``name@version``, or ``name`` for the newest version; ``None`` if unknown."""
        name, _, ver = ref.partition("@")
        versions = self._by_name.get(name)
        if not versions:
            return None
        if not ver:
            return versions[max(versions)]
        try:
            return versions.get(int(ver))
        except ValueError:
            return None

    def __contains__(self, ref: object) -> bool:
        return isinstance(ref, str) and self.get(ref) is not None


default_registry = TransformRegistry()


def register_transform(
    name: str,
    *,
    version: int = 1,
    purposes: Iterable[str],
    reads: Iterable[str],
    writes: Iterable[str],
    registry: TransformRegistry | None = None,
) -> Callable[[Callable[[Record], Record]], Transform]:
    """Decorator: declare and register a transform function::

    @register_transform("full_name", purposes=["crm_sync"], reads=["FirstName", "LastName"],
                        writes=["FullName"])
    def full_name(r): return {"FullName": f"{r.get('FirstName', '')} {r.get('LastName', '')}"}
    """

    def decorate(fn: Callable[[Record], Record]) -> Transform:
        t = Transform(name, version, frozenset(purposes), frozenset(reads), frozenset(writes), fn)
        if not t.purposes:
            raise ConfigError(f"transform {t.ref} must declare at least one purpose it serves")
        return (registry or default_registry).register(t)

    return decorate


# ---- plans and checks ------------------------------------------------------------------------


class SyncPlan(BaseModel):
    """What a run intends to do: move ``source_object`` to ``destination_object`` for ``purpose``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    source_object: str
    destination_object: str
    field_mapping: dict[str, str]
    transforms: tuple[str, ...] = ()
    purpose: str
    when: AwareDatetime
    instruction_version: int | None = None


class PlanRefused(PurposeViolation):
    """A plan or a record set falls outside the instruction. ``reason`` is a JSON-ready dict
    (``rule``, ``tenant``, ``purpose``, ``instruction_version`` and the offending ``field`` /
    ``transform`` / ``window``) for a lineage ``refusal`` event."""

    def __init__(self, message: str, *, reason: dict[str, Any]) -> None:
        super().__init__(message, code=f"purpose_violation.{reason['rule']}")
        self.reason = reason


class CheckResult(BaseModel):
    """A plan that passed :func:`check`: what it may read and what stays behind."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    purpose: str
    instruction_version: int
    instruction_hash: str
    source_object: str
    transforms: list[str]
    fields_read: list[str]
    pseudonymized_fields: list[str]
    withheld_fields: list[str]


def check(
    plan: SyncPlan,
    instruction: ProcessingInstruction,
    *,
    at: datetime | None = None,
    source_fields: Iterable[str] | None = None,
    registry: TransformRegistry | None = None,
) -> CheckResult:
    """Accept ``plan`` under ``instruction`` at time ``at`` (default ``plan.when``) or raise
    :class:`PlanRefused` naming the rule broken. ``source_fields`` (the live schema) lets the
    result list the fields that will be withheld."""
    reg = registry or default_registry
    when = at or plan.when
    if when.tzinfo is None:
        raise ConfigError("check(at=...) needs a timezone-aware datetime, e.g. datetime.now(UTC)")
    base: dict[str, Any] = {
        "tenant": plan.tenant,
        "purpose": plan.purpose,
        "instruction_version": instruction.version,
        "instruction_hash": instruction.content_hash,
        "object": plan.source_object,
    }

    def refuse(rule: str, message: str, **extra: Any) -> PlanRefused:
        return PlanRefused(
            f"plan refused under instruction v{instruction.version}: {message}",
            reason={"rule": rule, **base, **extra},
        )

    if plan.tenant != instruction.tenant:
        raise refuse(
            "tenant", "the instruction belongs to another tenant", instruction_tenant=instruction.tenant
        )
    if plan.instruction_version is not None and plan.instruction_version != instruction.version:
        raise refuse(
            "instruction_version",
            f"plan cites instruction v{plan.instruction_version}; re-plan against v{instruction.version}",
            plan_instruction_version=plan.instruction_version,
        )
    if plan.purpose != instruction.purpose:
        raise refuse(
            "purpose",
            f"plan purpose {plan.purpose!r} is not the instructed purpose {instruction.purpose!r}",
            instructed_purpose=instruction.purpose,
        )
    if not instruction.is_valid_at(when):
        window = {
            "valid_from": instruction.valid_from.isoformat(),
            "valid_to": instruction.valid_to.isoformat() if instruction.valid_to else None,
            "at": when.isoformat(),
        }
        raise refuse(
            "window",
            f"{when.isoformat()} is outside the validity window "
            f"[{window['valid_from']}, {window['valid_to'] or 'open end'})",
            window=window,
        )
    allowed_list = instruction.allowed_fields.get(plan.source_object)
    if allowed_list is None:
        raise refuse("object", f"object {plan.source_object!r} is not in allowed_fields")
    available = set(allowed_list)
    read: set[str] = set()
    refs: list[str] = []
    for ref in plan.transforms:
        t = reg.get(ref)
        if t is None:
            raise refuse("unknown_transform", f"transform {ref!r} is not registered", transform=ref)
        if instruction.purpose not in t.purposes:
            raise refuse(
                "transform_purpose",
                f"transform {t.ref} does not serve purpose {instruction.purpose!r} "
                f"(it serves {sorted(t.purposes)})",
                transform=t.ref,
                transform_purposes=sorted(t.purposes),
            )
        outside = sorted(t.reads - available)
        if outside:
            raise refuse(
                "transform_reads",
                f"transform {t.ref} reads {outside} which allowed_fields.{plan.source_object} does not allow",
                transform=t.ref,
                fields=outside,
                field=outside[0],
            )
        read |= t.reads
        available |= t.writes
        refs.append(t.ref)
    outside = sorted(set(plan.field_mapping) - available)
    if outside:
        raise refuse(
            "mapping",
            f"field mapping reads {outside} which allowed_fields.{plan.source_object} does not allow",
            fields=outside,
            field=outside[0],
        )
    read |= set(plan.field_mapping) & set(allowed_list)
    withheld = sorted(set(source_fields) - set(allowed_list)) if source_fields is not None else []
    return CheckResult(
        tenant=plan.tenant,
        purpose=plan.purpose,
        instruction_version=instruction.version,
        instruction_hash=instruction.content_hash,
        source_object=plan.source_object,
        transforms=refs,
        fields_read=sorted(read),
        pseudonymized_fields=list(instruction.pseudonymize.get(plan.source_object, ())),
        withheld_fields=withheld,
    )


# ---- projection ------------------------------------------------------------------------------


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
        raise PlanRefused(
            f"object {obj!r} is not in allowed_fields of instruction v{instruction.version}",
            reason={
                "rule": "object",
                "tenant": instruction.tenant,
                "purpose": instruction.purpose,
                "instruction_version": instruction.version,
                "instruction_hash": instruction.content_hash,
                "object": obj,
            },
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


def apply_transforms(records: list[Record], transforms: Sequence[Transform]) -> list[Record]:
    """Run ``transforms`` in order on projected records, in place, and return them.

    Each transform sees only the fields it declared in ``reads``; a result key outside its
    ``writes`` is a :class:`DataError` (the transform broke its declaration).
    """
    for t in transforms:
        reads = tuple(t.reads)
        writes = t.writes
        fn = t.fn
        for rec in records:
            result = fn({k: rec[k] for k in reads if k in rec})
            if not writes.issuperset(result):
                raise DataError(
                    f"transform {t.ref} wrote {sorted(set(result) - writes)} outside its declared writes"
                )
            rec.update(result)
    return records


# ---- the type contract of a run ---------------------------------------------------------------

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
    raise PlanRefused(
        f"plan refused under instruction v{instruction.version}: the source changed the type of "
        f"{listing} since runs under this instruction began; the controller must re-issue the "
        "instruction (a new version the sync cites) to accept the new types",
        reason={
            "rule": "schema_drift",
            "tenant": instruction.tenant,
            "purpose": instruction.purpose,
            "instruction_version": instruction.version,
            "instruction_hash": instruction.content_hash,
            "object": source_object,
            "field": field,
            "planned_type": was,
            "live_type": now,
            "fields": [f for f, _, _ in retyped],
        },
    )
