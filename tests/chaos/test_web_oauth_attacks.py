"""OAuth attacks on the web app's Connect flow (issue 7, scenario 10): ``POST
/connections/connect/{provider}`` and ``GET /oauth/callback`` of ``api/web``, in-process (ASGI),
against both sandbox CRMs over HTTPS.

* The Connect redirect is the vendor's authorize URL carrying exactly the registered redirect URI
  (PKCE S256, a state); the same URL with any of the 20 redirect-URI variants of
  :func:`tests.chaos.test_oauth_attacks.redirect_variants` is refused by the vendor, without a
  redirect.
* A real code and a live state of the session, delivered to the app at each variant (as sent on the
  wire — raw, and as a browser normalises it — with the session cookie): refused, 0 token calls. A
  variant that is on the wire the registered URI itself (a fragment, scheme case, userinfo, a ``..``
  a browser resolves) is counted, not attacked.
* States: replayed, unknown, missing, missing code, provider error, another session of the same user,
  another tenant's user's session → 0 token calls. A state with a code of the other provider, or a
  code minted for another authorization (its PKCE challenge is not the state's verifier): the
  vendor's token endpoint refuses the one call, 0 tokens are minted, 0 connections stored.
* Open-redirect probes (``next=``, ``return_to=`` … ``//evil.example``, ``/\\evil.example``,
  ``javascript:``) on login, logout, connect and the callback.

Token calls are counted from the sandboxes' call logs (``sf.oauth.token``, ``hs.oauth.token``); every
``Location`` the app emits is collected and must be same-origin or the vendor's authorize URL with
exactly the registered redirect URI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from api.cli_web import add_user
from api.web import create_app
from sandbox.consent import press_consent
from sandbox.runtime import RunningSandbox, start_sandbox
from schemas.settings import Settings, load_settings
from store import connections as connection_store
from tests.api.web.conftest import PASSWORD, asgi_client, login, make_tenant, no_temporal, page_csrf
from tests.chaos.test_oauth_attacks import _with_redirect, redirect_variants
from tests.stack import sandbox_oauth_configs

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

ORIGIN = "http://127.0.0.1:8000"
REGISTERED = f"{ORIGIN}/oauth/callback"  # what the sandbox registered for the web app
VARIANTS = redirect_variants(REGISTERED)
PROVIDERS = ("salesforce", "hubspot")
TOKEN_ENDPOINTS = ("sf.oauth.token", "hs.oauth.token")
EVIL = [
    "//evil.example",
    "https://evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "http://127.0.0.1:8000@evil.example/",
    "/%2F%2Fevil.example",
]
NEXT_NAMES = ("next", "return_to", "redirect", "redirect_uri", "continue", "url")


@dataclass
class World:
    app: FastAPI
    sandbox: RunningSandbox
    browser: httpx.AsyncClient  # tenant acme's user, logged in
    locations: list[str] = field(default_factory=list)

    def token_calls(self) -> int:
        sb = self.sandbox
        calls = sb.salesforce.calls.all() + sb.hubspot.calls.all()
        return sum(1 for c in calls if c.endpoint in TOKEN_ENDPOINTS)

    def minted(self) -> int:
        return len(self.sandbox.salesforce.oauth._access) + len(self.sandbox.hubspot.oauth._access)

    def seen(self, response: httpx.Response) -> httpx.Response:
        if "location" in response.headers:
            self.locations.append(response.headers["location"])
        return response

    async def connect(self, client: httpx.AsyncClient | None = None, provider: str = "salesforce") -> str:
        """Press Connect: the vendor's authorize URL the app redirects to."""
        c = client or self.browser
        csrf = await page_csrf(c, "/connections")
        r = self.seen(await c.post(f"/connections/connect/{provider}", data={"csrf_token": csrf}))
        assert r.status_code == 303, r.text
        return r.headers["location"]

    async def consented(
        self, client: httpx.AsyncClient | None = None, provider: str = "salesforce"
    ) -> dict[str, str]:
        """A real code and the state of a Connect started in ``client``'s session."""
        return press_consent(await self.connect(client, provider), self.sandbox.ca.client_context())

    async def callback(
        self, params: dict[str, str], client: httpx.AsyncClient | None = None
    ) -> httpx.Response:
        return self.seen(await (client or self.browser).get("/oauth/callback", params=params))

    def connections(self, engine: Engine, tenant: str = "acme") -> int:
        with engine.connect() as conn:
            return len(connection_store.list_connections(conn, tenant=tenant))


USER = ("acme", "ana@acme.example")


@pytest.fixture
def web_settings(tmp_path: Path, db_url: str, db_engine: Engine) -> Settings:
    """This test's database, with tenant acme and its user (as tests/api/web/conftest.py seeds it)."""
    settings = load_settings(data_dir=tmp_path / "data", database_url=db_url)
    make_tenant(db_engine, USER[0], "Acme GmbH")
    add_user(settings, *USER, PASSWORD)
    return settings


@pytest.fixture
def sandbox(web_settings: Settings) -> Iterator[RunningSandbox]:
    with start_sandbox(web_settings.data_dir) as sb:
        yield sb


@pytest.fixture
async def world(web_settings: Settings, db_engine: Engine, sandbox: RunningSandbox) -> AsyncIterator[World]:
    configs = sandbox_oauth_configs(sandbox, redirect_uri=REGISTERED)
    app = create_app(web_settings, oauth_configs=configs, engine=db_engine, temporal=no_temporal)
    try:
        async with asgi_client(app, ORIGIN) as browser:
            assert (await login(browser, *USER)).status_code == 303
            w = World(app, sandbox, browser)
            yield w
            assert w.locations, "the suite saw no redirect at all"
            for location in w.locations:
                assert _allowed_location(location, app), location
    finally:
        app.state.web.close()  # its keep-alive connections to the sandbox end before the sandbox stops


def _allowed_location(location: str, app: FastAPI) -> bool:
    """Same-origin (a path, or the app's own origin), or a configured vendor's authorize URL with
    exactly the registered redirect URI."""
    parts = urlsplit(location)
    if not parts.scheme and not parts.netloc:
        return location.startswith("/") and not location.startswith(("//", "/\\"))
    if f"{parts.scheme}://{parts.netloc}" == ORIGIN:
        return True
    authorize = {c.authorize_url for c in app.state.web.oauth.configs.values()}
    query = parse_qs(parts.query)
    return (
        f"{parts.scheme}://{parts.netloc}{parts.path}" in authorize
        and query.get("redirect_uri") == [REGISTERED]
        and not parts.fragment
    )


# ---- the 20 redirect-URI variants ----------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_connect_redirects_to_the_vendor_with_the_registered_uri_and_variants_are_refused_there(
    world: World, provider: str
) -> None:
    location = await world.connect(provider=provider)
    query = parse_qs(urlsplit(location).query)
    assert query["redirect_uri"] == [REGISTERED]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 43
    before = world.token_calls()
    vendor_locations = []
    ca = world.sandbox.ca.client_context()
    async with httpx.AsyncClient(verify=ca, follow_redirects=False, timeout=10) as c:
        for variant in VARIANTS:
            page = await c.get(_with_redirect(location, variant))
            assert page.status_code >= 400, (variant, page.status_code)
            vendor_locations += [page.headers["location"]] if "location" in page.headers else []
    assert vendor_locations == []
    assert world.token_calls() == before


@dataclass(frozen=True)
class Wire:
    """What reaches the server for a URL: scheme, Host header, path (raw) and query."""

    scheme: str
    host: str
    path: str
    query: str


def _wire_forms(variant: str) -> set[Wire]:
    """The variant as sent without normalisation, and as a browser-like client normalises it."""
    raw = urlsplit(variant)
    forms = {Wire(raw.scheme or "http", raw.netloc.rpartition("@")[2], raw.path, raw.query)}
    try:
        url = httpx.URL(variant)
    except httpx.InvalidURL:  # e.g. the IDN lookalike: no client would send it
        return forms
    raw_host = url.raw_host.decode("ascii")
    raw_host = f"[{raw_host}]" if ":" in raw_host else raw_host
    host = raw_host if url.port is None else f"{raw_host}:{url.port}"
    path = url.raw_path.decode("ascii").partition("?")[0]
    forms.add(Wire(url.scheme or "http", host, path, url.query.decode("ascii")))
    return forms


REGISTERED_WIRE = Wire("http", "127.0.0.1:8000", "/oauth/callback", "")


async def _asgi_get(
    app: FastAPI, wire: Wire, params: dict[str, str], cookie: str
) -> tuple[int, dict[str, str]]:
    """One GET straight into the app's ASGI interface, exactly as ``wire`` says (no client-side
    normalisation), carrying the session cookie and the callback's ``params``."""
    query = "&".join(q for q in (wire.query, urlencode(params)) if q)
    host, _, port = (
        wire.host.rpartition(":") if wire.host.rsplit(":", 1)[-1].isdigit() else (wire.host, "", "")
    )
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": wire.scheme,
        "path": unquote(wire.path),
        "raw_path": wire.path.encode("latin-1"),
        "root_path": "",
        "query_string": query.encode("latin-1"),
        "headers": [(b"host", wire.host.encode("latin-1")), (b"cookie", f"crmhub_session={cookie}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": (host, int(port) if port else (443 if wire.scheme == "https" else 80)),
    }
    started: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)

    await app(scope, receive, send)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in started["headers"]}
    return int(started["status"]), headers


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_code_delivered_at_a_variant_of_the_redirect_uri_makes_no_token_call(
    world: World, db_engine: Engine, provider: str
) -> None:
    cookie = world.browser.cookies["crmhub_session"]
    identical: list[str] = []
    refused: list[tuple[str, int]] = []
    for variant in VARIANTS:
        for wire in sorted(_wire_forms(variant), key=repr):
            if wire == REGISTERED_WIRE:
                identical.append(variant)  # on the wire this *is* the registered URI
                continue
            params = await world.consented(provider=provider)  # a live state of this session
            before = world.token_calls()
            status, headers = await _asgi_get(world.app, wire, params, cookie)
            if "location" in headers:
                world.locations.append(headers["location"])
            assert world.token_calls() == before, (variant, wire, status)
            assert status in (400, 404), (variant, wire, status)
            refused.append((variant, status))
    same = {VARIANTS[1], VARIANTS[8], VARIANTS[12]}  # scheme case, userinfo on the good host, fragment
    assert {v for v, _ in refused} == set(VARIANTS) - same
    assert set(identical) == same | {VARIANTS[6]}  # + the "..": raw it is refused, resolved it is the URI
    assert world.connections(db_engine) == 0


# ---- states and PKCE -----------------------------------------------------------------------------


async def test_bad_states_make_no_token_call(world: World, db_engine: Engine, web_settings: Settings) -> None:
    make_tenant(db_engine, "othertenant")
    add_user(web_settings, "othertenant", "eve@other.example", PASSWORD)
    sf = await world.consented(provider="salesforce")
    hs = await world.consented(provider="hubspot")
    before, minted = world.token_calls(), world.minted()
    async with asgi_client(world.app, ORIGIN) as same_user, asgi_client(world.app, ORIGIN) as eve:
        assert (await login(same_user, *USER)).status_code == 303
        assert (await login(eve, "othertenant", "eve@other.example")).status_code == 303
        eves = await world.consented(eve, "salesforce")
        cases: list[tuple[str, dict[str, str], httpx.AsyncClient]] = [
            ("another session of the same user", sf, same_user),
            ("another tenant's user", sf, eve),
            ("another tenant's state in acme's session", eves, world.browser),
            ("unknown state", {**sf, "state": "x" * 43}, world.browser),
            ("missing state", {"code": sf["code"]}, world.browser),
            ("nothing", {}, world.browser),
            (
                "state of a Connect started as Eve, sent by acme with acme's code",
                {**sf, "state": eves["state"]},
                world.browser,
            ),
        ]
        for name, params, client in cases:
            r = await world.callback(params, client)
            assert r.status_code == 400 and "not started in this session" in r.text, name
        assert world.token_calls() == before
        # the live states still work in their own sessions, once
        assert (await world.callback(sf)).status_code == 303
        replayed = await world.callback(sf)
        assert replayed.status_code == 400 and "not started in this session" in replayed.text
        assert (await world.callback(eves, eve)).status_code == 303
    before = world.token_calls()
    no_code = await world.callback({"state": hs["state"]})
    assert no_code.status_code == 400 and "no authorization code" in no_code.text
    denied = await world.consented(provider="hubspot")
    r = await world.callback({"state": denied["state"], "error": "access_denied"})
    assert r.status_code == 400 and "refused the authorization" in r.text
    assert world.token_calls() == before
    assert world.minted() == minted + 2  # the two real connects, nothing else
    assert (world.connections(db_engine), world.connections(db_engine, "othertenant")) == (1, 1)


async def test_a_foreign_code_is_refused_at_the_token_endpoint_and_mints_nothing(
    world: World, db_engine: Engine
) -> None:
    """A state with a code of the other provider, or with a code minted for another authorization of
    the same provider (its PKCE challenge is not this state's verifier: the verifier crmhub sends is
    wrong for it): one call at the token endpoint, refused; no token minted, no connection."""
    sf = await world.consented(provider="salesforce")
    hs = await world.consented(provider="hubspot")
    sf_other = await world.consented(provider="salesforce")
    hs_other = await world.consented(provider="hubspot")
    minted = world.minted()
    for state, code in (
        (sf["state"], hs["code"]),  # cross-provider
        (hs["state"], sf["code"]),
        (sf_other["state"], sf["code"]),  # injected code: wrong PKCE verifier for it
        (hs_other["state"], hs["code"]),
    ):
        before = world.token_calls()
        r = await world.callback({"state": state, "code": code})
        assert r.status_code == 400 and "refused the authorization code" in r.text
        assert world.token_calls() == before + 1
    assert world.minted() == minted
    assert world.connections(db_engine) == 0


# ---- open redirects ------------------------------------------------------------------------------


async def test_no_next_parameter_redirects_off_origin(world: World) -> None:
    probes = [{name: target} for name in NEXT_NAMES for target in EVIL]
    before = len(world.locations)
    async with asgi_client(world.app, ORIGIN) as anon:
        for q in probes:
            world.seen(await anon.get("/login", params=q))
            page = await anon.get("/login")
            data = {"csrf_token": page.text.split('name="csrf_token" value="')[1].split('"')[0]}
            form = {"organisation": USER[0], "email": USER[1], "password": PASSWORD}
            r = world.seen(await anon.post("/login", params=q, data={**data, **form, **q}))
            assert r.status_code == 303
            for path in ("/", "/connections", "/oauth/callback"):
                world.seen(await anon.get(path, params=q))
            csrf = await page_csrf(anon, "/connections")
            world.seen(
                await anon.post("/connections/connect/hubspot", params=q, data={"csrf_token": csrf, **q})
            )
            world.seen(await world.callback(q, anon))
            r = world.seen(await anon.post("/logout", params=q, data={"csrf_token": csrf, **q}))
            assert r.status_code == 303 and r.headers["location"] == "/login"
    emitted = world.locations[before:]
    assert len(emitted) >= 3 * len(probes)
    assert not [loc for loc in emitted if "evil" in loc or "javascript" in loc]
