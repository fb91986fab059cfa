"""The notice activities (control queue; they read no record content): ``list_pending_notices``
(a page of notice ids some contact has not received, for the dispatch pass; its first page first
appends the ``notice`` ledger events a crash left owed, :mod:`services.ledger_outbox`),
``pending_notice_contacts`` (contact ids a notice has not reached) and ``deliver_notice`` (one send,
:func:`services.notices.deliver`; a failure is a retryable error naming only its class)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from schemas.lineage import EventKind
from schemas.notices import DeliverInput, NoticeDeliveryInput, PendingNoticesInput
from services import notices
from services.ledger_outbox import append_owed
from services.wiring import ActivityDeps
from workflows.context import ActivityKit

__all__ = ["NoticeActivities"]


class NoticeActivities:
    """Bound to the worker's dependencies (engine, vault, settings.notices, clock)."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps
        self.kit = ActivityKit(deps)

    def activities(self) -> list[Callable[..., Any]]:
        return [self.list_pending_notices, self.pending_notice_contacts, self.deliver_notice]

    @activity.defn(name="list_pending_notices")
    def list_pending_notices(self, inp: PendingNoticesInput) -> list[str]:
        def run() -> list[str]:
            if not inp.after:  # the first page of a dispatch pass
                self._append_owed()
            return notices.pending_notices(self.deps.engine, after=inp.after, limit=inp.limit)

        return self.kit.guarded("list_pending_notices", run)

    def _append_owed(self) -> None:
        """Best effort: append the ``notice`` ledger events a crash left owed. A failure does not hold
        up deliveries; the ``crmhub-incident-watch`` schedule and the notice's next delivery retry it."""
        try:
            done = append_owed(self.deps.engine, kind=EventKind.NOTICE, now=self.deps.clock())
        except Exception as exc:  # the ledger's trouble is not the controller's: deliver anyway
            activity.logger.warning("owed notice ledger events not appended yet: %s", type(exc).__name__)
            return
        if done.appended:
            activity.logger.info("appended %d owed notice ledger events", len(done.appended))

    @activity.defn(name="pending_notice_contacts")
    def pending_notice_contacts(self, inp: NoticeDeliveryInput) -> list[str]:
        return self.kit.guarded(
            "pending_notice_contacts", lambda: notices.pending_deliveries(self.deps.engine, inp.notice_id)
        )

    @activity.defn(name="deliver_notice")
    def deliver_notice(self, inp: DeliverInput) -> int:
        d = self.deps
        return self.kit.guarded(
            "deliver_notice",
            lambda: notices.deliver(
                d.engine, d.vault, d.settings.notices, inp.notice_id, inp.contact_id, now=d.clock()
            ),
        )
