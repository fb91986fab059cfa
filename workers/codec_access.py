"""Codec decodes in the human access ledger (issue 18 item 4): a person reading a tenant's workflow
payloads in the Temporal UI (or ``temporal … --codec-endpoint``) is a touch of that tenant's
processing, so it becomes an ``access`` event (action ``codec_decode``, actor ``codec:<token id>``)
in the tenant's lineage ledger, which the auditor verifies offline like the data moves.

Which tenant: Temporal payloads are sealed under one codec key (:data:`workers.converter.CODEC_TENANT`),
not per tenant, so the tenant is read from what was decoded — a payload whose JSON names a top-level
``tenant`` (every workflow and activity input of a tenant's sync does; the payloads are
authenticated, so the name is ours, not the caller's). A payload that names no tenant (results,
the control workflows' id lists) is recorded only in the ``codec_audit`` table, which keeps every
request.

Bounded: the UI decodes a history on every page view, so one actor's decodes of one tenant are one
ledger event per :attr:`DecodeLedger.window` (the first of the window, carrying that request's payload
count); ``codec_audit`` holds the full count. If the event cannot be written, the codec server
answers 503 and decodes nothing, as it does when its audit row cannot be written.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload

from governance.lineage import CheckpointSigner
from services.access_ledger import codec_actor, record_access

__all__ = ["DecodeLedger", "tenants_named"]

_JSON = b"json/plain"
_MAX_REMEMBERED = 4096


def tenants_named(payloads: Sequence[Payload]) -> dict[str, int]:
    """Tenant → how many of the decoded ``payloads`` name it (top-level ``tenant`` of a JSON object)."""
    found: dict[str, int] = {}
    for p in payloads:
        if p.metadata.get("encoding") != _JSON:
            continue
        try:
            value = json.loads(p.data)
        except ValueError:
            continue
        tenant = value.get("tenant") if isinstance(value, dict) else None
        if isinstance(tenant, str) and tenant:
            found[tenant] = found.get(tenant, 0) + 1
    return found


class DecodeLedger:
    """Records decodes in the tenants' ledgers, at most once per (tenant, actor) per ``window``."""

    def __init__(
        self,
        engine: Engine,
        *,
        signer: CheckpointSigner | None = None,
        window: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.signer = signer
        self.window = window
        self.clock = clock
        self._last: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()

    def record(self, token_id: str, namespace: str, decoded: Sequence[Payload]) -> list[str]:
        """Append a ``codec_decode`` event for each tenant ``decoded`` names that this actor has
        not decoded within the window; returns those tenants. Blocking (database)."""
        now = self.clock()
        written: list[str] = []
        for tenant, count in sorted(tenants_named(decoded).items()):
            key = (tenant, token_id)
            with self._lock:
                last = self._last.get(key)
                if last is not None and now - last < self.window:
                    continue
            record_access(
                self.engine, tenant, "codec_decode", codec_actor(token_id), at=now,
                target=f"Temporal namespace {namespace}", counts={"payloads": count},
                signer=self.signer,
            )  # fmt: skip
            with self._lock:
                self._last[key] = now
                if len(self._last) > _MAX_REMEMBERED:
                    self._forget_before(now - self.window)
            written.append(tenant)
        return written

    def _forget_before(self, cutoff: datetime) -> None:
        for key in [k for k, at in self._last.items() if at < cutoff]:
            del self._last[key]
        if len(self._last) > _MAX_REMEMBERED:  # that many pairs within one window: forget them all
            self._last.clear()  # (more events, never fewer)
