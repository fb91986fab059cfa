"""The run reference: which run a lineage event belongs to and which instruction it ran under.

Every event of a run repeats the same citation — tenant, run id, sync, instruction version and
hash, purpose. A :class:`RunRef` holds it once (a frozen value, small enough to cross Temporal in
an activity input) and makes that run's events: :meth:`RunRef.event` for any step,
:meth:`RunRef.transfer` for the ``transfer`` event of a permitted cross-region move (the registry
decides whether one is needed: :meth:`Registry.transfer_for <governance.registry.Registry.transfer_for>`).
An event never holds raw record ids: ``record_id_hashes`` are keyed hashes (the model refuses
anything else), and ``details`` hold names and numbers, never record values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TypedDict, Unpack

from pydantic import BaseModel, ConfigDict, model_validator

from governance.policy import ProcessingInstruction
from schemas.errors import PolicyError
from schemas.lineage import DatasetRef, DetailValue, EventKind, LineageEvent, TransferMechanism

__all__ = ["EventFields", "MoveFields", "RunRef"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MoveFields(TypedDict, total=False):
    """What moved where: the datasets, the keyed hashes of the records' ids and the counts."""

    source: DatasetRef | None
    destination: DatasetRef | None
    record_id_hashes: Sequence[str]
    counts: Mapping[str, int] | None


class EventFields(TypedDict, total=False):
    """The parts of a lineage event that vary by step (all optional; see
    :class:`~schemas.lineage.LineageEvent`): everything but the run's citation, kind and time."""

    source: DatasetRef | None
    destination: DatasetRef | None
    record_id_hashes: Sequence[str]
    counts: Mapping[str, int]
    subprocessor: str | None
    region_from: str | None
    region_to: str | None
    transfer_mechanism: TransferMechanism | None
    details: Mapping[str, DetailValue]


class RunRef(BaseModel):
    """One run's citation in its lineage events. ``sync_id``, the instruction and the purpose are
    absent for runs that are not a sync (a data subject request, a retention purge, offboarding)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    tenant: str
    run_id: str
    sync_id: str | None = None
    instruction_version: int | None = None
    instruction_hash: str | None = None
    purpose: str | None = None

    @model_validator(mode="after")
    def _citable(self) -> RunRef:
        # The event model owns the limits (tenant and run id lengths, version ≥ 0): a citation is
        # valid exactly when an event of it would be, and is refused here rather than mid-run.
        self.event(EventKind.PULL, at=_EPOCH)
        return self

    @classmethod
    def of(
        cls,
        tenant: str,
        run_id: str,
        *,
        sync_id: str | None = None,
        instruction: ProcessingInstruction | None = None,
        purpose: str | None = None,
    ) -> RunRef:
        """The run ``run_id`` of ``tenant``, citing ``instruction`` (its version, hash and purpose)
        when given; ``purpose`` names the purpose of a run without one (e.g. a DSR) and must not
        contradict the instruction's. :class:`PolicyError` if the instruction is another tenant's
        or the purposes differ (an event must not cite what the run was not under)."""
        if instruction is None:
            return cls(tenant=tenant, run_id=run_id, sync_id=sync_id, purpose=purpose)
        if instruction.tenant != tenant:
            raise PolicyError(
                f"run {run_id!r} of tenant {tenant!r} cannot cite another tenant's instruction",
                code="run_instruction_tenant",
            )
        if purpose is not None and purpose != instruction.purpose:
            raise PolicyError(
                f"run {run_id!r} names purpose {purpose!r}, its instruction v{instruction.version} "
                f"{instruction.purpose!r}",
                code="run_instruction_purpose",
            )
        return cls(
            tenant=tenant,
            run_id=run_id,
            sync_id=sync_id,
            instruction_version=instruction.version,
            instruction_hash=instruction.content_hash,
            purpose=instruction.purpose,
        )

    def event(self, kind: EventKind, *, at: datetime, **fields: Unpack[EventFields]) -> LineageEvent:
        """A ``kind`` event of this run at ``at`` (timezone-aware) with the step's ``fields``.
        Raises ``pydantic.ValidationError`` (never echoing the input) for a raw id among
        ``record_id_hashes``, a negative count or a naive ``at``."""
        return LineageEvent.model_validate(
            {
                "kind": kind,
                "tenant": self.tenant,
                "run_id": self.run_id,
                "sync_id": self.sync_id,
                "instruction_version": self.instruction_version,
                "instruction_hash": self.instruction_hash,
                "purpose": self.purpose,
                "timestamp": at,
                **fields,
            }
        )

    def transfer(
        self,
        mechanism: TransferMechanism,
        *,
        at: datetime,
        subprocessor: str,
        region_from: str,
        region_to: str,
        **move: Unpack[MoveFields],
    ) -> LineageEvent:
        """The ``transfer`` event of a permitted move from ``region_from`` to ``region_to`` via
        ``subprocessor`` on legal basis ``mechanism``; ``counts`` default to
        ``{"records": len(record_id_hashes)}``. It does not judge the move: the registry does."""
        hashes = tuple(move.get("record_id_hashes", ()))
        counts = move.get("counts")
        return self.event(
            EventKind.TRANSFER,
            at=at,
            source=move.get("source"),
            destination=move.get("destination"),
            subprocessor=subprocessor,
            region_from=region_from,
            region_to=region_to,
            transfer_mechanism=mechanism,
            counts=dict(counts) if counts is not None else {"records": len(hashes)},
            record_id_hashes=hashes,
        )
