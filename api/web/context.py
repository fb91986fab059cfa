"""What the web app's routes share: settings, database, vault, OAuth service, connector factory,
the Temporal client (connected lazily, in the server's event loop), templates, metrics, the login
rate limit and the bounded password hashing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from fastapi.templating import Jinja2Templates
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api.web.login_limit import LoginLimiter
from api.web.security import PasswordHashing
from governance.pseudonym import Pseudonymizer
from governance.vault import Vault
from schemas.errors import ConfigError, TransientError
from schemas.settings import Settings
from services.connectors import ConnectionConnectors
from services.credentials import OAuthService
from services.sync_setup import SyncSetup
from services.wiring import subprocessor_registry

__all__ = ["Metrics", "TemporalGetter", "WebContext"]

TemporalGetter = Callable[[], Awaitable[Client]]
"""Returns a connected Temporal client or raises :class:`TransientError` (Temporal unreachable)."""

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"


class Metrics:
    """The web app's Prometheus counters, in a registry of its own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.logins = Counter(
            "crmhub_web_logins", "Login attempts by outcome", ["outcome"], registry=self.registry
        )
        self.oauth_connects = Counter(
            "crmhub_web_oauth_connects",
            "OAuth connect callbacks by provider and outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.responses = Counter(
            "crmhub_web_responses", "HTTP responses by status class", ["status_class"], registry=self.registry
        )


class LazyTemporal:
    """Connects once, in the event loop that first asks; a failure is remembered for a few seconds so a
    page with Temporal down does not wait on every request. The client's payload codec seals through
    ``vault`` (the web app's, over its engine); without one it makes its own vault and engine, which
    :meth:`close` disposes (the web app's close calls it)."""

    def __init__(self, settings: Settings, vault: Vault | None = None, *, retry_after_s: float = 5.0) -> None:
        self.settings = settings
        self.vault = vault
        self.retry_after_s = retry_after_s
        self._client: Client | None = None
        self._owned: Engine | None = None
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            if self._failed_at is not None and time.monotonic() - self._failed_at < self.retry_after_s:
                raise TransientError(f"Temporal at {self.settings.temporal.address} is not reachable")
            from workers.client import connect

            try:
                connected = await connect(self.settings, vault=self.vault)
            except ConfigError as exc:
                self._failed_at = time.monotonic()
                raise TransientError(str(exc)) from None
            if self.vault is None:
                self._owned = connected.engine
            self._client = connected.client
            return self._client

    def close(self) -> None:
        """Dispose the engine this getter made (none when it was given the web app's vault)."""
        if self._owned is not None:
            self._owned.dispose()


@dataclass
class WebContext:
    """Shared by every request (each member is thread-safe)."""

    settings: Settings
    engine: Engine
    vault: Vault
    oauth: OAuthService
    connectors: ConnectionConnectors
    temporal: TemporalGetter
    templates: Jinja2Templates
    pseudonymizer: Pseudonymizer
    login_limiter: LoginLimiter
    passwords: PasswordHashing
    metrics: Metrics = field(default_factory=Metrics)
    owns_engine: bool = True

    @cached_property
    def sync_setup(self) -> SyncSetup:
        """The new-sync checks and mapping editor (:mod:`services.sync_setup`), built on first use."""
        return SyncSetup(self.engine, self.connectors, subprocessor_registry(self.settings))

    def close(self) -> None:
        self.oauth.close()
        if isinstance(self.temporal, LazyTemporal):
            self.temporal.close()
        if self.owns_engine:
            self.engine.dispose()
