"""The processing-instruction editor: pick a connection and object, tick the fields the instruction
allows (and those to pseudonymize) against the **live** describe of the source connector, and see —
before saving — which fields of the object will be withheld. Saving stores a new version
(:func:`store.instructions.add_instruction`); versions are immutable. A sync keeps citing the version it
was created (or last pointed) under, so the page then offers to move the tenant's syncs to the new
version (``POST /instructions/move-syncs``): each is checked to be covered
(:func:`services.syncconfig.repoint`) and either all move or none does."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.responses import Response

from api.web.forms import InstructionForm
from api.web.render import PAGE_RESPONSES, POST_RESPONSES, render
from api.web.session import CsrfChecked
from api.web.tenancy import AdminScope, Scope, TenantScope
from governance.policy import ProcessingInstruction
from schemas.errors import ConfigError
from services.syncconfig import repoint

__all__ = ["router"]

log = logging.getLogger("crmhub.web")
router = APIRouter(tags=["instructions"])


@router.get("/instructions", response_class=HTMLResponse, responses=PAGE_RESPONSES)
def instructions_page(request: Request, scope: Scope) -> HTMLResponse:
    """The instruction versions of the tenant, where to edit them, and the syncs that do not cite
    the latest version yet (with the form that moves them)."""
    return _instructions(request, scope)


def _instructions(
    request: Request,
    scope: TenantScope,
    *,
    move_errors: dict[str, str] | None = None,
    chosen: Sequence[str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    versions = scope.instructions()
    latest = versions[0].version if versions else None
    behind = [r for r in scope.syncs() if latest is not None and r.spec.instruction_version != latest]
    return render(
        request,
        "instructions.html",
        {
            "versions": versions,
            "connections": scope.active_connections(),
            "behind": behind,
            "latest_version": latest,
            "move_errors": move_errors or {},
            "chosen": set(chosen) if chosen is not None else {r.spec.id for r in behind},
        },
        status=status,
    )


@router.post(
    "/instructions/move-syncs", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES
)
def move_syncs(
    request: Request,
    scope: AdminScope,
    _csrf: CsrfChecked,
    version: Annotated[int, Form(ge=1, le=2**31 - 1)],
    sync_id: Annotated[list[str] | None, Form(max_length=200)] = None,
) -> Response:
    """Point the chosen syncs at instruction ``version``: all of them if each is covered (every field
    it reads allowed), else none, with the reason per sync."""
    ids = list(dict.fromkeys(sync_id or []))
    for sid in ids:
        scope.sync(sid)  # 404 for another tenant's or an unknown sync, before anything changes
    if not ids:
        return _instructions(
            request, scope, move_errors={"": "Choose at least one sync."}, chosen=[], status=400
        )
    errors: dict[str, str] = {}
    try:
        with scope.ctx.engine.begin() as conn:
            for sid in ids:
                try:
                    repoint(conn, scope.tenant, sid, now=datetime.now(UTC), version=version)
                except ConfigError as exc:  # repoint changes nothing before its checks pass
                    errors[sid] = exc.message
            if errors:
                raise _MoveRefused
    except _MoveRefused:
        return _instructions(request, scope, move_errors=errors, chosen=ids, status=400)
    log.info("web syncs moved: tenant=%s version=%s syncs=%d", scope.tenant, version, len(ids))
    return RedirectResponse(f"/syncs?moved={version}", status_code=303)


class _MoveRefused(Exception):
    """Rolls back the moves of a request in which some sync was not covered."""


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def _editor(
    request: Request,
    scope: TenantScope,
    form: InstructionForm,
    *,
    ticks_from_latest: bool = False,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The editor for ``form``'s object against the live describe of its connection (an unknown
    object: the first the connector has). ``ticks_from_latest``: tick the fields the version in
    force allows and pseudonymizes, not the form's."""
    connection = scope.connection(form.connection_id)  # 404 for another tenant's connection
    connector = scope.ctx.connectors(connection.id)
    try:
        streams = [s.name for s in connector.streams()]
        stream = form.stream if form.stream in streams else streams[0]
        live = sorted(connector.describe(stream).names())
    finally:
        connector.close()
    latest = scope.latest_instruction()
    current = latest.content if latest else {}
    if ticks_from_latest:
        allowed = list(current.get("allowed_fields", {}).get(stream, []))
        pseudonymize = list(current.get("pseudonymize", {}).get(stream, []))
    else:
        allowed, pseudonymize = form.allowed or [], form.pseudonymize or []
    chosen = set(allowed)
    return render(
        request,
        "instruction_edit.html",
        {
            "connection": connection,
            "streams": streams,
            "stream": stream,
            "fields": live,
            "allowed": chosen,
            "pseudonymize": set(pseudonymize),
            "withheld": [f for f in live if f not in chosen],
            "unknown": sorted(chosen - set(live)),
            "latest": latest,
            "base": form,
            "error": error,
        },
        status=status,
    )


def _draft(scope: TenantScope, connection_id: str, stream: str) -> InstructionForm:
    """The editor's starting values: the version in force, or (none yet) the tenant's defaults.
    Built unvalidated: the values are the stored instruction's, not a user's input."""
    latest = scope.latest_instruction()
    if latest is not None:
        c = latest.content
        base: dict[str, Any] = {
            "purpose": c["purpose"],
            "retention_days": c["retention_days"],
            "permitted_regions": ", ".join(c["permitted_regions"]),
            "permitted_subprocessors": ", ".join(c.get("permitted_subprocessors", [])),
            "data_categories": ", ".join(c.get("data_categories", [])),
        }
    else:
        tenant = scope.tenant_row()
        base = {
            "purpose": "crm-sync",
            "retention_days": 30,
            "permitted_regions": tenant.home_region,
            "permitted_subprocessors": ", ".join(tenant.authorised_subprocessors),
            "data_categories": "contact_details",
        }
    return InstructionForm.model_construct(connection_id=connection_id, stream=stream, **base)


@router.get("/instructions/edit", response_class=HTMLResponse, responses=PAGE_RESPONSES)
def edit_page(
    request: Request,
    scope: AdminScope,
    connection_id: Annotated[str, Query(max_length=64)],
    stream: Annotated[str, Query(max_length=128)] = "",
) -> HTMLResponse:
    """The editor for one source object, with the fields the current version withholds."""
    return _editor(request, scope, _draft(scope, connection_id, stream), ticks_from_latest=True)


def _instruction(scope: TenantScope, form: InstructionForm) -> ProcessingInstruction:
    """The next version: the one in force with ``form``'s object and instruction fields replaced."""
    latest = scope.latest_instruction()
    current = latest.content if latest else {}
    allowed_fields = dict(current.get("allowed_fields", {}))
    pseudo = dict(current.get("pseudonymize", {}))
    allowed_fields[form.stream] = form.allowed or []
    if form.pseudonymize:
        pseudo[form.stream] = form.pseudonymize
    else:
        pseudo.pop(form.stream, None)
    return ProcessingInstruction.model_validate(
        {
            "tenant": scope.tenant,
            "version": (latest.version if latest else 0) + 1,
            "purpose": form.purpose,
            "data_categories": _split(form.data_categories),
            "allowed_fields": {k: v for k, v in allowed_fields.items() if v},
            "pseudonymize": pseudo,
            "retention_days": form.retention_days,
            "permitted_regions": _split(form.permitted_regions),
            "permitted_subprocessors": _split(form.permitted_subprocessors),
            "valid_from": current.get("valid_from") or datetime.now(UTC).isoformat(),
        }
    )


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'instruction'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )


@router.post("/instructions/preview", response_class=HTMLResponse, responses=POST_RESPONSES)
def preview(
    request: Request, scope: AdminScope, _csrf: CsrfChecked, form: Annotated[InstructionForm, Form()]
) -> HTMLResponse:
    """Show what the ticked fields would withhold, without saving."""
    return _editor(request, scope, form)


@router.post("/instructions/save", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES)
def save(
    request: Request, scope: AdminScope, _csrf: CsrfChecked, form: Annotated[InstructionForm, Form()]
) -> Response:
    """Store the edited instruction as the next version."""
    scope.connection(form.connection_id)
    try:
        ins = _instruction(scope, form)
    except ValidationError as exc:
        return _editor(request, scope, form, error=_problems(exc), status=400)
    row = scope.add_instruction(
        version=ins.version, content=ins.model_dump(mode="json"), content_hash=ins.content_hash
    )
    log.info("web instruction saved: tenant=%s version=%s", scope.tenant, row.version)
    return RedirectResponse(f"/instructions?saved={row.version}", status_code=303)
