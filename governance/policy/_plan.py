"""The plan check: whether what a run intends fits the instruction, decided before it starts.

:func:`check` accepts a :class:`SyncPlan` (source object, field mapping, transforms, purpose, time)
under a :class:`~governance.policy.ProcessingInstruction`, returning a :class:`CheckResult` (what the
run may read, what stays behind), or raises :class:`PlanRefused` naming the first rule broken:
tenant, instruction version, purpose, validity window, object, an unknown transform or one that
serves another purpose or reads a field the instruction does not allow, or a mapping that does.
A refusal's ``reason`` is a JSON-ready dict for a lineage ``refusal`` event (names, never values).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict

from governance.policy._instruction import ProcessingInstruction
from governance.policy._transforms import TransformRegistry, default_registry
from schemas.errors import ConfigError, PurposeViolation

__all__ = ["CheckResult", "PlanRefused", "SyncPlan", "check"]


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

    @classmethod
    def under(
        cls,
        instruction: ProcessingInstruction,
        rule: str,
        message: str,
        /,
        *,
        source_object: str,
        tenant: str | None = None,
        purpose: str | None = None,
        **extra: Any,
    ) -> PlanRefused:
        """A refusal of ``rule`` that cites ``instruction``: ``reason`` holds the rule, the tenant and
        purpose (the plan's when given, else the instruction's), the instruction's version and hash,
        the ``object`` and ``extra`` (the offending field, transform or window)."""
        return cls(
            message,
            reason={
                "rule": rule,
                "tenant": instruction.tenant if tenant is None else tenant,
                "purpose": instruction.purpose if purpose is None else purpose,
                "instruction_version": instruction.version,
                "instruction_hash": instruction.content_hash,
                "object": source_object,
                **extra,
            },
        )


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

    def refuse(rule: str, message: str, **extra: Any) -> PlanRefused:
        return PlanRefused.under(
            instruction,
            rule,
            f"plan refused under instruction v{instruction.version}: {message}",
            source_object=plan.source_object,
            tenant=plan.tenant,
            purpose=plan.purpose,
            **extra,
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
