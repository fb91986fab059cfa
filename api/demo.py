"""``crmhub demo``: the main job on the embedded default, end to end, on one machine.

Starts the Temporal dev server (UI on 8233), the sandbox CRMs, one worker per region; seeds 10,000
Salesforce contacts; connects both CRMs through the real OAuth flow (the consent button pressed
as a browser would); stores a processing instruction (purpose ``crm-sync``, an allowlist that
withholds some fields, one pseudonymized field); runs a Salesforce → HubSpot sync with a progress
bar; modifies and deletes some records and runs an incremental sync; then prints what moved, what
was withheld, the lineage summary, the ledger verification and where to look.

The building blocks (:func:`connect_crm`, :func:`create_demo_sync`, :func:`lineage_summary`,
:func:`verify_ledger`) are used by the end-to-end tests too.

The demo is one of the two dev/demo commands allowed to import :mod:`sandbox` (with
:mod:`api.cli_demo`). Everything else it runs — the connect flow, the workers — finds the sandbox's
OAuth clients the way a deployment finds its own: in the clients file the sandbox writes
(``<data_dir>/oauth-clients.yaml``), which the demo makes its only OAuth configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

from api.cli_connect import complete_from_redirect
from governance.lineage import CheckpointSigner, Ledger, report_from_json, report_to_json, verify
from governance.policy import ProcessingInstruction
from sandbox.consent import press_consent
from sandbox.runtime import CLIENTS_FILE, RunningSandbox, start_sandbox
from sandbox.tls import SandboxCA
from schemas.errors import TransientError
from schemas.lineage import LineageEvent, VerificationResult
from schemas.settings import OAuthSettings, Settings
from schemas.sync import Progress, SyncMode, SyncStatus, SyncWriteMode
from services.connectors import ConnectionConnectors
from services.credentials import OAuthService
from services.wiring import credentials
from store import connections as connection_store
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store

__all__ = [
    "DEMO_MAPPING",
    "DEMO_TENANT",
    "DemoResult",
    "connect_crm",
    "create_demo_sync",
    "demo_instruction",
    "hosted_at",
    "lineage_summary",
    "run_demo",
    "verify_ledger",
]

DEMO_TENANT = "demo"
DEMO_SYNC = "sf-contacts-to-hubspot"
# Salesforce Contact field → HubSpot contact property. Title, MailingCity, Lead_Score__c … are not
# in the instruction's allowlist: they never leave the pull activity.
DEMO_MAPPING = {
    "Email": "email",
    "FirstName": "firstname",
    "LastName": "lastname",
    "Phone": "phone",
    "MailingCountry": "country",
}


def demo_instruction(tenant: str = DEMO_TENANT, version: int = 1) -> ProcessingInstruction:
    """The controller's instruction for the demo: purpose crm-sync, Phone pseudonymized."""
    return ProcessingInstruction.model_validate(
        {
            "tenant": tenant,
            "version": version,
            "purpose": "crm-sync",
            "data_categories": ["contact_details", "business_contact"],
            "allowed_fields": {
                "Contact": [
                    "Id",
                    "Email",
                    "FirstName",
                    "LastName",
                    "Phone",
                    "MailingCountry",
                    "SystemModstamp",
                ]
            },
            "pseudonymize": {"Contact": ["Phone"]},
            "retention_days": 7,
            "permitted_regions": ["eea"],
            "permitted_subprocessors": ["salesforce", "hubspot"],
            "valid_from": "2025-01-01T00:00:00Z",
        }
    )


def connect_crm(
    oauth: OAuthService, tenant: str, provider: str, ca: SandboxCA, *, extra_scopes: Sequence[str] = ()
) -> str:
    """Connect a sandbox CRM as ``crmhub connect`` and the web callback do: the authorization-code
    flow with PKCE, then ask the vendor where the connection's data lives
    (:meth:`ConnectionConnectors.locate`: HubSpot's account details, Salesforce's organization
    instance), stored with the connection for the syncs that name no endpoint; returns its id."""
    req = oauth.begin_authorization(tenant, provider, extra_scopes=extra_scopes)
    params = press_consent(req.url, ca.client_context())
    connection_id = complete_from_redirect(oauth, provider, tenant, params, req.redirect_uri).id
    vendors = ConnectionConnectors(oauth.engine, oauth.token_source, ca_files={provider: ca.ca_path})
    vendors.locate(connection_id)
    return connection_id


def create_demo_sync(
    engine: Engine, *, tenant: str, sf_connection: str, hs_connection: str, sync_id: str = DEMO_SYNC
) -> sync_store.SyncSpec:
    """Tenant (EEA), instruction v1 and the Salesforce → HubSpot contacts sync (idempotent: run
    again, the sync is pointed at this run's connections — the sandbox CRMs are new each time). The
    sync names no endpoint: each side's region is the one its vendor reported at connect
    (:func:`connect_crm`), as for a sync a customer makes."""
    ins = demo_instruction(tenant)
    now = datetime.now(UTC)
    spec = sync_store.SyncSpec(
        tenant=tenant,
        id=sync_id,
        name="Salesforce contacts to HubSpot",
        source_connection_id=sf_connection,
        source_stream="Contact",
        destination_connection_id=hs_connection,
        destination_stream="contacts",
        mapping=DEMO_MAPPING,
        destination_id_property="email",
        source_key_property="Email",
        instruction_version=ins.version,
        write_mode=SyncWriteMode.MIRROR,  # the demo's sync keeps HubSpot equal to Salesforce, deletes too
    )
    with engine.begin() as conn:
        if tenant_store.get_tenant(conn, tenant) is None:
            tenant_store.create_tenant(
                conn,
                id=tenant,
                name="Demo GmbH",
                home_region="eea",
                authorised_subprocessors=["salesforce", "hubspot"],
                now=now,
            )
        instruction_store.add_instruction(
            conn,
            tenant=tenant,
            version=ins.version,
            content=ins.model_dump(mode="json"),
            content_hash=ins.content_hash,
            now=now,
        )
        if sync_store.get_sync(conn, tenant, sync_id) is None:
            sync_store.create_sync(conn, spec, now=now)
        else:
            sync_store.set_sync_connections(
                conn, tenant, sync_id, source=sf_connection, destination=hs_connection, now=now
            )
    return spec


def hosted_at(engine: Engine, *connection_ids: str) -> dict[str, str]:
    """Where each connection's data lives, as its vendor said at connect (``unknown``: it did not)."""
    with engine.connect() as conn:
        rows = {c: connection_store.get_connection(conn, c) for c in connection_ids}
    return {c: (row.region_instance if row and row.region_instance else "unknown") for c, row in rows.items()}


def lineage_summary(engine: Engine, tenant: str) -> dict[str, Any]:
    """Events and counts by kind, subprocessors and routes seen in the tenant's ledger."""
    events: list[LineageEvent] = Ledger(engine, tenant).read_events()
    by_kind: dict[str, int] = {}
    counts: dict[str, int] = {}
    routes: set[str] = set()
    subprocessors: set[str] = set()
    for e in events:
        by_kind[e.kind.value] = by_kind.get(e.kind.value, 0) + 1
        for k, v in e.counts.items():
            counts[f"{e.kind.value}.{k}"] = counts.get(f"{e.kind.value}.{k}", 0) + v
        if e.subprocessor:
            subprocessors.add(e.subprocessor)
        if e.region_from and e.region_to:
            mech = e.transfer_mechanism.value if e.transfer_mechanism else "none"
            routes.add(f"{e.region_from}→{e.region_to} ({mech})")
    return {
        "events": len(events),
        "by_kind": by_kind,
        "counts": counts,
        "subprocessors": sorted(subprocessors),
        "routes": sorted(routes),
    }


def verify_ledger(
    engine: Engine, tenant: str, signer: CheckpointSigner, report_path: Path
) -> VerificationResult:
    """Sign a checkpoint, export the tenant's report (and the public key beside it, ``.pub.pem``) and
    verify the report offline, from the files alone."""
    ledger = Ledger(engine, tenant)
    checkpoint = ledger.checkpoint(signer)
    report = ledger.export_report(checkpoint, public_key=signer.public_key)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_bytes(report_to_json(report))
    public_key_path = report_path.with_suffix(".pub.pem")
    public_key_path.write_text(signer.public_key_pem())
    loaded = report_from_json(report_path.read_bytes())
    return verify(loaded, loaded.checkpoints[-1], public_key_path.read_text())


@dataclass(frozen=True)
class DemoResult:
    seconds: float
    full: Progress
    incremental: Progress
    hubspot_contacts: int
    modified: int
    deleted: int
    withheld_fields: tuple[str, ...]
    lineage: dict[str, Any]
    verification: VerificationResult
    report_path: Path
    temporal_ui: str


@contextlib.asynccontextmanager
async def _workers(settings: Settings) -> AsyncIterator[None]:
    """One worker per configured region, in this process, until the block ends; the notice-dispatch
    schedule installed first, so notices are delivered as in a deployment."""
    from api.maintenance import start_notice_dispatch
    from workers.worker import run_worker

    await start_notice_dispatch(settings)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_worker(settings, region, stop=stop)) for region in settings.regions]
    try:
        await asyncio.sleep(0.5)
        for t in tasks:
            if t.done():
                t.result()  # a worker that failed to start raises here
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def _codec_server(settings: Settings) -> Iterator[str | None]:
    """The loopback-dev codec server the dev server's UI decodes through, in this process — or the
    one ``crmhub temporal up`` left running; None when ``temporal.dev_server.codec_server`` is off."""
    from workers.codec_process import codec_server_in_thread, codec_server_status

    if not settings.temporal.dev_server.codec_server:
        yield None
        return
    running = codec_server_status(settings)
    if running.healthy:
        yield running.url
        return
    with codec_server_in_thread(settings) as url:
        yield url


@contextlib.contextmanager
def _dev_server(settings: Settings, *, keep: bool) -> Iterator[str]:
    from workers.devserver import dev_server_status, start_dev_server, stop_dev_server

    already = dev_server_status(settings).reachable
    status = start_dev_server(settings)
    try:
        yield status.ui_url
    finally:
        if not already and not keep:
            stop_dev_server(settings)


def run_demo(settings: Settings, console: Console, *, contacts: int, keep_running: bool) -> DemoResult:
    from store.migrate import upgrade

    started = time.monotonic()
    data_dir = settings.data_dir.resolve()
    # The demo talks to the dev server it starts, wherever temporal.dev_server puts it, and connects
    # the CRMs of the sandbox it starts: their clients file is its only OAuth configuration.
    dev = settings.temporal.dev_server
    settings = settings.model_copy(
        update={
            "temporal": settings.temporal.model_copy(update={"address": f"{dev.ip}:{dev.port}"}),
            "oauth": OAuthSettings(clients_file=data_dir / CLIENTS_FILE),
        }
    )
    with console.status("migrating the database"):
        upgrade(settings.effective_database_url)
    with (
        _codec_server(settings) as codec_url,
        _dev_server(settings, keep=keep_running) as ui_url,
        start_sandbox(
            data_dir,
            host=settings.sandbox.host,
            salesforce_port=0,
            hubspot_port=0,
            seed=settings.sandbox.seed,
            seed_counts={"salesforce": {"Account": 100, "Contact": contacts}},
        ) as sandbox,
    ):
        console.print(
            f"Temporal dev server up (UI {ui_url}); sandbox CRMs up "
            f"(Salesforce {sandbox.info.salesforce_url}, HubSpot {sandbox.info.hubspot_url}); "
            f"{contacts:,} Salesforce contacts seeded"
        )
        result = asyncio.run(_run(settings, console, sandbox, ui_url, started))
        _report(console, result, settings, codec_url)
        failed = [
            (n, p)
            for n, p in (("full", result.full), ("incremental", result.incremental))
            if p.status is not SyncStatus.COMPLETED
        ]
        if failed:
            name, p = failed[0]
            raise TransientError(
                f"the demo's {name} sync ended {p.status.value}: {p.message or 'no message'}; "
                f"see: crmhub sync status --tenant {DEMO_TENANT}"
            )
        if keep_running:
            console.print("[bold]everything stays up[/] (workers too); Ctrl-C to stop")
            asyncio.run(_keep_workers(settings))
        return result


async def _keep_workers(settings: Settings) -> None:
    async with _workers(settings):
        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
            await asyncio.Event().wait()


async def _run(
    settings: Settings, console: Console, sandbox: RunningSandbox, ui_url: str, started: float
) -> DemoResult:
    from api import syncops
    from api.cli_sync import follow
    from workers.client import connect

    connected = await connect(settings)
    engine = connected.engine
    ca = SandboxCA(Path(sandbox.info.ca_path).parent)
    oauth = credentials(settings, engine, connected.vault)
    try:
        with console.status("connecting Salesforce and HubSpot through OAuth (PKCE)"):
            sf = await asyncio.to_thread(connect_crm, oauth, DEMO_TENANT, "salesforce", ca)
            hs = await asyncio.to_thread(connect_crm, oauth, DEMO_TENANT, "hubspot", ca)
        where = hosted_at(engine, sf, hs)
        console.print(
            f"connected: Salesforce ({sf}, data hosted at {where[sf]}), HubSpot ({hs}, data hosted at "
            f"{where[hs]}), as each vendor reported it; tokens sealed by the vault"
        )
        create_demo_sync(engine, tenant=DEMO_TENANT, sf_connection=sf, hs_connection=hs)
        ins = demo_instruction()
        withheld = tuple(sorted(set(_contact_fields(sandbox)) - set(ins.allowed_fields["Contact"])))
        queue = settings.temporal.control_task_queue
        async with _workers(settings):
            console.print("[bold]full sync[/] Salesforce Contact → HubSpot contacts")
            h = await syncops.start(
                connected.client, DEMO_TENANT, DEMO_SYNC, mode=SyncMode.FULL, task_queue=queue
            )
            full = await follow(connected.client, DEMO_TENANT, DEMO_SYNC, h, console=console)
            sf_handle: Any = sandbox.salesforce
            ids = sorted(r["id"] for r in sf_handle.live_records("Contact"))
            modified, deleted = ids[:50], ids[50:70]
            for i, cid in enumerate(modified):
                sf_handle.update_record("Contact", cid, {"FirstName": f"Changed{i}"})
            for cid in deleted:
                sf_handle.delete_record("Contact", cid)
            console.print(
                f"[bold]incremental sync[/] after modifying {len(modified)} and deleting {len(deleted)} "
                "Salesforce contacts"
            )
            h = await syncops.start(
                connected.client, DEMO_TENANT, DEMO_SYNC, mode=SyncMode.INCREMENTAL, task_queue=queue
            )
            inc = await follow(connected.client, DEMO_TENANT, DEMO_SYNC, h, console=console)
        assert full is not None and inc is not None
        signer = CheckpointSigner.load_or_create(
            settings.data_dir.resolve() / settings.governance.signing_key_file
        )
        report_path = settings.data_dir.resolve() / "reports" / f"{DEMO_TENANT}-lineage.json"
        verification = verify_ledger(engine, DEMO_TENANT, signer, report_path)
        hs_handle: Any = sandbox.hubspot
        return DemoResult(
            seconds=time.monotonic() - started,
            full=full,
            incremental=inc,
            hubspot_contacts=len(hs_handle.live_records("contacts")),
            modified=len(modified),
            deleted=len(deleted),
            withheld_fields=withheld,
            lineage=lineage_summary(engine, DEMO_TENANT),
            verification=verification,
            report_path=report_path,
            temporal_ui=ui_url,
        )
    finally:
        oauth.close()
        engine.dispose()


def _contact_fields(sandbox: RunningSandbox) -> list[str]:
    sf: Any = sandbox.salesforce
    sample = sf.live_records("Contact")[:1]
    return [k for k in (sample[0] if sample else {}) if k != "id"]


def _report(console: Console, r: DemoResult, settings: Settings, codec_url: str | None) -> None:
    table = Table(title=f"crmhub demo: done in {r.seconds:.0f}s")
    table.add_column("run")
    for col in ("pulled", "pushed", "failed", "deleted", "pseudonymized", "status"):
        table.add_column(col, justify="right")
    for name, p in (("full", r.full), ("incremental", r.incremental)):
        c = p.counts
        table.add_row(
            name,
            f"{c.pulled:,}",
            f"{c.pushed:,}",
            f"{c.failed:,}",
            f"{c.deleted:,}",
            f"{c.pseudonymized:,}",
            p.status.value,
        )
    console.print(table)
    console.print(
        f"HubSpot now holds {r.hubspot_contacts:,} contacts "
        f"({r.modified} modified and {r.deleted} deleted at the source were propagated)"
    )
    console.print(
        "fields outside the instruction (never requested from Salesforce, never stored): "
        + ", ".join(r.withheld_fields),
        soft_wrap=True,
    )
    console.print(
        "pseudonymized: Phone → HubSpot receives a per-tenant keyed pseudonym (ps_…), not the number"
    )
    lin = r.lineage
    console.print(
        f"lineage: {lin['events']} events {json.dumps(lin['by_kind'])}; "
        f"subprocessors {', '.join(lin['subprocessors'])}; routes {', '.join(lin['routes'])}"
    )
    v = r.verification
    verdict = "[green]verified[/]" if v.ok else f"[red]FAILED[/] ({v.reason})"
    console.print(f"ledger: {verdict} offline against the signed checkpoint and public key")
    console.print("\n[bold]where to look[/]")
    console.print(
        f"  Temporal UI      {r.temporal_ui}/namespaces/{settings.temporal.namespace}/workflows"
        "?query=CrmhubTenant%3D%22demo%22"
    )
    if codec_url:
        console.print(
            f"  codec server     {codec_url}: the UI decodes inputs and results through it "
            "(loopback-dev, each decode audited as ui-loopback in codec_audit)"
        )
    else:
        console.print("  codec server     off (temporal.dev_server.codec_server); run crmhub codec-server")
    pub = r.report_path.with_suffix(".pub.pem")
    console.print(f"  lineage report   {r.report_path}")
    console.print(f"  verify offline   crmhub audit verify {r.report_path} --public-key {pub}")
