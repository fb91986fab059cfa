"""What the sync activities need, injected: settings, database, vault, pseudonymizer, subprocessor
registry, checkpoint signer, transforms and a connector factory. ``deps_from_settings`` builds
them for a worker; tests build an :class:`ActivityDeps` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from connectors.oauth import OAuthProviderConfig, OAuthService, configs_from_sandbox
from governance.keys import KeyProvider, load_key_provider
from governance.lineage import CheckpointSigner
from governance.policy import TransformRegistry, default_registry
from governance.pseudonym import Pseudonymizer
from governance.registry import Registry, load_registry
from governance.vault import Vault
from schemas.errors import ConfigError
from schemas.settings import Settings
from store.engine import Engine, make_engine
from workflows.connectors import ConnectionConnectors, ConnectorFactory

__all__ = [
    "ActivityDeps",
    "default_subprocessors_file",
    "deps_from_settings",
    "key_provider",
    "oauth_configs_for",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ActivityDeps:
    """Everything :class:`~workflows.activities.SyncActivities` uses; shared by all activity threads
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


def oauth_configs_for(settings: Settings) -> list[OAuthProviderConfig]:
    """OAuth client registrations a worker refreshes tokens with: the local sandbox's when
    ``<data_dir>/sandbox.json`` exists, else none (pass production ones to ``deps_from_settings``)."""
    info_path = settings.data_dir / "sandbox.json"
    if not info_path.is_file():
        return []
    from sandbox.runtime import SandboxInfo

    try:
        info = SandboxInfo.read(info_path)
    except (OSError, ValueError, TypeError, KeyError):
        raise ConfigError(f"{info_path} is unreadable; restart the sandbox to rewrite it") from None
    return list(configs_from_sandbox(info))


def deps_from_settings(
    settings: Settings,
    *,
    engine: Engine | None = None,
    vault: Vault | None = None,
    oauth_configs: Iterable[OAuthProviderConfig] | None = None,
) -> ActivityDeps:
    """Build the worker's dependencies from settings (engine and vault may be shared with the Temporal
    client's codec). A bad key provider, registry or signing key fails here, at start."""
    engine = engine or make_engine(settings.effective_database_url)
    vault = vault or Vault(engine, key_provider(settings))
    registry_file = settings.governance.subprocessors_file or default_subprocessors_file()
    subprocessors = load_registry(registry_file)
    signer = CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)
    configs = list(oauth_configs) if oauth_configs is not None else oauth_configs_for(settings)
    oauth = OAuthService(engine, vault, configs)
    factory = ConnectionConnectors(
        engine, oauth.token_source, data_dir=settings.data_dir, options=settings.connectors
    )
    return ActivityDeps(
        settings=settings,
        engine=engine,
        vault=vault,
        pseudonymizer=Pseudonymizer(vault),
        subprocessors=subprocessors,
        signer=signer,
        connector_factory=factory,
        closers=(oauth.close,),
    )
