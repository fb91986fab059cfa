"""The codec-token misuse signal (issue 18 item 3): requests of one codec-server token that a
security engineer would not expect from its holder open a ``codec_token_misuse`` breach incident over
the tenants whose payloads that token decoded (:mod:`services.incidents`).

Read from the ``codec_audit`` table (one row per request that presented a valid token:
:mod:`workers.codec_server`), over the last :attr:`CodecMisuseSettings.window` before ``now``, with
the thresholds of :class:`schemas.codec_misuse.CodecMisuseSettings` (``CRMHUB_CODEC__MISUSE__*``):

- **wrong_namespace** — at least ``forbidden_threshold`` requests named a Temporal namespace the
  token is not bound to (403): its holder probes beyond what it was given.
- **undecryptable** — at least ``failed_threshold`` requests carried payloads that did not
  authenticate for the token's namespace, or a malformed body (400): payloads copied from elsewhere,
  forged, or fuzzing.
- **volume** — the token decoded more payloads in the window than ``volume_factor`` times its mean
  per window over the ``baseline`` before it, and more than ``volume_floor`` (so a new or quiet
  token's first real use is not a finding): bulk reading of histories.
- **new_client** (off unless ``new_client``) — the token decoded from a client host it did not use in
  the baseline period, when it has a baseline at all. Behind a proxy every request comes from the
  proxy, so this rule sees nothing there; the client address itself is never copied out of
  ``codec_audit`` (it can be personal data of the operator).

Not detectable today, and why: a revoked or expired token, and a right id with a wrong secret — a
bearer token is only its secret, so an unknown one (401) names no token id and is not in
``codec_audit`` (the codec server logs the refusal with the client address).

Rules are per token and the findings of one token are one incident. Its scope: the tenants whose
payloads the token decoded — the ``access`` events ``codec_decode`` by ``codec:<token id>`` in their
ledgers from one decode-ledger spacing (:data:`DECODE_EVENT_SPACING`) before the window to ``now`` —
and, as for every incident, subjects, records and categories from lineage
(:func:`services.incident_scope.affected_tenants`) over ``history_reach`` before the window (a
decoded workflow history holds payloads that old). A finding whose token decoded no tenant's payload
disclosed no personal data: it is reported, not opened as a breach.

Idempotent: a finding of a token that already has a ``codec_token_misuse`` incident whose window
reaches the finding's first request is that incident (misuse that goes on is one episode); a token
quiet for a whole window and misused again is a new incident. The incident, its ledger events and
this module's output carry the token's public id, counts and rule names — never its secret, never a
client address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from sqlalchemy.engine import Engine

from governance.lineage import Ledger
from governance.registry import Registry
from schemas.codec_misuse import CodecMisuseSettings
from schemas.lineage import EventKind
from services.access_ledger import codec_actor
from services.incident_scope import Scope
from services.incidents import Incident, Nature, Signal, list_incidents, open_incident
from store import codec_audit as audit_store
from store import tenants as tenant_store
from store.codec_audit import AuditOutcome, ClientUse, TokenUse

__all__ = [
    "DECODE_EVENT_SPACING",
    "CodecFinding",
    "Rule",
    "codec_findings",
    "open_codec_incidents",
]

DECODE_EVENT_SPACING: Final = timedelta(hours=1)
"""One ``codec_decode`` access event per tenant and token per this long (``workers.codec_access``)."""

_DECODE_RUN: Final = "access:codec_decode"


class Rule(StrEnum):
    """Which rule a token's requests broke (module docstring)."""

    WRONG_NAMESPACE = "wrong_namespace"
    UNDECRYPTABLE = "undecryptable"
    VOLUME = "volume"
    NEW_CLIENT = "new_client"


@dataclass(frozen=True, slots=True)
class CodecFinding:
    """One token's broken rules in the window (``(rule, what was seen)``; counts only), its first
    offending request, and the tenants whose payloads it decoded."""

    token_id: str
    rules: tuple[tuple[Rule, str], ...]
    first: datetime
    tenants: tuple[str, ...]

    @property
    def summary(self) -> str:
        """≤ 255 characters: the token's id and what it did."""
        said = "; ".join(f"{rule.value}: {seen}" for rule, seen in self.rules)
        return f"codec token {self.token_id} misused — {said}"[:255]


def _host(client: str) -> str:
    """``host`` of ``host:port`` (``[v6]:port`` and bare hosts too)."""
    host, sep, port = client.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else client


def _decoded_tenants(engine: Engine, token_id: str, start: datetime, end: datetime) -> tuple[str, ...]:
    actor = codec_actor(token_id)
    with engine.connect() as conn:
        tenants = [t.id for t in tenant_store.list_tenants(conn)]
    found = []
    for tenant in tenants:
        events = Ledger(engine, tenant).read_events(run_id=_DECODE_RUN)
        if any(
            e.kind is EventKind.ACCESS and e.details.get("actor") == actor and start <= e.timestamp < end
            for e in events
        ):
            found.append(tenant)
    return tuple(found)


_OK, _FORBIDDEN, _FAILED = (o.value for o in (AuditOutcome.OK, AuditOutcome.FORBIDDEN, AuditOutcome.FAILED))


def _decodes(uses: Sequence[TokenUse], token: str) -> list[TokenUse]:
    return [u for u in uses if u.token_id == token and u.operation == "decode" and u.outcome == _OK]


def _rules(
    settings: CodecMisuseSettings, token: str, current: Sequence[TokenUse], before: Sequence[TokenUse]
) -> list[tuple[Rule, str, datetime]]:
    """The count rules (namespace, undecryptable, volume) ``token`` breaks, with the first request."""
    per = f"per {_span(settings.window)}"
    out: list[tuple[Rule, str, datetime]] = []
    counted = (
        (Rule.WRONG_NAMESPACE, _FORBIDDEN, settings.forbidden_threshold, "named another namespace"),
        (Rule.UNDECRYPTABLE, _FAILED, settings.failed_threshold, "had payloads that did not authenticate"),
    )
    for rule, outcome, threshold, what in counted:
        hits = [u for u in current if u.token_id == token and u.outcome == outcome]
        if (n := sum(u.requests for u in hits)) >= threshold:
            out.append(
                (rule, f"{n} requests {what} (threshold {threshold} {per})", min(u.first for u in hits))
            )
    decodes = _decodes(current, token)
    decoded = sum(u.payloads for u in decodes)
    mean = sum(u.payloads for u in _decodes(before, token)) / (settings.baseline / settings.window)
    bound = max(float(settings.volume_floor), settings.volume_factor * mean)
    if decodes and decoded > bound:
        seen = f"{decoded} payloads decoded, baseline {mean:.0f} {per} over {_span(settings.baseline)}"
        out.append((Rule.VOLUME, f"{seen} (bound {bound:.0f})", min(u.first for u in decodes)))
    return out


def _new_clients(
    settings: CodecMisuseSettings, token: str, now_: Sequence[ClientUse], before: Sequence[ClientUse]
) -> list[tuple[Rule, str, datetime]]:
    """The new-client rule: hosts decoded from now and not in the baseline (none without a baseline)."""
    known = {_host(c.client) for c in before if c.token_id == token}
    new = [c for c in now_ if c.token_id == token and _host(c.client) not in known]
    if not known or not new:
        return []
    hosts = len({_host(c.client) for c in new})
    seen = f"decodes from {hosts} client host(s) not used in the {_span(settings.baseline)} before"
    return [(Rule.NEW_CLIENT, seen, min(c.first for c in new))]


def codec_findings(engine: Engine, settings: CodecMisuseSettings, *, now: datetime) -> list[CodecFinding]:
    """The tokens whose requests in ``[now - window, now)`` break a rule, by token id (bounded:
    grouped per token, operation, outcome and client in the database, at most ``max_groups``)."""
    start, since = now - settings.window, now - settings.window - settings.baseline
    limit = settings.max_groups
    with engine.connect() as conn:
        current = audit_store.token_use(conn, start, now, limit=limit)
        before = audit_store.token_use(conn, since, start, limit=limit)
        clients: tuple[list[ClientUse], list[ClientUse]] = ([], [])
        if settings.new_client:
            clients = (
                audit_store.token_clients(conn, start, now, limit=limit),
                audit_store.token_clients(conn, since, start, limit=limit),
            )
    out = []
    for token in sorted({u.token_id for u in current}):
        rules = _rules(settings, token, current, before)
        if settings.new_client:
            rules += _new_clients(settings, token, *clients)
        if rules:
            tenants = _decoded_tenants(engine, token, start - DECODE_EVENT_SPACING, now)
            first = min(at for _, _, at in rules)
            out.append(CodecFinding(token, tuple((r, seen) for r, seen, _ in rules), first, tenants))
    return out


def _span(value: timedelta) -> str:
    hours = value.total_seconds() / 3600
    if hours >= 48 and hours % 24 == 0:
        return f"{int(hours // 24)} d"
    return f"{hours:g} h" if hours >= 1 else f"{value.total_seconds() / 60:g} min"


def open_codec_incidents(
    engine: Engine,
    registry: Registry,
    found: Sequence[CodecFinding],
    settings: CodecMisuseSettings,
    *,
    now: datetime,
) -> list[tuple[CodecFinding, Incident | None, bool]]:
    """Per finding: ``(finding, incident opened now, True)``, ``(finding, the incident that already
    covers it, False)``, or ``(finding, None, False)`` when the token decoded no tenant's payload."""
    earlier = [i for i in list_incidents(engine) if i.row.signal == Signal.CODEC_TOKEN_MISUSE.value]
    out: list[tuple[CodecFinding, Incident | None, bool]] = []
    for f in found:
        key = {"token_id": f.token_id}
        covering = [
            i for i in earlier
            if (i.row.scope or {}).get("finding") == key and (i.row.window_to or now) >= f.first
        ]  # fmt: skip
        if covering:
            out.append((f, covering[-1], False))
            continue
        if not f.tenants:
            out.append((f, None, False))
            continue
        reach = now - settings.window - settings.history_reach
        opened = open_incident(
            engine, registry, Scope(reach, now, tenants=f.tenants), nature=Nature.UNAUTHORIZED_ACCESS,
            signal=Signal.CODEC_TOKEN_MISUSE, summary=f.summary,
            measures="revoke the codec token (remove it from CRMHUB_CODEC_TOKENS, restart the codec server) "
            "and review its rows in codec_audit",
            now=now, always=f.tenants, finding=key,
        )  # fmt: skip
        out.append((f, opened, True))
    return out
