"""OAuth attacks (issue 7, scenario 10, first part): against both sandbox CRMs over HTTPS and
crmhub's connect service (``connectors/oauth.py``, which the CLI and the web app both use).

* 20 redirect-URI variants of the registered ``http://127.0.0.1:8765/callback`` (scheme, host case,
  trailing slash, extra path, ``..``, userinfo, port, query, fragment, encoded characters, IDN
  lookalike, backslash, ``//evil``, IP literals …), for each provider:
  - at the vendor's authorize endpoint: refused, and no ``Location`` header anywhere but the
    registered URI (0 off-origin redirects);
  - on crmhub's callback (a real code and state, the variant as the redirect URI): refused with
    ``redirect_uri_mismatch`` before any token call;
* state replay, a state of the other provider (cross-provider), an unknown state, and a PKCE
  verifier that is missing or wrong at the token endpoint: refused.

Every case counts the calls at both sandboxes' token endpoints: 0 for each refused callback (the
PKCE cases are the token endpoint's own refusal: 1 call each, no tokens issued).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy.engine import Engine

from connectors.oauth import OAuthCallbackError
from governance.keys import LocalKeyringProvider
from governance.vault import Vault
from sandbox.consent import press_consent
from sandbox.runtime import RunningSandbox, start_sandbox
from sandbox.tls import SandboxCA
from services.credentials import OAuthService
from store import connections as connection_store
from tests.stack import sandbox_oauth_configs

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

GOOD = "http://127.0.0.1:8765/callback"


def redirect_variants(good: str) -> list[str]:
    """20 near misses of the registered redirect URI ``good`` (``scheme://host:port/path``), each a
    way to smuggle the code elsewhere or past a loose comparison. The web suite
    (tests/chaos/test_web_oauth_attacks.py) aims the same list at the web app's callback."""
    parts = urlsplit(good)
    host, port, path = parts.hostname or "", parts.port or 80, parts.path
    head, _, last = path.rpartition("/")
    at = f"{host}:{port}"
    return [
        f"https://{at}{path}",  # scheme
        f"HTTP://{at}{path}",  # scheme case
        f"http://LOCALHOST:{port}{path}",  # host case (localhost is registered on another port)
        f"{good}/",  # trailing slash
        f"{good}/extra",  # extra path
        f"{good}/../evil",  # dot-dot
        f"http://{at}/evil/..{path}",  # dot-dot that normalises to the good path
        f"http://{host}@evil.example:{port}{path}",  # userinfo: the host is evil.example
        f"http://evil.example@{at}{path}",  # userinfo on the good host
        f"http://{host}:{port + 1}{path}",  # port
        f"http://{host}{path}",  # default port
        f"{good}?next=https://evil.example",  # query added
        f"{good}#evil",  # fragment added
        f"http://{at}{head}/%{ord(last[0]):02x}{last[1:]}",  # percent-encoded path character
        f"http://{host}%2eevil.example:{port}{path}",  # encoded dot in the host
        f"http://xn--127-0-0-1-0ya.example:{port}{path}",  # IDN / punycode lookalike
        f"http://{at}\\@evil.example{path}",  # backslash
        f"//evil.example{path}",  # scheme-relative
        f"http://[::1]:{port}{path}",  # IPv6 loopback literal
        f"http://2130706433:{port}{path}",  # 127.0.0.1 as a decimal IP literal
    ]


VARIANTS = redirect_variants(GOOD)
assert len(VARIANTS) == 20 and len(set(VARIANTS)) == 20 and GOOD not in VARIANTS
PROVIDERS = ("salesforce", "hubspot")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    with start_sandbox(tmp_path / "data") as sb:
        yield sb


@pytest.fixture
def oauth(sandbox: RunningSandbox, db_engine: Engine, tmp_path: Path) -> Iterator[OAuthService]:
    vault = Vault(db_engine, LocalKeyringProvider(tmp_path / "keyring.json"))
    svc = OAuthService(db_engine, vault, sandbox_oauth_configs(sandbox, redirect_uri=GOOD))
    yield svc
    svc.close()


def _token_calls(sandbox: RunningSandbox) -> int:
    return int(sandbox.salesforce.oauth.token_calls + sandbox.hubspot.oauth.token_calls)


def _ca(sandbox: RunningSandbox) -> Any:
    return SandboxCA(Path(sandbox.info.ca_path).parent).client_context()


def _with_redirect(url: str, redirect_uri: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["redirect_uri"] = redirect_uri
    return parts._replace(query=urlencode(query)).geturl()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_vendor_refuses_every_redirect_variant_without_redirecting(
    oauth: OAuthService, sandbox: RunningSandbox, provider: str
) -> None:
    before = _token_calls(sandbox)
    locations: list[str] = []
    with httpx.Client(verify=_ca(sandbox), follow_redirects=False, timeout=10) as client:
        for variant in VARIANTS:
            url = _with_redirect(oauth.begin_authorization("acme", provider).url, variant)
            page = client.get(url)
            assert page.status_code >= 400, (variant, page.status_code)
            if "location" in page.headers:
                locations.append(page.headers["location"])
    assert locations == []  # 0 redirects, so 0 off-origin ones
    assert _token_calls(sandbox) == before


@pytest.mark.parametrize("provider", PROVIDERS)
def test_crmhub_refuses_every_redirect_variant_before_a_token_call(
    oauth: OAuthService, sandbox: RunningSandbox, db_engine: Engine, provider: str
) -> None:
    reasons = []
    for variant in VARIANTS:
        req = oauth.begin_authorization("acme", provider)
        params = press_consent(req.url, _ca(sandbox))  # a real code for the registered URI
        before = _token_calls(sandbox)
        with pytest.raises(OAuthCallbackError) as refused:
            oauth.complete_authorization(
                provider, tenant="acme", state=params["state"], code=params["code"], redirect_uri=variant
            )
        assert _token_calls(sandbox) == before, variant
        reasons.append(refused.value.reason)
    assert reasons == ["redirect_uri_mismatch"] * len(VARIANTS)
    with db_engine.connect() as conn:
        assert connection_store.list_connections(conn, tenant="acme") == []


def _consented(oauth: OAuthService, sandbox: RunningSandbox, provider: str) -> dict[str, str]:
    return press_consent(oauth.begin_authorization("acme", provider).url, _ca(sandbox))


def test_replayed_unknown_and_cross_provider_states_make_no_token_call(
    oauth: OAuthService, sandbox: RunningSandbox
) -> None:
    sf = _consented(oauth, sandbox, "salesforce")
    hs = _consented(oauth, sandbox, "hubspot")
    before = _token_calls(sandbox)
    cases = [
        ("hubspot", sf["state"], hs["code"], "state_mismatch"),  # Salesforce state on the HubSpot callback
        ("salesforce", hs["state"], sf["code"], "state_mismatch"),
        ("salesforce", sf["state"], sf["code"], "state_replayed"),  # burnt by the first case
        ("salesforce", "x" * 43, sf["code"], "state_unknown"),
        ("salesforce", None, sf["code"], "state_missing"),
    ]
    for provider, state, code, reason in cases:
        with pytest.raises(OAuthCallbackError) as refused:
            oauth.complete_authorization(provider, tenant="acme", state=state, code=code, redirect_uri=GOOD)
        assert refused.value.reason == reason, (provider, reason)
    assert _token_calls(sandbox) == before


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("verifier", [None, "", "wrong-" + "v" * 60])
def test_a_missing_or_wrong_pkce_verifier_gets_no_tokens(
    oauth: OAuthService, sandbox: RunningSandbox, provider: str, verifier: str | None
) -> None:
    """Straight at the vendor's token endpoint with a real code: the code is bound to the challenge."""
    params = _consented(oauth, sandbox, provider)
    cfg = oauth.config(provider)
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": GOOD,
        "client_id": cfg.client_id,
        "client_secret": cfg.client_secret.get_secret_value(),
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    crm = sandbox.salesforce if provider == "salesforce" else sandbox.hubspot
    issued = len(crm.oauth._access)
    with httpx.Client(verify=_ca(sandbox), timeout=10) as client:
        r = client.post(cfg.token_url, data=form)
    assert r.status_code == 400 and "access_token" not in r.text
    assert len(crm.oauth._access) == issued  # no token minted
