"""What crosses Temporal for notice delivery: notice and contact ids only (never an address or a
secret). Add fields only with defaults so recorded histories stay replayable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["DeliverInput", "NoticeDeliveryInput", "NoticeDeliveryResult", "notice_workflow_id"]


def notice_workflow_id(notice_id: str) -> str:
    """Readable, stable id of a notice's delivery: one delivery workflow per notice."""
    return f"notice:{notice_id}"


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
