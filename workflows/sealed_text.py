"""Short source values kept in the store sealed with the tenant's key (base64 text, AAD bound to
the sync's dataset, the row's key hash and the instruction's purpose): a reverse-link snapshot's
child id (:mod:`workflows.reverse_links`), a waiting junction row's role
(:mod:`workflows.junction_labels`)."""

from __future__ import annotations

import base64

from workflows.context import ActivityKit, SyncContext

__all__ = ["open_text", "seal_text"]


def seal_text(kit: ActivityKit, ctx: SyncContext, dataset: str, object_id: str, text: str) -> str:
    sealed = kit.deps.vault.seal(
        ctx.tenant.id, text.encode(), dataset=dataset, object_id=object_id, purpose=ctx.instruction.purpose
    )
    return base64.b64encode(sealed).decode()


def open_text(kit: ActivityKit, ctx: SyncContext, dataset: str, object_id: str, sealed: str) -> str:
    return kit.deps.vault.open(
        ctx.tenant.id, base64.b64decode(sealed), dataset=dataset, object_id=object_id,
        purpose=ctx.instruction.purpose,
    ).decode()  # fmt: skip
