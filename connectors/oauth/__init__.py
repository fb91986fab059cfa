"""OAuth 2.0 for Salesforce and HubSpot as a pure protocol package: client registrations
(:mod:`.config`), PKCE, state and the instance allowlist (:mod:`.protocol`), and the token-endpoint
client over httpx (:mod:`.client`). No database, no vault, no settings: the sealed token store that
runs the connect flow and single-flight refresh is :mod:`services.credentials`, and the client
registrations are built from settings by :mod:`services.oauth_clients`.

Connect (RFC 6749 §4.1 with PKCE S256, RFC 7636)::

    begin:    state = 256 random bits, single use, bound to tenant + provider + redirect URI,
              ≤ 10 minutes (MAX_STATE_TTL_S); only SHA-256(state) is stored (state_hash), with the
              PKCE verifier sealed; the user is sent to authorize_url(...)
    callback: the state is consumed before anything else; any problem with it or the redirect URI
              is an OAuthCallbackError (http_status 400) and no token call; then
              TokenClient.exchange_code, check_instance_url against the allowlist.

Security properties every piece keeps:

* **state**: random, single use, bound, short-lived; never stored in clear.
* **no secrets in messages**: errors carry the provider's error code and a short description that
  is dropped if it echoes anything sent (tokens, codes, verifiers, the client secret); never a
  response body or URL. httpx's INFO log of HubSpot's ``DELETE …/refresh-tokens/<token>`` is redacted.
* **redirects are never followed** by the token client: a 3xx is an error.
* **instance allowlist**: a token response can only name an https origin on the allowlist
  (:func:`check_instance_url`), so it cannot redirect crmhub's API calls.
* **TLS**: always verified, against the provider's ``ca_path`` when configured (TLS ≥ 1.2, hostname
  checked), else the default trust store.
"""

from connectors.oauth.client import DeadRefreshToken, Grant, TokenClient
from connectors.oauth.config import (
    HUBSPOT_API_ALLOWLIST,
    HUBSPOT_SCOPES,
    SALESFORCE_INSTANCE_ALLOWLIST,
    SALESFORCE_SCOPES,
    HubSpotOAuthConfig,
    OAuthProviderConfig,
    Provider,
    SalesforceOAuthConfig,
)
from connectors.oauth.protocol import (
    MAX_STATE_TTL_S,
    AuthorizationRequest,
    InstanceNotAllowed,
    OAuthCallbackError,
    authorize_url,
    check_instance_url,
    is_error_code,
    new_pkce_verifier,
    new_state,
    pkce_challenge,
    state_hash,
)

__all__ = [
    "HUBSPOT_API_ALLOWLIST",
    "HUBSPOT_SCOPES",
    "MAX_STATE_TTL_S",
    "SALESFORCE_INSTANCE_ALLOWLIST",
    "SALESFORCE_SCOPES",
    "AuthorizationRequest",
    "DeadRefreshToken",
    "Grant",
    "HubSpotOAuthConfig",
    "InstanceNotAllowed",
    "OAuthCallbackError",
    "OAuthProviderConfig",
    "Provider",
    "SalesforceOAuthConfig",
    "TokenClient",
    "authorize_url",
    "check_instance_url",
    "is_error_code",
    "new_pkce_verifier",
    "new_state",
    "pkce_challenge",
    "state_hash",
]
