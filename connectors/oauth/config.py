"""OAuth client registrations of the two providers: endpoints, client id/secret, scopes, the redirect
URI and the instance URL allowlist. Built from settings by :mod:`services.oauth_clients`.

Scopes crmhub requests (and which the connected app must be allowed):

* Salesforce: ``api refresh_token`` (``offline_access`` is an alias of ``refresh_token``).
  Salesforce returns no ``expires_in``: the access token's lifetime is the org's session timeout,
  so Salesforce tokens are refreshed after a 401 only.
* HubSpot: ``crm.objects.contacts.read crm.objects.contacts.write crm.objects.companies.read
  crm.objects.companies.write crm.objects.deals.read crm.objects.deals.write
  crm.schemas.contacts.read oauth``. Access tokens live 30 minutes (``expires_in``) and are
  refreshed ahead of expiry.

A token response may only name an ``instance_url`` on the allowlist (Salesforce: ``*.salesforce.com``
and the other Salesforce domains; HubSpot: its fixed ``api_url``, which must itself be listed), so it
cannot redirect crmhub's API calls elsewhere. TLS: verification is always on (:meth:`verify`).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Final, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.oauth.protocol import MAX_STATE_TTL_S, InstanceNotAllowed, check_instance_url
from schemas.errors import ConfigError

__all__ = [
    "HUBSPOT_API_ALLOWLIST",
    "HUBSPOT_SCOPES",
    "SALESFORCE_INSTANCE_ALLOWLIST",
    "SALESFORCE_SCOPES",
    "HubSpotOAuthConfig",
    "OAuthProviderConfig",
    "Provider",
    "SalesforceOAuthConfig",
]

SALESFORCE_SCOPES: Final = ("api", "refresh_token")
HUBSPOT_SCOPES: Final = (
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.deals.read",
    "crm.objects.deals.write",
    "crm.schemas.contacts.read",
    "oauth",
)
# Hosts a Salesforce token response may name as instance_url (My Domain, classic pods, Lightning,
# Government Cloud). "*.x" matches any subdomain of x, never x itself.
SALESFORCE_INSTANCE_ALLOWLIST: Final = (
    "*.salesforce.com",
    "*.my.salesforce.com",
    "*.force.com",
    "*.cloudforce.com",
    "*.salesforce.mil",
)
HUBSPOT_API_ALLOWLIST: Final = ("api.hubapi.com", "*.hubapi.com")

_ALLOW_ENTRY = re.compile(r"^(\*\.)?[a-z0-9.-]+(:\d{1,5})?$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Provider(StrEnum):
    """The CRMs crmhub connects to."""

    SALESFORCE = "salesforce"
    HUBSPOT = "hubspot"


def _https_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc:
        raise ValueError(
            f"{what} must be an https:// URL without user info, e.g. https://login.salesforce.com"
        )
    return value.rstrip("/")


class OAuthProviderConfig(BaseModel):
    """One OAuth client registration at one provider. Secrets are ``SecretStr``.

    ``redirect_uri`` must equal one registered at the provider exactly; ``https``, or ``http`` on
    loopback only (RFC 8252 §7.3). ``ca_path`` is a PEM bundle to trust instead of the system store
    (the provider's ``ca_file`` setting, e.g. the sandbox CA). ``state_ttl_s`` is how long an
    authorization may take (at most 600 s).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    provider: ClassVar[Provider]

    authorize_url: str
    token_url: str
    revoke_url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    scopes: tuple[str, ...]
    redirect_uri: str
    instance_allowlist: tuple[str, ...]
    ca_path: Path | None = None
    state_ttl_s: int = Field(MAX_STATE_TTL_S, ge=30, le=MAX_STATE_TTL_S)
    timeout_s: float = Field(10.0, gt=0, le=30, description="per connect/read/write phase of a token call")

    @field_validator("authorize_url", "token_url", "revoke_url")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return _https_url(v, "OAuth endpoints")

    @field_validator("redirect_uri")
    @classmethod
    def _redirect(cls, v: str) -> str:
        parts = urlsplit(v)
        loopback_http = parts.scheme == "http" and parts.hostname in _LOOPBACK
        if not (parts.scheme == "https" or loopback_http) or not parts.hostname or parts.fragment:
            raise ValueError(
                "redirect_uri must be https://…, or http://127.0.0.1:PORT/… (loopback only), "
                "without a fragment, and registered at the provider exactly"
            )
        return v

    @field_validator("instance_allowlist")
    @classmethod
    def _allowlist(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(e.strip().lower() for e in v)
        for entry in out:
            if not _ALLOW_ENTRY.match(entry):
                raise ValueError(f"allowlist entry {entry!r} must be host, *.domain or host:port")
        return out

    def verify(self) -> ssl.SSLContext | bool:
        """TLS verification for this provider's clients: the ``ca_path`` bundle, else the default store.

        With ``ca_path``: a context trusting that bundle only, TLS 1.2 minimum, hostname checked.
        Never ``False``.
        """
        if self.ca_path is None:
            return True
        if not self.ca_path.is_file():
            raise ConfigError(
                f"OAuth ca_path {self.ca_path} does not exist; fix the ca_file setting of "
                f"{self.provider.value} (or start the sandbox, which writes it)"
            )
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    @property
    def instance_url_fixed(self) -> str | None:
        """The API base when the provider does not name one per connection (HubSpot), else None."""
        return None

    @classmethod
    def registered(
        cls,
        endpoints: Mapping[str, str],
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        extra_allowlist: Iterable[str] = (),
        **options: Any,
    ) -> Self:
        """An app registered at ``endpoints`` (a subclass's ``endpoints_at(...)``), allowing the
        provider's API hosts plus ``extra_allowlist``; ``options`` are other fields (``ca_path`` …)."""
        default = cls.model_fields["instance_allowlist"].default
        return cls.model_validate(
            {
                **endpoints,
                "client_id": client_id,
                "client_secret": SecretStr(client_secret),
                "redirect_uri": redirect_uri,
                "instance_allowlist": (*default, *extra_allowlist),
                **options,
            }
        )


class SalesforceOAuthConfig(OAuthProviderConfig):
    """A Salesforce connected app. Defaults are production (``login.salesforce.com``); use
    ``registered(endpoints_at(login_url), …)`` for My Domain, ``test.salesforce.com`` or the sandbox."""

    provider: ClassVar[Provider] = Provider.SALESFORCE

    authorize_url: str = "https://login.salesforce.com/services/oauth2/authorize"
    token_url: str = "https://login.salesforce.com/services/oauth2/token"  # noqa: S105 - a URL
    revoke_url: str = "https://login.salesforce.com/services/oauth2/revoke"
    scopes: tuple[str, ...] = SALESFORCE_SCOPES
    instance_allowlist: tuple[str, ...] = SALESFORCE_INSTANCE_ALLOWLIST

    @staticmethod
    def endpoints_at(login_url: str) -> dict[str, str]:
        """The OAuth endpoints under ``login_url`` (``https://login.salesforce.com``, a My Domain,
        ``https://test.salesforce.com``, the sandbox), for :meth:`registered`."""
        base = _https_url(login_url, "login_url")
        return {
            "authorize_url": f"{base}/services/oauth2/authorize",
            "token_url": f"{base}/services/oauth2/token",
            "revoke_url": f"{base}/services/oauth2/revoke",
        }


class HubSpotOAuthConfig(OAuthProviderConfig):
    """A HubSpot public app. ``revoke_url`` is the refresh-token collection
    (``DELETE {revoke_url}/{token}``); ``api_url`` is the API base every connection uses and must be
    on ``instance_allowlist``."""

    provider: ClassVar[Provider] = Provider.HUBSPOT

    authorize_url: str = "https://app.hubspot.com/oauth/authorize"
    token_url: str = "https://api.hubapi.com/oauth/v1/token"  # noqa: S105 - a URL
    revoke_url: str = "https://api.hubapi.com/oauth/v1/refresh-tokens"
    api_url: str = "https://api.hubapi.com"
    scopes: tuple[str, ...] = HUBSPOT_SCOPES
    instance_allowlist: tuple[str, ...] = HUBSPOT_API_ALLOWLIST

    @model_validator(mode="after")
    def _api_allowed(self) -> HubSpotOAuthConfig:
        try:
            object.__setattr__(self, "api_url", check_instance_url(self.api_url, self.instance_allowlist))
        except InstanceNotAllowed as exc:
            raise ValueError(f"api_url: {exc.message}") from None
        return self

    @property
    def instance_url_fixed(self) -> str | None:
        return self.api_url

    @staticmethod
    def endpoints_at(app_url: str, api_url: str) -> dict[str, str]:
        """The authorize page under ``app_url``; token, revocation and API under ``api_url`` (the
        sandbox serves both at one URL), for :meth:`registered`."""
        app = _https_url(app_url, "app_url")
        api = _https_url(api_url, "api_url")
        return {
            "authorize_url": f"{app}/oauth/authorize",
            "token_url": f"{api}/oauth/v1/token",
            "revoke_url": f"{api}/oauth/v1/refresh-tokens",
            "api_url": api,
        }
