"""Batch writes to one HubSpot object with one outcome per input record, in input order.

HubSpot rejects a whole batch upsert/create for one bad record (a single 400 "Property values were
not valid: [...]" or 409 CONFLICT), so a rejected batch is narrowed down:

1. each listed problem names a property and (in its text) often the bad value: inputs carrying
   that property (PROPERTY_DOESNT_EXIST, READ_ONLY_VALUE) or that exact value (INVALID_EMAIL quotes
   it) fail with the problem's code, as do inputs *without* a value for a custom object's required
   property (REQUIRED_PROPERTY_MISSING); a problem whose text does not quote the value still names its
   property, and only an input with a value for that property can have caused it — when exactly one
   input has one, it fails with the problem's code too;
2. the rest is resent — one extra call when every problem was matched. Problems left unmatched
   narrow the search to the inputs that carry their properties: the others are resent together,
   the suspects are bisected; with no problems at all (409, other 400s) the batch is bisected. A
   single record that is still rejected fails with HubSpot's code. Every resend is a strict subset
   of the batch before it, so the narrowing ends.

Worst case ``2n - 1`` calls for ``n`` inputs; for 100 inputs with 7 bad values the match path costs
2 calls (see tests/connectors/test_hubspot_write.py). Records that cannot be sent at all — no id
value, NaN/inf, nested values, text that is not valid Unicode (lone surrogates), a value longer than
HubSpot stores (:data:`MAX_VALUE_CHARS`) — fail locally without a call. Values are sent as HubSpot
stores them: strings (numbers in plain decimal, booleans ``true``/``false``, ``None`` as ``""``
which clears the property).

Dates go by the *destination's* property types (:mod:`connectors.values`): a ``date`` property
takes midnight UTC of the day only (anything else is ``INVALID_DATE``, "... is at 13:1:0.0 UTC, not
midnight!"), a ``datetime`` any epoch-ms instant. The types come from the portal's properties, read
once per stream and writer (or handed over by :meth:`BatchWriter.know_types` after a describe): up
front when a record carries a date/time value, else only after a batch was refused with
``INVALID_DATE`` — then the batch is converted and resent once, so dates never cost a bisection.

Created or updated is HubSpot's answer: an upsert result's ``new`` (spec SimplePublicUpsertObject).
One exception: an upsert the client had to *resend* (a timeout, a dropped connection or a 5xx after
it was sent) may have been carried out by the send whose answer was lost, and then the resend
answers ``new: false`` for the records that lost send created. Those results are counted created
when HubSpot's own ``createdAt`` is no earlier than its ``completedAt`` for the batch minus the
time the whole request took here (from the first send to the answer) — i.e. they were created
during this request; a record the portal held before is older. (A record created by someone else
during those seconds would count as created by us: a window of seconds, accepted.) The same holds
across attempts: a push activity retried after its earlier attempt's answers were lost says when
that attempt began (:meth:`HubSpotConnector.retrying_since`, the activity's first scheduled time on
Temporal's clock — compared with HubSpot's, so a clock skew of a second or two blurs the edge:
a guess, not measured against production HubSpot).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from connectors.hubspot.client import HubSpotClient, PropertyProblem, VendorRejected
from connectors.hubspot.config import HubSpotConfig
from connectors.values import DATE_TYPES, for_hubspot, is_utf8, parse_instant
from schemas.connector import OutcomeStatus, Record, RecordOutcome, WriteMode, WriteResult
from schemas.errors import ConfigError

__all__ = ["MAX_VALUE_CHARS", "BatchWriter", "to_hubspot_value"]

_IDENTITY = ("id", "hs_object_id")
_KEY_PROBLEMS = ("PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE")
_MISSING_PROBLEMS = ("REQUIRED_PROPERTY_MISSING",)
"""Problems a record causes by *lacking* the property: a custom object's ``requiredProperties``
left empty on create (guess: HubSpot's code for it is not documented; the sandbox's,
:mod:`sandbox.hubspot.schemas`)."""
MAX_VALUE_CHARS = 65_536
"""The most characters a HubSpot property value holds (property-field limits, "Single-line text":
https://knowledge.hubspot.com/properties/property-field-types-in-hubspot). A longer value is refused
locally as ``INVALID_LONG_STRING`` (the sandbox's code for HubSpot's refusal of it; HubSpot's own
problem text for it is not on record and need not quote the value, so it could only be found by
bisecting a rejected batch)."""


class _Unsendable(ValueError):
    def __init__(self, code: str, name: str) -> None:
        super().__init__(code)
        self.code = code
        self.name = name


def to_hubspot_value(name: str, value: Any) -> str:
    """A property value as HubSpot's API expects it: a string. Raises for values it cannot carry."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        if not math.isfinite(value):
            raise _Unsendable("INVALID_NUMBER", name)
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return str(value) if isinstance(value, Decimal) else repr(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return str(int(aware.timestamp() * 1000))
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        if not is_utf8(value):  # raised outside the except block: the error would hold the text
            raise _Unsendable("INVALID_ENCODING", name)
        if len(value) > MAX_VALUE_CHARS:
            raise _Unsendable("INVALID_LONG_STRING", name)
        return value
    raise _Unsendable("UNSUPPORTED_VALUE", name)


@dataclass
class _Entry:
    index: int
    key: str | None  # the external id value as given (reported in the outcome)
    match_key: str | None  # normalised for matching results (e-mails are case-insensitive)
    payload: dict[str, Any]
    sent: dict[str, str] = field(default_factory=dict)  # every property value sent, incl. the id one


class BatchWriter:
    """Implements :meth:`Connector.write_batch` for HubSpot (see the module docstring)."""

    def __init__(self, client: HubSpotClient, config: HubSpotConfig) -> None:
        self.client = client
        self.config = config
        # Set when these writes redo an earlier attempt begun then (Connector.retrying_since).
        self.created_since: dt.datetime | None = None
        self._types: dict[str, dict[str, str]] = {}

    def know_types(self, stream: str, types: Mapping[str, str]) -> None:
        """Property name → HubSpot type of ``stream`` as just described (saves a properties call)."""
        self._types[stream] = dict(types)

    def property_types(self, stream: str) -> dict[str, str]:
        """Property name → HubSpot type, from the portal once per stream (``GET /crm/v3/properties``)."""
        if stream not in self._types:
            props = self.client.properties(stream)
            self._types[stream] = {str(p.get("name")): str(p.get("type") or "string") for p in props}
        return self._types[stream]

    def write_batch(
        self, stream: str, records: Sequence[Record], mode: WriteMode, *, external_id: str
    ) -> WriteResult:
        calls_before = self.client.calls
        types = self._types.get(stream)
        if types is None and mode is not WriteMode.DELETE and any(map(_dated, records)):
            types = self.property_types(stream)
        op = _Op(self, stream, mode, external_id, types)
        outcomes: dict[int, RecordOutcome] = {}
        entries: list[_Entry] = []
        for i, record in enumerate(records):
            prepared = op.prepare(i, record)
            if isinstance(prepared, RecordOutcome):
                outcomes[i] = prepared
            else:
                entries.append(prepared)
        size = self.config.write_batch_size
        for round_ in _rounds(entries):
            for start in range(0, len(round_), size):
                for o in op.send(round_[start : start + size]):
                    outcomes[o.index] = o
        return WriteResult([outcomes[i] for i in range(len(records))], self.client.calls - calls_before)


_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _dated(record: Record) -> bool:
    """Does the record carry a date/time value (an object, or ISO 8601 text)?"""
    return any(
        isinstance(v, dt.date) or (isinstance(v, str) and _ISO_DAY.match(v) is not None)
        for v in record.values()
    )


def _rounds(entries: list[_Entry]) -> list[list[_Entry]]:
    """Split so no batch repeats a key (HubSpot rejects "Duplicate IDs"); later repeats go later,
    so the last occurrence of a key is written last."""
    rounds: list[list[_Entry]] = []
    seen: dict[str | None, int] = {}
    for e in entries:
        if e.match_key is None:
            n = 0
        else:
            n = seen.get(e.match_key, -1) + 1
            seen[e.match_key] = n
        while len(rounds) <= n:
            rounds.append([])
        rounds[n].append(e)
    return rounds


class _Op:
    """One write_batch call: stream, mode and id property, and the send/isolate/map steps."""

    def __init__(
        self,
        writer: BatchWriter,
        stream: str,
        mode: WriteMode,
        external_id: str,
        types: Mapping[str, str] | None,
    ) -> None:
        self.writer = writer
        self.client = writer.client
        self.types = types
        self.stream = stream
        self.mode = mode
        self.id_prop = external_id
        self.by_record_id = external_id in _IDENTITY
        self.verb = {
            WriteMode.UPSERT: "upsert",
            WriteMode.CREATE: "create",
            WriteMode.UPDATE: "update",
            WriteMode.DELETE: "archive",
        }[mode]
        if mode is WriteMode.UPSERT and self.by_record_id:
            raise ConfigError("HubSpot upserts match on a unique property (e.g. email), not the record id")

    def _normal(self, key: str) -> str:
        return key.strip().lower() if self.id_prop == "email" else key

    def _failed(
        self, index: int, key: str | None, code: str, detail: str, *, retryable: bool = False
    ) -> RecordOutcome:
        return RecordOutcome(
            index, key, OutcomeStatus.FAILED, error_code=code, error_message=detail, retryable=retryable
        )

    # -- prepare ----------------------------------------------------------------------------------

    def prepare(self, index: int, record: Record) -> _Entry | RecordOutcome:
        raw_key = record.get(self.id_prop)
        if self.by_record_id and raw_key is None:
            raw_key = record.get("id", record.get("hs_object_id"))
        key = None if raw_key is None else str(raw_key)
        try:
            key_text = None if raw_key is None else to_hubspot_value(self.id_prop, raw_key)
            if self.mode is WriteMode.DELETE:
                rid = record.get("id", record.get("hs_object_id"))
                if rid is None or not str(rid).isdigit():
                    return self._failed(index, key, "MISSING_ID", "archive needs the HubSpot record id")
                return _Entry(index, key, str(rid), {"id": str(rid)})
            types = self.types or {}
            sent = {
                str(k): to_hubspot_value(str(k), for_hubspot(v, types.get(str(k))))
                for k, v in record.items()
                if k not in _IDENTITY and not (self.by_record_id and k == self.id_prop)
            }
        except _Unsendable as exc:
            return self._failed(index, key, exc.code, f"{exc.name}: value cannot be sent to HubSpot")
        if self.mode is WriteMode.CREATE:
            match = self._normal(key_text) if key_text else None
            return _Entry(index, key, match, {"properties": sent}, sent)
        if not key_text or not key_text.strip():
            return self._failed(index, key, "MISSING_ID_PROPERTY", f"{self.id_prop}: no value to match on")
        payload: dict[str, Any] = {"id": key_text, "properties": sent}
        if not self.by_record_id:
            payload["idProperty"] = self.id_prop
            sent = {**sent, self.id_prop: key_text}
        return _Entry(index, key, self._normal(key_text), payload, sent)

    # -- send and isolate -------------------------------------------------------------------------

    def send(self, entries: list[_Entry]) -> list[RecordOutcome]:
        if not entries:
            return []
        resends, began = self.client.resends, time.monotonic()
        try:
            status, body = self.client.batch(self.stream, self.verb, [e.payload for e in entries])
        except VendorRejected as exc:
            rejected = exc
        else:
            took = time.monotonic() - began if self.client.resends > resends else None
            return self.outcomes(entries, status, body, resent_after=took)
        if self.types is None and any(p.code == "INVALID_DATE" for p in rejected.problems):
            # Refused for a date before the property types were known: learn them, convert, resend once.
            self.types = self.writer.property_types(self.stream)
            if self._convert_dates(entries):
                return self.send(entries)
        if rejected.status == 400 and "non-unique" in rejected.vendor_message:
            raise ConfigError(
                f"HubSpot {self.stream}: {self.id_prop!r} is not a unique property; upserts need one "
                "created with hasUniqueValue"
            )
        return self.isolate(entries, rejected)

    def _convert_dates(self, entries: list[_Entry]) -> bool:
        """Convert the date-typed values of prepared entries in place; True if any changed."""
        types, changed = self.types or {}, False
        for e in entries:
            props = e.payload.get("properties") or {}
            for name, value in list(props.items()):
                if types.get(name) in DATE_TYPES and (new := for_hubspot(value, types[name])) != value:
                    props[name] = e.sent[name] = str(new)
                    changed = True
        return changed

    def isolate(self, entries: list[_Entry], exc: VendorRejected) -> list[RecordOutcome]:
        if len(entries) == 1:
            e = entries[0]
            code, detail = _describe(exc, _matching(e, exc.problems))
            return [self._failed(e.index, e.key, code, detail)]
        if not exc.problems:  # 409 or another 400: nothing names a record
            return self._bisect(entries)
        suspects, unmatched = _suspects(entries, exc.problems)
        out = [self._failed(e.index, e.key, p.code, f"{p.name}: {p.code}") for e, p in suspects]
        failed = {e.index for e, _ in suspects}
        names = {p.name for p in unmatched}
        rest = [e for e in entries if e.index not in failed]
        # Only an input with a value for an unmatched problem's property can have caused it.
        candidates = [e for e in rest if any(e.sent.get(n) for n in names)]
        if candidates:
            picked = {e.index for e in candidates}
            out += self.send([e for e in rest if e.index not in picked]) + self._bisect(candidates)
        elif suspects:  # every problem is explained (an unmatched one came from a failed input)
            out += self.send(rest)
        else:
            out += self._bisect(rest)
        return sorted(out, key=lambda o: o.index)

    def _bisect(self, entries: list[_Entry]) -> list[RecordOutcome]:
        half = len(entries) // 2
        return self.send(entries[:half]) + self.send(entries[half:])

    # -- map answers ------------------------------------------------------------------------------

    def outcomes(
        self, entries: list[_Entry], status: int, body: Any, *, resent_after: float | None = None
    ) -> list[RecordOutcome]:
        """One outcome per entry from HubSpot's answer; ``resent_after``: the request was resent
        and took that many seconds from its first send (see the module docstring)."""
        if self.mode is WriteMode.DELETE:
            return [RecordOutcome(e.index, e.key, OutcomeStatus.DELETED, id=e.match_key) for e in entries]
        results = [r for r in (body or {}).get("results") or [] if isinstance(r, dict)]
        matched = self._match(entries, results)
        errors = [x for x in (body or {}).get("errors") or [] if isinstance(x, dict)]
        since = _earliest(self.writer.created_since, _request_began(body, resent_after))
        if self.mode is not WriteMode.UPSERT:
            since = None
        out: list[RecordOutcome] = []
        for e in entries:
            r = matched.get(e.index)
            if r is None:
                out.append(self._missing(e, errors, status))
                continue
            created = self.mode is WriteMode.CREATE or (
                self.mode is WriteMode.UPSERT and (bool(r.get("new")) or _created_since(r, since))
            )
            out.append(
                RecordOutcome(
                    e.index,
                    e.key,
                    OutcomeStatus.CREATED if created else OutcomeStatus.UPDATED,
                    id=str(r.get("id")),
                )
            )
        return out

    def _match(self, entries: list[_Entry], results: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Results to inputs by id property value (HubSpot does not promise result order)."""
        by_key: dict[str, dict[str, Any]] = {}
        for r in results:
            value = r.get("id") if self.by_record_id else (r.get("properties") or {}).get(self.id_prop)
            if value is not None:
                by_key[self._normal(str(value))] = r
        matched = {
            e.index: by_key[e.match_key] for e in entries if e.match_key is not None and e.match_key in by_key
        }
        if not matched and len(results) == len(entries) and self.mode is WriteMode.CREATE:
            matched = {e.index: r for e, r in zip(entries, results, strict=True)}
        return matched

    def _missing(self, e: _Entry, errors: list[dict[str, Any]], status: int) -> RecordOutcome:
        """An input without a result: the 207 error naming its id, else a retryable unknown."""
        for err in errors:
            ids = {
                self._normal(str(v))
                for vs in (err.get("context") or {}).values()
                if isinstance(vs, list)
                for v in vs
            }
            if (e.match_key is not None and e.match_key in ids) or (len(errors) == 1 and not ids):
                code = str(err.get("category") or "ERROR")
                return self._failed(
                    e.index, e.key, code, f"HubSpot reported {code} for this input (HTTP {status})"
                )
        return self._failed(
            e.index, e.key, "MISSING_RESULT", f"no result for this input (HTTP {status})", retryable=True
        )


def _implicates(e: _Entry, problem: PropertyProblem) -> bool:
    """Does this input carry the property/value a problem names (or lack the required property)?"""
    if problem.code in _MISSING_PROBLEMS:
        return not e.sent.get(problem.name)
    if problem.name not in e.sent:
        return False
    if problem.code in _KEY_PROBLEMS:
        return True
    value = e.sent[problem.name]
    if not value:
        return False
    # HubSpot quotes the value as it normalised it (e-mails lower-cased): compare case-insensitively.
    pattern = rf"(?<!\S){re.escape(value)}(?=$|[\s.,;:\]])"
    return re.search(pattern, problem.message, re.IGNORECASE) is not None


def _suspects(
    entries: list[_Entry], problems: Sequence[PropertyProblem]
) -> tuple[list[tuple[_Entry, PropertyProblem]], list[PropertyProblem]]:
    """Inputs a rejection's problems point at (each with its first problem), and the problems that
    point at none: matched by property or quoted value, or the only input with a value for the
    problem's property."""
    found: dict[int, tuple[_Entry, PropertyProblem]] = {}
    unmatched: list[PropertyProblem] = []
    for problem in problems:
        hits = [e for e in entries if _implicates(e, problem)]
        if not hits:
            carriers = [e for e in entries if e.sent.get(problem.name)]
            if len(carriers) != 1:
                unmatched.append(problem)
                continue
            hits = carriers
        for e in hits:
            found.setdefault(e.index, (e, problem))
    return sorted(found.values(), key=lambda pair: pair[0].index), unmatched


def _matching(e: _Entry, problems: Sequence[PropertyProblem]) -> PropertyProblem | None:
    for p in problems:
        if _implicates(e, p):
            return p
    return problems[0] if problems else None


def _describe(exc: VendorRejected, problem: PropertyProblem | None) -> tuple[str, str]:
    if problem is not None:
        return problem.code, f"{problem.name}: {problem.code}"
    code = exc.category or str(exc.status)
    return code, f"HubSpot rejected this record (HTTP {exc.status} {code})"


def _request_began(body: Any, resent_after: float | None) -> dt.datetime | None:
    """When a resent request's first send reached HubSpot, on HubSpot's clock: the batch's
    ``completedAt`` less the request's whole duration here (None: not resent, or no timestamp)."""
    if resent_after is None or not isinstance(body, dict):
        return None
    completed = parse_instant(body.get("completedAt"))
    if not isinstance(completed, dt.datetime):
        return None
    return completed - dt.timedelta(seconds=resent_after)


def _created_since(result: Mapping[str, Any], since: dt.datetime | None) -> bool:
    """Whether HubSpot created the result's record at or after ``since`` (None: never)."""
    if since is None:
        return False
    created = parse_instant(result.get("createdAt"))
    return isinstance(created, dt.datetime) and created >= since


def _earliest(*instants: dt.datetime | None) -> dt.datetime | None:
    known = [i for i in instants if i is not None]
    return min(known) if known else None
