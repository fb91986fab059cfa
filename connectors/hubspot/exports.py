"""Full reads of a large HubSpot object through the Exports API: one CSV file instead of a list call
per 100 records.

HubSpot's list API pages 100 records per call behind an opaque cursor, so a full read of N records
is N/100 calls one after the other — at a real CRM's round trip that, not crmhub, bounds the read.
An export is one ``POST`` (a ``VIEW`` export of the object with the requested properties, internal
names and values, CSV), a few status polls and one streamed download.

When (all of them):

* the connection was granted ``crm.export`` (only a Super Admin can: ``crmhub connect hubspot
  --allow-exports``) — the controller's consent to the export HubSpot keeps in its export log;
* the read is a full one, or the list backfill of a first incremental read, and has not begun;
* the object has at least ``export_threshold`` records (one search call with ``limit`` 1 counts).

Progress lives in ``StreamState.extra``: ``export_task`` (the task id), ``export_rows`` (rows of
the file already delivered) and ``export_started`` (epoch s). The download stays open between
``read_page`` calls of one connector; a new connector (another attempt, another worker) asks the
status for a fresh link (links live five minutes), downloads again and skips the rows already
delivered — the file of one task does not change, so the offset is exact.

Falls back to the list API from the start (``export_off`` says why; records already delivered are
delivered again — upserts downstream are idempotent, nothing is lost) when HubSpot refuses the
scope or a 31st export within a day, cancels the export, the export outlives ``export_timeout_s``,
the task is gone, or the file is partitioned (more than 1,000,000 rows arrive as a ZIP, which
cannot be read as it streams).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from connectors.hubspot.client import ExportFile, ExportLinkExpired, HubSpotClient, VendorRejected
from connectors.hubspot.config import HubSpotConfig
from schemas.connector import Record, StreamState
from schemas.errors import AuthError, RateLimited, TransientError

__all__ = ["EXPORT_OBJECT_TYPES", "ExportReads", "Fallback"]

log = logging.getLogger(__name__)

EXPORT_OBJECT_TYPES = {"contacts": "CONTACT", "companies": "COMPANY", "deals": "DEAL"}
_TASK, _ROWS, _STARTED, _OFF = "export_task", "export_rows", "export_started", "export_off"
_ID_COLUMNS = ("hs_object_id", "Record ID")
# The list API always adds these (and the modification time, which the reader asks for anyway); an
# export gives only what it is asked for, so it is asked for them too: both paths deliver one shape.
_ALWAYS = ("createdate", "hs_object_id")
_CELL_LIMIT = 16 * 1024 * 1024  # a long multi-line text property is one cell


_BROKEN = (OSError, csv.Error, ValueError)  # a dropped download, a torn row


def _broke_off(exc: Exception) -> TransientError:
    return TransientError(f"HubSpot export download broke off ({type(exc).__name__})")


class Fallback(Exception):
    """The export cannot serve this read: read through the list API from the start."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Open:
    """A download in progress: which task, how many rows it has given, and its rows."""

    task: str
    rows: int
    file: ExportFile
    reader: Iterator[Record]


class ExportReads:
    """The export side of :class:`connectors.hubspot.reader.StreamReader` (one per connector)."""

    def __init__(
        self,
        client: HubSpotClient,
        config: HubSpotConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.config = config
        self._sleep = sleep
        self._clock = clock
        self._open: _Open | None = None

    # -- deciding and starting --------------------------------------------------------------------

    @staticmethod
    def in_progress(state: StreamState) -> bool:
        return _TASK in state.extra

    def wanted(self, stream: str, state: StreamState) -> bool:
        """Should this (not yet begun) full read go through an export?"""
        threshold = self.config.export_threshold
        if not self.config.exports_allowed or threshold is None or stream not in EXPORT_OBJECT_TYPES:
            return False
        if state.page_token is not None or _OFF in state.extra:
            return False
        body = self.client.search(stream, {"limit": 1, "properties": ["hs_object_id"]})
        total = body.get("total")
        return isinstance(total, int) and total >= threshold

    def start(self, stream: str, props: Sequence[str], state: StreamState) -> StreamState:
        """Ask HubSpot for the export; the state remembers the task."""
        body = {
            "exportType": "VIEW",
            "format": "CSV",
            "exportName": f"crmhub {stream} {int(self._clock())}",
            "language": "EN",
            "objectType": EXPORT_OBJECT_TYPES[stream],
            "objectProperties": list(dict.fromkeys([*props, *_ALWAYS])),
            "exportInternalValuesOptions": ["NAMES", "VALUES"],
        }
        try:
            task = self.client.start_export(body)
        except AuthError as exc:
            if exc.code == "MISSING_SCOPES":
                raise Fallback("scope crm.export not granted (anymore)") from None
            raise
        except RateLimited as exc:  # most likely the 30 exports a rolling day: the list API reads now
            raise Fallback(
                f"export rate-limited ({exc.code or 'RATE_LIMIT'}; HubSpot allows 30 a day)"
            ) from None
        except VendorRejected as exc:
            raise Fallback(f"export refused ({exc.category or exc.status})") from None
        log.info("%s: full read through HubSpot export task %s (%d properties)", stream, task, len(props))
        extra = {**state.extra, _TASK: task, _ROWS: "0", _STARTED: str(int(self._clock()))}
        return state.model_copy(update={"extra": extra})

    @staticmethod
    def declined(state: StreamState, reason: str) -> StreamState:
        """The state for reading through the list API instead, from the start."""
        extra = {**_without_export(state.extra), _OFF: reason}
        return state.model_copy(update={"extra": extra, "page_token": None})

    @staticmethod
    def finished_extra(state: StreamState) -> StreamState:
        """The state without the export's entries (the read is over)."""
        extra = {k: v for k, v in _without_export(state.extra).items() if k != _OFF}
        return state.model_copy(update={"extra": extra})

    # -- reading ----------------------------------------------------------------------------------

    def page(self, stream: str, state: StreamState, limit: int) -> tuple[list[Record], StreamState, bool]:
        """Up to ``limit`` rows of the export: (records, state after them, whether the file ended).

        While HubSpot is still writing the file this waits, at most ``export_wait_per_read_s``, and
        may return no records (not ended) so that the caller heartbeats and reads again."""
        task, rows = state.extra[_TASK], int(state.extra.get(_ROWS, "0"))
        opened = self._open
        if opened is None or opened.task != task or opened.rows != rows:
            self.close()
            url = self._wait_for_file(stream, state)
            if url is None:
                return [], state, False
            opened = self._open_at(task, url, rows)
        with self._closed_on_error():
            records = list(itertools.islice(opened.reader, limit))
        opened.rows += len(records)
        ended = len(records) < limit
        if ended:
            self.close()
        extra = {**state.extra, _ROWS: str(opened.rows)}
        return records, state.model_copy(update={"extra": extra}), ended

    def _wait_for_file(self, stream: str, state: StreamState) -> str | None:
        """The download link once the export is COMPLETE; None if it is not yet (within this read)."""
        task = state.extra[_TASK]
        started = float(state.extra.get(_STARTED, "0") or 0)
        deadline = time.monotonic() + self.config.export_wait_per_read_s
        pause = self.config.export_poll_s
        while True:
            try:
                status = self.client.export_status(task)
            except VendorRejected as exc:
                if exc.status == 404:
                    raise Fallback(f"export task {task} is gone") from None
                raise
            state_name = str(status.get("status") or "")
            if state_name == "COMPLETE":
                url = status.get("result")
                if not isinstance(url, str) or not url:
                    raise TransientError(f"HubSpot export {task}: COMPLETE without a download link")
                return url
            if state_name == "CANCELED":
                raise Fallback(f"export task {task} was canceled at HubSpot")
            if state_name not in ("PENDING", "PROCESSING"):
                raise TransientError(f"HubSpot export {task}: unknown status {state_name!r}")
            if self._clock() - started > self.config.export_timeout_s:
                raise Fallback(f"export task {task} did not finish in {self.config.export_timeout_s:g} s")
            left = deadline - time.monotonic()
            if left <= 0:
                log.info("%s: HubSpot export %s still %s", stream, task, state_name.lower())
                return None
            self._sleep(min(pause, left))
            pause = min(pause * 1.5, self.config.export_poll_max_s)

    def _open_at(self, task: str, url: str, skip: int) -> _Open:
        try:
            file = self.client.open_export_file(url)
        except ExportLinkExpired:  # minted just now, so it should not be; one more status call
            file = self.client.open_export_file(self._fresh_link(task))
        if file.content_type == "application/zip":
            file.close()
            raise Fallback(f"export task {task} is partitioned (a ZIP of several files)")
        reader = _rows(file)
        self._open = _Open(task, 0, file, reader)
        with self._closed_on_error():  # skip the rows delivered before (another attempt): same file
            skipped = sum(1 for _ in itertools.islice(reader, skip))
        if skipped < skip:
            self.close()
            raise Fallback(f"export task {task} has fewer rows than were read from it")
        self._open.rows = skip
        return self._open

    @contextlib.contextmanager
    def _closed_on_error(self) -> Iterator[None]:
        """Reading the download failed: close it (a reader that raised is spent, never read on);
        a dropped download or a torn row is transient."""
        try:
            yield
        except _BROKEN as exc:
            self.close()
            raise _broke_off(exc) from None
        except BaseException:
            self.close()
            raise

    def _fresh_link(self, task: str) -> str:
        url = self.client.export_status(task).get("result")
        if not isinstance(url, str) or not url:
            raise TransientError(f"HubSpot export {task}: no download link")
        return url

    def close(self) -> None:
        if self._open is not None:
            self._open.file.close()
            self._open = None


def _without_export(extra: dict[str, str]) -> dict[str, str]:
    """``extra`` without the export's progress (task, rows delivered, start time)."""
    return {k: v for k, v in extra.items() if k not in (_TASK, _ROWS, _STARTED)}


def _rows(file: ExportFile) -> Iterator[Record]:
    """The file's rows as flat records (``id`` + the properties; an empty cell is null)."""
    if csv.field_size_limit() < _CELL_LIMIT:
        csv.field_size_limit(_CELL_LIMIT)
    text = io.TextIOWrapper(file.stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    id_at = next((header.index(c) for c in _ID_COLUMNS if c in header), None)
    if id_at is None:
        raise TransientError("HubSpot export: the file has no record id column")
    names = [(i, name) for i, name in enumerate(header) if name != "Record ID"]
    width = len(header)
    for row in reader:
        if len(row) != width:
            raise ValueError("a row's cell count differs from the header's")
        rec: Record = {name: (row[i] if row[i] != "" else None) for i, name in names}
        rec["id"] = row[id_at]
        yield rec
