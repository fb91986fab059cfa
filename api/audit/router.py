"""The auditor API: a read-only ``APIRouter`` to mount under ``/audit``.

Authentication and tenant isolation happen in one place, :func:`auditor`: the ``Authorization:
Bearer crmhub_aud_…`` token is looked up (hashed) and names exactly one tenant; every route reads
only ``principal.tenant`` — no route takes a tenant from the URL or the query. Every request, granted
or denied, is written to the ``audit_access_log`` table and the ``crmhub.audit`` log with the token
*id* only.

The app that mounts the router provides an :class:`AuditServices` as ``app.state.audit_services``
(engine, subprocessor registry, optionally crmhub's public key and checkpoint journal); without one,
it is built from ``load_settings()`` on first use. With a journal, every integrity route first
proves the stored ledger extends the latest checkpoint crmhub signed (journal beside the signing
key): a database rewritten behind crmhub's back answers 409 ``ledger_inconsistent``, never a proof
or report of the forgery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy.engine import Engine

from api.audit import reports
from api.audit.cover import cover_page
from api.audit.incidents import incident_history
from governance.lineage import CheckpointJournal, Ledger, report_to_json
from governance.openlineage import run_events_json
from governance.pseudonym import Pseudonymizer
from governance.registry import Registry
from schemas.errors import ConfigError, IntegrityError
from schemas.settings import Settings
from store import auditors as auditor_store

__all__ = ["CLIENT_KEY_SCOPE", "AuditServices", "Principal", "audit_services", "auditor", "router"]

CLIENT_KEY_SCOPE = "crmhub:audit-client"
"""The vault scope (not a tenant: tenant ids have no ':') of the client addresses' HMAC key."""

log = logging.getLogger("crmhub.audit")

# Only these query parameters reach the access log (they carry periods, indexes, formats: no PII).
_LOGGED_PARAMS = ("from", "to", "format", "size", "first", "second", "run")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuditServices:
    """What the audit routes read: the database, the registry, crmhub's public key (informational:
    auditors should obtain it independently), the signer's checkpoint journal, a clock and the
    pseudonymizer that keys the client addresses' hashes (None: no client address is kept)."""

    engine: Engine
    registry: Registry
    public_key_pem: str | None = None
    clock: Callable[[], datetime] = field(default=_utcnow)
    journal: CheckpointJournal | None = None
    pseudonymizer: Pseudonymizer | None = None

    def client_hash(self, request: Request) -> str | None:
        """The keyed hash of the request's client address (None without a pseudonymizer)."""
        if self.pseudonymizer is None or request.client is None:
            return None
        return self.pseudonymizer.keyed_hash(CLIENT_KEY_SCOPE, request.client.host)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        engine: Engine | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> AuditServices:
        from governance.lineage import CheckpointSigner
        from governance.registry import load_registry
        from services.wiring import default_subprocessors_file, make_vault
        from store.engine import make_engine

        registry = load_registry(settings.governance.subprocessors_file or default_subprocessors_file())
        key_file = settings.data_dir / settings.governance.signing_key_file
        signer = CheckpointSigner.load_or_create(key_file) if key_file.exists() else None
        engine = engine or make_engine(settings.effective_database_url)
        return cls(
            engine,
            registry,
            signer.public_key_pem() if signer else None,
            journal=signer.journal if signer else None,
            pseudonymizer=pseudonymizer or Pseudonymizer(make_vault(settings, engine)),
        )


def audit_services(request: Request) -> AuditServices:
    """The app's :class:`AuditServices` (``app.state.audit_services``), built from settings once."""
    services = getattr(request.app.state, "audit_services", None)
    if services is None:
        from schemas.settings import load_settings

        services = request.app.state.audit_services = AuditServices.from_settings(load_settings())
    assert isinstance(services, AuditServices)
    return services


Services = Annotated[AuditServices, Depends(audit_services)]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated auditor: the token id and the one tenant it may read."""

    token_id: str
    tenant: str


def _route(request: Request) -> str:
    """The path as requested (the router's paths carry only ledger indexes, never PII)."""
    return request.url.path


def auditor(request: Request, services: Services) -> Principal:
    """The single gate of every audit route: a valid token → its tenant; log the access either way
    (granted: a row; denied: a count in its hour's aggregate)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    now = services.clock()
    query = "&".join(f"{k}={request.query_params[k]}" for k in _LOGGED_PARAMS if k in request.query_params)
    route = f"{request.method} {_route(request)}"
    client = services.client_hash(request)
    with services.engine.begin() as conn:
        row = auditor_store.authenticate(conn, token, now=now) if token else None
        outcome = auditor_store.AccessOutcome.GRANTED if row else auditor_store.AccessOutcome.DENIED
        token_id = row.id if row else auditor_store.token_id_of(token)
        if row is not None:
            auditor_store.log_access(
                conn, at=now, token_id=token_id, tenant=row.tenant, route=route, query=query,
                outcome=outcome, client=client,
            )  # fmt: skip
        else:
            reason = (
                auditor_store.DenialReason.REJECTED if token_id
                else auditor_store.DenialReason.NOT_A_TOKEN if token
                else auditor_store.DenialReason.NO_TOKEN
            )  # fmt: skip
            auditor_store.log_denied(conn, at=now, reason=reason, client_hash=client, route=route)
    log.info("audit access %s: token %s, %s %s", outcome.value, token_id or "-", route, query)
    if row is None:
        raise HTTPException(
            status_code=401,
            detail="a valid auditor token is required (Authorization: Bearer crmhub_aud_…)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Principal(row.id, row.tenant)


Auditor = Annotated[Principal, Depends(auditor)]

router = APIRouter(tags=["audit"])


def _period(start: str | None, end: str | None) -> reports.Period:
    try:
        return reports.Period.parse(start, end)
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


From = Annotated[str | None, Query(alias="from", description="ISO 8601 date/datetime, inclusive")]
To = Annotated[str | None, Query(alias="to", description="ISO 8601 date/datetime, exclusive")]


@router.get("/whoami")
def whoami(who: Auditor) -> dict[str, str]:
    """The token id and the tenant this token reads."""
    return {"token_id": who.token_id, "tenant": who.tenant}


@router.get("/lineage", response_model=None)
def lineage(
    request: Request,
    who: Auditor,
    services: Services,
    start: From = None,
    end: To = None,
    format: Literal["json", "csv", "html"] = "json",
) -> Response:
    """Per sync and run: pulled, pushed, failed, filtered, withheld; purposes and instruction
    versions; datasets — as JSON, CSV or a printable HTML page whose first page is the auditor's
    summary (purposes, data categories, subprocessors, transfers, reconciliation per run)."""
    period = _period(start, end)
    report = reports.lineage_report(services.engine, who.tenant, period, now=services.clock())
    if format == "csv":
        return PlainTextResponse(
            reports.lineage_csv(report),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{who.tenant}-lineage.csv"'},
        )
    if format == "html":
        cover = cover_page(
            services.engine, services.registry, who.tenant, period, report, now=services.clock()
        )
        return HTMLResponse(reports.lineage_html(report, cover, filter_action=_route(request)))
    return JSONResponse(report)


@router.get("/subprocessors")
def subprocessors(who: Auditor, services: Services, start: From = None, end: To = None) -> dict[str, Any]:
    """Who touched the tenant's data, for what, where."""
    return reports.subprocessor_report(services.engine, services.registry, who.tenant, _period(start, end))


@router.get("/transfers")
def transfers(who: Auditor, services: Services, start: From = None, end: To = None) -> dict[str, Any]:
    """Every cross-region move: route, subprocessor, mechanism and the reference it relies on."""
    return reports.transfer_report(services.engine, services.registry, who.tenant, _period(start, end))


@router.get("/access")
def human_access(who: Auditor, services: Services, start: From = None, end: To = None) -> dict[str, Any]:
    """The human access ledger: every person's touch of the tenant's personal data or its protection
    (action, actor as a keyed or opaque id, target, ledger index — verifiable in the ledger report)."""
    return reports.access_report(services.engine, who.tenant, _period(start, end))


@router.get("/incidents")
def incidents(who: Auditor, services: Services) -> dict[str, Any]:
    """The tenant's personal-data breaches (Art. 33(2)): nature, counts, categories, when crmhub became
    aware and when it notified, each time cited by its ledger index (the tenant's part only)."""
    return incident_history(
        services.engine, who.tenant, reports.tenant_events(services.engine, who.tenant), now=services.clock()
    )


@router.get("/records-of-processing")
def records_of_processing(who: Auditor, services: Services) -> dict[str, Any]:
    """The GDPR Art. 30(2) record crmhub keeps as processor for this controller."""
    return reports.records_of_processing(services.engine, services.registry, who.tenant, now=services.clock())


@router.get("/openlineage")
def openlineage(who: Auditor, services: Services, run: str | None = None) -> list[dict[str, Any]]:
    """OpenLineage RunEvents of the tenant's runs (of one run with ``run``)."""
    events = [
        e for _, e in reports.tenant_events(services.engine, who.tenant) if run is None or e.run_id == run
    ]
    return run_events_json(events)


def _ledger(services: AuditServices, who: Principal) -> Ledger:
    """The tenant's ledger, proven consistent with the journal's latest checkpoint (409 if not)."""
    ledger = Ledger(services.engine, who.tenant)
    if services.journal is not None:
        journal = services.journal
        _integrity(lambda: ledger.check_consistency(journal))
    return ledger


def _latest(ledger: Ledger, services: AuditServices) -> Any:
    """The latest signed checkpoint: the database's or the journal's, whichever is larger."""
    signed = ledger.checkpoints()[-1:]
    journaled = services.journal.latest(ledger.origin) if services.journal is not None else None
    if journaled is not None:
        signed.append(journaled)
    if not signed:
        raise HTTPException(status_code=404, detail="the ledger has no signed checkpoint yet")
    return max(signed, key=lambda cp: cp.size)


def _integrity(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    except IntegrityError as exc:
        raise HTTPException(status_code=409, detail=f"ledger integrity: {exc}") from None


@router.get("/integrity/checkpoint")
def checkpoint(who: Auditor, services: Services) -> dict[str, Any]:
    """The latest signed checkpoint (origin, size, root, time, key id, Ed25519 signature) and the
    note body the signature covers."""
    cp = _latest(_ledger(services, who), services)
    return {
        "checkpoint": cp.model_dump(mode="json"),
        "signed_body": cp.signed_body().decode("utf-8"),
        "public_key_pem": services.public_key_pem,
    }


@router.get("/integrity/inclusion/{index}")
def inclusion(
    who: Auditor, services: Services, index: int, size: Annotated[int | None, Query(ge=1)] = None
) -> dict[str, Any]:
    """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries (default: the
    latest signed checkpoint's size), with the entry's canonical event text."""
    ledger = _ledger(services, who)
    size = size if size is not None else _latest(ledger, services).size
    proof = _integrity(lambda: ledger.inclusion_proof(index, size))
    events = ledger.read_events(index, index + 1)
    return {
        "proof": proof.model_dump(mode="json"),
        "event": events[0].canonical_bytes().decode("utf-8") if events else None,
    }


@router.get("/integrity/consistency")
def consistency(
    who: Auditor,
    services: Services,
    first: Annotated[int, Query(ge=1)],
    second: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """RFC 9162 consistency proof that the tree of ``first`` entries is a prefix of the tree of
    ``second`` (default: the latest signed checkpoint's size)."""
    ledger = _ledger(services, who)
    second = second if second is not None else _latest(ledger, services).size
    proof = _integrity(lambda: ledger.consistency_proof(first, second))
    return {"proof": proof.model_dump(mode="json")}


@router.get("/integrity/ledger")
def ledger_report(who: Auditor, services: Services) -> Response:
    """The full signed ledger report (``crmhub.lineage.report/2``: checkpoints from the database and
    the journal, consistency proofs between them) up to the latest checkpoint — the file
    ``crmhub audit verify REPORT --public-key KEY [--known-checkpoint CP]`` checks offline."""
    ledger = _ledger(services, who)
    cp = _latest(ledger, services)
    report = _integrity(
        lambda: ledger.export_report(cp, public_key=services.public_key_pem, journal=services.journal)
    )
    return Response(
        report_to_json(report),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{who.tenant}-ledger.json"'},
    )
