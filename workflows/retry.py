"""``retry_rejected``: dead letters → a fresh read at the source → governance → the destination.

A dead letter holds the record as it was *staged* under the instruction and mapping it was refused
under, so a retry never pushes it as it is: it opens the letter only for the record's source id,
reads the record again by id (:meth:`~connectors.base.Connector.read_by_ids`, the vendor's batch
reads), runs it through the current instruction (projection, pseudonymization, transforms, the
run's type contract) and mapping, and writes it like a push does (:class:`workflows.push._Writer`:
write mode, id map, links). Each letter ends one of four ways:

* accepted → the letter is resolved (deleted); the ``push`` event names the refusal's run;
* refused again → a new letter under the current versions replaces it (retried after the next change);
* gone at the source (deleted, merged away) → the letter is resolved as gone, counted ``gone_at_source``;
* not retryable now — sealed under another purpose (its AAD forbids opening it for this one), its
  record's id withheld by the instruction, a record of a suppressed data subject, or one the write
  mode skips → the letter stays, stamped with the current versions (:func:`store.dead_letters.mark_retried`).

A pair's letter (a sync from an association stream, :mod:`workflows.pair_records`) is read again
by its pair id ``<deal>:<contact>`` — from the letter, or the pull's snapshot when the letter holds
none — through the deals' associations batch read, and its role created like a push does; a pair
the deal no longer has is gone. A child or junction row refused in its parent sync's release is its
own sync's letter, holding the source id it kept while it waited (:mod:`workflows.released_letters`).

Which letters: those refused under another instruction version or mapping hash than the run's, or
under unknown ones (letters from before migration 0022: each retried once), oldest first and at
most ``limit`` a run (``settings.worker.retry_rejected_per_run``) — the rest wait for the next run;
on demand (``everything``) every refused upsert, bounded the same way. Vendor calls: ceil(n / 200)
Salesforce queries or ceil(n / 100) HubSpot batch reads, then the writes of a push.

Lineage (batch id ``<run>.retry``): a ``pull`` event (the re-read: counts, every letter's keyed hash,
``step=retry``), a ``transfer`` when the source region is not home, then the ``push`` events of
:func:`workflows.push._events` with ``retry_of_runs`` (the runs that refused the letters) and
``retried_letters`` (their ids) — the link from the retry to each original refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from governance.policy import PageProcessor, PlanRefused, check
from schemas.errors import IntegrityError
from schemas.lineage import EventKind, LineageEvent
from schemas.sync import RetryInput, RetryResult
from store import dead_letters as dead_letter_store
from store import suppressions as suppression_store
from store.dead_letters import DeadLetter
from store.syncs import mapping_hash
from workflows.associations import Linking
from workflows.context import ActivityKit, BatchEvents, SyncContext
from workflows.junctions import Junction, is_junction
from workflows.liveness import Keepalive
from workflows.pair_records import PairRecords
from workflows.pair_source import PairSource
from workflows.push import PushProgress, _events, _Writer
from workflows.staging import resume, seal_letter

__all__ = ["RetryProgress", "retry_batch_id", "retry_rejected"]


def retry_batch_id(run_id: str) -> str:
    """The batch id of a run's retry (its letters' ids and lineage events carry it)."""
    return f"{run_id}.retry"


@dataclass(frozen=True, slots=True)
class _Part:
    batch_id: str
    part: int = 0


class RetryProgress(BaseModel):
    """Heartbeat details once the retry wrote: a retried attempt only records the lineage."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    push: PushProgress
    accepted: list[str] = []
    released: list[str] = []  # merge losers deleted at the destination once their winner landed
    asked: list[str] = []  # keyed hashes of every letter taken up
    letters: list[str] = []
    runs: list[str] = []
    read: int = 0
    gone: int = 0
    gone_runs: list[str] = []
    quarantined: int = 0
    not_retryable: int = 0
    withheld_values: int = 0
    pseudonymized: int = 0
    source_calls: int = 0

    def result(self) -> RetryResult:
        p = self.push
        return RetryResult(
            retried=len(self.letters),
            pushed=p.created + p.updated,
            created=p.created,
            updated=p.updated,
            failed=p.failed + self.quarantined,
            skipped=sum(p.skipped.values()),
            resolved=p.resolved + self.gone,
            gone=self.gone,
            source_calls=self.source_calls,
            destination_calls=p.calls,
        )


def retry_rejected(kit: ActivityKit, inp: RetryInput) -> RetryResult:
    """Retry the run's share of dead letters (see the module docstring)."""
    plan, deps = inp.plan, kit.deps
    batch_id = retry_batch_id(plan.run_id)
    done = resume(RetryProgress, batch_id)
    with deps.engine.connect() as conn:
        ctx = kit.context(
            plan.tenant, plan.sync_id, run_id=plan.run_id, instruction_hash=plan.instruction_hash, conn=conn
        )
        version, shape = ctx.instruction.version, mapping_hash(ctx.spec)
        letters = (
            []
            if done is not None or inp.limit < 1
            else dead_letter_store.retry_candidates(
                conn,
                ctx.tenant.id,
                ctx.spec.id,
                instruction_version=version,
                mapping_hash=shape,
                everything=inp.everything,
                limit=inp.limit,
            )
        )
        suppressed = suppression_store.suppressed_keys(conn, plan.tenant)
    if done is None and not letters:
        return RetryResult()
    if done is None:
        done = _retry(kit, ctx, plan.run_id, batch_id, letters, dict(plan.source_types), suppressed)
        with deps.engine.begin() as conn:  # what is left was tried under these versions
            dead_letter_store.mark_retried(
                conn, ctx.tenant.id, [d.id for d in letters], instruction_version=version, mapping_hash=shape
            )
        activity.heartbeat(done)
    kit.append_once(ctx.tenant.id, plan.run_id, batch_id, _lineage(kit, ctx, plan.run_id, done))
    return done.result()


def _retry(
    kit: ActivityKit,
    ctx: SyncContext,
    run_id: str,
    batch_id: str,
    letters: list[DeadLetter],
    planned_types: dict[str, str],
    suppressed: frozenset[str],
) -> RetryProgress:
    deps, tenant = kit.deps, ctx.tenant.id
    now = deps.clock()
    try:  # the instruction may have expired since the plan
        checked = check(ctx.sync_plan(now), ctx.instruction, at=now, registry=deps.transforms)
    except PlanRefused as exc:
        kit.refuse(ctx, run_id, exc, exc.reason)
        raise
    dst = ctx.destination_endpoint()  # fail closed before anything leaves
    ctx.registry.check_transfer(ctx.home, ctx.home, dst.region, dst.subprocessor, tenant=tenant)
    progress = RetryProgress(
        batch_id=batch_id,
        push=PushProgress(batch_id=batch_id),
        asked=[d.record_key_hash for d in letters],
        letters=[d.id for d in letters],
        runs=sorted({d.run_id for d in letters}),
    )
    source = deps.connector_factory(ctx.spec.source_connection_id)
    destination = deps.connector_factory(ctx.spec.destination_connection_id)
    keepalive = Keepalive.start()
    try:
        pk = kit.stream_spec(source, ctx.spec.source_connection_id, ctx.spec.source_stream).primary_key
        by_id: dict[str, DeadLetter] = {}
        for d in letters:
            sid = _source_id(kit, ctx, d, pk)
            if sid is not None:
                by_id[sid] = d
        source_pairs = PairSource.of(kit, ctx, source)  # a pair's letter may hold no record
        opened = {d.id for d in by_id.values()}
        unopened = [d for d in letters if d.id not in opened]
        if source_pairs is not None and unopened:
            found = source_pairs.pair_ids([d.record_key_hash for d in unopened])
            by_id |= {found[d.record_key_hash]: d for d in unopened if d.record_key_hash in found}
        if not by_id or not source.reads_by_ids:
            return progress.model_copy(update={"not_retryable": len(letters)})
        got = source.read_by_ids(ctx.spec.source_stream, list(by_id), sorted(checked.fields_read))
        gone = [by_id[i] for i in got.missing if i in by_id]
        governance = PageProcessor.for_check(
            checked,
            ctx.instruction,
            deps.transforms,
            key_field=pk,
            pseudonymizer=deps.pseudonymizer,
            planned_types=planned_types or None,
            suppressed=suppressed,
        )
        governed = governance.process(got.records)
        held = [
            seal_letter(
                deps.vault,
                ctx,
                run_id,
                (batch_id, 0, "quarantine", i),
                q.key,
                {"record": q.record, "vendor_message": None, "kind": "quarantine", "reason": q.reason},
                code=dead_letter_store.QUARANTINED,
                message=f"quarantined: {q.reason}",
                created=deps.clock(),
            )
            for i, q in enumerate(governed.quarantined)
        ]
        with deps.engine.begin() as conn:  # gone at the source: resolved; no longer fitting: quarantined
            resolved_gone = dead_letter_store.resolve_dead_letters(
                conn, tenant, ctx.spec.id, [d.record_key_hash for d in gone]
            )
            dead_letter_store.add_dead_letters(conn, held)
        junction = Junction.of(kit, ctx, destination) if is_junction(ctx.spec.destination_stream) else None
        stream = junction.owner.parent_stream if junction else ctx.spec.destination_stream
        spec = kit.stream_spec(destination, ctx.spec.destination_connection_id, stream)
        pairs = PairRecords.of(kit, ctx, destination) if source_pairs is not None else None
        linking = None if junction or pairs else Linking.of(kit, ctx, destination)
        writer = _Writer(kit, ctx, run_id, destination, spec, keepalive, linking)
        letter = partial(writer.letter, _Part(batch_id))
        if junction is not None:  # the rows are associations (workflows.junctions)
            done = junction.push(governed.keys, governed.records, [], letter)
            pushed, accepted = progress.push.model_copy(update=done.progress(progress.push)), done.accepted
        elif pairs is not None:  # the rows are pairs, each one record (workflows.pair_records)
            made = pairs.push(governed.keys, governed.records, [], letter)
            pushed, accepted = progress.push.model_copy(update=made.progress(progress.push)), made.accepted
        else:
            pushed, accepted = writer.upsert(_Part(batch_id), governed.keys, governed.records, progress.push)
        pushed, released, _ = writer.release_held(_Part(batch_id), pushed)  # merge losers of landed winners
    finally:
        source.close()
        destination.close()
        keepalive.stop()
    taken = len(gone) + len(governed.keys) + len(governed.quarantined)
    return progress.model_copy(
        update={
            "push": pushed,
            "accepted": accepted,
            "released": released,
            "read": len(got.records),
            "gone": len(resolved_gone),
            "gone_runs": sorted({run for _, run in resolved_gone}),
            "quarantined": len(governed.quarantined),
            "not_retryable": len(letters) - taken,
            "withheld_values": governed.withheld_values,
            "pseudonymized": governed.pseudonymized,
            "source_calls": got.calls,
        }
    )


def _source_id(kit: ActivityKit, ctx: SyncContext, letter: DeadLetter, pk: str) -> str | None:
    """The source id of a letter's record, or None when it cannot be had: the letter was sealed
    under another purpose (it does not open for this one), or the instruction withheld the id from
    the staged record. The id must hash to the letter's key (else the letter is not trusted)."""
    try:
        raw = kit.deps.vault.open(
            ctx.tenant.id,
            letter.sealed_record,
            dataset="dead-letter",
            object_id=letter.id,
            purpose=ctx.instruction.purpose,
        )
    except IntegrityError:
        return None
    body = json.loads(raw)
    record = body.get("record") if isinstance(body, dict) else None
    value = record.get(pk) if isinstance(record, dict) else None
    if (
        value is None
        or kit.deps.pseudonymizer.keyed_hash(ctx.tenant.id, str(value)) != letter.record_key_hash
    ):
        return None
    return str(value)


def _lineage(kit: ActivityKit, ctx: SyncContext, run_id: str, done: RetryProgress) -> list[LineageEvent]:
    """The re-read (``pull``, ``transfer`` in), then the ``push`` events, linked to the refusals."""
    ev = BatchEvents(ctx.run(run_id), done.batch_id, kit.deps.clock())
    links = {"step": "retry", "retry_of_runs": ",".join(done.runs), "retried_letters": ",".join(done.letters)}
    counts = {
        "records": done.read,
        "letters": len(done.letters),
        "gone_at_source": done.gone,
        "quarantined": done.quarantined,
        "not_retryable": done.not_retryable,
        "withheld_values": done.withheld_values,
        "pseudonymized": done.pseudonymized,
        "calls": done.source_calls,
    }
    events = [ev(EventKind.PULL, ctx.inbound(), counts, done.asked, **links)]
    inbound = ctx.registry.transfer_for(
        ev.run,
        from_region=ctx.source_endpoint().region,
        to_region=ctx.home,
        subprocessor=ctx.registry.processor.id,
        at=ev.at,
        record_id_hashes=done.asked,
        source=ctx.source_dataset(),
        destination=ctx.staging_dataset(),
    )
    if inbound is not None:
        events.append(inbound)
    runs = sorted({*done.push.resolved_runs, *done.gone_runs})
    push = done.push.model_copy(update={"resolved": done.push.resolved + done.gone, "resolved_runs": runs})
    out = _events(ev, ctx, push, done.accepted, done.released)
    first = out[0]
    counts_push = {**first.counts, "gone_at_source": done.gone, "retried": len(done.letters)}
    out[0] = first.model_copy(update={"counts": counts_push, "details": {**first.details, **links}})
    return [*events, *out]
