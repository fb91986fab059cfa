"""One way to connect to Temporal: address, namespace, TLS/API key from settings, and crmhub's data
converter (pydantic + payload encryption), so nothing reaches history in plaintext."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import TLSConfig

from governance.vault import Vault
from schemas.errors import ConfigError
from schemas.settings import Settings
from services.wiring import make_vault
from store.engine import make_engine
from store.migrate import ensure_current
from workers.converter import VaultPayloadCodec, make_data_converter

__all__ = ["Connected", "connect", "make_runtime"]


def make_runtime(settings: Settings) -> Runtime | None:
    """A runtime exporting the SDK's metrics to Prometheus when ``worker.metrics_port`` is set."""
    port = settings.worker.metrics_port
    if port is None:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}")))


@dataclass
class Connected:
    client: Client
    engine: Engine
    vault: Vault


async def connect(
    settings: Settings, *, runtime: Runtime | None = None, vault: Vault | None = None
) -> Connected:
    """Connect with crmhub's encrypted data converter. Raises ConfigError naming the fix.

    ``vault``: the caller's (the codec seals and opens through it and its engine, which the caller
    keeps and disposes); by default a vault over a new engine, which ``Connected.engine`` returns."""
    t = settings.temporal
    tls: bool | TLSConfig = False
    if t.tls:
        tls = TLSConfig(
            client_cert=t.tls_client_cert.read_bytes() if t.tls_client_cert else None,
            client_private_key=t.tls_client_key.read_bytes() if t.tls_client_key else None,
        )
    api_key = os.environ.get(t.api_key_env) if t.api_key_env else None
    if t.api_key_env and not api_key:
        raise ConfigError(f"temporal.api_key_env names {t.api_key_env}, which is not set; export it")
    ensure_current(settings.effective_database_url)
    owned = vault is None
    engine = make_engine(settings.effective_database_url) if vault is None else vault.engine
    vault = vault or make_vault(settings, engine)
    codec = VaultPayloadCodec(vault, t.namespace)
    try:
        client = await Client.connect(
            t.address,
            namespace=t.namespace,
            data_converter=make_data_converter(codec),
            tls=tls,
            api_key=api_key,
            runtime=runtime,
        )
    except RuntimeError as exc:
        if owned:
            engine.dispose()
        raise ConfigError(
            f"cannot reach Temporal at {t.address} (namespace {t.namespace}); start the dev server with "
            f"'crmhub temporal up' or fix temporal.address (CRMHUB_TEMPORAL__ADDRESS)"
        ) from exc
    return Connected(client, engine, vault)
