"""The web app and custom objects: the HubSpot connect form's "custom objects" box asks for the
custom-object scopes, and the new-sync form then offers the portal's custom object (defined through
the sandbox's schemas API) and the Salesforce org's ``__c`` object among the live streams."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy.engine import Engine

from connectors.hubspot.objects import CUSTOM_SCOPES
from sandbox.consent import press_consent
from sandbox.runtime import RunningSandbox
from tests.api.web.conftest import page_csrf
from tests.api.web.test_web_connect import browser, connect, sandbox  # noqa: F401 - fixtures
from tests.api.web.test_web_new_sync import store_instruction
from tests.connectors.test_hubspot_custom_objects import PROJECTS

pytestmark = pytest.mark.integration


async def test_the_new_sync_form_lists_custom_objects(
    browser: httpx.AsyncClient,  # noqa: F811
    sandbox: RunningSandbox,  # noqa: F811
    db_engine: Engine,
) -> None:
    sandbox.salesforce.add_custom_object(
        "Project__c", "Project", "Projects", [{"name": "Code__c", "type": "string", "label": "Code"}]
    )
    type_id = sandbox.hubspot.create_schema(PROJECTS)["objectTypeId"]
    sf = await connect(browser, sandbox, "salesforce")
    form = {"csrf_token": await page_csrf(browser, "/connections"), "allow_custom_objects": "on"}
    r = await browser.post("/connections/connect/hubspot", data=form)
    assert r.status_code == 303
    asked = parse_qs(urlsplit(r.headers["location"]).query)["scope"][0].split()
    assert set(CUSTOM_SCOPES) <= set(asked) and "crm.export" not in asked
    cb = await browser.get(
        "/oauth/callback", params=press_consent(r.headers["location"], sandbox.ca.client_context())
    )
    assert cb.status_code == 303, cb.text
    hs = cb.headers["location"].split("=", 1)[1]
    store_instruction(db_engine)

    base = {"source_connection_id": sf, "destination_connection_id": hs}
    objects = await browser.get("/syncs/new?" + urlencode(base))
    assert objects.status_code == 200
    assert '<option value="Project__c">' in objects.text and '<option value="projects">' in objects.text
    by_id = await browser.get(
        "/syncs/new?"
        + urlencode(
            {**base, "objects_chosen": "true", "source_stream": "Contact", "destination_stream": type_id}
        )
    )
    assert by_id.status_code == 400 and "did you mean projects?" in by_id.text
