"""schemathesis against the app's own OpenAPI spec, in-process (ASGI), logged in and logged out: no
5xx, and every status code, content type and JSON body as the spec says. Bounded examples per
operation (the pytest plugin of schemathesis does not load under this pytest, so the test drives
hypothesis itself, operation by operation)."""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from tests.api.web.conftest import PASSWORD, AppFactory, csrf_of

# not_a_server_error is applied below, with one documented exception: /readyz answers 503 here because
# this app has no Temporal (its own body says so).
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def _session_cookie(app: FastAPI) -> dict[str, str]:
    with TestClient(app) as client:
        page = client.get("/login")
        r = client.post(
            "/login",
            data={
                "csrf_token": csrf_of(page.text),
                "organisation": "acme",
                "email": "ana@acme.example",
                "password": PASSWORD,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303
        return {"crmhub_session": client.cookies["crmhub_session"]}


def _fuzz(schema: Any, cookies: dict[str, str], max_examples: int) -> dict[str, set[int]]:
    """Fuzz every operation; returns the status codes seen per operation."""
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: Any) -> None:
            response = case.call_and_validate(checks=CHECKS, cookies=cookies, allow_redirects=False)
            if case.operation.path == "/readyz":
                assert response.status_code == 503 and response.json()["checks"]["temporal"] is False
            else:
                assert response.status_code < 500, (case.operation.label, response.status_code)
            seen.setdefault(case.operation.label, set()).add(response.status_code)

        run()
    return seen


def test_api_conforms_to_its_openapi(app_factory: AppFactory, tenant_user: tuple[str, str]) -> None:
    app: FastAPI = app_factory()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    logged_in = _fuzz(schema, _session_cookie(app), max_examples=10)
    logged_out = _fuzz(schema, {}, max_examples=3)
    assert len(logged_in) == len(logged_out) >= 20
    # the session was used: pages render when logged in, and redirect to /login when not
    assert 200 in logged_in["GET /syncs"] and logged_out["GET /syncs"] == {303}
    assert 404 in logged_in["GET /syncs/{sync_id}"] and 403 in logged_in["POST /instructions/save"]
