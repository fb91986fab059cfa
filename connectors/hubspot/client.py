"""The only module that imports hubspot-api-client: raw HTTP calls, pacing (the shared counts are in
:mod:`connectors.hubspot.pacing`), and error mapping.

Every call asks the SDK for the raw response (``_preload_content=False``) and parses the JSON here:
the SDK's model deserialisation spends most of its time in ``dateutil`` (see bench/hubspot_connector.py
for the measured ratio). Answers are plain ``dict``/``list`` JSON.

Error mapping (:mod:`schemas.errors`), applied to every call::

    401                       refresh once via TokenSource.refresh(rejected) and resend; again → AuthError
    403                       AuthError (scopes missing: the connection must be authorised again)
    429 / 477                 RateLimited(retry_after = Retry-After, else by the policy it names:
                              see connectors.hubspot.limits — DAILY waits for the daily reset)
    423 / 5xx / dropped connection / timeout / malformed JSON   TransientError
    other 4xx                 VendorRejected (a DataError carrying HubSpot's category and problems)

Resending is ours, not urllib3's (which would sleep through 429/503 Retry-After on GETs without
telling anyone): every call runs through :func:`connectors.http.send_with_retries`, so a 429 is waited
out (Retry-After, within ``max_pause_s``) and a 423/5xx/dropped/timed-out *idempotent* call (reads,
search, upsert/update/archive by id; not ``batch/create``) is resent with backoff, at most
``request_attempts`` sends and ``retry_budget_s`` of pauses per call; then the error above goes up
to the activity. urllib3 itself only retries a connection that could not be opened (no request was
sent, so even a POST is safe). Messages carry status codes,
HubSpot categories and property *names* only, never tokens or record values.
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import unquote

import urllib3
from hubspot.crm import exports as hs_exports
from hubspot.crm import objects as hs_objects
from hubspot.crm import properties as hs_properties
from hubspot.crm import schemas as hs_schemas
from hubspot.crm.associations import v4 as hs_associations
from hubspot.crm.associations.v4 import schema as hs_labels
from urllib3.util.retry import Retry

from connectors.base import TokenSource
from connectors.http import send_with_retries
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.limits import retry_after_429
from connectors.hubspot.pacing import portal_of
from schemas.errors import AuthError, ConfigError, DataError, RateLimited, TransientError

__all__ = ["ExportFile", "ExportLinkExpired", "HubSpotClient", "PropertyProblem", "VendorRejected"]

JSON = Any
_EMPTY = object()
_API_EXCEPTIONS = tuple(m.ApiException for m in (hs_objects, hs_properties, hs_exports, hs_associations,
                                                 hs_labels, hs_schemas))  # fmt: skip
_PROBLEMS = re.compile(r"Property values were not valid: (\[.*\])\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PropertyProblem:
    """One entry of HubSpot's "Property values were not valid: [...]" list.

    ``message`` is HubSpot's text and may quote the rejected value: use it for matching only, never
    in an error message.
    """

    name: str
    code: str
    message: str = field(repr=False)


class VendorRejected(DataError):
    """HubSpot refused a request (4xx other than 401/403/429). ``status``, ``category`` (e.g.
    VALIDATION_ERROR, CONFLICT) and ``problems`` (per-property codes) describe why; the vendor's own
    message is kept out of ``str()`` because it may quote record values."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        category: str,
        problems: Sequence[PropertyProblem] = (),
        vendor_message: str = "",
    ) -> None:
        super().__init__(message, code=category or str(status))
        self.status = status
        self.category = category
        self.problems = tuple(problems)
        self.vendor_message = vendor_message


class ExportLinkExpired(TransientError):
    """An export's download link was refused (it lives five minutes): ask the status for a new one."""


@dataclass(frozen=True, slots=True)
class ExportFile:
    """An export's file as it downloads: ``stream`` reads the raw bytes; ``close`` releases the connection."""

    stream: IO[bytes]
    content_type: str

    def close(self) -> None:
        self.stream.close()


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    data: Any  # the raw body (bytes) as received
    headers: Mapping[str, str]
    body: JSON = None  # the parsed JSON of a successful answer


class HubSpotClient:
    """HubSpot CRM v3 over hubspot-api-client, one portal, used from one thread at a time.

    ``calls`` counts HTTP requests sent (401 and other resends included) for budgets and benchmarks;
    ``resends`` counts the resends after a 429/transient failure. ``sleep``/``now`` are injectable
    so tests can observe pauses.
    """

    def __init__(
        self,
        config: HubSpotConfig,
        tokens: TokenSource,
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.calls = 0
        self.resends = 0
        self._tokens = tokens
        self._token: str | None = None
        self._sleep = sleep
        self._now = now
        self._portal = portal_of(config.rate_limit_key, config.search_rate_per_s)
        self._retry = config.request_retry(config.max_pause_s)
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not a secret
        self._timeout = (config.connect_timeout_s, config.read_timeout_s)
        self._objects_client = hs_objects.ApiClient(self._configuration(hs_objects.Configuration()))
        self._properties_client = hs_properties.ApiClient(self._configuration(hs_properties.Configuration()))
        self._exports_client = hs_exports.ApiClient(self._configuration(hs_exports.Configuration()))
        self._assoc_client = hs_associations.ApiClient(self._configuration(hs_associations.Configuration()))
        self._assoc = hs_associations.BatchApi(self._assoc_client)
        self._labels_client = hs_labels.ApiClient(self._configuration(hs_labels.Configuration()))
        self._labels = hs_labels.DefinitionsApi(self._labels_client)
        self._schemas_client = hs_schemas.ApiClient(self._configuration(hs_schemas.Configuration()))
        self._basic = hs_objects.BasicApi(self._objects_client)
        self._search = hs_objects.SearchApi(self._objects_client)
        self._batch = hs_objects.BatchApi(self._objects_client)
        self._props = hs_properties.CoreApi(self._properties_client)
        self._exports = hs_exports.PublicExportsApi(self._exports_client)
        self._schemas = hs_schemas.CoreApi(self._schemas_client)

    def _configuration(self, cfg: Any) -> Any:
        cfg.host = self.config.base_url
        if self.config.ca_bundle is not None:
            cfg.ssl_ca_cert = str(self.config.ca_bundle)
        # One retry for a connection that never opened; nothing else (see module docstring).
        cfg.retries = Retry(
            total=1,
            connect=1,
            read=0,
            status=0,
            other=0,
            redirect=0,
            respect_retry_after_header=False,
            raise_on_status=False,
        )
        return cfg

    # -- tokens -----------------------------------------------------------------------------------

    def refresh_token_view(self) -> None:
        """Take the TokenSource's current token (called once per connector operation, not per request)."""
        self._set_token(self._tokens.access_token())

    def _set_token(self, token: str) -> None:
        self._token = token
        for client in self._clients():
            client.configuration.access_token = token

    def _clients(self) -> tuple[Any, ...]:
        return (self._objects_client, self._properties_client, self._exports_client, self._assoc_client,
                self._labels_client, self._schemas_client)  # fmt: skip

    # -- endpoints --------------------------------------------------------------------------------

    def list_page(
        self,
        object_type: str,
        *,
        limit: int,
        after: str | None,
        properties: Sequence[str],
        archived: bool = False,
    ) -> JSON:
        """``GET /crm/v3/objects/{t}``: ``{"results": [...], "paging": {"next": {"after"}}?}``."""
        kwargs: dict[str, Any] = {"limit": limit, "archived": archived}
        if after:
            # A cursor HubSpot hands out URL-encoded (its spec's "NTI1Cg%3D%3D") is decoded once:
            # the SDK encodes query parameters itself, and twice-encoded is another cursor.
            kwargs["after"] = unquote(after)
        if properties:
            kwargs["properties"] = list(properties)
        return self._call(
            "list", lambda: self._basic.get_page(object_type, **kwargs, **self._raw()), expect=dict
        ).body

    def search(self, object_type: str, body: Mapping[str, Any]) -> JSON:
        """``POST /crm/v3/objects/{t}/search`` under the client-side search rate limit."""
        return self._call(
            "search",
            lambda: self._search.do_search(object_type, dict(body), **self._raw()),
            expect=dict,
            search=True,
        ).body

    def batch(
        self, object_type: str, verb: str, inputs: Sequence[Mapping[str, Any]], **body: Any
    ) -> tuple[int, JSON]:
        """``POST /crm/v3/objects/{t}/batch/{verb}`` (upsert, create, update, archive, read: ``body``
        adds its ``properties``). Returns (status, body): 200/201 for a complete batch, 207 with
        ``errors`` for a partial one (read: OBJECT_NOT_FOUND ``context.ids``), 204 (body None) for
        archive. A batch HubSpot rejects as a whole raises :class:`VendorRejected`."""
        api = {"upsert": self._batch.upsert, "create": self._batch.create, "update": self._batch.update,
               "archive": self._batch.archive, "read": self._batch.read}[verb]  # fmt: skip
        payload = {"inputs": list(inputs), **body}
        answer = self._call(
            f"batch {verb}",
            lambda: api(object_type, payload, **self._raw()),
            expect=dict if verb != "archive" else None,
            idempotent=verb != "create",  # the others match by id or unique property
        )
        return answer.status, answer.body

    def associations(self, from_type: str, to_type: str, verb: str, inputs: Any = ()) -> tuple[int, JSON]:
        """``POST /crm/v4/associations/{from}/{to}/batch/{verb}`` (create, archive, read; archive_labels:
        ``batch/labels/archive``) through the SDK's associations v4 ``BatchApi``; ``labels``/``label``:
        ``GET``/``POST .../labels`` (schema ``DefinitionsApi``; ``inputs``: the new label's body).
        (status, body): 201/200, 207 with ``errors``, 204 for the archives. All but ``label`` are
        idempotent (a pair associated twice is one association), so they resend."""
        a, d = self._assoc, self._labels
        api = {"create": a.create, "archive": a.archive, "read": a.get_page, "label": d.create,
               "archive_labels": a.archive_labels, "labels": lambda f, t, _, **kw: d.get_all(f, t, **kw)}[
            verb
        ]  # fmt: skip
        payload = inputs if verb in ("label", "labels") else {"inputs": list(inputs)}
        answer = self._call(
            f"associations {verb}", lambda: api(from_type, to_type, payload, **self._raw()),
            expect=None if "archive" in verb else dict, idempotent=verb != "label",
        )  # fmt: skip
        return answer.status, answer.body

    def properties(self, object_type: str) -> list[dict[str, Any]]:
        """``GET /crm/v3/properties/{t}``: live property definitions."""
        body = self._call(
            "properties", lambda: self._props.get_all(object_type, **self._raw()), expect=dict
        ).body
        results = body.get("results")
        if not isinstance(results, list):
            raise TransientError("HubSpot properties answer has no results list")
        return [r for r in results if isinstance(r, dict)]

    def schemas(self) -> list[dict[str, Any]]:
        """``GET /crm/v3/schemas`` (scope ``crm.schemas.custom.read``): the portal's custom object
        schemas with their properties, one call for all
        (https://developers.hubspot.com/docs/guides/api/crm/objects/custom-objects)."""
        body = self._call("schemas", lambda: self._schemas.get_all(**self._raw()), expect=dict).body
        results = body.get("results")
        if not isinstance(results, list):
            raise TransientError("HubSpot schemas answer has no results list")
        return [r for r in results if isinstance(r, dict)]

    def account_details(self) -> JSON:
        """``GET /account-info/v3/details``: the portal's account details, ``dataHostingLocation``
        included (https://developers.hubspot.com/docs/api-reference/legacy/account/account-information/
        get-account-details; its guide lists the ``oauth`` scope, which crmhub asks for). The SDK
        has no account-info API, so the request goes through the
        generic ``call_api`` of the objects client (same host, token and TLS settings)."""
        return self._call(
            "account details",
            lambda: self._objects_client.call_api(
                "/account-info/v3/details",
                "GET",
                header_params={"Accept": "application/json"},
                auth_settings=["oauth2"],
                **self._raw(),
            ),
            expect=dict,
        ).body

    def start_export(self, body: Mapping[str, Any]) -> str:
        """``POST /crm/v3/exports/export/async`` (scope ``crm.export``) → the export's task id.

        Never resent: a resend after a lost answer would start a second export (HubSpot allows 30 a
        day); the read that called this is retried instead."""
        answer = self._call(
            "export start",
            lambda: self._exports.start(dict(body), **self._raw()),
            expect=dict,
            idempotent=False,
            portal_pause=False,
        )
        task = answer.body.get("id")
        if not isinstance(task, str | int) or not str(task).isdigit():
            raise TransientError("HubSpot export start: the answer names no task id")
        return str(task)

    def export_status(self, task_id: str) -> JSON:
        """``GET /crm/v3/exports/export/async/tasks/{id}/status``: status, and ``result`` (a download
        link that lives five minutes) once COMPLETE."""
        return self._call(
            "export status", lambda: self._exports.get_status(int(task_id), **self._raw()), expect=dict
        ).body

    def open_export_file(self, url: str) -> ExportFile:
        """Start downloading an export's file from its signed link, streamed (never read whole).

        The link carries its own authorisation, so no token is sent with it; it must be https.
        A refused link (403/404/410: expired) raises :class:`ExportLinkExpired`."""
        if not url.startswith("https://"):
            raise TransientError("HubSpot export: the download link is not https; refusing to follow it")
        self.calls += 1
        manager = self._exports_client.rest_client.pool_manager
        failure: Exception | None = None
        try:
            resp = manager.request(
                "GET",
                url,
                preload_content=False,
                redirect=False,
                timeout=urllib3.Timeout(connect=self._timeout[0], read=self._timeout[1]),
            )
        except urllib3.exceptions.HTTPError as exc:
            failure = _connection_error("export download", exc)
        if failure is not None:
            raise failure
        if resp.status != 200:
            resp.drain_conn()
            resp.release_conn()
            if resp.status in (403, 404, 410):
                raise ExportLinkExpired(f"HubSpot export download: HTTP {resp.status} (link expired)")
            raise TransientError(f"HubSpot export download: HTTP {resp.status}", code=str(resp.status))
        content_type = str(resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        return ExportFile(io.BufferedReader(_Download(resp)), content_type)

    def close(self) -> None:
        """Close pooled connections."""
        for client in self._clients():
            manager = client.rest_client.pool_manager
            # urllib3 2.x's PoolManager.clear() forgets its pools without closing their sockets.
            for key in list(manager.pools.keys()):
                manager.pools[key].close()
            manager.clear()

    # -- the call path ----------------------------------------------------------------------------

    def _raw(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": self._timeout}

    def _call(
        self,
        what: str,
        send: Callable[[], Any],
        *,
        expect: type | None,
        search: bool = False,
        idempotent: bool = True,
        portal_pause: bool = True,
    ) -> _Answer:
        return send_with_retries(
            lambda: self._call_once(what, send, expect=expect, search=search, portal_pause=portal_pause),
            what=f"HubSpot {what}",
            idempotent=idempotent,
            policy=self._retry,
            sleep=self._sleep,
            rng=self._rng,
            on_retry=self._count_resend,
        )

    def _count_resend(self, error: Exception, pause: float) -> None:
        self.resends += 1

    def _call_once(
        self, what: str, send: Callable[[], Any], *, expect: type | None, search: bool, portal_pause: bool
    ) -> _Answer:
        if self._token is None:
            self.refresh_token_view()
        refreshed = False
        while True:
            answer = self._attempt(what, send, search=search)
            if answer.status == 401 and not refreshed:
                rejected = self._token or ""
                self._set_token(self._tokens.refresh(rejected))
                refreshed = True
                continue
            if 200 <= answer.status < 300:
                return self._parsed(what, answer, expect)
            raise self._error(what, answer, refreshed=refreshed, portal_pause=portal_pause)

    def _attempt(self, what: str, send: Callable[[], Any], *, search: bool) -> _Answer:
        portal = self._portal
        wait = portal.not_before - self._now()
        if wait > 0:
            if wait > self.config.max_pause_s:
                raise RateLimited(f"HubSpot {what}: still inside Retry-After", retry_after=wait)
            self._sleep(wait)
        windows = [w for w in (portal.burst, portal.search if search else None) if w is not None]
        for w in windows:
            w.acquire(self._sleep, self._now)
        self.calls += 1
        failure: Exception | None = None
        status, data, headers = 0, None, None
        try:
            try:
                resp = send()
                status, data, headers = resp.status, resp.data, resp.headers
            except _API_EXCEPTIONS as exc:  # same class hierarchy shape in every package
                status, data, headers = exc.status, exc.body, exc.headers
        except urllib3.exceptions.HTTPError as exc:
            failure = _connection_error(what, exc)
        finally:
            for w in windows:
                w.release(self._now)
        if failure is not None:  # raised outside the except block: no vendor exception as __context__
            raise failure
        if not status:  # the SDK reports TLS failures (and unsendable requests) as status 0
            raise TransientError(f"HubSpot {what}: request failed before an answer (TLS)")
        headers = headers or {}
        self._pace(headers)
        return _Answer(int(status), data, headers)

    def _pace(self, headers: Mapping[str, str]) -> None:
        """Keep within the rolling burst window.

        In this process, the clients of one portal (``rate_limit_key``) share a window of ``Max``
        less the reserve per interval, learned from the headers. Callers elsewhere (other workers,
        other apps of the portal) show only in ``Remaining``: with reserve ``r`` slots kept free,
        the pause grows by ``interval/r`` per slot below the reserve; the pauses before the window
        is exhausted sum to more than one interval, so a consumer never reaches 0 (each pause is
        capped by ``max_pause_s``).
        """
        try:
            remaining = int(headers.get("X-HubSpot-RateLimit-Remaining", ""))
            limit = int(headers.get("X-HubSpot-RateLimit-Max", ""))
            interval_s = int(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")) / 1000
        except ValueError:
            return
        self._portal.burst_interval_s = interval_s  # paces a 429 without Retry-After, reserve or not
        if self.config.rate_limit_reserve <= 0:
            return
        reserve = max(2, math.ceil(limit * self.config.rate_limit_reserve))
        self._portal.learn_burst(limit, interval_s, reserve)
        if remaining > reserve:
            return
        self._sleep(min(interval_s * (reserve - remaining + 1) / reserve, self.config.max_pause_s))

    def _parsed(self, what: str, answer: _Answer, expect: type | None) -> _Answer:
        if expect is None or answer.status == 204:
            return answer
        body = _loads_quietly(answer.data, default=None)
        if body is None:  # raised outside the except block: a JSONDecodeError holds the whole body
            raise TransientError(f"HubSpot {what}: malformed JSON in a {answer.status} answer")
        if not isinstance(body, expect):
            raise TransientError(f"HubSpot {what}: unexpected JSON shape in a {answer.status} answer")
        return _Answer(answer.status, answer.data, answer.headers, body)

    def _error(self, what: str, answer: _Answer, *, refreshed: bool, portal_pause: bool = True) -> Exception:
        status = answer.status
        body = _error_body(answer.data)
        category = str(body.get("category") or body.get("policyName") or body.get("errorType") or "")
        if status == 401:
            return AuthError(
                f"HubSpot {what}: access token rejected{' after a refresh' if refreshed else ''}",
                code=category or "401",
            )
        if status == 403:
            return AuthError(
                f"HubSpot {what}: forbidden (a scope is missing; reconnect the portal)",
                code=category or "403",
            )
        if status in (429, 477):
            policy = str(body.get("policyName") or "RATE_LIMIT")
            retry_after = retry_after_429(
                policy,
                answer.headers,
                burst_interval_s=self._portal.burst_interval_s,
                utc_offset_min=self.config.portal_utc_offset_min,
            )
            if portal_pause:  # a 429 of the export count (30 a day) does not stop the other calls
                self._portal.not_before = max(self._portal.not_before, self._now() + retry_after)
            return RateLimited(
                f"HubSpot {what}: rate limited ({policy}), retry after {retry_after:g} s",
                retry_after=retry_after,
                code=policy,
            )
        if status == 423 or status >= 500:
            return TransientError(f"HubSpot {what}: HTTP {status}", code=category or str(status))
        vendor_message = str(body.get("message") or "")
        problems = _problems(vendor_message)
        if problems:
            detail = ", ".join(sorted({f"{p.name}={p.code}" for p in problems}))
            message = f"HubSpot {what}: HTTP {status} {category}: invalid property values ({detail})"
        else:
            message = f"HubSpot {what}: HTTP {status} {category or 'rejected'}"
        return VendorRejected(
            message, status=status, category=category, problems=problems, vendor_message=vendor_message
        )


class _Download(io.RawIOBase):
    """A streamed download as a plain binary file: urllib3's errors while reading (a dropped
    connection, a read timeout) surface as ``OSError``, without the response attached."""

    def __init__(self, resp: urllib3.BaseHTTPResponse) -> None:
        self._resp = resp

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        failure: OSError | None = None
        try:
            return self._resp.readinto(buffer)
        except urllib3.exceptions.HTTPError as exc:
            failure = OSError(f"download interrupted ({type(exc).__name__})")
        raise failure

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
            self._resp.release_conn()
        super().close()


def _connection_error(what: str, exc: urllib3.exceptions.HTTPError) -> Exception:
    """A failed exchange: certificate problems are configuration, everything else is transient.

    Built inside the except block, raised outside it: the SDK's exceptions carry response bodies,
    which may hold record values, and must not ride along as ``__context__``.
    """
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    if isinstance(reason, urllib3.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(reason):
        return ConfigError(f"HubSpot {what}: server certificate not trusted; check base_url and ca_bundle")
    return TransientError(f"HubSpot {what}: {type(reason).__name__} (no complete answer)")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _loads_quietly(data: Any, default: Any = _EMPTY) -> Any:
    """Parsed JSON, or ``default`` (an empty dict unless given) when it is not JSON — which includes
    NaN/Infinity literals and nesting too deep for the parser (a RecursionError, not a crash)."""
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, TypeError, RecursionError):
        return {} if default is _EMPTY else default


def _error_body(data: Any) -> dict[str, Any]:
    body = _loads_quietly(data) if data else {}
    return body if isinstance(body, dict) else {}


def _problems(message: str) -> list[PropertyProblem]:
    """Parse "Property values were not valid: [{...}]" into per-property problems."""
    m = _PROBLEMS.search(message)
    if m is None:
        return []
    try:
        items = json.loads(m.group(1))
    except ValueError:
        return []
    return [
        PropertyProblem(str(i.get("name", "")), str(i.get("error", "INVALID")), str(i.get("message", "")))
        for i in items
        if isinstance(i, dict)
    ]
