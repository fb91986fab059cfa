"""HubSpot sandbox CRM exports (v3) through hubspot-api-client's PublicExportsApi; files over urllib3.

The request body goes in as a plain dict and answers are read raw (``_preload_content=False``): the
SDK's request model only allows LIST in its base class, and its status model requires timestamps
that a PENDING export does not have yet.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.exports.exceptions import ApiException
from urllib3.util.retry import Retry

from sandbox.faults import FaultPlan, FaultRule
from sandbox.hubspot import HubSpotSandbox
from sandbox.tls import SandboxCA
from tests.sandbox import hubspot_support
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_support.hs_ca

REDIRECT = "https://app.crmhub.test/oauth/hubspot/callback"
PROPS = ["email", "firstname", "lastname", "phone", "lead_score", "customer_tier", "createdate"]


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    """250 contacts and 30 companies; no burst limit (tests poll the status endpoint)."""
    hs = HubSpotSandbox(burst_limit=None)
    hs.seed({"contacts": 250, "companies": 30}, seed=7)
    try:
        yield from hubspot_support.serve(hs, hs_ca)
    finally:
        hs.close_exports()


def _body(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "exportType": "VIEW",
        "format": "CSV",
        "exportName": "All contacts",
        "language": "EN",
        "objectType": "CONTACT",
        "objectProperties": ["email"],
        "exportInternalValuesOptions": ["NAMES", "VALUES"],
    }
    return body | kw


def _api(served: Served, token: str | None = None) -> Any:
    return served.client(token).crm.exports.public_exports_api


def _start(served: Served, body: dict[str, Any], token: str | None = None) -> str:
    raw = _api(served, token).start(body, _preload_content=False)
    assert raw.status == 202
    locator = json.loads(raw.data)
    assert locator["links"]["status"] == (
        f"{served.srv.url}/crm/v3/exports/export/async/tasks/{locator['id']}/status"
    )
    return str(locator["id"])


def _status(served: Served, task_id: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(_api(served).get_status(task_id, _preload_content=False).data)
    return status


def _complete(served: Served, task_id: str) -> dict[str, Any]:
    """Poll until the export is COMPLETE (the deadline only guards against a hung worker)."""
    deadline = time.monotonic() + 60
    while (status := _status(served, task_id))["status"] != "COMPLETE":
        assert status["status"] in ("PENDING", "PROCESSING"), status
        assert time.monotonic() < deadline, f"export {task_id} not complete: {status}"
        time.sleep(0.02)
    return status


def _error(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.value.body)
    return body


def _get(served: Served, url: str) -> urllib3.BaseHTTPResponse:
    with urllib3.PoolManager(ca_certs=str(served.ca.ca_path), retries=False) as http:
        return http.request("GET", url)


def _rows(data: bytes) -> list[list[str]]:
    assert data.endswith(b"\r\n")
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def _export_rows(served: Served, body: dict[str, Any]) -> list[list[str]]:
    resp = _get(served, _complete(served, _start(served, body))["result"])
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    return _rows(resp.data)


def _listed(served: Served, obj: str, props: list[str]) -> list[dict[str, Any]]:
    """Every live record as the list API returns it (raw JSON)."""
    api = served.client().crm.objects.basic_api
    out: list[dict[str, Any]] = []
    after = None
    while True:
        raw = api.get_page(obj, limit=100, after=after, properties=props, _preload_content=False)
        page = json.loads(raw.data)
        out += page["results"]
        if "paging" not in page:
            return out
        after = page["paging"]["next"]["after"]


def test_full_export_round_trips_every_record(served: Served) -> None:
    tricky = served.hs.create_record(
        "contacts", {"email": "zoe@example.com", "firstname": 'Zoë "Z", Jr.\nline two', "lastname": "Ünal"}
    )
    served.hs.update_record("contacts", "3", {"phone": None, "customer_tier": None})
    task_id = _start(served, _body(objectProperties=PROPS))
    status = _complete(served, task_id)
    assert set(status) == {
        "status",
        "requestedAt",
        "startedAt",
        "completedAt",
        "numErrors",
        "links",
        "result",
    }
    assert status["numErrors"] == 0 and status["links"] == {}
    assert status["requestedAt"] <= status["startedAt"] <= status["completedAt"]
    assert status["completedAt"].endswith("Z") and len(status["completedAt"]) == 24
    resp = _get(served, status["result"])
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="All_contacts.csv"'
    assert int(resp.headers["Content-Length"]) == len(resp.data)
    rows = _rows(resp.data)
    assert rows[0] == ["hs_object_id", *PROPS]
    listed = _listed(served, "contacts", PROPS)
    assert len(listed) == 251 == len(rows) - 1
    assert rows[1:] == [
        [r["id"], *(r["properties"][p] or "" for p in PROPS)] for r in listed
    ]  # ascending id, list-API strings, nulls as empty cells
    by_id = {r[0]: r for r in rows[1:]}
    assert by_id["3"][PROPS.index("phone") + 1] == "" and by_id[tricky][2] == 'Zoë "Z", Jr.\nline two'
    assert b'"Zo\xc3\xab ""Z"", Jr.\nline two"' in resp.data  # RFC 4180 quoting, UTF-8
    [info] = served.hs.export_tasks()
    assert (info.id, info.status, info.rows, info.files) == (task_id, "COMPLETE", 251, 1)


def test_headers_are_labels_without_names_and_the_record_id_comes_once(served: Served) -> None:
    props = ["firstname", "hs_object_id", "email", "firstname"]
    labelled = _export_rows(served, _body(objectProperties=props, exportInternalValuesOptions=[]))
    assert labelled[0] == ["Record ID", "First Name", "Email"]
    named = _export_rows(served, _body(objectProperties=props, exportInternalValuesOptions=["NAMES"]))
    assert named[0] == ["hs_object_id", "firstname", "email"]
    assert labelled[1:] == named[1:] and len(named) == 251
    companies = _export_rows(served, _body(objectType="0-2", objectProperties=["name", "domain"]))
    assert companies[0] == ["hs_object_id", "name", "domain"]
    assert [r[0] for r in companies[1:]] == [r["id"] for r in _listed(served, "companies", ["name"])]


def test_filters_are_anded_and_archived_records_left_out(served: Served) -> None:
    live = served.hs.live_records("contacts")
    gold = [r for r in live if r.get("customer_tier") == "Gold" and int(r["lead_score"]) >= 50]
    assert len(gold) > 2
    served.hs.delete_record("contacts", gold[0]["id"])
    served.hs.delete_record("contacts", "1")
    filters = [
        {"propertyName": "customer_tier", "operator": "EQ", "value": "Gold"},
        {"propertyName": "lead_score", "operator": "GTE", "value": "50"},
    ]
    search = {"filters": filters, "sorts": [], "query": ""}  # the SDK model's empty defaults
    rows = _export_rows(served, _body(objectProperties=["lead_score"], publicCrmSearchRequest=search))
    assert [r[0] for r in rows[1:]] == sorted((r["id"] for r in gold[1:]), key=int)
    everyone = _export_rows(served, _body())
    assert len(everyone) == 1 + 248 and "1" not in {r[0] for r in everyone[1:]}


def test_missing_crm_export_scope_is_403_missing_scopes(served: Served) -> None:
    app = served.hs.register_app([REDIRECT])
    without = served.hs.issue_oauth_tokens(app.client_id, "crm.objects.contacts.read oauth").access_token
    with pytest.raises(ApiException) as exc:
        _api(served, without).start(_body(), _preload_content=False)
    assert exc.value.status == 403
    body = _error(exc)
    assert body.pop("correlationId")
    assert body == {
        "status": "error",
        "message": "This app hasn't been granted all required scopes to make this call. Read more about "
        "required scopes here: https://developers.hubspot.com/scopes.",
        "errors": [
            {
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": ["crm.export"]},
            }
        ],
        "links": {"scopes": "https://developers.hubspot.com/scopes"},
        "category": "MISSING_SCOPES",
    }
    assert "X-HubSpot-RateLimit-Max" in exc.value.headers
    granted = served.hs.issue_oauth_tokens(app.client_id, "oauth crm.export").access_token
    task_id = _start(served, _body(), granted)
    with pytest.raises(ApiException) as exc:
        _api(served, without).get_status(task_id, _preload_content=False)
    assert exc.value.status == 403 and _error(exc)["category"] == "MISSING_SCOPES"
    assert _status(served, task_id)["status"] in ("PENDING", "PROCESSING", "COMPLETE")  # private app


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ({"format": "PDF"}, ["format 'PDF'", "[CSV, XLSX, XLS]"]),
        ({"format": "XLSX"}, ["format XLSX", "emulates only VIEW exports in CSV"]),
        ({"exportType": "LIST", "listId": "12"}, ["exportType LIST", "emulates only VIEW exports in CSV"]),
        ({"exportType": None}, ["exportType is required", "[VIEW, LIST]"]),
        ({"language": "KL"}, ["language 'KL'", "PT_BR", "ZH_TW"]),
        ({"objectType": "TICKET"}, ["objectType 'TICKET'", "CONTACT", "0-1"]),
        ({"objectProperties": ["email", "nope", "bogus"]}, ["do not exist on 0-1: nope, bogus"]),
        ({"objectProperties": []}, ["objectProperties"]),
        ({"exportName": " "}, ["exportName"]),
        ({"exportInternalValuesOptions": ["LABELS"]}, ["exportInternalValuesOptions", "[NAMES, VALUES]"]),
        ({"associatedObjectType": "COMPANY"}, ["associatedObjectType", "emulates only"]),
        ({"publicCrmSearchRequest": {"query": "ann"}}, ["publicCrmSearchRequest.query is not supported"]),
        ({"publicCrmSearchRequest": {"sorts": ["email"]}}, ["publicCrmSearchRequest.sorts is not supported"]),
        (
            {"publicCrmSearchRequest": {"filters": [{"propertyName": "email", "operator": "LIKE"}]}},
            ["filters[0].operator 'LIKE'", "NOT_HAS_PROPERTY"],
        ),
        (
            {
                "publicCrmSearchRequest": {
                    "filters": [{"propertyName": "nope", "operator": "EQ", "value": "x"}]
                }
            },
            ["Property nope does not exist"],
        ),
    ],
)
def test_validation_errors_name_the_field(served: Served, change: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(ApiException) as exc:
        _api(served).start(_body(**change), _preload_content=False)
    assert exc.value.status == 400
    body = _error(exc)
    assert body["category"] == "VALIDATION_ERROR" and body["status"] == "error" and body["correlationId"]
    for needle in needles:
        assert needle in body["message"]
    assert served.hs.export_tasks() == []


@pytest.mark.parametrize("task_id", ["987654321", "abc", "51000001"])
def test_unknown_task_is_404_object_not_found(served: Served, task_id: str) -> None:
    with pytest.raises(ApiException) as exc:
        _api(served).get_status(task_id, _preload_content=False)
    assert exc.value.status == 404
    body = _error(exc)
    assert body["category"] == "OBJECT_NOT_FOUND" and task_id in body["message"]


def test_status_goes_pending_processing_complete_one_export_at_a_time(served: Served) -> None:
    served.hs.set_export_timing(queue_delay_s=1.0, rows_per_s=100)  # ≥ 1 s PENDING, then ≥ 2.5 s
    first = _start(served, _body())
    seen = [_status(served, first)]
    assert seen[0]["status"] == "PENDING" and set(seen[0]) == {"status", "requestedAt", "numErrors", "links"}
    while seen[-1]["status"] == "PENDING":
        time.sleep(0.02)
        seen.append(_status(served, first))
    processing = seen[-1]
    assert processing["status"] == "PROCESSING" and "startedAt" in processing
    assert "completedAt" not in processing and "result" not in processing
    served.hs.set_export_timing()  # full speed again, but the second waits for the first
    second = _start(served, _body(exportName="second"))
    assert _status(served, second)["status"] == "PENDING"
    done = _complete(served, first)
    assert done["startedAt"] == processing["startedAt"]
    assert _complete(served, second)["startedAt"] >= done["completedAt"]
    assert [t.status for t in served.hs.export_tasks()] == ["COMPLETE", "COMPLETE"]


def test_each_status_call_mints_a_new_link_and_expired_links_are_refused(served: Served) -> None:
    task_id = _start(served, _body(exportName="links"))
    links = [_complete(served, task_id)["result"], _status(served, task_id)["result"]]
    assert links[0] != links[1]
    first = _get(served, links[0])
    assert first.status == 200 and first.data == _get(served, links[1]).data
    assert served.hs.expire_export_links() == 2
    for url in links:
        refused = _get(served, url)
        assert refused.status == 403 and b"expired or is invalid" in refused.data
        assert refused.headers["Content-Type"].startswith("application/xml")
    fresh = _status(served, task_id)["result"]
    assert _get(served, fresh).data == first.data
    token_base = fresh.rsplit("/", 1)[0]
    assert _get(served, f"{token_base}/other.csv").status == 403  # the link names one file
    assert _get(served, f"{served.srv.url}/__sandbox/files/exports/not-a-token/links.csv").status == 403


def test_large_exports_are_zipped_partitions_with_a_header_each(served: Served) -> None:
    served.hs.set_export_partition_rows(100)
    task_id = _start(served, _body(exportName="big one", objectProperties=["email", "lastname"]))
    resp = _get(served, _complete(served, task_id)["result"])
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="big_one.zip"'
    with zipfile.ZipFile(io.BytesIO(resp.data)) as zf:
        assert zf.namelist() == ["big_one-1.csv", "big_one-2.csv", "big_one-3.csv"]
        parts = [_rows(zf.read(n)) for n in zf.namelist()]
    assert [len(p) - 1 for p in parts] == [100, 100, 50]
    assert all(p[0] == ["hs_object_id", "email", "lastname"] for p in parts)
    whole = [r for p in parts for r in p[1:]]
    assert [r[0] for r in whole] == [str(i) for i in range(1, 251)]
    [info] = served.hs.export_tasks()
    assert (info.rows, info.files, info.file_name) == (250, 3, "big_one.zip")
    # exactly partition_rows rows stay one CSV file
    upto = {"filters": [{"propertyName": "hs_object_id", "operator": "LTE", "value": "100"}]}
    exact = _export_rows(served, _body(publicCrmSearchRequest=upto))
    assert len(exact) == 101


def test_exports_started_per_rolling_window_are_limited_with_retry_after(served: Served) -> None:
    served.hs.set_export_limit(2)
    _start(served, _body())
    _start(served, _body())
    with pytest.raises(ApiException) as exc:
        _api(served).start(_body(), _preload_content=False)
    assert exc.value.status == 429
    body = _error(exc)
    assert body["category"] == "RATE_LIMITS" and "limit of 2 exports" in body["message"]
    assert 1 <= int(exc.value.headers["Retry-After"]) <= 86_400
    with pytest.raises(ApiException) as exc:  # a bad request is refused as such, and not counted
        _api(served).start(_body(format="PDF"), _preload_content=False)
    assert exc.value.status == 400
    served.hs.set_export_limit(3)
    _start(served, _body())
    assert len(served.hs.export_tasks()) == 3


def test_download_faults_by_endpoint_name_and_no_api_limits(served: Served) -> None:
    url = _complete(served, _start(served, _body()))["result"]
    served.hs.faults.set_plan(
        FaultPlan(
            rules=[FaultRule(endpoint="hs.exports.download", server_error=1.0, server_error_status=500)]
        )
    )
    assert _get(served, url).status == 500
    served.hs.faults.set_plan(FaultPlan(rules=[FaultRule(endpoint="hs.exports.download", drop=1.0)]))
    with pytest.raises(urllib3.exceptions.HTTPError):
        _get(served, url)
    served.hs.faults.clear()
    # a signed file link: no bearer token, and the API's burst window does not count it
    served.hs.limits.reset()
    served.hs.set_burst_limit(1, window_s=60)
    api = served.client(retry=Retry(0)).crm.contacts.basic_api
    assert api.get_page(limit=1).results
    with pytest.raises(ContactsApiException) as exc:
        api.get_page(limit=1)
    assert exc.value.status == 429  # the API's window is full...
    assert [_get(served, url).status for _ in range(3)] == [200, 200, 200]  # ...files still come
    assert served.hs.calls.counts()["hs.exports.download"] == 5


def test_close_exports_cancels_waiting_exports_and_deletes_files(served: Served) -> None:
    done = _start(served, _body(exportName="done"))
    url = _complete(served, done)["result"]
    served.hs.set_export_timing(queue_delay_s=600)
    waiting = _start(served, _body(exportName="waiting"))
    served.hs.close_exports()
    assert _status(served, waiting)["status"] == "CANCELED"
    assert _get(served, url).status == 403
    assert "result" not in _status(served, done)
    served.hs.set_export_timing()
    again = _complete(served, _start(served, _body(exportName="again")))
    assert _get(served, again["result"]).status == 200
