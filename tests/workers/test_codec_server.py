"""Codec server: Temporal's remote codec protocol behind bearer tokens, namespace scoping, a CORS
allowlist, and an audit row for every authenticated request."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload, Payloads

from governance.keys import LocalKeyringProvider
from governance.vault import Vault
from schemas.errors import ConfigError
from schemas.settings import Settings
from store.codec_audit import list_audit
from store.engine import make_engine
from tests.ports import free_port
from workers.codec_access import DecodeLedger
from workers.codec_server import (
    DEFAULT_ALLOWED_ORIGINS,
    CodecServerSettings,
    create_codec_app,
    parse_tokens,
    serve_codec_server,
)
from workers.converter import ENCODING, VaultPayloadCodec, make_data_converter

OPS_TOKEN = "ops-secret-token-0123456789abcdef"
OTHER_TOKEN = "other-secret-token-fedcba9876543210"
NS = "crmhub-prod"
OTHER_NS = "crmhub-staging"
UI = "http://localhost:8233"


@pytest.fixture
def vault(db_engine: Engine, tmp_path: Path) -> Vault:
    return Vault(db_engine, LocalKeyringProvider(tmp_path / "keyring.json"))


@pytest.fixture
def settings() -> CodecServerSettings:
    return CodecServerSettings(tokens=parse_tokens(f"alice:{OPS_TOKEN}:{NS},bob:{OTHER_TOKEN}:{OTHER_NS}"))


@pytest.fixture
def client(settings: CodecServerSettings, vault: Vault) -> TestClient:
    return TestClient(create_codec_app(settings, vault))


def _encrypted_body(vault: Vault, namespace: str, values: list[object]) -> str:
    payloads = asyncio.run(make_data_converter(VaultPayloadCodec(vault, namespace)).encode(values))
    return json_format.MessageToJson(Payloads(payloads=payloads))


def _payloads(body: str) -> list[Payload]:
    return list(json_format.Parse(body, Payloads()).payloads)


def _headers(token: str = OPS_TOKEN, namespace: str = NS, **extra: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "X-Namespace": namespace,
        "Content-Type": "application/json",
        **extra,
    }


def _audit(engine: Engine) -> list[tuple[str, str, str, int, str]]:
    with engine.connect() as conn:
        return [(r.token_id, r.namespace, r.operation, r.payloads, r.outcome) for r in list_audit(conn)]


# ---- settings ----------------------------------------------------------------------------


def test_tokens_parse_from_env_and_origins_default_to_the_dev_ui() -> None:
    s = CodecServerSettings.from_env(
        {"CRMHUB_CODEC_TOKENS": f" alice:{OPS_TOKEN}:{NS} , bob:{OTHER_TOKEN}:{OTHER_NS}"}
    )
    assert [(t.id, t.token.get_secret_value(), t.namespace) for t in s.tokens] == [
        ("alice", OPS_TOKEN, NS),
        ("bob", OTHER_TOKEN, OTHER_NS),
    ]
    assert s.allowed_origins == DEFAULT_ALLOWED_ORIGINS == ("http://127.0.0.1:8233", "http://localhost:8233")
    assert OPS_TOKEN not in repr(s)
    custom = CodecServerSettings.from_env({"CRMHUB_CODEC_ALLOWED_ORIGINS": "https://temporal.example.com"})
    assert custom.allowed_origins == ("https://temporal.example.com",)


def test_a_token_may_contain_colons() -> None:
    [tok] = parse_tokens("ci:abc:def:ghi:jkl:mnop:qrst:default")
    assert (tok.id, tok.token.get_secret_value(), tok.namespace) == (
        "ci",
        "abc:def:ghi:jkl:mnop:qrst",
        "default",
    )


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"CRMHUB_CODEC_TOKENS": "alice-no-colons"}, "entry 1 must be id:token:namespace"),
        ({"CRMHUB_CODEC_TOKENS": "alice:short-secret:ns"}, "entry 1: token: .*at least 16"),
        ({"CRMHUB_CODEC_TOKENS": f"a b:{OPS_TOKEN}:ns"}, "entry 1: id"),
        ({"CRMHUB_CODEC_TOKENS": f"alice:{OPS_TOKEN}:ns,alice:{OTHER_TOKEN}:ns"}, "ids must be unique"),
        ({"CRMHUB_CODEC_TOKENS": f"alice:{OPS_TOKEN}:ns,bob:{OPS_TOKEN}:ns"}, "must be distinct"),
        ({"CRMHUB_CODEC_ALLOWED_ORIGINS": "*"}, "not an exact origin"),
        ({"CRMHUB_CODEC_ALLOWED_ORIGINS": "http://localhost:8233/"}, "not an exact origin"),
    ],
)
def test_bad_settings_are_config_errors_that_never_echo_a_secret(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        CodecServerSettings.from_env(env)
    for secret in (OPS_TOKEN, OTHER_TOKEN, "short-secret"):
        assert secret not in str(info.value)


def test_the_server_refuses_to_run_without_tokens(vault: Vault, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CRMHUB_CODEC_TOKENS"):
        create_codec_app(CodecServerSettings(), vault)
    with pytest.raises(ConfigError, match="CRMHUB_CODEC_TOKENS"):
        serve_codec_server(Settings(data_dir=tmp_path / "data"), codec_settings=CodecServerSettings())
    assert not (tmp_path / "data").exists()  # refused before creating a keyring or database


def test_the_server_decodes_with_the_configured_key_provider(
    tmp_path: Path, db_url: str, settings: CodecServerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' keys: with ``governance.key_provider: env`` the codec server's vault unwraps with
    the KEK of the environment, not a local keyring file (services.wiring.make_vault)."""
    import base64

    import uvicorn

    import workers.codec_server as codec_server
    from governance.keys import EnvKeyProvider

    monkeypatch.setenv("CRMHUB_KEK", base64.b64encode(os.urandom(32)).decode())
    vaults: list[Vault] = []
    served: list[object] = []

    def build(
        codec_settings: CodecServerSettings,
        vault: Vault,
        *,
        bind_host: str | None,
        decode_ledger: DecodeLedger,
    ) -> object:
        vaults.append(vault)
        assert bind_host == "127.0.0.1"  # the default bind, which loopback-dev checks
        assert decode_ledger.signer is not None  # decodes are ledgered under the deployment's signer
        return create_codec_app(codec_settings, vault, bind_host=bind_host, decode_ledger=decode_ledger)

    monkeypatch.setattr(codec_server, "create_codec_app", build)
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: served.append(app))
    configured = Settings(data_dir=tmp_path / "data", database_url=db_url, governance={"key_provider": "env"})
    serve_codec_server(configured, codec_settings=settings)
    assert len(served) == 1 and len(vaults) == 1
    assert isinstance(vaults[0].provider, EnvKeyProvider)
    assert not (tmp_path / "data" / "keyring.json").exists()  # no local keyring was created


# ---- authentication and scoping ----------------------------------------------------------


def test_healthz_needs_no_token(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert (resp.status_code, resp.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token-0123456789", f"Basic {OPS_TOKEN}", f"Bearer {OPS_TOKEN}x"],
)
@pytest.mark.parametrize("path", ["/decode", "/encode"])
def test_missing_or_wrong_token_is_401_and_decodes_nothing(
    client: TestClient, vault: Vault, db_engine: Engine, path: str, authorization: str | None
) -> None:
    headers = {"X-Namespace": NS, "Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    resp = client.post(path, content=_encrypted_body(vault, NS, ["secret"]), headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert set(resp.json()) == {"detail"}  # an error, never payloads
    assert _audit(db_engine) == []  # no identity to record; the refusal goes to the log


def test_token_for_another_namespace_is_403_and_audited(
    client: TestClient, vault: Vault, db_engine: Engine
) -> None:
    body = _encrypted_body(vault, OTHER_NS, ["staging data", 2])
    resp = client.post("/decode", content=body, headers=_headers(OPS_TOKEN, OTHER_NS))
    assert resp.status_code == 403
    assert set(resp.json()) == {"detail"}  # an error, never payloads
    resp = client.post("/decode", content=body, headers=_headers(OPS_TOKEN, namespace=""))
    assert resp.status_code == 403
    assert _audit(db_engine) == [
        ("alice", OTHER_NS, "decode", 2, "forbidden"),
        ("alice", "", "decode", 2, "forbidden"),
    ]


# ---- the protocol ------------------------------------------------------------------------


def test_decode_real_payloads_and_audit_who_when_what(
    client: TestClient, vault: Vault, db_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    values: list[object] = [{"email": "ada@example.invalid"}, "hello", 42, None]
    body = _encrypted_body(vault, NS, values)
    assert all(p.metadata["encoding"] == ENCODING for p in json_format.Parse(body, Payloads()).payloads)
    before = datetime.now(UTC)
    with caplog.at_level(logging.INFO, logger="crmhub.codec_server.audit"):
        resp = client.post("/decode", content=body, headers=_headers())
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    decoded = _payloads(resp.text)
    assert [p.metadata["encoding"] for p in decoded] == [
        b"json/plain",
        b"json/plain",
        b"json/plain",
        b"binary/null",
    ]
    assert [json.loads(p.data) for p in decoded[:3]] == values[:3]

    with db_engine.connect() as conn:
        [row] = list_audit(conn)
    assert (row.token_id, row.namespace, row.operation, row.payloads, row.outcome) == (
        "alice",
        NS,
        "decode",
        4,
        "ok",
    )
    assert before - timedelta(seconds=1) <= row.at <= datetime.now(UTC)
    assert row.client is not None
    assert "token_id=alice namespace=crmhub-prod payloads=4 outcome=ok" in caplog.text
    assert OPS_TOKEN not in caplog.text


def test_encode_then_decode_through_the_server_and_locally(
    client: TestClient, vault: Vault, db_engine: Engine
) -> None:
    plain = Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b'{"signal": "resume"}')])
    resp = client.post("/encode", content=json_format.MessageToJson(plain), headers=_headers())
    assert resp.status_code == 200
    [sealed] = _payloads(resp.text)
    assert sealed.metadata["encoding"] == ENCODING
    assert b"resume" not in sealed.data
    # a worker of that namespace reads it
    assert VaultPayloadCodec(vault, NS).decode_sync([sealed]) == list(plain.payloads)
    assert [r[2:] for r in _audit(db_engine)] == [("encode", 1, "ok")]


def test_payloads_of_another_namespace_fail_even_with_a_valid_token(
    client: TestClient, vault: Vault, db_engine: Engine
) -> None:
    body = _encrypted_body(vault, OTHER_NS, ["staging only"])
    resp = client.post("/decode", content=body, headers=_headers())  # alice, her own namespace
    assert resp.status_code == 400
    assert "could not be decoded" in resp.json()["detail"]
    assert _audit(db_engine) == [("alice", NS, "decode", 1, "failed")]


def test_tampered_payload_is_an_error_not_ciphertext(client: TestClient, vault: Vault) -> None:
    payloads = json_format.Parse(_encrypted_body(vault, NS, ["x"]), Payloads())
    payloads.payloads[0].data = payloads.payloads[0].data[:-1] + bytes([payloads.payloads[0].data[-1] ^ 1])
    resp = client.post("/decode", content=json_format.MessageToJson(payloads), headers=_headers())
    assert resp.status_code == 400
    assert set(resp.json()) == {"detail"}  # an error, never payloads


def test_foreign_payloads_pass_through(client: TestClient) -> None:
    plain = Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b'"not ours"')])
    resp = client.post("/decode", content=json_format.MessageToJson(plain), headers=_headers())
    assert resp.status_code == 200
    assert _payloads(resp.text) == list(plain.payloads)


@pytest.mark.parametrize(
    "body",
    ["not json", '{"payloads": "nope"}', '{"payloads": [{"data": 5}]}', '{"payloads": [{"metadata": []}]}'],
)
def test_malformed_body_is_400(client: TestClient, db_engine: Engine, body: str) -> None:
    resp = client.post("/decode", content=body, headers=_headers())
    assert resp.status_code == 400
    assert _audit(db_engine) == [("alice", NS, "decode", 0, "failed")]


def test_oversized_body_is_413(settings: CodecServerSettings, vault: Vault) -> None:
    small = TestClient(create_codec_app(settings.model_copy(update={"max_body_bytes": 1024}), vault))
    resp = small.post("/decode", content=_encrypted_body(vault, NS, ["x" * 2000]), headers=_headers())
    assert resp.status_code == 413


def test_no_audit_row_no_decode(settings: CodecServerSettings, vault: Vault, tmp_path: Path) -> None:
    unmigrated = make_engine(f"sqlite:///{tmp_path / 'no-tables.db'}")
    try:
        app = create_codec_app(settings, vault, audit_engine=unmigrated)
        resp = TestClient(app).post(
            "/decode", content=_encrypted_body(vault, NS, ["secret"]), headers=_headers()
        )
    finally:
        unmigrated.dispose()
    assert resp.status_code == 503
    assert "secret" not in resp.text


# ---- CORS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", DEFAULT_ALLOWED_ORIGINS)
def test_cors_headers_for_the_ui_origin_only(client: TestClient, vault: Vault, origin: str) -> None:
    body = _encrypted_body(vault, NS, ["x"])
    ok = client.post("/decode", content=body, headers=_headers(Origin=origin))
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == origin
    denied = client.post("/decode", content=body, headers=_headers(Origin="http://evil.example"))
    assert "access-control-allow-origin" not in denied.headers
    # errors carry CORS headers too, so the UI can show them
    unauth = client.post("/decode", content=body, headers={"Origin": origin})
    assert (unauth.status_code, unauth.headers["access-control-allow-origin"]) == (401, origin)


def test_preflight_from_the_ui_is_answered_without_a_token(client: TestClient) -> None:
    resp = client.options(
        "/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == UI
    assert "POST" in resp.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in resp.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-namespace"} <= allowed


def test_preflight_from_another_origin_gets_no_allow_origin(client: TestClient) -> None:
    resp = client.options(
        "/decode",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert resp.status_code == 400
    assert "access-control-allow-origin" not in resp.headers


def test_configured_origin_replaces_the_defaults(settings: CodecServerSettings, vault: Vault) -> None:
    ui = "https://temporal.example.com"
    app = create_codec_app(settings.model_copy(update={"allowed_origins": (ui,)}), vault)
    c = TestClient(app)
    assert c.get("/healthz", headers={"Origin": ui}).headers["access-control-allow-origin"] == ui
    assert "access-control-allow-origin" not in c.get("/healthz", headers={"Origin": UI}).headers


# ---- the command, for real -------------------------------------------------------------------


_RUN_COMMAND = """
import sys, typer
from api.cli_codec import register
app = typer.Typer()
app.callback()(lambda: None)  # a group, as in api.cli
register(app)
app(sys.argv[1:])
"""


@pytest.mark.integration
def test_codec_server_command_serves_over_http(db_url: str, db_engine: Engine, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    vault = Vault(db_engine, LocalKeyringProvider(data_dir / "keyring.json"))  # the workers' keys
    body = _encrypted_body(vault, NS, [{"email": "ada@example.invalid"}])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(
        CRMHUB_DATA_DIR=str(data_dir),
        CRMHUB_DATABASE_URL=db_url,
        CRMHUB_CODEC_TOKENS=f"alice:{OPS_TOKEN}:{NS}",
        CRMHUB_LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_COMMAND, "codec-server", "--port", str(port)],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "codec server did not start"
            time.sleep(0.1)
        resp = httpx.post(f"{base}/decode", content=body, headers=_headers(Origin=UI))
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == UI
        [payload] = _payloads(resp.text)
        assert json.loads(payload.data) == {"email": "ada@example.invalid"}
        assert httpx.post(f"{base}/decode", content=body).status_code == 401
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
    assert OPS_TOKEN not in output
    assert _audit(db_engine) == [("alice", NS, "decode", 1, "ok")]


# ---- loopback-dev mode (the dev server's UI, which sends no token) ------------------------------

LOCAL_UI = "http://127.0.0.1:8233"


def _loopback_client(
    vault: Vault, peer: str = "127.0.0.1", base_url: str = "http://127.0.0.1:8081"
) -> TestClient:
    settings = CodecServerSettings(tokens=parse_tokens(f"alice:{OPS_TOKEN}:{NS}"), loopback_namespace=NS)
    app = create_codec_app(settings, vault, bind_host="127.0.0.1")
    return TestClient(app, base_url=base_url, client=(peer, 40000))


def _ui_headers(origin: str = LOCAL_UI, namespace: str = NS) -> dict[str, str]:
    # what the dev server's UI 2.54.1 sends (observed in Chromium): no Authorization, no cookie
    return {"Content-Type": "application/json", "X-Namespace": namespace, "Origin": origin}


def test_loopback_dev_decodes_for_the_local_ui_and_audits_it(vault: Vault, db_engine: Engine) -> None:
    client = _loopback_client(vault)
    body = _encrypted_body(vault, NS, [{"email": "ada@example.invalid"}])
    resp = client.post("/decode?preserveStorageRefs=true", content=body, headers=_ui_headers())
    assert resp.status_code == 200, resp.text
    assert json.loads(_payloads(resp.text)[0].data) == {"email": "ada@example.invalid"}
    assert resp.headers["access-control-allow-origin"] == LOCAL_UI
    assert _audit(db_engine) == [("ui-loopback", NS, "decode", 1, "ok")]


def test_loopback_dev_still_takes_tokens_and_refuses_a_wrong_one(vault: Vault, db_engine: Engine) -> None:
    client = _loopback_client(vault)
    body = _encrypted_body(vault, NS, ["x"])
    assert client.post("/decode", content=body, headers=_headers()).status_code == 200
    # a wrong token is not rescued by loopback-dev: the caller meant to authenticate
    wrong = client.post("/decode", content=body, headers={**_ui_headers(), "Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert _audit(db_engine) == [("alice", NS, "decode", 1, "ok")]


@pytest.mark.parametrize(
    ("peer", "base_url", "headers"),
    [
        ("10.1.2.3", "http://127.0.0.1:8081", _ui_headers()),  # not a loopback peer
        ("127.0.0.1", "http://crmhub.example:8081", _ui_headers()),  # Host not loopback (rebinding)
        ("127.0.0.1", "http://127.0.0.1:8081", _ui_headers(origin="http://evil.example")),
        ("127.0.0.1", "http://127.0.0.1:8081", {"Content-Type": "application/json", "X-Namespace": NS}),
        ("127.0.0.1", "http://127.0.0.1:8081", _ui_headers(namespace=OTHER_NS)),
    ],
    ids=["remote-peer", "foreign-host", "foreign-origin", "no-origin", "other-namespace"],
)
def test_loopback_dev_refuses_anything_but_the_local_ui(
    vault: Vault, db_engine: Engine, peer: str, base_url: str, headers: dict[str, str]
) -> None:
    client = _loopback_client(vault, peer=peer, base_url=base_url)
    resp = client.post("/decode", content=_encrypted_body(vault, NS, ["x"]), headers=headers)
    assert resp.status_code == 401
    assert "x" not in resp.text
    assert _audit(db_engine) == []


def test_loopback_dev_is_off_by_default_and_only_on_a_loopback_bind(vault: Vault, db_engine: Engine) -> None:
    off = TestClient(
        create_codec_app(
            CodecServerSettings(tokens=parse_tokens(f"alice:{OPS_TOKEN}:{NS}")), vault, bind_host="127.0.0.1"
        ),
        base_url="http://127.0.0.1:8081",
        client=("127.0.0.1", 40000),
    )
    assert (
        off.post("/decode", content=_encrypted_body(vault, NS, ["x"]), headers=_ui_headers()).status_code
        == 401
    )
    for host in ("0.0.0.0", "192.0.2.10", None):  # noqa: S104 - asserts such a bind is refused
        with pytest.raises(ConfigError, match="loopback"):
            create_codec_app(CodecServerSettings(loopback_namespace=NS), vault, bind_host=host)
    # loopback-dev alone (no token) is enough to run, on loopback
    create_codec_app(CodecServerSettings(loopback_namespace=NS), vault, bind_host="::1")


def test_loopback_dev_command_refuses_a_non_loopback_bind(db_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(CRMHUB_DATA_DIR=str(tmp_path / "data"), CRMHUB_DATABASE_URL=db_url)
    res = subprocess.run(
        [sys.executable, "-m", "api", "codec-server", "--loopback-dev", "--host", "0.0.0.0",  # noqa: S104
         "--port", str(free_port())],
        env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert "loopback-dev mode needs the codec server bound to a loopback address" in res.stderr
