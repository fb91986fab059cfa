"""The processing instruction: the controller's documented instruction, validated and hashed.

:class:`ProcessingInstruction` normalises its field lists (sorted, duplicates refused), checks that
every pseudonymized field is also allowed and that the validity window is not empty, and carries a
``sha256:`` :attr:`~ProcessingInstruction.content_hash` of its canonical JSON. A stored version is
re-checked against the hash it was stored under (:meth:`ProcessingInstruction.from_stored`).

:func:`load_instruction` reads one from YAML, refusing a key written twice, and turns every problem
into a :class:`~schemas.errors.ConfigError` that names the field and the fix — never a value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Iterable, Mapping
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

from schemas.errors import ConfigError, IntegrityError

__all__ = ["ProcessingInstruction", "load_instruction"]


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
