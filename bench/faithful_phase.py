"""The incremental phase of ``python -m bench sync-overhead --faithful`` (issue 13): after a full run
of the demo's sync, ``updates`` Salesforce contacts change with the late-commit mode on (every third
write commits 1.5 s late, with its original SystemModstamp) and two contacts are merged into two
others (``MasterRecordId``); then two incremental runs in a fresh worker, the first while writes are
still held. Timed per run, vendor calls counted, and checked like the chaos suites: HubSpot = the
source's live contacts with the new values, every change pushed once, the merged losers gone.
Any mismatch ends the benchmark (``SystemExit``), so a reported figure is a correct run's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from api import syncops
from schemas.sync import SyncMode

if TYPE_CHECKING:
    from bench.sync_overhead import Session

__all__ = ["LATE_DELAY_MS", "LATE_EVERY", "run"]

LATE_EVERY, LATE_DELAY_MS = 3, 1_500
MERGES = 2

Worker = Callable[[], AbstractAsyncContextManager[Any]]


async def _incremental(s: Session, tenant: str, sync_id: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    handle = await syncops.start(
        s.connected.client, tenant, sync_id, mode=SyncMode.INCREMENTAL,
        task_queue=s.settings.temporal.control_task_queue,
    )  # fmt: skip
    counts = await handle.result()
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "pulled": counts.pulled,
        "pushed": counts.pushed,
        "deleted": counts.deleted,
        "failed": counts.failed,
    }


async def _phase(s: Session, tenant: str, sync_id: str, worker: Worker, updates: int) -> dict[str, Any]:
    sf, hs = s.sf, s.hs
    ids = sorted(r["id"] for r in sf.live_records("Contact"))
    changed, (m1, l1, m2, l2) = ids[:updates], ids[updates : updates + 2 * MERGES]
    losers = {sf.store.get("Contact", i).data["Email"] for i in (l1, l2)}
    sf.calls.clear()
    hs.calls.clear()
    runs: list[dict[str, Any]] = []
    async with worker():
        with sf.late.mode(every=LATE_EVERY, delay_ms=LATE_DELAY_MS):
            for n, i in enumerate(changed):
                sf.update_record("Contact", i, {"FirstName": f"Late{n}"})
            sf.merge_records("Contact", m1, [l1], {"LastName": "Merged"})
            sf.merge_records("Contact", m2, [l2], {"LastName": "Merged"})
            held = sf.late.open_since() is not None
            runs.append(await _incremental(s, tenant, sync_id))
        runs.append(await _incremental(s, tenant, sync_id))  # the mode's end committed the rest
    source = {r["Email"]: r.get("FirstName") for r in sf.live_records("Contact")}
    at_hs = hs.live_records("contacts")
    emails = Counter(r["email"] for r in at_hs)
    stale = sum(1 for r in at_hs if r["email"] in source and r.get("firstname") != source[r["email"]])
    out = {
        "updates": updates, "late_every": LATE_EVERY, "late_delay_ms": LATE_DELAY_MS, "merges": MERGES,
        "held_when_the_first_run_started": held, "runs": runs,
        "lost": len(set(source) - set(emails)), "extra": len(set(emails) - set(source)),
        "duplicated": sum(n - 1 for n in emails.values() if n > 1), "stale_values": stale,
        "losers_at_destination": len(losers & set(emails)),
        "pushed": sum(r["pushed"] for r in runs), "calls": s.call_counts(),
    }  # fmt: skip
    wrong = out["lost"] or out["extra"] or out["duplicated"] or out["stale_values"]
    if wrong or out["losers_at_destination"] or out["pushed"] != updates + MERGES or not held:
        raise SystemExit(f"faithful phase: {out}")
    return out


def run(s: Session, tenant: str, sync_id: str, worker: Worker, updates: int) -> dict[str, Any]:
    """The phase on the session's loop; its report (see the module docstring)."""
    return s.loop.run_until_complete(_phase(s, tenant, sync_id, worker, updates))
