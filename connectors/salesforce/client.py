"""The one module that talks to Salesforce (simple-salesforce over a pinned-CA requests session).

Every call goes through :meth:`SalesforceClient._run`, which

* counts it (``calls``) and reads ``Sforce-Limit-Info: api-usage=N/M`` from every response (a
  session response hook, so error responses and Bulk result downloads count too);
* on 401 asks the TokenSource for a new token **once** (``refresh(rejected_token)``) and repeats
  the same request, then gives up with :class:`~schemas.errors.AuthError`;
* resends through :func:`connectors.http.send_with_retries`: after a 429/REQUEST_LIMIT_EXCEEDED/503
  with Retry-After (waited out when within ``max_retry_pause_s``), and after a 5xx, timeout, dropped
  connection or broken body of an *idempotent* request (queries, describes, Bulk job state and
  results, PATCH upserts by external id and updates by id, deletes; not a POST create or a new Bulk
  job), at most ``request_attempts`` sends and ``retry_budget_s`` of pauses per call; then the error
  goes up to the activity;
* maps everything else to the error tree (raised outside the ``except`` block, so no vendor
  exception — whose text holds URLs, SOQL and response bodies — travels as ``__context__``)::

    401 (after one refresh)                      AuthError            INVALID_SESSION_ID
    403 REQUEST_LIMIT_EXCEEDED                   RateLimited          Retry-After, else a pause
    403 other                                    AuthError            permissions / API disabled
    404                                          NotFound (ConfigError)
    400 INVALID_FIELD                            InvalidField (DataError, .field)
    400 INVALID_QUERY_LOCATOR                    InvalidLocator (TransientError): re-query by keyset
    400 INVALID_TYPE                             ConfigError          no such object
    300, 400 other, 4xx other                    DataError
    429, 5xx with Retry-After                    RateLimited
    5xx, 408/409/412, timeouts, dropped
    connections, malformed/odd-shaped bodies     TransientError
    TLS certificate not trusted                  ConfigError          check ca_bundle

Error messages carry the operation, HTTP status and vendor errorCode only — never the vendor's
message text (it can quote record values), the token, or the URL.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession
from simple_salesforce.util import exception_handler

from connectors.base import TokenSource
from connectors.http import parse_retry_after, send_with_retries
from connectors.salesforce.config import SalesforceConfig
from connectors.salesforce.soql import ident
from schemas.errors import (
    AuthError,
    ConfigError,
    CrmhubError,
    DataError,
    RateLimited,
    TransientError,
)

__all__ = [
    "BulkResults",
    "InvalidField",
    "InvalidLocator",
    "NotFound",
    "PinnedCAAdapter",
    "QueryResult",
    "SalesforceClient",
    "pinned_session",
]

T = TypeVar("T")
_USAGE_RE = re.compile(r"(?:^|[^-])api-usage=(\d+)/(\d+)")
_FIELD_RE = re.compile(r"(?:No such column|field) '([A-Za-z0-9_.]+)'")
# Vendor codes only (REST's INVALID_FIELD, Bulk's FeatureNotEnabled); anything else is not echoed.
_CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9]{15,18}$")
_LOCATOR_RE = re.compile(r"^[A-Za-z0-9+/=_-]{1,256}$")


class NotFound(ConfigError):
    """The object, field or resource does not exist (or the user cannot see it)."""


class InvalidField(DataError):
    """A query named a field the org does not have (any more); ``field`` is its name if known."""

    def __init__(self, message: str, *, field: str | None, code: str | None = "INVALID_FIELD") -> None:
        super().__init__(message, code=code)
        self.field = field


class InvalidLocator(TransientError):
    """A query or Bulk result locator expired; re-read from the keyset position."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One REST query batch."""

    records: list[dict[str, Any]]
    done: bool
    next_url: str | None
    total: int


@dataclass(frozen=True, slots=True)
class BulkResults:
    """One Bulk API 2.0 result set: CSV rows as dicts, and the locator of the next set (None at the end)."""

    rows: list[dict[str, str]]
    next_locator: str | None


class PinnedCAAdapter(HTTPAdapter):
    """HTTPS adapter that, given a CA file, always verifies against it only (and, given a timeout,
    uses it for requests that set none).

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace ``session.verify``
    (https://github.com/psf/requests/issues/3829): with the system bundle in those variables,
    ``session.verify = "ca.pem"`` is silently replaced and a private CA's certificate fails to
    verify. Passing ``verify`` at the transport level is the one place the environment cannot
    override, so the session still honours proxy variables and still verifies (``verify=False``
    from a caller is ignored too). Without a CA file, ``verify`` passes through (the system store).
    """

    def __init__(self, ca_path: str | PathLike[str] | None = None, timeout: float | None = None) -> None:
        self.ca_path = None if ca_path is None else str(ca_path)
        self.default_timeout = timeout
        super().__init__()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=self.default_timeout if timeout is None else timeout,
            verify=self.ca_path if self.ca_path is not None else verify,
            cert=cert,
            proxies=proxies,
        )


def pinned_session(ca_path: str | PathLike[str], *, timeout: float | None = None) -> requests.Session:
    """A ``requests`` session whose HTTPS requests verify against ``ca_path`` only (e.g. the sandbox
    CA), whatever REQUESTS_CA_BUNDLE says: give it to simple-salesforce as ``session=``."""
    session = requests.Session()
    session.verify = str(ca_path)
    session.mount("https://", PinnedCAAdapter(ca_path, timeout))
    return session


def _first_error(content: Any) -> tuple[str | None, str]:
    """(errorCode, vendor message) of a Salesforce error body; the message is for classifying only."""
    item = content[0] if isinstance(content, list) and content else content
    if isinstance(item, dict):
        code = item.get("errorCode") or item.get("statusCode")
        msg = item.get("message")
        ok = isinstance(code, str) and _CODE_RE.match(code) is not None
        return (code if ok else None), (msg if isinstance(msg, str) else "")
    return None, ""


class SalesforceClient:
    """A thin, typed wrapper over simple-salesforce for one org; used from one thread at a time."""

    def __init__(
        self, config: SalesforceConfig, tokens: TokenSource, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.config = config
        self._tokens = tokens
        self.calls = 0
        self.resends = 0  # resends after a rate limit or a transient failure (also counted in calls)
        self._sleep = sleep
        self._retry = config.request_retry(config.max_retry_pause_s)
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not a secret
        self._usage: tuple[int, int] | None = None
        self._calls_since_usage = 0
        self._retry_after: float | None = None
        if config.ca_bundle is not None:
            self._session = pinned_session(config.ca_bundle, timeout=config.timeout_s)
        else:
            self._session = requests.Session()
            self._session.mount("https://", PinnedCAAdapter(None, config.timeout_s))
        self._session.hooks["response"].append(self._on_response)
        self._token = tokens.access_token()
        self._sf = self._connect(self._token)

    def _connect(self, token: str) -> Salesforce:
        return Salesforce(
            instance_url=self.config.instance_url,
            session_id=token,
            session=self._session,
            version=self.config.api_version,
        )

    def close(self) -> None:
        self._session.close()

    # -- accounting ---------------------------------------------------------------------------

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._retry_after = parse_retry_after(response.headers.get("Retry-After"))
        m = _USAGE_RE.search(response.headers.get("Sforce-Limit-Info", ""))
        if m is not None:
            self._usage = (int(m.group(1)), int(m.group(2)))
            self._calls_since_usage = 0

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """(requests used, daily allocation) as last reported, plus our calls since; None before any call."""
        if self._usage is None:
            return None
        return self._usage[0] + self._calls_since_usage, self._usage[1]

    def ensure_budget(self) -> None:
        """Raise RateLimited if our share of the daily allocation is used (re-checking /limits once)."""
        usage = self.api_usage
        if usage is None or usage[0] < self.config.daily_quota_share * usage[1]:
            return
        self.limits()  # the allocation is rolling (and may have been raised): look again
        usage = self.api_usage
        if usage is not None and usage[0] >= self.config.daily_quota_share * usage[1]:
            raise RateLimited(
                f"Salesforce daily API budget: {usage[0]} of {usage[1]} requests used, "
                f"our share is {self.config.daily_quota_share:.0%}",
                retry_after=self.config.quota_pause_s,
                code="API_BUDGET_USED",
            )

    # -- the one call path ------------------------------------------------------------------------

    def _run(self, what: str, fn: Callable[[Salesforce], T], *, idempotent: bool = True) -> T:
        return send_with_retries(
            lambda: self._run_once(what, fn),
            what=f"Salesforce {what}",
            idempotent=idempotent,
            policy=self._retry,
            sleep=self._sleep,
            rng=self._rng,
            on_retry=self._count_resend,
            final=(InvalidLocator,),  # the same locator stays expired: the reader re-queries by keyset
        )

    def _count_resend(self, error: Exception, pause: float) -> None:
        self.resends += 1

    def _run_once(self, what: str, fn: Callable[[Salesforce], T]) -> T:
        refreshed = False
        while True:
            token = self._token
            self.calls += 1
            self._calls_since_usage += 1
            self._retry_after = None
            error: CrmhubError | None = None
            expired = False
            try:
                return fn(self._sf)
            except SalesforceExpiredSession:
                expired = True
            except SalesforceError as exc:
                error = self._vendor_error(exc.status, exc.content, what)
            except requests.exceptions.SSLError as exc:
                error = self._tls_error(exc, what)
            except (requests.exceptions.InvalidJSONError, json.JSONDecodeError, UnicodeDecodeError):
                error = TransientError(
                    f"Salesforce {what}: malformed response body", code="MALFORMED_RESPONSE"
                )
            except requests.exceptions.Timeout:
                error = TransientError(f"Salesforce {what}: timed out", code="TIMEOUT")
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ):
                error = TransientError(f"Salesforce {what}: connection failed", code="CONNECTION")
            except requests.exceptions.RequestException as exc:
                error = ConfigError(f"Salesforce {what}: request failed ({type(exc).__name__})")
            if error is not None:
                raise error
            if expired and refreshed:
                raise AuthError(
                    f"Salesforce {what}: HTTP 401 INVALID_SESSION_ID after a token refresh",
                    code="INVALID_SESSION_ID",
                )
            self._token = self._tokens.refresh(token)
            self._sf = self._connect(self._token)
            refreshed = True

    @staticmethod
    def _tls_error(exc: requests.exceptions.SSLError, what: str) -> CrmhubError:
        if "certificate verify failed" in str(exc).lower():
            return ConfigError(
                f"Salesforce {what}: the instance's TLS certificate is not trusted (check ca_bundle)",
                code="TLS_UNTRUSTED",
            )
        return TransientError(f"Salesforce {what}: TLS handshake failed", code="TLS")

    def _vendor_error(self, status: int, content: Any, what: str) -> CrmhubError:
        code, vendor_message = _first_error(content)
        label = f"Salesforce {what}: HTTP {status}" + (f" {code}" if code else "")
        retry_after = self._retry_after
        if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            daily = vendor_message.startswith("TotalRequests")
            pause = self.config.quota_pause_s if daily else self.config.rate_limit_pause_s
            return RateLimited(f"{label}: API request limit", retry_after=retry_after or pause, code=code)
        if status == 429 or (status >= 500 and retry_after is not None):
            return RateLimited(
                f"{label}: vendor asked to wait",
                retry_after=retry_after or self.config.rate_limit_pause_s,
                code=code,
            )
        if status >= 500 or status in (408, 409, 412):
            return TransientError(f"{label}: vendor unavailable", code=code)
        if status in (401, 403):
            return AuthError(f"{label}: refused (permissions or API access of the connected user)", code=code)
        if status == 404:
            return NotFound(f"{label}: no such resource", code=code)
        if code == "INVALID_FIELD":
            m = _FIELD_RE.search(vendor_message)
            return InvalidField(f"{label}: unknown or unusable field", field=m.group(1) if m else None)
        if code in ("INVALID_QUERY_LOCATOR", "INVALIDLOCATOR"):
            return InvalidLocator(f"{label}: locator expired", code=code)
        if code == "INVALID_TYPE":
            return ConfigError(f"{label}: no such object", code=code)
        return DataError(f"{label}: request rejected", code=code)

    def _shape(self, what: str) -> TransientError:
        return TransientError(f"Salesforce {what}: unexpected response shape", code="MALFORMED_RESPONSE")

    def _dict(self, value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._shape(what)
        return value

    # -- REST -------------------------------------------------------------------------------------

    def _query_result(self, body: Any, what: str) -> QueryResult:
        b = self._dict(body, what)
        records, done, total = b.get("records"), b.get("done"), b.get("totalSize")
        nxt = b.get("nextRecordsUrl")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise self._shape(what)
        if not isinstance(done, bool) or not isinstance(total, int) or isinstance(total, bool):
            raise self._shape(what)
        if not done and not (isinstance(nxt, str) and nxt.startswith("/services/data/")):
            raise self._shape(what)
        return QueryResult(records, done, nxt if not done else None, total)

    def query(self, soql: str, *, include_deleted: bool, batch_size: int, what: str) -> QueryResult:
        """First batch of ``soql`` (``queryAll`` when ``include_deleted``), ``batch_size`` 200..2000."""
        headers = {"Sforce-Query-Options": f"batchSize={max(200, min(2000, batch_size))}"}
        body = self._run(what, lambda sf: sf.query(soql, include_deleted=include_deleted, headers=headers))
        return self._query_result(body, what)

    def query_more(self, next_url: str, *, what: str) -> QueryResult:
        """The batch at a ``nextRecordsUrl`` (a server-relative path, checked)."""
        if not next_url.startswith("/services/data/") or "//" in next_url or "?" in next_url:
            raise self._shape(what)
        body = self._run(what, lambda sf: sf.query_more(next_url, identifier_is_url=True))
        return self._query_result(body, what)

    def count(self, sobject: str) -> int:
        """``SELECT COUNT() FROM sobject`` (live records)."""
        return self.query(
            f"SELECT COUNT() FROM {ident(sobject)}",  # noqa: S608 - an API name checked by ident()
            include_deleted=False,
            batch_size=200,
            what="count",
        ).total

    def describe_global(self) -> list[dict[str, Any]]:
        body = self._dict(self._run("describe global", lambda sf: sf.restful("sobjects")), "describe global")
        objs = body.get("sobjects")
        if not isinstance(objs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in objs
        ):
            raise self._shape("describe global")
        return objs

    def describe(self, sobject: str) -> dict[str, Any]:
        what = f"describe {sobject}"
        body = self._dict(self._run(what, lambda sf: sf.restful(f"sobjects/{sobject}/describe")), what)
        fields = body.get("fields")
        if not isinstance(fields, list) or not all(
            isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("type"), str)
            for f in fields
        ):
            raise self._shape(what)
        return body

    def limits(self) -> dict[str, Any]:
        return self._dict(self._run("limits", lambda sf: sf.restful("limits")), "limits")

    def write_collection(
        self, method: str, path: str, body: bytes, *, count: int, what: str
    ) -> list[dict[str, Any]]:
        """One sObject Collections request (``body``: serialized JSON); one result per record, in order."""
        result = self._run(
            what,
            lambda sf: sf.restful(path, method=method, data=body),
            idempotent=method != "POST",  # PATCH upserts by external id / updates by id; POST creates
        )
        if (
            not isinstance(result, list)
            or len(result) != count
            or not all(isinstance(r, dict) for r in result)
        ):
            raise self._shape(what)
        return result

    def delete_collection(self, ids: list[str], *, what: str) -> list[dict[str, Any]]:
        """``DELETE /composite/sobjects?ids=…&allOrNone=false`` (≤ 200 ids): one result per id, in order."""
        params = {"ids": ",".join(ids), "allOrNone": "false"}
        result = self._run(what, lambda sf: sf.restful("composite/sobjects", method="DELETE", params=params))
        if (
            not isinstance(result, list)
            or len(result) != len(ids)
            or not all(isinstance(r, dict) for r in result)
        ):
            raise self._shape(what)
        return result

    def get_deleted(self, sobject: str, start: str, end: str) -> dict[str, Any]:
        """``GET /sobjects/{sobject}/deleted/?start=&end=`` (ISO 8601 with offset; seconds ignored)."""
        what = f"getDeleted {sobject}"
        params = {"start": start, "end": end}
        body = self._dict(
            self._run(what, lambda sf: sf.restful(f"sobjects/{sobject}/deleted/", params=params)), what
        )
        if not isinstance(body.get("earliestDateAvailable"), str) or not isinstance(
            body.get("latestDateCovered"), str
        ):
            raise self._shape(what)
        return body

    # -- Bulk API 2.0 queries -------------------------------------------------------------------------

    def bulk_create(self, soql: str, *, what: str) -> str:
        """Create a Bulk API 2.0 ``query`` job; returns its id."""
        payload = {"operation": "query", "query": soql, "columnDelimiter": "COMMA", "lineEnding": "LF"}
        body = self._dict(
            self._run(
                what, lambda sf: sf.restful("jobs/query", method="POST", json=payload), idempotent=False
            ),
            what,
        )
        job_id = body.get("id")
        if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
            raise self._shape(what)
        return job_id

    def bulk_delete(self, job_id: str, *, what: str) -> None:
        """Delete a query job and its results (204)."""
        if not _JOB_ID_RE.match(job_id):
            raise InvalidLocator(f"Salesforce {what}: bad job id in state", code="INVALID_JOB_ID")
        self._run(what, lambda sf: sf.restful(f"jobs/query/{job_id}", method="DELETE"))

    def bulk_state(self, job_id: str, *, what: str) -> str:
        """The job's state (UploadComplete, InProgress, JobComplete, Failed, Aborted)."""
        if not _JOB_ID_RE.match(job_id):
            raise InvalidLocator(f"Salesforce {what}: bad job id in state", code="INVALID_JOB_ID")
        body = self._dict(self._run(what, lambda sf: sf.restful(f"jobs/query/{job_id}")), what)
        state = body.get("state")
        if not isinstance(state, str):
            raise self._shape(what)
        return state

    def bulk_results(self, job_id: str, locator: str | None, max_records: int, *, what: str) -> BulkResults:
        """One result set of a completed job, as CSV rows (values still text; NUL bytes kept)."""
        if not _JOB_ID_RE.match(job_id) or (locator is not None and not _LOCATOR_RE.match(locator)):
            raise InvalidLocator(f"Salesforce {what}: bad job id or locator in state", code="INVALIDLOCATOR")
        params: dict[str, str | int] = {"maxRecords": max_records}
        if locator:
            params["locator"] = locator

        def get(sf: Salesforce) -> tuple[str, str | None]:
            # simple-salesforce's bulk2 results helper strips NUL bytes from the data and drops the
            # Sforce-Limit-Info header; fetch the CSV over its session instead.
            headers = {**sf.headers, "Accept": "text/csv"}
            r = sf.session.get(f"{sf.bulk2_url}query/{job_id}/results", headers=headers, params=params)
            if r.status_code >= 300:
                exception_handler(r, name="bulk2 results")
            return r.content.decode("utf-8"), r.headers.get("Sforce-Locator")

        text, nxt = self._run(what, get)
        rows = _parse_csv(text)
        if rows is None:
            raise self._shape(what)
        return BulkResults(rows, None if nxt in (None, "", "null") else nxt)


def _rows(reader: csv.DictReader[str]) -> Iterator[dict[str, str]]:
    for row in reader:
        if None in row or any(v is None for v in row.values()):
            raise csv.Error("ragged row")
        yield row


# A long text area holds up to 131,072 characters, which is exactly the csv module's default field
# limit; quoting and multi-byte text must not make a legal value "malformed". (Process-wide setting:
# it only ever raises the limit.)
_CSV_FIELD_LIMIT = 1 << 30


def _parse_csv(text: str) -> list[dict[str, str]] | None:
    """CSV rows keyed by the header; None if the text is not well-formed CSV with equal-length rows."""
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        return list(_rows(csv.DictReader(io.StringIO(text, newline=""))))
    except csv.Error:
        return None
