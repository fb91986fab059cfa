"""The Salesforce connector: any queryable sObject as a stream (DESIGN.md §3).

Reading (see :mod:`connectors.salesforce.reading`): keyset pages on ``(SystemModstamp, Id)``;
incremental reads see deletes through ``queryAll``; full reads of more than ``bulk_threshold``
records go through a Bulk API 2.0 query job after their first page (whose query, without LIMIT,
counts the records: no ``SELECT COUNT()`` call).
Fields come from describe only: a requested field the org does not have is dropped and reported
(:meth:`SalesforceConnector.read_drift`), a field deleted mid-sync (INVALID_FIELD) makes the
connector re-describe and retry once without it, a field added to the org is reported
(:meth:`SalesforceConnector.schema_drift`) but never read unless requested.

Writing (see :mod:`connectors.salesforce.writing`): sObject Collections, one outcome per record.

API budget: every response's ``Sforce-Limit-Info`` is read; once ``daily_quota_share`` of the
daily allocation is used, ``read_page``/``write_batch`` raise :class:`~schemas.errors.RateLimited`
before doing anything, so calling again later with the same state resumes with nothing lost.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from connectors.base import Connector, TokenSource, diff_schema
from connectors.salesforce.bulkread import OrderedJobFailed, bulk_page
from connectors.salesforce.byids import read_by_ids as read_records_by_ids
from connectors.salesforce.client import InvalidField, SalesforceClient
from connectors.salesforce.config import SalesforceConfig
from connectors.salesforce.idlist import list_ids
from connectors.salesforce.lookups import write_lookups
from connectors.salesforce.overlap import FLOOR_KEY, SEEN_KEY
from connectors.salesforce.reading import BULK_KEYS, Overlap, counted_page, rest_page
from connectors.salesforce.runs import COVERED_KEY, end_page, start_run
from connectors.salesforce.schema import CURSOR_FIELD, FieldPlan, plan_fields, rest_datetime, stream_schema
from connectors.salesforce.soql import format_datetime, is_ident
from connectors.salesforce.writing import write_records
from schemas.connector import (
    CheckResult,
    IdPage,
    Link,
    LinkResult,
    Page,
    ReadMode,
    Record,
    RecordsById,
    SchemaDrift,
    StreamSchema,
    StreamSpec,
    StreamState,
    WriteMode,
    WriteResult,
)
from schemas.errors import ConfigError, CrmhubError

__all__ = ["SalesforceConnector", "instance_region"]

# Organization.InstanceName (a string of up to 5 characters in the field reference:
# https://developer.salesforce.com/docs/atlas.en-us.sfFieldRef.meta/sfFieldRef/salesforce_field_reference_Organization.htm)
# → the registry's Salesforce endpoint instance (governance/subprocessors.yaml). GUESS: Salesforce
# documents no table of instance prefixes; these follow the names its trust site shows (classic
# "NA135"/"EU44"/"UK…", Hyperforce "USA…"/"DEU…"/"FRA…"/"GBR…"). An unlisted prefix is not guessed:
# it answers None and the sync must name its endpoint instance.
_INSTANCE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("USA", "na"),
    ("NA", "na"),
    ("DEU", "eu"),
    ("FRA", "eu"),
    ("EU", "eu"),
    ("GBR", "uk"),
    ("UK", "uk"),
)

log = logging.getLogger(__name__)

UNORDERED = "bulk_unordered"  # extra["path"] of a Bulk read without ORDER BY


class _SharedDescribes:
    """Describe results shared by the connectors of one process, per connection and object.

    A sync opens a new connector in every activity; its reads plan their fields from a describe of
    the same connection younger than ``describe_ttl_s`` instead of describing again. Only a cache:
    :meth:`SalesforceConnector.describe` always asks the org (and refreshes the entry), and a read
    that meets a vanished field describes again. Holds at most ``max_entries`` describes (a
    Contact describe is ~100 KB in memory); the oldest go first.
    """

    def __init__(self, max_entries: int = 128) -> None:
        self._lock = threading.Lock()
        self._max = max_entries
        self._entries: dict[tuple[str, ...], tuple[float, list[dict[str, Any]]]] = {}

    def get(self, key: tuple[str, ...], max_age_s: float) -> tuple[float, list[dict[str, Any]]] | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > max_age_s:
            return None
        return entry

    def put(self, key: tuple[str, ...], at: float, fields: list[dict[str, Any]]) -> None:
        with self._lock:
            if at < self._entries.get(key, (at, []))[0]:
                return  # a newer describe is there already
            self._entries[key] = (at, fields)
            while len(self._entries) > self._max:
                del self._entries[min(self._entries, key=lambda k: self._entries[k][0])]


_DESCRIBES = _SharedDescribes()


class SalesforceConnector(Connector):
    """A Salesforce org over REST (simple-salesforce), Bulk API 2.0 for large full reads.

    ``clock`` (epoch seconds) and ``sleep`` are injectable for tests of the incremental lag window
    and Bulk job polling.
    """

    name: ClassVar[str] = "salesforce"
    config_model: ClassVar[type[BaseModel]] = SalesforceConfig

    def __init__(
        self,
        config: SalesforceConfig,
        tokens: TokenSource,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._client = SalesforceClient(config, tokens, sleep=sleep)
        self._clock = clock
        self._sleep = sleep
        self._described: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        # Describes are shared with this connection's other connectors only (field-level security
        # differs between users); a token source without a connection id shares nothing.
        connection = getattr(tokens, "connection_id", None)
        self._share = (
            (connection, config.instance_url, config.api_version) if isinstance(connection, str) else None
        )
        self._baseline: dict[str, StreamSchema] = {}
        self._missing: dict[str, set[str]] = {}

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """(daily API requests used, allocation) as last reported by Salesforce; None before any call."""
        return self._client.api_usage

    @property
    def calls(self) -> int:
        """API calls this connector has made."""
        return self._client.calls

    def close(self) -> None:
        self._client.close()

    # -- discovery --------------------------------------------------------------------------------

    def check(self) -> CheckResult:
        """One ``/limits`` call: credentials, reachability and the daily API budget."""
        try:
            limits = self._client.limits()
        except CrmhubError as err:
            return CheckResult(ok=False, message=str(err))
        daily = limits.get("DailyApiRequests")
        if (
            isinstance(daily, dict)
            and isinstance(daily.get("Max"), int)
            and isinstance(daily.get("Remaining"), int)
        ):
            used, limit = daily["Max"] - daily["Remaining"], daily["Max"]
        elif self._client.api_usage is not None:
            used, limit = self._client.api_usage
        else:
            return CheckResult(ok=True, message="connected; API usage unknown")
        usage = f"{used}/{limit}"
        if used >= self.config.daily_quota_share * limit:
            return CheckResult(
                ok=False,
                message=f"connected, but {usage} daily API requests are used (our share is "
                f"{self.config.daily_quota_share:.0%})",
                api_usage=usage,
            )
        return CheckResult(ok=True, message=f"connected; {usage} daily API requests used", api_usage=usage)

    def streams(self) -> list[StreamSpec]:
        """Queryable sObjects from the global describe (one call)."""
        out = []
        for o in self._client.describe_global():
            if not o.get("queryable") or o.get("deprecatedAndHidden"):
                continue
            out.append(
                StreamSpec(
                    name=o["name"],
                    primary_key="Id",
                    cursor_field=CURSOR_FIELD if o.get("replicateable", True) else None,
                    writable=bool(o.get("createable") or o.get("updateable")),
                    supports_deletes=bool(o.get("replicateable", True)),
                    label=str(o.get("labelPlural") or o.get("label") or ""),
                    # describeGlobal marks custom objects (``__c``) with custom: true
                    # (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_describeGlobal.htm)
                    custom=bool(o.get("custom")),
                )
            )
        return out

    def hosting_instance(self) -> str | None:
        """The registry instance (``na``, ``eu``, ``uk``) of the org's ``Organization.InstanceName``
        (one query, see :func:`instance_region`); ``None`` when the instance is not one we map."""
        result = self._client.query(
            "SELECT InstanceName FROM Organization",
            include_deleted=False,
            batch_size=200,
            what="organization instance",
        )
        name = result.records[0].get("InstanceName") if result.records else None
        return instance_region(name) if isinstance(name, str) else None

    @staticmethod
    def _object(stream: str) -> str:
        if not is_ident(stream):
            raise ConfigError("stream is not a Salesforce object API name")
        return stream

    def _keep(self, sobject: str, at: float, fields: list[dict[str, Any]]) -> None:
        self._described[sobject] = (at, fields)
        self._baseline.setdefault(sobject, stream_schema(sobject, fields))

    def _fetch_fields(self, sobject: str) -> list[dict[str, Any]]:
        fields = list(self._client.describe(sobject)["fields"])
        at = time.monotonic()
        self._keep(sobject, at, fields)
        if self._share is not None:
            _DESCRIBES.put((*self._share, sobject), at, fields)
        return fields

    def _fields(self, sobject: str, *, fresh: bool = False) -> list[dict[str, Any]]:
        """The describe fields reads plan from: this connector's or this connection's (in this
        process) if younger than ``describe_ttl_s``, else a new describe."""
        if fresh:
            return self._fetch_fields(sobject)
        ttl = self.config.describe_ttl_s
        cached = self._described.get(sobject)
        if cached is not None and time.monotonic() - cached[0] <= ttl:
            return cached[1]
        shared = None if self._share is None else _DESCRIBES.get((*self._share, sobject), ttl)
        if shared is None:
            return self._fetch_fields(sobject)
        self._keep(sobject, *shared)
        return shared[1]

    def describe(self, stream: str) -> StreamSchema:
        """The live schema (one describe call); the first one seen is the drift baseline."""
        sobject = self._object(stream)
        return stream_schema(sobject, self._fetch_fields(sobject))

    def schema_drift(self, stream: str, planned: StreamSchema | None = None) -> SchemaDrift:
        """Fields added, removed or retyped in the live schema (one describe call) since ``planned``
        (default: the first schema this connector saw for ``stream``)."""
        live = self.describe(stream)
        return diff_schema(planned or self._baseline[live.stream], live)

    def read_drift(self, stream: str) -> SchemaDrift:
        """Drift the reads have met so far (no API call): changes between the first and the latest
        describe, plus requested fields that were missing and so dropped from queries."""
        sobject = self._object(stream)
        missing = tuple(sorted(self._missing.get(sobject, ())))
        base, latest = self._baseline.get(sobject), self._described.get(sobject)
        if base is None or latest is None:
            return SchemaDrift(stream=sobject, removed=missing)
        drift = diff_schema(base, stream_schema(sobject, latest[1]))
        return drift.model_copy(update={"removed": tuple(sorted(set(drift.removed) | set(missing)))})

    # -- reading ----------------------------------------------------------------------------------

    def _plan(self, sobject: str, fields: Sequence[str], *, with_deleted: bool, fresh: bool) -> FieldPlan:
        plan = plan_fields(self._fields(sobject, fresh=fresh), fields, with_deleted=with_deleted)
        if "Id" in plan.missing or CURSOR_FIELD in plan.missing:
            raise ConfigError(f"{sobject} has no Id/SystemModstamp: it cannot be read by keyset")
        if plan.missing:
            new = set(plan.missing) - self._missing.get(sobject, set())
            if new:
                log.warning("%s: fields not in the org, dropped from reads: %s", sobject, sorted(new))
            self._missing.setdefault(sobject, set()).update(plan.missing)
        return plan

    def read_page(self, stream: str, state: StreamState, page_size: int, fields: Sequence[str]) -> Page:
        """The next page after ``state`` (see the module docstring); ``Page.calls`` counts every call."""
        sobject = self._object(stream)
        if page_size < 1:
            raise ConfigError("page_size must be at least 1")
        calls = self._client.calls
        self._client.ensure_budget()
        deletes = state.mode is ReadMode.INCREMENTAL and state.include_deleted
        # A new incremental run: where its overlap re-read starts, and whether deletes were purged unseen.
        state, reason = start_run(
            self._client,
            sobject,
            state,
            overlap=self._overlap(),
            check_deletes=self.config.delete_log_check,
            now=self._clock,
        )
        for attempt in (0, 1):
            plan = self._plan(sobject, fields, with_deleted=deletes, fresh=attempt == 1)
            try:
                page = end_page(self._read_page(sobject, plan, state, page_size), reason)
            except InvalidField as err:
                if attempt == 1:
                    raise
                log.warning("%s: a field vanished from the org (%s); describing again", sobject, err.field)
                continue
            return dataclasses.replace(page, calls=self._client.calls - calls)
        raise AssertionError("unreachable")

    def _overlap(self) -> Overlap | None:
        if self.config.overlap_s <= 0:
            return None
        return Overlap(round(self.config.overlap_s * 1000), self.config.overlap_max_ids)

    def _now_datetime(self) -> str:
        """Now (by ``clock``, less ``modstamp_lag_s``) as a REST dateTime."""
        end = dt.datetime.fromtimestamp(self._clock() - self.config.modstamp_lag_s, dt.UTC)
        return rest_datetime(format_datetime(end))

    def _read_page(self, sobject: str, plan: FieldPlan, state: StreamState, page_size: int) -> Page:
        extra = dict(state.extra)
        overlap = self._overlap()
        if state.mode is ReadMode.FULL:
            path = extra.get("path")
            if path is None and COVERED_KEY not in extra:
                # A full read sees every record live when it starts, so the delete log only has to
                # cover deletes from then on: without this mark the first incremental run would ask
                # from the newest record's SystemModstamp and, on an org whose records are older than
                # the recycle bin keeps deletes (15 days), report a purge that never happened.
                extra[COVERED_KEY] = str(int(self._clock() * 1000))
                state = state.model_copy(update={"extra": extra})
            if path is None:
                fresh = state.cursor is None and state.page_token is None
                threshold = self.config.bulk_threshold
                if fresh and threshold > 0:
                    return self._first_full_page(sobject, plan, state, page_size)
                path = extra["path"] = "bulk" if fresh else "rest"
            if path in ("bulk", UNORDERED):
                page = self._bulk(sobject, plan, state.model_copy(update={"extra": extra}), page_size)
                if page is not None:
                    return page
                log.warning("%s: Bulk refused, failed or lost; continuing over REST from the keyset", sobject)
                extra["path"] = "rest"
            return rest_page(
                self._client, sobject, plan, state, page_size, window_end=None, extra=extra, overlap=overlap
            )[0]
        window_end = state.window_end
        if window_end is None and self.config.modstamp_lag_s > 0:
            window_end = self._now_datetime()
        page, _ = rest_page(
            self._client, sobject, plan, state, page_size, window_end=window_end, extra=extra, overlap=overlap
        )
        return page

    def _bulk(self, sobject: str, plan: FieldPlan, state: StreamState, page_size: int) -> Page | None:
        """A Bulk result set (see :mod:`connectors.salesforce.bulkread`); an ordered job that failed is
        followed by one unordered job from the same keyset."""
        for _ in range(2):
            ordered = state.extra.get("path") != UNORDERED
            try:
                return bulk_page(
                    self._client,
                    sobject,
                    plan,
                    state,
                    page_size,
                    wait_s=self.config.bulk_wait_s,
                    bound=state.extra.get("bulk_bound") or self._now_datetime(),
                    ordered=ordered,
                    overlap=self._overlap(),
                    sleep=self._sleep,
                )
            except OrderedJobFailed:
                log.warning("%s: the ordered Bulk job failed; reading without ORDER BY", sobject)
                extra = {k: v for k, v in state.extra.items() if k not in BULK_KEYS}
                state = state.model_copy(update={"extra": {**extra, "path": UNORDERED}, "page_token": None})
        return None

    def _first_full_page(self, sobject: str, plan: FieldPlan, state: StreamState, page_size: int) -> Page:
        """The first page of a full read over REST; its query also counts the read's records, which
        picks the path of the pages after it (Bulk above ``bulk_threshold``)."""
        first, total = counted_page(self._client, sobject, plan, state, page_size, overlap=self._overlap())
        path = "rest"
        if total > self.config.bulk_threshold:
            path = UNORDERED if total > self.config.bulk_order_by_max else "bulk"
        extra = {**first.next_state.extra, "path": path}
        if path == "bulk" and first.has_more:
            # The Bulk job starts its own record of pairs: this page's rows are older than the
            # overlap window of the read's end unless the whole object changed within it.
            extra = {k: v for k, v in extra.items() if k not in (SEEN_KEY, FLOOR_KEY)}
        return dataclasses.replace(first, next_state=first.next_state.model_copy(update={"extra": extra}))

    lists_ids: ClassVar[bool] = True

    def list_ids(self, stream: str, state: StreamState, page_size: int) -> IdPage:
        """The next page of live record ids (see :mod:`connectors.salesforce.idlist`)."""
        sobject = self._object(stream)
        if page_size < 1:
            raise ConfigError("page_size must be at least 1")
        calls = self._client.calls
        self._client.ensure_budget()
        page = list_ids(
            self._client,
            sobject,
            state,
            page_size,
            bulk_threshold=self.config.bulk_threshold,
            wait_s=self.config.bulk_wait_s,
            sleep=self._sleep,
        )
        return dataclasses.replace(page, calls=self._client.calls - calls)

    reads_by_ids: ClassVar[bool] = True

    def read_by_ids(self, stream: str, ids: Sequence[str], fields: Sequence[str]) -> RecordsById:
        """``WHERE Id IN (…)`` queries, ≤ 200 ids each within the URI limit
        (:mod:`connectors.salesforce.byids`): n ids cost ceil(n / 200) calls."""
        sobject = self._object(stream)
        calls = self._client.calls
        self._client.ensure_budget()
        plan = self._plan(sobject, fields, with_deleted=False, fresh=False)
        records, missing = read_records_by_ids(self._client, sobject, plan, ids) if ids else ([], [])
        return RecordsById(records, missing, calls=self._client.calls - calls)

    # -- writing ----------------------------------------------------------------------------------

    def write_batch(
        self, stream: str, records: Sequence[Record], mode: WriteMode, *, external_id: str
    ) -> WriteResult:
        """Write ``records`` (see :mod:`connectors.salesforce.writing`); ``external_id`` keys upserts."""
        sobject = self._object(stream)
        ext = external_id or self.config.external_id_field
        if not is_ident(ext):
            raise ConfigError("external_id is not a field API name")
        if not records:
            return WriteResult([], calls=0)
        calls = self._client.calls
        self._client.ensure_budget()
        described = self._described.get(sobject)  # dates by the fields' types, if described (no call)
        types = {str(f.get("name")): str(f.get("type")) for f in described[1]} if described else None
        result = write_records(self._client, sobject, records, mode, ext, field_types=types)
        return WriteResult(result.outcomes, calls=self._client.calls - calls)

    links: ClassVar[bool] = True

    def write_links(self, stream: str, parent_stream: str, links: Sequence[Link]) -> LinkResult:
        """Set each child's lookup field to its parent (see :mod:`connectors.salesforce.lookups`)."""
        self._client.ensure_budget()
        return write_lookups(self._client, self._object(stream), self._object(parent_stream), links)


def instance_region(instance_name: str) -> str | None:
    """``"EU44"`` → ``"eu"``, ``"NA135"`` → ``"na"``, ``"USA244S"`` → ``"na"``; ``None`` for an
    instance whose prefix is not mapped (see ``_INSTANCE_PREFIXES``: a guess)."""
    upper = instance_name.strip().upper()
    for prefix, region in _INSTANCE_PREFIXES:
        if upper.startswith(prefix) and upper[len(prefix) : len(prefix) + 1].isdigit():
            return region
    return None
