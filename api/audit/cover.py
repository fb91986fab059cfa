"""The first page of the lineage report an auditor reads (HTML and print): who and when (tenant,
period), why (purposes and the instruction versions the runs cited, with their hashes), what (data
categories), who else (subprocessors), where to (transfers with their mechanism), and whether every
run's figures add up.

The reconciliation of one run: ``pulled = pushed + failed + quarantined + filtered``, where
``filtered`` (pulled but neither written, dead-lettered nor quarantined) may only be a run's
discarded staging — a run that did not complete. A run **passes** when nothing is left over, or when
what is left over belongs to a cancelled, failed or still-running run; it **fails** when more was
written than pulled, or when a completed run (or one crmhub has no record of) leaves records
unaccounted for. The page never hides a failing run: it is listed first, with the difference.

Built only from the same reports as the JSON/CSV (:mod:`api.audit.reports`): nothing here changes
what they mean.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from api.audit import reports
from governance.registry import Registry

__all__ = ["cover_page", "reconcile"]

# Statuses of a run whose staged records may have been discarded (README "For auditors").
_UNFINISHED = frozenset({"cancelled", "failed", "running", "paused", "waiting", "refused"})


def reconcile(run: dict[str, Any]) -> dict[str, Any]:
    """The reconciliation of one run of :func:`reports.lineage_report` (module docstring)."""
    c = run["counts"]
    accounted = c["pushed"] + c["failed"] + c["quarantined"]
    left = c["pulled"] - accounted
    status = run["status"]
    if left < 0:
        ok, note = False, f"{-left:,} more written or dead-lettered than pulled"
    elif left == 0:
        ok, note = True, "every pulled record is accounted for"
    elif status in _UNFINISHED:
        ok, note = True, f"{left:,} discarded with the staging of a {status} run"
    else:
        ok, note = False, f"{left:,} pulled record(s) unaccounted for in a {status or 'unrecorded'} run"
    return {
        "sync_id": run["sync_id"],
        "run_id": run["run_id"],
        "status": status,
        "started": run["started"],
        "pulled": c["pulled"],
        "pushed": c["pushed"],
        "created": c["created"],
        "updated": c["updated"],
        "failed": c["failed"],
        "quarantined": c["quarantined"],
        "filtered": max(left, 0),
        "ok": ok,
        "note": note,
    }


def cover_page(
    engine: Engine,
    registry: Registry,
    tenant: str,
    period: reports.Period,
    report: dict[str, Any],
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """What the first page shows, for ``report`` (the lineage report of ``tenant`` in ``period``)."""
    art30 = reports.records_of_processing(engine, registry, tenant, now=now)
    subprocessors = reports.subprocessor_report(engine, registry, tenant, period)
    transfers = reports.transfer_report(engine, registry, tenant, period)
    cited = {v for r in report["runs"] for v in r["instruction_versions"]}
    instructions = [i for i in art30["categories_of_processing"] if i["version"] in cited]
    categories = sorted({c for i in instructions for c in i["data_categories"]})
    checks = [reconcile(r) for r in report["runs"]]
    checks.sort(key=lambda c: c["ok"])  # failing runs first; stable otherwise (ledger order)
    return {
        "controller": art30["controller"],
        "processor": art30["processor"],
        "period": report["period"],
        "generated_at": report["generated_at"],
        "instructions": instructions,
        "purposes": sorted({i["purpose"] for i in instructions if i["purpose"]}),
        "data_categories": categories,
        "subprocessors": subprocessors["subprocessors"],
        "authorised_subprocessors": subprocessors["authorised_subprocessors"],
        "transfers": transfers["routes"],
        "moves_within_one_region": transfers["moves_within_one_region"],
        "permitted_routes": art30["transfers_to_third_countries"]["permitted_routes"],
        "reconciliation": checks,
        "runs_failing": sum(1 for c in checks if not c["ok"]),
    }
