"""Rectification (Art. 16) at the destinations: a data subject's corrected values, pushed where
crmhub delivered their records.

For one sync: the subject's source records (as the request's source scan read them) with the
corrected values laid over them go through the same governance call a pull makes
(:class:`~governance.policy.PageProcessor`: projection to the instruction, pseudonymization,
transforms, type contract) and the push's mapping (:func:`~workflows.push.destination_record`),
then ``write_batch(UPSERT)`` by external id — so the destination receives exactly what a sync of
the corrected source would have sent, and nothing the instruction does not allow. A corrected field
outside the sync's instruction is not sent (the note names it); one that breaks the type contract is
counted failed (``RECTIFY_TYPE_MISMATCH``); the field the destination matches records by (the
sync's source key property) is never rectified this way (it would make a second record).

The source CRM is the controller's: crmhub does not write there, and the next sync brings the old
value back unless the controller corrects it at the source too (the result's note says so).
"""

from __future__ import annotations

from typing import Any

from governance.policy import PageProcessor, check
from schemas.connector import Record, WriteMode
from schemas.dsr import DsrDestination
from workflows.context import ActivityKit, SyncContext
from workflows.push import destination_record

__all__ = ["rectify_destination"]


def rectify_destination(
    kit: ActivityKit,
    ctx: SyncContext,
    source_records: list[Record],
    corrections: dict[str, Any],
    dest: DsrDestination,
) -> tuple[DsrDestination, str | None]:
    """Upsert the corrected records of one sync at its destination; returns what happened there and
    a note for the request's result (fields not sent, records not found at the source)."""
    deps, spec = kit.deps, ctx.spec
    allowed = set(ctx.instruction.allowed_fields.get(spec.source_stream, []))
    applied = {f: v for f, v in corrections.items() if f in allowed and f != spec.source_key_property}
    outside = sorted(set(corrections) - allowed)
    notes = [f"sync {spec.id}: {', '.join(outside)} not in its instruction, not sent"] if outside else []
    if spec.source_key_property in corrections:  # the destination would see a new record, not this one
        notes.append(
            f"sync {spec.id}: {spec.source_key_property} is the destination's external id and is not "
            "rectified this way; erase the subject and let the corrected source record sync"
        )
    if not applied or not source_records:
        if not source_records:
            notes.append(f"sync {spec.id}: the subject's source record was not found, nothing sent")
        return dest, "; ".join(notes) or None
    now = deps.clock()
    checked = check(ctx.sync_plan(now), ctx.instruction, at=now, registry=deps.transforms)
    connector = deps.connector_factory(spec.source_connection_id)
    try:
        pk = kit.stream_spec(connector, spec.source_connection_id, spec.source_stream).primary_key
    finally:
        connector.close()
    governance = PageProcessor.for_check(
        checked, ctx.instruction, deps.transforms, key_field=pk, pseudonymizer=deps.pseudonymizer
    )
    governed = governance.process([{**rec, **applied} for rec in source_records])
    mapped = [m for rec in governed.records if (m := destination_record(spec, rec)) is not None]
    failed = len(governed.quarantined) + len(governed.records) - len(mapped)
    codes = ["RECTIFY_TYPE_MISMATCH"] if governed.quarantined else []
    rectified = 0
    if mapped:
        connector = deps.connector_factory(spec.destination_connection_id)
        try:
            answer = connector.write_batch(
                spec.destination_stream, mapped, WriteMode.UPSERT, external_id=spec.destination_id_property
            )
        finally:
            connector.close()
        rectified = sum(1 for o in answer.outcomes if o.ok)
        failed += len(answer.outcomes) - rectified
        codes += sorted({o.error_code or "VENDOR_REFUSED" for o in answer.outcomes if not o.ok})
    notes.append(
        f"sync {spec.id}: the source still holds the old values; correct them there too, "
        "or the next sync sends them again"
    )
    update = {"rectified": rectified, "failed": failed, "error_codes": sorted(set(codes))}
    return dest.model_copy(update=update), "; ".join(notes)
