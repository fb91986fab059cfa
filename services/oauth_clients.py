"""crmhub's OAuth client registrations, from settings: what the CLI, the web app, the workers and the
demo all connect and refresh tokens with.

Per provider (``salesforce``, ``hubspot``), the first of:

1. the ``oauth.<provider>`` block of settings — ``temporal.yaml`` or the environment
   (``CRMHUB_OAUTH__SALESFORCE__CLIENT_ID``, ``…__CLIENT_SECRET``, ``…__LOGIN_URL``, ``…__CA_FILE``,
   ``…__EXTRA_HOSTS``; ``CRMHUB_OAUTH__HUBSPOT__APP_URL``, ``…__API_URL`` …);
2. that provider's block in the OAuth clients file, ``oauth.clients_file`` (default
   ``<data_dir>/oauth-clients.yaml``, read when present; the same shape as the settings blocks,
   :class:`schemas.settings.OAuthClients`) — what a deployment mounts as its secrets file, and what
   ``crmhub sandbox`` writes for its local CRMs;
3. else the provider is not configured: using it is a :class:`ConfigError` naming what to set.

A block's ``ca_file`` is trusted instead of the system store for that provider's OAuth calls *and*
its connections' API calls (:func:`api_ca_files`); ``extra_hosts`` are added to the instance
allowlist. The redirect URI sent is the caller's choice (``--redirect-uri``), else
``oauth.redirect_uri``, else the CLI's :data:`CLI_REDIRECT_URI` — or, when the app lists its
registered ``redirect_uris`` and that is not one of them, the first registered one. A chosen URI
the app does not list is refused here, before anyone is sent to a consent page.

Errors name the setting or file and field, never a value (client secrets included).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import ValidationError

from connectors.oauth import HubSpotOAuthConfig, OAuthProviderConfig, Provider, SalesforceOAuthConfig
from schemas.errors import ConfigError
from schemas.settings import (
    HubSpotClientSettings,
    OAuthClients,
    OAuthClientSettings,
    SalesforceClientSettings,
    Settings,
)

__all__ = [
    "CLI_REDIRECT_URI",
    "ClientBlock",
    "api_ca_files",
    "client_blocks",
    "clients_file",
    "configs_of",
    "oauth_configs",
    "read_clients_file",
]

_Block = TypeVar("_Block", bound=OAuthClientSettings)

CLI_REDIRECT_URI = "http://127.0.0.1:8765/callback"
"""Where ``crmhub connect`` listens for the callback unless told otherwise."""


@dataclass(frozen=True)
class ClientBlock:
    """One provider's registration and where it came from (``origin``: for messages)."""

    provider: Provider
    settings: OAuthClientSettings
    origin: str


def clients_file(settings: Settings) -> Path:
    """``oauth.clients_file``, resolved against ``data_dir`` when relative."""
    path = settings.oauth.clients_file
    return path if path.is_absolute() else settings.data_dir / path


def read_clients_file(path: Path) -> OAuthClients | None:
    """The provider blocks of an OAuth clients file (relative ``ca_file`` resolved against the file's
    directory); None if there is no such file."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read the OAuth clients file {path} ({type(exc).__name__}); fix its YAML or permissions"
        ) from None
    try:
        clients = OAuthClients.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"OAuth clients file {path}: {_problems(exc)}") from None
    return OAuthClients(
        salesforce=_relative_to(clients.salesforce, path.parent),
        hubspot=_relative_to(clients.hubspot, path.parent),
    )


def _relative_to(block: _Block | None, base: Path) -> _Block | None:
    if block is None or block.ca_file is None or block.ca_file.is_absolute():
        return block
    return block.model_copy(update={"ca_file": base / block.ca_file})


def client_blocks(settings: Settings) -> Iterator[ClientBlock]:
    """The configured providers' blocks, settings first, then the clients file (see the module doc)."""
    path = clients_file(settings)
    from_file: OAuthClients | None = None
    for provider in Provider:
        block: OAuthClientSettings | None = getattr(settings.oauth, provider.value)
        if block is not None:
            yield ClientBlock(provider, block, f"oauth.{provider.value} (temporal.yaml or CRMHUB_OAUTH__…)")
            continue
        if from_file is None:
            from_file = read_clients_file(path) or OAuthClients()
        block = getattr(from_file, provider.value)
        if block is not None:
            yield ClientBlock(provider, block, f"{provider.value} in {path}")


def oauth_configs(
    settings: Settings, *, redirect_uri: str | None = None, only: Iterable[str] | None = None
) -> list[OAuthProviderConfig]:
    """One :class:`OAuthProviderConfig` per configured provider (none configured: an empty list),
    or per provider of ``only`` that is configured.

    ``redirect_uri`` is the caller's explicit choice (``crmhub connect --redirect-uri``, the web
    app's callback); see the module docstring for the default."""
    chosen = redirect_uri or settings.oauth.redirect_uri
    wanted = None if only is None else set(only)
    return [
        _config(block, _redirect_for(block, chosen))
        for block in client_blocks(settings)
        if wanted is None or block.provider.value in wanted
    ]


def configs_of(
    clients: OAuthClients, *, origin: str, redirect_uri: str | None = None
) -> list[OAuthProviderConfig]:
    """The configs of the blocks of one clients file (or settings section) alone, ``origin`` naming
    it in messages; ``redirect_uri`` as for :func:`oauth_configs`."""
    blocks = [
        ClientBlock(p, block, f"{p.value} in {origin}")
        for p in Provider
        if (block := getattr(clients, p.value)) is not None
    ]
    return [_config(b, _redirect_for(b, redirect_uri)) for b in blocks]


def api_ca_files(settings: Settings) -> dict[str, Path]:
    """Provider name → the ``ca_file`` its connections' API calls trust (providers that set one)."""
    return {b.provider.value: b.settings.ca_file for b in client_blocks(settings) if b.settings.ca_file}


def _redirect_for(block: ClientBlock, chosen: str | None) -> str:
    registered = block.settings.redirect_uris
    if chosen is None:
        return CLI_REDIRECT_URI if not registered or CLI_REDIRECT_URI in registered else registered[0]
    if registered and chosen not in registered:
        raise ConfigError(
            f"redirect URI {chosen} is not registered with the {block.provider.value} app "
            f"(redirect_uris of {block.origin}: {', '.join(registered)}); use one of them "
            "(--redirect-uri or oauth.redirect_uri) or register it with the app"
        )
    return chosen


def _config(block: ClientBlock, redirect_uri: str) -> OAuthProviderConfig:
    s = block.settings
    cls: type[OAuthProviderConfig]
    try:
        if isinstance(s, SalesforceClientSettings):
            cls, endpoints = SalesforceOAuthConfig, SalesforceOAuthConfig.endpoints_at(s.login_url)
        else:
            assert isinstance(s, HubSpotClientSettings)
            cls, endpoints = HubSpotOAuthConfig, HubSpotOAuthConfig.endpoints_at(s.app_url, s.api_url)
        return cls.registered(
            endpoints,
            client_id=s.client_id,
            client_secret=s.client_secret.get_secret_value(),
            redirect_uri=redirect_uri,
            extra_allowlist=tuple(h.lower() for h in s.extra_hosts),
            ca_path=s.ca_file,
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid OAuth client {block.origin}: {_problems(exc)}") from None
    except ValueError as exc:  # endpoints_at: a URL that is not https (the message names it)
        raise ConfigError(f"invalid OAuth client {block.origin}: {exc}") from None


def _problems(exc: ValidationError) -> str:
    """Field paths and messages only: a value (a secret, say) is never repeated."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors(include_input=False, include_url=False)
    )
