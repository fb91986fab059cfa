"""Export ledger events as OpenLineage RunEvents (spec 2-0-2) with crmhub custom run facets.

Each run (``LineageEvent.run_id``) becomes one START event (at its first event's time) and one
COMPLETE event — or FAIL when the run holds a ``refusal`` event (or the caller says so) — at its
last event's time. Inputs are the runs' source datasets, outputs their destinations.

Custom run facets follow the OpenLineage custom-facet rules: the key is prefixed with the
producer's name (``crmhub_``), the class name ends in ``RunFacet``, ``_producer`` names crmhub and
``_schemaURL`` points to crmhub's facet schema:

* ``crmhub_purpose``       purpose, instruction version and hash the run processed under;
* ``crmhub_processor``     GDPR role (``processor``) and the controller (tenant);
* ``crmhub_subprocessor``  subprocessors that received data in the run;
* ``crmhub_transfer``      every cross-region move: regions, mechanism, subprocessor, records.

No record ids or hashes are exported: facets carry counts only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import RunFacet, error_message_run
from openlineage.client.serde import Serde

from schemas.lineage import DatasetRef, EventKind, LineageEvent, format_timestamp

__all__ = [
    "FACET_SCHEMA_BASE",
    "PRODUCER",
    "ProcessorRunFacet",
    "PurposeRunFacet",
    "SubprocessorRunFacet",
    "TransferRunFacet",
    "run_events",
    "run_events_json",
]

PRODUCER: Final = "https://github.com/crmhub/crmhub/tree/0.1.0/governance/openlineage.py"
FACET_SCHEMA_BASE: Final = "https://crmhub.dev/spec/facets/1-0-0/"
_RUN_ID_NAMESPACE: Final = uuid.UUID("6f1d5a3e-8d1c-5b7e-9a51-7c2f0c9e4b10")


def _schema(name: str) -> str:
    return f"{FACET_SCHEMA_BASE}{name}.json#/$defs/{name}"


@attr.define
class PurposeRunFacet(RunFacet):
    """The controller's purpose and processing instruction the run processed under."""

    purpose: str | None = attr.field(default=None)
    instructionVersion: int | None = attr.field(default=None)
    instructionHash: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return _schema("PurposeRunFacet")


@attr.define
class ProcessorRunFacet(RunFacet):
    """crmhub's GDPR role in the run and the controller it acted for."""

    role: str = attr.field(default="processor")
    controller: str = attr.field(default="")
    processor: str = attr.field(default="crmhub")

    @staticmethod
    def _get_schema() -> str:
        return _schema("ProcessorRunFacet")


@attr.define
class SubprocessorRunFacet(RunFacet):
    """Subprocessors that received data during the run."""

    subprocessors: list[str] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return _schema("SubprocessorRunFacet")


@attr.define
class TransferRunFacet(RunFacet):
    """Cross-region moves of the run: ``regionFrom``, ``regionTo``, ``mechanism``, ``records``."""

    transfers: list[dict[str, Any]] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return _schema("TransferRunFacet")


def _run_uuid(tenant: str, run_id: str) -> str:
    """The run id itself when it is a UUID (Temporal run ids are), else a stable UUIDv5 of it."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return str(uuid.uuid5(_RUN_ID_NAMESPACE, f"{tenant}\n{run_id}"))


def _datasets(refs: Sequence[DatasetRef | None]) -> list[DatasetRef]:
    seen: dict[tuple[str, str], DatasetRef] = {}
    for ref in refs:
        if ref is not None:
            seen.setdefault((ref.namespace, ref.name), ref)
    return list(seen.values())


def _facets(run: Sequence[LineageEvent], producer: str) -> dict[str, RunFacet]:
    first = run[0]
    purposeful = next((e for e in run if e.purpose is not None), first)
    facets: dict[str, RunFacet] = {
        "crmhub_purpose": PurposeRunFacet(
            purpose=purposeful.purpose,
            instructionVersion=purposeful.instruction_version,
            instructionHash=purposeful.instruction_hash,
            producer=producer,
        ),
        "crmhub_processor": ProcessorRunFacet(controller=first.tenant, producer=producer),
    }
    subs = sorted({e.subprocessor for e in run if e.subprocessor is not None})
    if subs:
        facets["crmhub_subprocessor"] = SubprocessorRunFacet(subprocessors=subs, producer=producer)
    transfers = [
        {
            "regionFrom": e.region_from,
            "regionTo": e.region_to,
            "mechanism": None if e.transfer_mechanism is None else e.transfer_mechanism.value,
            "subprocessor": e.subprocessor,
            "records": e.counts.get("records", len(e.record_id_hashes)),
            "eventTime": format_timestamp(e.timestamp),
        }
        for e in run
        if e.kind is EventKind.TRANSFER
    ]
    if transfers:
        facets["crmhub_transfer"] = TransferRunFacet(transfers=transfers, producer=producer)
    return facets


def run_events(
    events: Sequence[LineageEvent],
    *,
    namespace: str = "crmhub",
    producer: str = PRODUCER,
    outcomes: Mapping[str, RunState] | None = None,
) -> list[RunEvent]:
    """START + COMPLETE/FAIL RunEvents for every run in ``events`` (runs in first-seen order).

    ``outcomes`` overrides the final state per ``run_id`` (e.g. ``RunState.ABORT`` for a cancelled
    workflow); by default a run with a ``refusal`` event FAILs and any other run COMPLETEs.
    """
    runs: dict[tuple[str, str], list[LineageEvent]] = {}
    for event in events:
        runs.setdefault((event.tenant, event.run_id), []).append(event)
    out: list[RunEvent] = []
    for (tenant, run_id), run in runs.items():
        run = sorted(run, key=lambda e: e.timestamp)
        sync = next((e.sync_id for e in run if e.sync_id), None)
        job = Job(
            namespace=f"{namespace}/{tenant}",
            name=f"sync:{tenant}:{sync}" if sync else f"run:{tenant}",
        )
        inputs = [InputDataset(d.namespace, d.name) for d in _datasets([e.source for e in run])]
        outputs = [OutputDataset(d.namespace, d.name) for d in _datasets([e.destination for e in run])]
        refusals = [e for e in run if e.kind is EventKind.REFUSAL]
        final = (outcomes or {}).get(run_id, RunState.FAIL if refusals else RunState.COMPLETE)
        facets = _facets(run, producer)
        final_facets: dict[str, RunFacet] = dict(facets)
        if refusals:
            reason = refusals[0].details.get("reason") or "refused by policy"
            final_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=f"refusal: {reason}", programmingLanguage="python", producer=producer
            )
        run_uuid = _run_uuid(tenant, run_id)
        for state, when, run_facets in (
            (RunState.START, run[0].timestamp, facets),
            (final, run[-1].timestamp, final_facets),
        ):
            out.append(
                RunEvent(
                    eventType=state,
                    eventTime=format_timestamp(when),
                    run=Run(runId=run_uuid, facets=run_facets),
                    job=job,
                    inputs=inputs,
                    outputs=outputs,
                    producer=producer,
                )
            )
    return out


def run_events_json(events: Sequence[LineageEvent], **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`run_events` as JSON-ready dicts (what an OpenLineage HTTP transport would send)."""
    return [Serde.to_dict(e) for e in run_events(events, **kwargs)]
