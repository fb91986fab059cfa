"""``crmhub incident repair|check-codec``: finishing incident ledger events an earlier command owed
(:mod:`services.incident_ledger`) and the codec-token misuse signal (:mod:`services.codec_misuse`).
Attached to ``crmhub incident`` by :func:`api.cli_incident.register`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from api.cli_common import migrated_engine
from api.cli_incident import incident_app
from schemas.settings import load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["repair_cmd", "repair_owed"]

out = Console()


def repair_owed(engine: Engine) -> int:
    """Best effort before an incident command: append the ledger events earlier commands still owe;
    a failure is said (with the fix) and does not stop the command. Returns how many were appended."""
    from services.incident_ledger import append_owed

    try:
        done = append_owed(engine)
    except Exception as exc:  # the command itself must still run: a breach does not wait
        out.print(
            f"[yellow]incident ledger events still owed from an earlier failure[/] ({type(exc).__name__}); "
            "run crmhub incident repair", soft_wrap=True,
        )  # fmt: skip
        return 0
    if done.appended:
        out.print(f"appended {len(done.appended)} incident ledger event(s) an earlier command owed")
    return len(done.appended)


@incident_app.command("repair")
def repair_cmd() -> None:
    """Append every ``incident`` ledger event an earlier open/update/notify committed but did not
    append (it failed partway); each is appended once, however often this runs."""
    from services.incident_ledger import append_owed

    engine = migrated_engine(load_settings())
    try:
        done = append_owed(engine)
    finally:
        engine.dispose()
    for incident_id, tenant, step in done.appended:
        out.print(f"incident {incident_id}: appended {step.split('@')[0]} to tenant {tenant}'s ledger")
    left = f"; {done.remaining} still owed (run it again)" if done.remaining else ""
    out.print(f"{len(done.appended)} incident ledger event(s) appended{left}")
