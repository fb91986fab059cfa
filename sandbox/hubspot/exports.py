"""HubSpot's CRM Exports API (v3), emulated: request validation, a per-portal queue, CSV files, links.

What HubSpot documents (https://developers.hubspot.com/docs/api/crm/exports; hubspot-api-client 12
``hubspot.crm.exports``) and what the sandbox does with it:

* ``POST /crm/v3/exports/export/async`` takes a PublicExportRequest and answers 202 with a TaskLocator.
  ``exportType`` VIEW or LIST, ``format`` CSV, XLSX or XLS, ``language`` one of :data:`LANGUAGES`,
  ``objectType`` (CONTACT, COMPANY, DEAL or 0-1/0-2/0-3), ``objectProperties``,
  ``exportInternalValuesOptions`` ⊆ {NAMES, VALUES} and, for VIEW, ``publicCrmSearchRequest``
  (``filters``, AND-ed, compiled by :func:`sandbox.hubspot.search.compile_search`). The sandbox
  emulates VIEW exports to CSV only: LIST, XLSX/XLS, ``associatedObjectType`` and the search
  request's ``query`` and ``sorts`` are refused with a 400 saying so.
* One export runs at a time per account (later ones wait, PENDING); at most 30 are started per
  rolling 24 hours (a 31st is a 429, category RATE_LIMITS, with Retry-After).
* The status (PENDING → PROCESSING → COMPLETE, or CANCELED) carries ``requestedAt``/``startedAt``/
  ``completedAt`` once reached and, when COMPLETE, ``result``: a download link that expires five
  minutes after the status request; every status request mints a new one.
* Above 1,000,000 rows the result is a ZIP of CSV files of at most 1,000,000 rows each.

The file: RFC 4180 CSV (``\\r\\n``, minimal quoting), UTF-8 without BOM. Columns are the record id,
then the requested properties in request order (``hs_object_id`` is not repeated). Headers are
the properties' labels ("Record ID" first), or with NAMES their internal names (``hs_object_id``
first). Cells hold the strings the CRM objects API returns for the property (empty for null), in
ascending record id. Display-label rendering (option labels, localised dates in ``language``) is
not emulated, so every export reads as if VALUES had been asked for.

Snapshot: rows are the non-archived records matching the filters whose record id is at most the
highest live id when processing starts, so records created during an export are left out. Rows are
read in chunks (the table is never held in memory); a record changed or archived while its export
is being written shows its state at the moment its chunk is read.

Files live in a private temporary directory per portal, removed by :meth:`ExportEngine.close`
(and, failing that, when the engine is collected or the process exits).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
import zipfile
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from sandbox.faults import SlidingWindow
from sandbox.hubspot.errors import ApiError
from sandbox.hubspot.objects import CrmObjects
from sandbox.hubspot.schema import OBJECT_TYPES, ObjectType, PropertyRegistry, iso_ms, object_type
from sandbox.hubspot.search import compile_search
from sandbox.records import RecordStore

__all__ = [
    "DOWNLOAD_PATH",
    "EXPORT_SCOPE",
    "LANGUAGES",
    "ExportEngine",
    "ExportFile",
    "ExportRequest",
    "ExportStatus",
    "ExportTaskInfo",
    "parse_export_request",
]

# Enums of PublicExportViewRequest / PublicExportListRequest / Filter in hubspot-api-client 12.
EXPORT_TYPES = ("VIEW", "LIST")
FORMATS = ("CSV", "XLSX", "XLS")
LANGUAGES = ("EN", "DE", "ES", "FR", "JA", "NL", "PT_BR", "IT", "PL", "SV", "FI", "ZH_TW", "DA_DK", "NO")
INTERNAL_VALUES_OPTIONS = ("NAMES", "VALUES")
FILTER_OPERATORS = (
    *("EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN"),
    *("IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"),
)
OBJECT_TYPE_NAMES = tuple(n for ot in OBJECT_TYPES.values() for n in (ot.singular, ot.type_id))

EXPORT_SCOPE = "crm.export"
DOWNLOAD_PATH = "/__sandbox/files/exports"
DEFAULT_DAILY_EXPORTS = 30
DEFAULT_WINDOW_S = 86_400.0
DEFAULT_PARTITION_ROWS = 1_000_000
LINK_TTL_S = 300.0
_CHUNK_ROWS = 2_000
_FIRST_TASK_ID = 51_000_001
_NOT_EMULATED = "the sandbox emulates only VIEW exports in CSV format"


class ExportStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETE = "COMPLETE"
    CANCELED = "CANCELED"


@dataclass(frozen=True)
class ExportRequest:
    """A validated export request: what to read (``where``/``params`` over the record store) and
    how to write it (``properties`` after the record id, ``header`` for all columns)."""

    ot: ObjectType
    export_name: str
    properties: tuple[str, ...]
    header: tuple[str, ...]
    where: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class ExportTaskInfo:
    """One export as the Python handle reports it (``files``: CSV files written, >1 means a ZIP)."""

    id: str
    status: str
    object_type: str
    export_name: str
    rows: int
    files: int
    file_name: str | None
    error: str | None


@dataclass(frozen=True)
class ExportFile:
    """A finished export's file, as a valid download link resolves it."""

    path: Path
    name: str
    media_type: str


@dataclass
class _Task:
    id: int
    request: ExportRequest
    requested_ms: int
    requested_mono: float
    queue_delay_s: float
    rows_per_s: float | None
    partition_rows: int
    status: ExportStatus = ExportStatus.PENDING
    started_ms: int | None = None
    completed_ms: int | None = None
    rows: int = 0
    files: int = 0
    path: Path | None = None
    file_name: str | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class _Link:
    task_id: int
    expires_mono: float


class _Canceled(Exception):
    """The engine closed while an export was waiting or being written."""


def _bad(message: str, **extra: Any) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message, **extra)


def _choice(body: Mapping[str, Any], name: str, allowed: Sequence[str]) -> str:
    value = body.get(name)
    if value is None:
        raise _bad(f"Invalid input JSON: {name} is required; one of [{', '.join(allowed)}]")
    if not isinstance(value, str) or value not in allowed:
        raise _bad(
            f"Invalid input JSON: {name} {value!r} is not one of the accepted values [{', '.join(allowed)}]"
        )
    return value


def _string_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"Invalid input JSON: {name} must be a list of strings")
    return value


def _file_stem(export_name: str) -> str:
    """The export name made safe as a file name and URL path segment."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", export_name).strip("._")
    return stem[:100] or "export"


def _filters_where(ot: ObjectType, registry: PropertyRegistry, search: Any) -> tuple[str, tuple[Any, ...]]:
    """SQL for ``publicCrmSearchRequest`` (filters AND-ed); its ``query`` and ``sorts`` are refused."""
    if search is None:
        return "deleted = 0", ()
    if not isinstance(search, Mapping):
        raise _bad("Invalid input JSON: publicCrmSearchRequest must be an object")
    if search.get("query"):
        raise _bad(
            f"publicCrmSearchRequest.query is not supported: {_NOT_EMULATED}, filtered by filters only"
        )
    if search.get("sorts"):
        raise _bad(f"publicCrmSearchRequest.sorts is not supported: {_NOT_EMULATED}, in ascending record id")
    filters = search.get("filters") or []
    if not isinstance(filters, list) or not all(isinstance(f, Mapping) for f in filters):
        raise _bad("Invalid input JSON: publicCrmSearchRequest.filters must be a list of objects")
    for i, f in enumerate(filters):
        op = f.get("operator")
        if not isinstance(op, str) or op not in FILTER_OPERATORS:
            raise _bad(
                f"Invalid input JSON: publicCrmSearchRequest.filters[{i}].operator {op!r} is not one of "
                f"the accepted values [{', '.join(FILTER_OPERATORS)}]"
            )
    query = compile_search(ot, registry, {"filterGroups": [{"filters": filters}]} if filters else {})
    return query.where, query.params


def parse_export_request(body: Mapping[str, Any], registry: PropertyRegistry) -> ExportRequest:
    """Validate a PublicExportRequest body; :class:`ApiError` 400 naming the field when HubSpot's
    enums or the sandbox's scope (VIEW exports to CSV) refuse it."""
    export_type = _choice(body, "exportType", EXPORT_TYPES)
    fmt = _choice(body, "format", FORMATS)
    _choice(body, "language", LANGUAGES)
    if export_type != "VIEW":
        raise _bad(f"exportType {export_type} is not supported: {_NOT_EMULATED}")
    if fmt != "CSV":
        raise _bad(f"format {fmt} is not supported: {_NOT_EMULATED}")
    if body.get("associatedObjectType"):
        raise _bad(f"associatedObjectType is not supported: {_NOT_EMULATED}, without associations")
    name = body.get("exportName")
    if not isinstance(name, str) or not name.strip():
        raise _bad("Invalid input JSON: exportName is required and must be a non-empty string")
    raw_type = body.get("objectType")
    ot = object_type(raw_type) if isinstance(raw_type, str) else None
    if ot is None:
        raise _bad(
            f"Invalid input JSON: objectType {raw_type!r} is not one of the accepted values "
            f"[{', '.join(OBJECT_TYPE_NAMES)}]"
        )
    options = _string_list(body.get("exportInternalValuesOptions") or [], "exportInternalValuesOptions")
    if bad_options := [o for o in options if o not in INTERNAL_VALUES_OPTIONS]:
        raise _bad(
            f"Invalid input JSON: exportInternalValuesOptions {bad_options} are not among the accepted "
            f"values [{', '.join(INTERNAL_VALUES_OPTIONS)}]"
        )
    requested = _string_list(body.get("objectProperties"), "objectProperties")
    if not requested:
        raise _bad("Invalid input JSON: objectProperties must name at least one property")
    live = registry.live(ot.name)
    if unknown := [p for p in dict.fromkeys(requested) if p not in live]:
        raise _bad(
            f"objectProperties names properties that do not exist on {ot.type_id}: {', '.join(unknown)}",
            context={"propertyNames": unknown},
        )
    props = tuple(p for p in dict.fromkeys(requested) if p != "hs_object_id")
    if "NAMES" in options:
        header = ("hs_object_id", *props)
    else:
        header = ("Record ID", *(live[p].label for p in props))
    where, params = _filters_where(ot, registry, body.get("publicCrmSearchRequest"))
    return ExportRequest(ot, name.strip(), props, header, where, params)


class _CsvParts:
    """Writes rows to ``<stem>.csv``; when a row would exceed ``partition_rows`` it turns into
    ``<stem>.zip`` of ``<stem>-1.csv``, ``<stem>-2.csv``... each with the header row."""

    def __init__(self, folder: Path, stem: str, header: Sequence[str], partition_rows: int) -> None:
        self.folder = folder
        self.stem = stem
        self.header = header
        self.partition_rows = partition_rows
        self.path = folder / f"{stem}.csv"
        self.files = 1
        self._in_part = 0
        self._zip: zipfile.ZipFile | None = None
        self._fh: TextIO = self.path.open("w", encoding="utf-8", newline="")
        self._writer = self._start(self._fh)

    def _start(self, fh: TextIO) -> Any:
        writer = csv.writer(fh, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        writer.writerow(self.header)
        self._in_part = 0
        return writer

    def write(self, cells: Sequence[str | None]) -> None:
        if self._in_part == self.partition_rows:
            self._next_part()
        self._writer.writerow(cells)
        self._in_part += 1

    def _next_part(self) -> None:
        self._fh.close()
        if self._zip is None:
            first = self.path
            self.path = self.folder / f"{self.stem}.zip"
            self._zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
            self._zip.write(first, f"{self.stem}-1.csv")
            first.unlink()
        self.files += 1
        entry = self._zip.open(f"{self.stem}-{self.files}.csv", "w", force_zip64=True)
        self._fh = io.TextIOWrapper(entry, encoding="utf-8", newline="")
        self._writer = self._start(self._fh)

    def close(self) -> None:
        self._fh.close()
        if self._zip is not None:
            self._zip.close()


class _Folder:
    """A private temporary directory for export files, removed by :meth:`remove`, or quietly when
    the engine is collected or the process exits (a ``TemporaryDirectory`` would warn then)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="hubspot-exports-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def remove(self) -> None:
        self._finalizer()


class ExportEngine:
    """The exports of one portal: a FIFO queue worked by one background thread (started when an
    export is queued, gone when the queue is empty), the rolling start limit, files and links.
    Thread-safe."""

    def __init__(
        self,
        store: RecordStore,
        objects: CrmObjects,
        *,
        daily_limit: int = DEFAULT_DAILY_EXPORTS,
        window_s: float = DEFAULT_WINDOW_S,
        partition_rows: int = DEFAULT_PARTITION_ROWS,
        rows_per_s: float | None = None,
        queue_delay_s: float = 0.0,
    ) -> None:
        self._store = store
        self._objects = objects
        self._lock = threading.Lock()
        self._starts = SlidingWindow(daily_limit, window_s)
        self._tasks: dict[int, _Task] = {}
        self._queue: deque[_Task] = deque()
        self._links: dict[str, _Link] = {}
        self._ids = itertools.count(_FIRST_TASK_ID)
        self._dir: _Folder | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.set_partition_rows(partition_rows)
        self.set_timing(rows_per_s=rows_per_s, queue_delay_s=queue_delay_s)

    # -- settings -------------------------------------------------------------------------------

    def set_timing(self, *, rows_per_s: float | None = None, queue_delay_s: float = 0.0) -> None:
        """Processing speed of exports requested from now on: ``rows_per_s`` (None: as fast as the
        sandbox writes) and ``queue_delay_s`` PENDING at least that long after the request."""
        if rows_per_s is not None and not rows_per_s > 0:
            raise ValueError("rows_per_s must be positive (or None for no pacing)")
        if queue_delay_s < 0:
            raise ValueError("queue_delay_s must not be negative")
        with self._lock:
            self._rows_per_s = rows_per_s
            self._queue_delay_s = queue_delay_s

    def set_limit(self, limit: int, window_s: float = DEFAULT_WINDOW_S) -> None:
        """At most ``limit`` exports started per rolling ``window_s``; the starts so far still count."""
        if limit < 0 or window_s <= 0:
            raise ValueError("limit must be >= 0 and window_s > 0")
        self._starts.limit = limit
        self._starts.window_s = window_s

    def set_partition_rows(self, rows: int) -> None:
        """Rows per CSV file of exports requested from now on; more rows make a ZIP of CSV files."""
        if rows < 1:
            raise ValueError("partition_rows must be at least 1")
        self._partition_rows = rows

    # -- the API's operations -------------------------------------------------------------------

    def start(self, request: ExportRequest) -> str:
        """Queue an export; its task id. 429 RATE_LIMITS when the rolling start limit is reached."""
        wait = self._starts.hit()
        if wait:
            retry_after = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "RATE_LIMITS",
                f"You have reached the limit of {self._starts.limit} exports started in a rolling "
                f"{_duration(self._starts.window_s)}; the oldest leaves the window in {retry_after} seconds.",
                headers={"Retry-After": str(retry_after)},
            )
        with self._lock:
            task = _Task(
                next(self._ids),
                request,
                int(time.time() * 1000),
                time.monotonic(),
                self._queue_delay_s,
                self._rows_per_s,
                self._partition_rows,
            )
            self._tasks[task.id] = task
            self._queue.append(task)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="hubspot-exports", daemon=True)
                self._worker.start()
        return str(task.id)

    def status_body(self, task_id: str, base_url: str) -> dict[str, Any]:
        """The ActionResponseWithSingleResultURI of a task; a COMPLETE one gets a freshly minted
        ``result`` link under ``base_url``. 404 OBJECT_NOT_FOUND for an unknown id."""
        with self._lock:
            task = self._tasks.get(int(task_id)) if task_id.isascii() and task_id.isdigit() else None
            if task is None:
                raise ApiError(
                    404, "OBJECT_NOT_FOUND", f"No export task with id {task_id} exists in this account"
                )
            body: dict[str, Any] = {"status": task.status.value, "requestedAt": iso_ms(task.requested_ms)}
            if task.started_ms is not None:
                body["startedAt"] = iso_ms(task.started_ms)
            if task.completed_ms is not None:
                body["completedAt"] = iso_ms(task.completed_ms)
            body["numErrors"] = len(task.errors)
            if task.errors:
                body["errors"] = [
                    {"status": "error", "category": "INTERNAL_ERROR", "message": m} for m in task.errors
                ]
            body["links"] = {}
            if task.status is ExportStatus.COMPLETE and task.path is not None and task.file_name:
                now = time.monotonic()
                self._links = {t: link for t, link in self._links.items() if link.expires_mono > now}
                token = secrets.token_urlsafe(24)
                self._links[token] = _Link(task.id, now + LINK_TTL_S)
                body["result"] = f"{base_url.rstrip('/')}{DOWNLOAD_PATH}/{token}/{quote(task.file_name)}"
        return body

    def download(self, token: str, file_name: str) -> ExportFile | None:
        """The file a link names, or None when the link is unknown, expired or its file is gone."""
        with self._lock:
            link = self._links.get(token)
            if link is None or link.expires_mono <= time.monotonic():
                return None
            task = self._tasks.get(link.task_id)
            if task is None or task.path is None or task.file_name != file_name or not task.path.exists():
                return None
            zipped = task.path.suffix == ".zip"
            return ExportFile(
                task.path, task.file_name, "application/zip" if zipped else "text/csv; charset=utf-8"
            )

    # -- Python handle --------------------------------------------------------------------------

    def tasks(self) -> list[ExportTaskInfo]:
        with self._lock:
            return [
                ExportTaskInfo(
                    str(t.id),
                    t.status.value,
                    t.request.ot.name,
                    t.request.export_name,
                    t.rows,
                    t.files,
                    t.file_name,
                    "; ".join(t.errors) or None,
                )
                for t in self._tasks.values()
            ]

    def expire_links(self) -> int:
        """Make every download link minted so far expire now; how many were still valid."""
        now = time.monotonic()
        with self._lock:
            live = sum(1 for link in self._links.values() if link.expires_mono > now)
            for link in self._links.values():
                link.expires_mono = now
        return live

    def close(self) -> None:
        """Cancel queued and running exports, forget links and delete every export file. The engine
        stays usable: a later export starts afresh."""
        self._stop.set()
        with self._lock:
            worker = self._worker
        if worker is not None:
            worker.join(timeout=30)
        with self._lock:
            for task in self._queue:
                self._finish(task, ExportStatus.CANCELED)
            self._queue.clear()
            self._links.clear()
            for task in self._tasks.values():
                task.path = None
            folder, self._dir = self._dir, None
            self._stop.clear()
        if folder is not None:
            folder.remove()

    # -- the worker -----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                if self._stop.is_set() or not self._queue:
                    self._worker = None
                    return
                task = self._queue.popleft()
                if self._dir is None:
                    self._dir = _Folder()
                folder = self._dir.path / str(task.id)
            try:
                self._run(task, folder)
            except _Canceled:
                with self._lock:
                    self._finish(task, ExportStatus.CANCELED)
            except Exception as exc:  # a closed store, a full disk: the task fails, the worker goes on
                with self._lock:
                    task.errors.append(f"{type(exc).__name__}: {exc}")
                    self._finish(task, ExportStatus.CANCELED)

    def _finish(self, task: _Task, status: ExportStatus) -> None:
        task.status = status
        task.completed_ms = int(time.time() * 1000)

    def _pause_until(self, deadline_mono: float) -> None:
        wait = deadline_mono - time.monotonic()
        if self._stop.wait(wait) if wait > 0 else self._stop.is_set():
            raise _Canceled

    def _run(self, task: _Task, folder: Path) -> None:
        self._pause_until(task.requested_mono + task.queue_delay_s)
        req = task.request
        newest = self._store.select(req.ot.name, "deleted = 0", order_by="num DESC", limit=1)
        bound = newest[0].num if newest else 0
        with self._lock:
            task.status = ExportStatus.PROCESSING
            task.started_ms = int(time.time() * 1000)
        started = time.monotonic()
        folder.mkdir()
        out = _CsvParts(folder, _file_stem(req.export_name), req.header, task.partition_rows)
        try:
            last = 0
            while True:
                chunk = self._store.select(
                    req.ot.name,
                    f"({req.where}) AND num > ? AND num <= ?",
                    (*req.params, last, bound),
                    order_by="num",
                    limit=_CHUNK_ROWS,
                )
                for row in chunk:
                    out.write([row.id, *(self._objects.value(req.ot, row, p) for p in req.properties)])
                with self._lock:
                    task.rows += len(chunk)
                if task.rows_per_s is not None:
                    self._pause_until(started + task.rows / task.rows_per_s)
                elif self._stop.is_set():
                    raise _Canceled
                if len(chunk) < _CHUNK_ROWS:
                    break
                last = chunk[-1].num
        finally:
            out.close()
        with self._lock:
            task.path, task.file_name, task.files = out.path, out.path.name, out.files
            self._finish(task, ExportStatus.COMPLETE)


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hours" if hours != 1 else "hour"
    return f"{seconds:g} seconds"
