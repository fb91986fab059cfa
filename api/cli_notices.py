"""``crmhub tenant contacts add|list|remove``: where crmhub sends a controller's notices
(:mod:`services.notices`). An address is sealed when it is added and never printed again; a
webhook's signing secret is printed once, at ``add``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.cli_common import migrated_engine, require_tenant
from api.cli_sync import tenant_app
from schemas.settings import load_settings

__all__ = ["register"]

out = Console()
contacts_app = typer.Typer(
    help="A controller's notice contacts: e-mail (SMTP relay) or signed webhook.", no_args_is_help=True
)


def register() -> None:
    tenant_app.add_typer(contacts_app, name="contacts")


@contacts_app.command("add")
def contacts_add(
    tenant: Annotated[str, typer.Option(help="the controller")],
    label: Annotated[str, typer.Option(help="a role, not a name: dpo, ops-webhook")],
    email: Annotated[str | None, typer.Option(help="e-mail address (sealed)")] = None,
    webhook: Annotated[
        str | None, typer.Option(help="webhook URL (sealed; Standard Webhooks signed)")
    ] = None,
) -> None:
    """Add a contact; for a webhook, print its signing secret (once)."""
    from services.notices import add_contact
    from services.wiring import make_vault

    settings = load_settings()
    engine = migrated_engine(settings)
    try:
        require_tenant(engine, tenant)
        contact, secret = add_contact(
            engine, make_vault(settings, engine), tenant, label=label, email=email, webhook_url=webhook
        )
    finally:
        engine.dispose()
    out.print(f"contact [bold]{contact.id}[/] ({contact.channel.value}, {contact.label}) added to {tenant}")
    if secret is not None:
        out.print(f"webhook signing secret (shown once; verify webhook-signature with it): {secret}")


@contacts_app.command("list")
def contacts_list(
    tenant: Annotated[str, typer.Option(help="the controller")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """The tenant's contacts (ids, channels, labels: addresses stay sealed)."""
    from services.notices import list_contacts

    engine = migrated_engine(load_settings())
    try:
        require_tenant(engine, tenant)
        rows = list_contacts(engine, tenant)
    finally:
        engine.dispose()
    if as_json:
        doc = [{"id": c.id, "channel": c.channel.value, "label": c.label, "created": c.created.isoformat()}
               for c in rows]  # fmt: skip
        typer.echo(json.dumps(doc))
        return
    table = Table("id", "channel", "label", "created")
    for c in rows:
        table.add_row(c.id, c.channel.value, c.label, c.created.isoformat(timespec="seconds"))
    out.print(table)


@contacts_app.command("remove")
def contacts_remove(
    tenant: Annotated[str, typer.Option(help="the controller")],
    contact_id: Annotated[str, typer.Argument(help="contact id (see: crmhub tenant contacts list)")],
) -> None:
    """Remove a contact: later notices are not sent to it."""
    from services.notices import remove_contact

    engine = migrated_engine(load_settings())
    try:
        require_tenant(engine, tenant)
        remove_contact(engine, tenant, contact_id)
    finally:
        engine.dispose()
    out.print(f"contact {contact_id} removed from {tenant}")
