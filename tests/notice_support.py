"""Real receivers for controller notices: a local aiosmtpd SMTP server and a loopback webhook
receiver that verifies Standard Webhooks signatures (services.webhook_signing) with a replay guard;
the fixtures ``smtp`` (started) and ``receiver`` for a test module to import; :func:`drill_settings`
for an end-to-end breach drill; :func:`acme_vault` (tenant ``acme`` and a vault) for service tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine

from governance.keys import LocalKeyringProvider
from governance.vault import Vault
from schemas.settings import Settings
from services import webhook_signing
from store import tenants as tenant_store
from tests.ports import free_port


def acme_vault(engine: Engine, tmp_path: Path, now: datetime) -> Vault:
    """Tenant ``acme`` (EEA, no subprocessors) created at ``now``, and a vault on a local keyring."""
    with engine.begin() as conn:
        tenant_store.create_tenant(
            conn, id="acme", name="Acme", home_region="eea", authorised_subprocessors=[], now=now
        )
    return Vault(engine, LocalKeyringProvider(tmp_path / "keyring.json"))


class _Collect:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.recipients: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


class SmtpServer:
    """aiosmtpd on 127.0.0.1:port; :meth:`stop` and :meth:`start` again to play an outage."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = _Collect()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@dataclass
class WebhookReceiver:
    """An HTTP server on loopback that accepts only correctly signed, fresh, unseen deliveries."""

    secret: str = ""
    accepted: list[tuple[str, bytes]] = field(default_factory=list)
    accepted_headers: list[dict[str, str]] = field(default_factory=list)  # of each accepted delivery
    rejected: list[str] = field(default_factory=list)
    guard: webhook_signing.ReplayGuard = field(default_factory=webhook_signing.ReplayGuard)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    msg_id = webhook_signing.verify(
                        receiver.secret, dict(self.headers.items()), body, now=int(time.time()),
                        guard=receiver.guard,
                    )  # fmt: skip
                except webhook_signing.WebhookRejected as exc:
                    receiver.rejected.append(exc.code or "")
                    self.send_response(401)
                else:
                    receiver.accepted.append((msg_id, body))
                    receiver.accepted_headers.append(dict(self.headers.items()))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/crmhub-notices"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A started local SMTP server, stopped at the end of the test."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on loopback (set ``.secret`` to the contact's), closed at the end."""
    r = WebhookReceiver()
    yield r
    r.close()


def drill_settings(settings: Settings, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``settings`` sending notices through ``smtp``, with the dispatch schedule's slots an hour apart
    (a delivery within a test is ``incident notify``'s own start), and this process's ``CRMHUB_*``
    environment set to match, so the in-process ``crmhub`` CLI sees the same stack."""
    from tests.sync_support import worker_env

    drill = settings.model_copy(
        update={
            "notices": settings.notices.model_copy(update={"smtp_port": smtp.port, "timeout_s": 5}),
            "schedules": settings.schedules.model_copy(
                update={"notice_dispatch_interval": timedelta(hours=1)}
            ),
        }
    )
    for key, value in worker_env(drill).items():
        if key.startswith("CRMHUB_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("CRMHUB_NOTICES__SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("COLUMNS", "250")
    return drill
