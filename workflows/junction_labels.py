"""Roles as association labels (issue 14): a junction sync's ``Role`` → a HubSpot USER_DEFINED label
on the row's deal↔contact pair.

**Declared** in the junction sync's mapping by the destination :data:`LABEL` (``@label``)::

    mapping: {OpportunityId: "@deals", ContactId: "@contacts", Role: "@label"}

``Role`` is read like any mapped field, so the instruction must allow it (else the plan is refused,
rule ``mapping``) and must not pseudonymize it (a pseudonym is no role); at most one field maps to
``@label``, and only on a sync into an association stream (:func:`check_labels`). Each role value is
one label, created at the destination the first time a row carries it (the connector lists the
pair's labels once per push and creates each missing one: :mod:`connectors.hubspot.labels`); a row
without a role stays unlabeled.

**Kept** per row in ``association_links``: under :data:`ROLE` the role the row wants (sealed with the
tenant's key — a deferred row is linked later, by a parent sync's push, without its record — and its
keyed hash), under :data:`LABELED` the destination's id of the label the row's pair carries and the
keyed hash of its role. A role change is a changed hash: the pair's old label is taken off (batch
labels archive) and the new one put on (batch create), in the same single ``write_links`` call as the
sync's other pairs; a label another live row of the same pair still carries stays (Salesforce
accepts two roles of one contact on one opportunity: the pair carries both labels).

``IsPrimary`` has no faithful destination: HubSpot's deal→contact pair has no primary type (only
contact→company and deal→company do), so it is not written (a ``Primary`` label would be a label
like any other, not HubSpot's primary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.connector import Record
from schemas.errors import ConfigError
from store import associations as links_store
from store.engine import Connection
from workflows.context import ActivityKit, SyncContext
from workflows.sealed_text import open_text, seal_text

__all__ = ["LABEL", "LABELED", "ROLE", "ROLE_LIMIT", "Roles", "check_labels", "label_field"]

LABEL = links_store.LABEL_MARK
"""The mapping destination of the field whose value labels a junction row's pair."""
ROLE = "@role"
"""``association_links`` field of a row's wanted role: (sealed role, keyed hash of the role)."""
LABELED = "@labeled"
"""``association_links`` field of the label a row's pair carries: (label id, keyed hash of the role)."""
ROLE_LIMIT = 150
"""Longest role kept, in UTF-8 bytes: sealed (33 bytes more) and in base64 it fits the store's
255-character column. A longer one is dead-lettered ``LABEL_TOO_LONG`` (guess: HubSpot documents
no maximum label length; Salesforce role picklist values are far shorter in practice)."""


def label_field(mapping: Mapping[str, str]) -> str | None:
    """The source field mapped to :data:`LABEL`, if any."""
    return next((src for src, dst in mapping.items() if dst == LABEL), None)


def check_labels(ctx: SyncContext) -> None:
    """Plan-time: ``@label`` only on a junction sync, once, on a field the instruction keeps in clear."""
    fields = [src for src, dst in ctx.spec.mapping.items() if dst == LABEL]
    if not fields:
        return
    if not links_store.is_junction(ctx.spec.destination_stream):
        raise ConfigError(
            f"sync {ctx.spec.id!r} maps {fields[0]} to {LABEL}, but labels are on association pairs only: "
            f"{ctx.spec.destination_stream} is no association stream (e.g. deals/contacts)",
            code="LABEL_NOT_JUNCTION",
        )
    if len(fields) > 1:
        raise ConfigError(
            f"sync {ctx.spec.id!r} maps {fields} to {LABEL}; a pair takes its label from one field",
            code="LABEL_FIELDS",
        )
    if fields[0] in ctx.instruction.pseudonymize.get(ctx.spec.source_stream, ()):
        raise ConfigError(
            f"sync {ctx.spec.id!r} labels pairs by {fields[0]}, which the instruction pseudonymizes "
            f"(pseudonymize.{ctx.spec.source_stream}); a pseudonym is no role — leave {fields[0]} in "
            f"clear or drop the {LABEL} entry",
            code="LABEL_PSEUDONYMIZED",
        )


class Roles:
    """The roles of one junction sync's rows: read from records, kept sealed for deferred rows."""

    def __init__(self, kit: ActivityKit, ctx: SyncContext) -> None:
        self.kit, self.ctx = kit, ctx
        self.field = label_field(ctx.spec.mapping)

    def of(self, record: Record) -> str | None:
        """A record's role (``None``: none mapped, or empty)."""
        value = record.get(self.field) if self.field else None
        text = "" if value is None else str(value).strip()
        return text or None

    def hash(self, role: str | None) -> str | None:
        return None if role is None else self.kit.deps.pseudonymizer.keyed_hash(self.ctx.tenant.id, role)

    def keep(self, conn: Connection, wanted: Sequence[tuple[str, str | None]]) -> None:
        """Record the role each row (key, role) wants; rows without one are forgotten."""
        tenant, sync_id = self.ctx.tenant.id, self.ctx.spec.id
        dataset = self._dataset()
        rows = [
            (k, seal_text(self.kit, self.ctx, dataset, k, role), self.hash(role) or "")
            for k, role in wanted
            if role
        ]
        links_store.set_links(conn, tenant, sync_id, ROLE, rows, now=self.kit.deps.clock())
        links_store.drop_links(conn, tenant, sync_id, ROLE, [k for k, role in wanted if not role])

    def wanted(self, keys: Sequence[str]) -> dict[str, str]:
        """key → the role kept for it (rows of a deferred queue)."""
        if self.field is None or not keys:
            return {}
        with self.kit.deps.engine.connect() as conn:
            kept = links_store.links_of(conn, self.ctx.tenant.id, self.ctx.spec.id, ROLE, keys)
        dataset = self._dataset()
        return {k: open_text(self.kit, self.ctx, dataset, k, sealed) for k, (sealed, _) in kept.items()}

    def _dataset(self) -> str:
        return f"{self.ctx.spec.id}{ROLE}"
