"""The HubSpot connector's configuration (no secrets: tokens come from a ``TokenSource``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, field_validator

from connectors.http import RetryConfig

__all__ = ["DEFAULT_ID_PROPERTIES", "HubSpotConfig"]

# Unique properties upserts match on: contacts' e-mail is unique by HubSpot's rule; companies and deals
# need a custom property created with ``hasUniqueValue: true`` (the sandbox ships ``external_id``).
DEFAULT_ID_PROPERTIES = {"contacts": "email", "companies": "external_id", "deals": "external_id"}


class HubSpotConfig(RetryConfig):
    """Where the portal's API is and how hard the connector may use it.

    Limits it respects: the list API pages at most 100 records, search at most 200 (``page_size``
    caps both); search is limited per account to a few requests per second, far below the general
    burst limit (``search_rate_per_s``, enforced client-side); the rolling burst window is paced from
    the ``X-HubSpot-RateLimit-*`` headers (pause once ``Remaining`` falls to ``rate_limit_reserve`` of
    ``Max``, each pause at most ``max_pause_s``). Failed requests are resent by the client as
    :class:`~connectors.http.RetryConfig` says (``request_attempts``, ``retry_budget_s``), each pause at
    most ``max_pause_s`` too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field("https://api.hubapi.com", description="API root; https only")
    ca_bundle: Path | None = Field(None, description="PEM bundle to verify the server (sandbox CA)")
    page_size: int = Field(200, ge=1, le=200, description="upper bound per page (list API: 100)")
    id_properties: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ID_PROPERTIES),
        description="per object: the unique property upserts match on (StreamSpec.default_external_id)",
    )
    search_rate_per_s: float = Field(4.0, gt=0, le=100, description="search requests per rolling second")
    search_settle_s: float = Field(
        5.0,
        ge=0,
        description="an incremental window ends this long before the read starts: HubSpot's search "
        "index lags writes, and a change stamped inside the window but not yet indexed would be lost",
    )
    rate_limit_reserve: float = Field(0.1, ge=0, lt=1, description="fraction of the burst window kept free")
    rate_limit_key: str | None = Field(
        None,
        description="clients with the same key (one portal) share their pacing in a process: the burst "
        "window, the search limit and a Retry-After; crmhub's workers set the connection id",
    )
    max_pause_s: float = Field(
        10.0, ge=0, description="longest single client-side pause (pacing, Retry-After, resend backoff)"
    )
    write_batch_size: int = Field(100, ge=1, le=100, description="inputs per batch call (HubSpot: 100)")
    region: str | None = Field(
        None,
        description="where the portal's data is hosted (e.g. 'eu', 'us'), for transfer checks; "
        "default: 'eu' for the api-eu1 host, else 'unknown' (api.hubapi.com serves every data centre)",
    )
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("base_url must be an https:// URL (tokens must not travel in clear text)")
        return value.rstrip("/")

    def id_property(self, stream: str) -> str | None:
        return self.id_properties.get(stream)
