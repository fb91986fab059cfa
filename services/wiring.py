"""The one place that builds crmhub's object graph from settings: database engine, vault and its key
provider, subprocessor registry, checkpoint signer, pseudonymizer, transforms, the credentials
service and the connector factory.

:func:`deps_from_settings` builds the whole graph (:class:`ActivityDeps`) for a worker; the CLI, the
web app, the codec server, the demo, tests and benchmarks take the parts they need from the same
builders (:func:`key_provider`, :func:`make_vault`, :func:`credentials`, :func:`connector_factory`,
:func:`sync_setup`),
so every process uses the configured key provider and the configured OAuth clients
(:mod:`services.oauth_clients`). Tests build an :class:`ActivityDeps` directly when they need to
swap a part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from connectors.oauth import OAuthProviderConfig
from governance.keys import KeyProvider, load_key_provider
from governance.lineage import CheckpointSigner
from governance.policy import TransformRegistry, default_registry
from governance.pseudonym import Pseudonymizer
from governance.registry import Registry, load_registry
from governance.vault import Vault
from schemas.settings import Settings
from services.connectors import ConnectionConnectors, ConnectorFactory
from services.credentials import OAuthService
from services.oauth_clients import api_ca_files, oauth_configs
from services.sync_setup import SyncSetup
from store.engine import Engine, make_engine

__all__ = [
    "ActivityDeps",
    "connector_factory",
    "credentials",
    "default_subprocessors_file",
    "deps_from_settings",
    "key_provider",
    "make_vault",
    "subprocessor_registry",
    "sync_setup",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ActivityDeps:
    """Everything the Temporal activities (:mod:`workflows`) use; shared by all activity threads
    (each member is thread-safe)."""

    settings: Settings
    engine: Engine
    vault: Vault
    pseudonymizer: Pseudonymizer
    subprocessors: Registry
    signer: CheckpointSigner
    connector_factory: ConnectorFactory
    transforms: TransformRegistry = field(default=default_registry)
    clock: Callable[[], datetime] = field(default=_utcnow)
    closers: tuple[Callable[[], None], ...] = ()  # what close() releases (the OAuth HTTP clients)

    def close(self) -> None:
        """Release what the deps hold open; the worker calls it on shutdown."""
        for release in self.closers:
            release()


def default_subprocessors_file() -> Path:
    """The registry shipped with crmhub (``governance/subprocessors.yaml``)."""
    import governance

    return Path(governance.__file__).resolve().parent / "subprocessors.yaml"


def key_provider(settings: Settings) -> KeyProvider:
    """The configured key-encryption-key provider (local keyring under data_dir by default)."""
    gov = settings.governance
    if gov.key_provider == "local":
        return load_key_provider("local", path=settings.data_dir.resolve() / gov.keyring_file)
    if gov.key_provider == "env":
        return load_key_provider("env", var=gov.kek_env_var)
    return load_key_provider(gov.key_provider)


def make_vault(settings: Settings, engine: Engine) -> Vault:
    """The vault over ``engine`` with the configured key provider."""
    return Vault(engine, key_provider(settings), shred_check_s=settings.governance.shred_check_s)


def credentials(
    settings: Settings,
    engine: Engine,
    vault: Vault,
    *,
    redirect_uri: str | None = None,
    only: Iterable[str] | None = None,
    configs: Iterable[OAuthProviderConfig] | None = None,
) -> OAuthService:
    """The credentials service with the configured OAuth clients (of the providers ``only``, if
    given) or ``configs``; close it when done."""
    chosen = (
        list(configs)
        if configs is not None
        else oauth_configs(settings, redirect_uri=redirect_uri, only=only)
    )
    return OAuthService(engine, vault, chosen)


def subprocessor_registry(settings: Settings) -> Registry:
    """The deployment's subprocessor and transfer registry (``governance.subprocessors_file``, else
    the packaged one)."""
    return load_registry(settings.governance.subprocessors_file or default_subprocessors_file())


def connector_factory(settings: Settings, engine: Engine, oauth: OAuthService) -> ConnectionConnectors:
    """Connectors of stored connections: tokens from ``oauth``, options and CA files from settings."""
    return ConnectionConnectors(
        engine, oauth.token_source, ca_files=api_ca_files(settings), options=settings.connectors
    )


@contextmanager
def sync_setup(settings: Settings, engine: Engine) -> Iterator[SyncSetup]:
    """The new-sync checks (:class:`services.sync_setup.SyncSetup`) over ``engine``, the tenants'
    connections (tokens through the configured OAuth clients) and the registry, for one block."""
    vault = make_vault(settings, engine)
    oauth = credentials(settings, engine, vault)
    try:
        yield SyncSetup(engine, connector_factory(settings, engine, oauth), subprocessor_registry(settings))
    finally:
        oauth.close()


def deps_from_settings(
    settings: Settings,
    *,
    engine: Engine | None = None,
    vault: Vault | None = None,
    oauth_configs: Iterable[OAuthProviderConfig] | None = None,
) -> ActivityDeps:
    """Build the worker's dependencies from settings (engine and vault may be shared with the Temporal
    client's codec). A bad key provider, registry, signing key, OAuth client or connector option
    fails here, at start."""
    engine = engine or make_engine(settings.effective_database_url)
    vault = vault or make_vault(settings, engine)
    subprocessors = subprocessor_registry(settings)
    signer = CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)
    oauth = credentials(settings, engine, vault, configs=oauth_configs)
    return ActivityDeps(
        settings=settings,
        engine=engine,
        vault=vault,
        pseudonymizer=Pseudonymizer(vault, shred_check_s=settings.governance.shred_check_s),
        subprocessors=subprocessors,
        signer=signer,
        connector_factory=connector_factory(settings, engine, oauth),
        closers=(oauth.close,),
    )
