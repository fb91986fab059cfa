"""The vendor-neutral sandbox pieces: TLS, server thread, record store, faults, OAuth state, fake data."""

from __future__ import annotations

import base64
import hashlib
import ssl
import warnings

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.fake import TIE_GROUP, modstamp_ms, person
from sandbox.faults import FaultInjector, FaultKind, FaultPlan, FaultRule, SlidingWindow
from sandbox.oauth import OAuthError, OAuthServer
from sandbox.records import RecordStore
from sandbox.server import ServerThread, bind_socket
from sandbox.tls import SandboxCA
from schemas.errors import ConfigError


async def _hello(_request):
    return JSONResponse({"hello": "wörld"})


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> SandboxCA:
    return SandboxCA.ensure(tmp_path_factory.mktemp("ca"))


def test_ca_is_created_once_with_a_private_key_file(ca: SandboxCA) -> None:
    assert ca.key_path.stat().st_mode & 0o777 == 0o600
    before = ca.ca_path.read_bytes()
    assert SandboxCA.ensure(ca.directory).ca_path.read_bytes() == before


def test_missing_ca_file_names_the_fix(tmp_path) -> None:
    with pytest.raises(ConfigError, match="crmhub sandbox"):
        SandboxCA.existing(tmp_path)


def test_https_with_the_sandbox_ca_and_tls12_minimum(ca: SandboxCA) -> None:
    app = Starlette(routes=[Route("/", _hello)])
    with ServerThread(app, ca) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        assert httpx.get(srv.url, verify=ca.client_context()).json() == {"hello": "wörld"}
        # The system trust store does not know our CA: verification stays on and fails.
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url, verify=ssl.create_default_context())
        # A client limited to TLS 1.1 is refused.
        old = ca.client_context()
        with warnings.catch_warnings():  # building a deprecated TLS 1.1 client on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url, verify=old)


def test_port_in_use_is_a_clear_config_error() -> None:
    held = bind_socket("127.0.0.1", 0)
    port = held.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=rf"port {port} .* already in use.*0 picks a free one"):
            bind_socket("127.0.0.1", port)
    finally:
        held.close()


def test_record_store_keyset_paging_over_ties() -> None:
    store = RecordStore()
    rows = [("Contact", f"003{i:012d}", i, modstamp_ms(i), modstamp_ms(i), {"n": i}) for i in range(1000)]
    assert store.insert_many(rows) == 1000
    seen: list[int] = []
    after = (0, "")
    while True:
        page = store.select(
            "Contact",
            "deleted = 0 AND (modstamp > ? OR (modstamp = ? AND id > ?))",
            (after[0], after[0], after[1]),
            order_by="modstamp, id",
            limit=7,  # 7 is not a multiple of the tie group: pages end inside ties
        )
        if not page:
            break
        seen += [r.data["n"] for r in page]
        after = (page[-1].modstamp, page[-1].id)
    assert seen == list(range(1000))


def test_record_store_mutations_and_find() -> None:
    store = RecordStore()
    store.clock.freeze(1_000)
    store.insert("Contact", "a", {"Email": "a@x.test"}, num=1)
    store.insert("Contact", "b", {"Email": "b@x.test"}, num=2)
    assert [r.id for r in store.find("Contact", "Email", "b@x.test")] == ["b"]
    store.clock.freeze(2_000)
    updated = store.update("Contact", "a", {"FirstName": "Zoë"})
    assert updated is not None and updated.modstamp == 2_000 and updated.data["Email"] == "a@x.test"
    assert store.set_deleted("Contact", "b", True)
    assert not store.set_deleted("Contact", "b", True)  # already deleted
    assert store.get("Contact", "b") is None
    deleted = store.get("Contact", "b", include_deleted=True)
    assert deleted is not None and deleted.deleted and deleted.modstamp == 2_000
    assert store.update("Contact", "b", {"x": 1}) is None  # deleted records are not updated
    assert store.objects() == {"Contact": 1}
    assert [r.id for r in store.dump("Contact")] == ["a", "b"]
    assert store.purge("Contact", "b") and store.get("Contact", "b", include_deleted=True) is None
    assert store.next_num("Contact", 10) == 1 and store.next_num("Contact") == 11


def test_purge_all_empties_one_object_and_leaves_the_others() -> None:
    store = RecordStore()
    store.insert_many(("Contact", f"c{i}", i, 1_000, 0, {"Email": f"{i}@x.test"}) for i in range(500))
    store.insert("Account", "a", {"Name": "Acme"}, num=1)
    assert store.purge_all("Contact") == 500
    assert store.objects() == {"Account": 1} and store.get("Account", "a") is not None
    store.insert("Contact", "again", {"Email": "again@x.test"}, num=501)
    assert [r.id for r in store.dump("Contact")] == ["again"]


def test_faults_are_seeded_and_match_endpoints() -> None:
    plan = FaultPlan(
        seed=42,
        rules=[
            FaultRule(endpoint="hs.search*", rate_limit=0.3, retry_after_s=2, server_error=0.1, drop=0.05)
        ],
    )
    a, b = FaultInjector(plan), FaultInjector(plan)
    seq_a = [a.decide("hs.search.contacts").kind for _ in range(2000)]
    seq_b = [b.decide("hs.search.contacts").kind for _ in range(2000)]
    assert seq_a == seq_b
    share = seq_a.count(FaultKind.RATE_LIMIT) / len(seq_a)
    assert 0.25 < share < 0.35
    assert 0.07 < seq_a.count(FaultKind.SERVER_ERROR) / len(seq_a) < 0.13
    assert a.decide("hs.objects.list").kind is None  # other endpoints untouched
    assert FaultInjector().decide("anything").kind is None  # off by default


def test_sliding_window() -> None:
    w = SlidingWindow(limit=3, window_s=10)
    assert [w.hit(now=t) for t in (0.0, 1.0, 2.0)] == [0.0, 0.0, 0.0]
    assert w.hit(now=3.0) == pytest.approx(7.0)  # wait until the first hit leaves the window
    assert w.hit(now=10.5) == 0.0


def _pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(b"v" * 40).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def test_oauth_code_flow_pkce_single_use_and_rotation() -> None:
    server = OAuthServer(access_ttl_s=60, rotate_refresh_tokens=True, require_pkce=True)
    client = server.register_client(["https://app.test/cb"])
    verifier, challenge = _pkce()
    with pytest.raises(OAuthError, match="redirect_uri"):
        server.issue_code(
            client.client_id,
            "https://app.test/cb/",
            scope="api",
            code_challenge=challenge,
            code_challenge_method="S256",
        )
    with pytest.raises(OAuthError, match="code_challenge"):
        server.issue_code(
            client.client_id,
            "https://app.test/cb",
            scope="api",
            code_challenge=None,
            code_challenge_method=None,
        )
    code = server.issue_code(
        client.client_id,
        "https://app.test/cb",
        scope="api",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    with pytest.raises(OAuthError) as bad:
        server.exchange_code(
            code=code,
            client_id=client.client_id,
            client_secret=client.client_secret,
            redirect_uri="https://app.test/cb",
            code_verifier="wrong" * 10,
        )
    assert bad.value.error == "invalid_grant"
    # The code was consumed by the failed attempt too: codes are single use.
    with pytest.raises(OAuthError):
        server.exchange_code(
            code=code,
            client_id=client.client_id,
            client_secret=client.client_secret,
            redirect_uri="https://app.test/cb",
            code_verifier=verifier,
        )
    code = server.issue_code(
        client.client_id,
        "https://app.test/cb",
        scope="api",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    grant = server.exchange_code(
        code=code,
        client_id=client.client_id,
        client_secret=client.client_secret,
        redirect_uri="https://app.test/cb",
        code_verifier=verifier,
    )
    assert grant.refresh_token and server.authenticate(grant.access_token) is not None
    rotated = server.refresh(
        refresh_token=grant.refresh_token, client_id=client.client_id, client_secret=client.client_secret
    )
    assert rotated.refresh_token and rotated.refresh_token != grant.refresh_token
    with pytest.raises(OAuthError, match="invalid_grant"):  # the old refresh token died on rotation
        server.refresh(
            refresh_token=grant.refresh_token, client_id=client.client_id, client_secret=client.client_secret
        )
    with pytest.raises(OAuthError) as wrong_secret:
        server.refresh(refresh_token=rotated.refresh_token, client_id=client.client_id, client_secret="nope")
    assert wrong_secret.value.error == "invalid_client"
    assert server.revoke(rotated.refresh_token)
    with pytest.raises(OAuthError):
        server.refresh(
            refresh_token=rotated.refresh_token,
            client_id=client.client_id,
            client_secret=client.client_secret,
        )


def test_token_expiry_after_n_calls() -> None:
    server = OAuthServer(access_ttl_s=60)
    client = server.register_client(["https://app.test/cb"])
    server.expire_after_calls = 2
    grant = server.issue_direct(client.client_id)
    assert server.authenticate(grant.access_token) is not None
    assert server.authenticate(grant.access_token) is not None
    assert server.authenticate(grant.access_token) is None
    other = server.issue_direct(client.client_id)
    server.expire_all_access_tokens()
    assert server.authenticate(other.access_token) is None


def test_fake_people_are_deterministic_unicode_and_tied() -> None:
    assert person(3, 17) == person(3, 17)
    assert person(3, 17) != person(4, 17)
    people = [person(1, i) for i in range(3000)]
    assert len({p.email for p in people}) == 3000
    assert all(p.email.isascii() for p in people)
    assert any(not p.first_name.isascii() or not p.last_name.isascii() for p in people)
    assert any(p.phone is None for p in people)
    stamps = [p.modified_ms for p in people]
    assert stamps == sorted(stamps)
    assert stamps[0] == stamps[TIE_GROUP - 1] != stamps[TIE_GROUP]
