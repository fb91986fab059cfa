"""The new-sync form against the sandbox CRMs over HTTPS, in-process (ASGI), as a user fills it in:
connections (the destination defaults to another one; the same one only when ticked), objects from
the connections' live streams (a typo → "did you mean Contact?"), the mapping editor (allowlisted
source fields with types beside the destination's, auto-matched, flags), creation through the check
``crmhub sync create`` runs too — with every optional field left empty, the regions coming from what
the vendors said at connect. CSRF and tenant scoping as every form."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy.engine import Engine

from api.demo import demo_instruction
from sandbox.runtime import RunningSandbox
from store import connections as connection_store
from store import syncs as sync_store
from tests.api.web.conftest import csrf_of, make_tenant
from tests.api.web.test_web_connect import browser, connect, sandbox  # noqa: F401 - fixtures
from tests.services.test_sync_setup import add_instruction

pytestmark = pytest.mark.integration


def store_instruction(engine: Engine, tenant: str = "acme") -> None:
    add_instruction(engine, demo_instruction(tenant))


def selected(page: str, name: str) -> str | None:
    """The selected option of the select ``name`` (the first such select)."""
    m = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', page, re.S)
    assert m is not None, f"no select {name}"
    chosen = re.search(r'<option value="([^"]*)"[^>]*selected', m.group(1))
    return html.unescape(chosen.group(1)) if chosen else None


def mapping_choices(page: str) -> dict[str, str]:
    """The mapping editor's selected ``Source=destination`` per source field."""
    out: dict[str, str] = {}
    for m in re.finditer(
        r'<select name="mapping" aria-label="destination of ([^"]+)">(.*?)</select>', page, re.S
    ):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', m.group(2))
        out[m.group(1)] = html.unescape(chosen.group(1)) if chosen else ""
    return out


async def test_new_sync_in_steps_with_guidance_and_defaults(
    browser: httpx.AsyncClient,  # noqa: F811
    sandbox: RunningSandbox,  # noqa: F811
    db_engine: Engine,
) -> None:
    sf = await connect(browser, sandbox, "salesforce")
    hs = await connect(browser, sandbox, "hubspot")
    with db_engine.connect() as conn:  # read from the vendors at connect
        regions = {
            c.provider: c.region_instance for c in connection_store.list_connections(conn, tenant="acme")
        }
    assert regions == {"salesforce": "eu", "hubspot": "eu1"}
    listing = (await browser.get("/connections")).text  # shown with the connections too
    assert "<td>eu</td>" in listing and "<td>eu1</td>" in listing
    store_instruction(db_engine)

    first = await browser.get("/syncs/new")
    assert first.status_code == 200 and "1. Connections" in first.text and "2. Objects" not in first.text
    assert selected(first.text, "source_connection_id") == sf
    assert selected(first.text, "destination_connection_id") == hs  # not the source

    same = await browser.get(
        "/syncs/new?" + urlencode({"source_connection_id": sf, "destination_connection_id": sf})
    )
    assert same.status_code == 400
    assert f"the destination is the source connection ({sf})" in html.unescape(same.text)
    assert "tick &#39;same connection&#39;" in same.text or "tick 'same connection'" in same.text
    meant = await browser.get(
        "/syncs/new?"
        + urlencode({"source_connection_id": sf, "destination_connection_id": sf, "same_connection": "true"})
    )
    assert meant.status_code == 200 and "2. Objects" in meant.text

    base = {"source_connection_id": sf, "destination_connection_id": hs}
    objects = await browser.get("/syncs/new?" + urlencode(base))
    assert objects.status_code == 200 and "2. Objects" in objects.text
    assert 'value="Contact"' in objects.text and 'value="contacts"' in objects.text  # defaults offered
    assert '<option value="Account">' in objects.text and '<option value="companies">' in objects.text
    text = html.unescape(objects.text)
    assert "Data hosted at eu (European Economic Area)" in re.sub(r"<[^>]+>", "", text)
    assert "Data hosted at eu1 (European Economic Area)" in re.sub(r"<[^>]+>", "", text)
    assert "Region endpoint" not in text  # nothing to ask

    chosen = {**base, "objects_chosen": "true", "destination_stream": "contacts"}
    typo = await browser.get("/syncs/new?" + urlencode({**chosen, "source_stream": "Contacts"}))
    assert typo.status_code == 400
    message = html.unescape(typo.text)
    assert (
        "source_stream: the salesforce connection has no object 'Contacts'; did you mean Contact?" in message
    )
    assert "3. Mapping" not in typo.text and 'value="Contacts"' in typo.text  # the step to fix it

    editor = await browser.get("/syncs/new?" + urlencode({**chosen, "source_stream": "Contact"}))
    assert editor.status_code == 200 and "3. Mapping: Contact → contacts" in html.unescape(editor.text)
    picks = mapping_choices(editor.text)
    assert picks["Email"] == "Email=email" and picks["FirstName"] == "FirstName=firstname"
    assert picks["LastName"] == "LastName=lastname" and picks["Phone"] == "Phone=phone"
    assert set(picks) == {"Id", "Email", "FirstName", "LastName", "Phone", "MailingCountry", "SystemModstamp"}
    assert "auto-matched" in editor.text and "pseudonymized" in editor.text  # Phone, per the instruction
    assert selected(editor.text, "source_key_property") == "Email"
    assert selected(editor.text, "destination_id_property") == "email"
    assert 'name="source_endpoint" value=""' in editor.text  # left empty: the stored region is used

    form = {
        "csrf_token": csrf_of(editor.text),
        **base,
        "source_stream": "Contact",
        "destination_stream": "contacts",
        "mapping": [v for v in picks.values()],
        "source_key_property": "Email",
        "destination_id_property": "email",
        "source_endpoint": "",
        "destination_endpoint": "",
        "sync_id": "contact-to-hubspot",
        "name": "",
    }
    no_csrf = await browser.post("/syncs", data={k: v for k, v in form.items() if k != "csrf_token"})
    assert no_csrf.status_code == 403
    bad = await browser.post("/syncs", data={**form, "mapping": ["Emial=email"]})
    assert bad.status_code == 400
    assert (
        "mapping: the salesforce object Contact has no field &#39;Emial&#39;; did you mean Email?" in bad.text
    )
    assert "3. Mapping" in bad.text  # the editor again, to fix it
    outside = await browser.post("/syncs", data={**form, "mapping": ["Email=email", "Title=jobtitle"]})
    assert outside.status_code == 400
    assert "instruction v1 does not allow Contact.Title" in html.unescape(outside.text)
    with db_engine.connect() as conn:
        assert sync_store.get_sync(conn, "acme", "contact-to-hubspot") is None

    made = await browser.post("/syncs", data=form)
    assert made.status_code == 303 and made.headers["location"] == "/syncs/contact-to-hubspot"
    with db_engine.connect() as conn:
        row = sync_store.get_sync(conn, "acme", "contact-to-hubspot")
    assert row is not None
    assert row.spec.mapping == {
        "Email": "email",
        "FirstName": "firstname",
        "LastName": "lastname",
        "Phone": "phone",
    }
    assert row.spec.source_endpoint is None and row.spec.destination_endpoint is None


async def test_another_tenants_connection_is_not_offered(
    browser: httpx.AsyncClient,  # noqa: F811
    sandbox: RunningSandbox,  # noqa: F811
    db_engine: Engine,
) -> None:
    sf = await connect(browser, sandbox, "salesforce")
    store_instruction(db_engine)
    make_tenant(db_engine, "globex")
    with db_engine.begin() as conn:
        connection_store.insert_connection(
            conn,
            id="globex-hs",
            tenant="globex",
            provider="hubspot",
            instance_url="https://api.hubapi.com",
            scopes=(),
            access_token_sealed=b"a",
            refresh_token_sealed=b"r",
            access_expires_at=None,
            now=datetime.now(UTC),
        )
    page = await browser.get("/syncs/new")
    assert "globex-hs" not in page.text
    r = await browser.get(
        "/syncs/new?" + urlencode({"source_connection_id": sf, "destination_connection_id": "globex-hs"})
    )
    assert r.status_code == 404 and "globex" not in r.text
