"""What crosses Temporal for notice delivery and its dispatch: notice and contact ids and counts only
(never an address or a secret). Add fields only with defaults so recorded histories stay replayable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DeliverInput",
    "NoticeDeliveryInput",
    "NoticeDeliveryResult",
    "NoticeDispatchInput",
    "NoticeDispatchResult",
    "PendingNoticesInput",
    "notice_dispatch_workflow_id",
    "notice_workflow_id",
]


def notice_workflow_id(notice_id: str) -> str:
    """Readable, stable id of a notice's delivery: one delivery workflow per notice."""
    return f"notice:{notice_id}"


def notice_dispatch_workflow_id() -> str:
    """Readable, stable id of the dispatch pass (its schedule adds a timestamp to each run's id)."""
    return "maintenance:notice-dispatch"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NoticeDeliveryInput(_Model):
    notice_id: str


class DeliverInput(_Model):
    notice_id: str
    contact_id: str


class NoticeDeliveryResult(_Model):
    notice_id: str
    delivered: tuple[str, ...] = ()  # contact ids reached by this run


class NoticeDispatchInput(_Model):
    """One dispatch pass: start at most ``limit`` deliveries, look at at most ``max_scan`` pending
    notices (those whose delivery is already running count against ``max_scan`` only)."""

    limit: int = Field(50, ge=1, le=1000)
    max_scan: int = Field(500, ge=1, le=10_000)


class PendingNoticesInput(_Model):
    """A page of pending notice ids, oldest first, after the notice ``after`` ("" = from the start)."""

    after: str = ""
    limit: int = Field(50, ge=1, le=1000)


class NoticeDispatchResult(_Model):
    started: tuple[str, ...] = ()  # notice ids whose delivery workflow this pass started
    skipped: int = 0  # pending notices whose delivery workflow was already running (or done)
    scanned: int = 0  # pending notices looked at
