"""The HubSpot connector's configuration (no secrets: tokens come from a ``TokenSource``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, field_validator

from connectors.http import RetryConfig

__all__ = ["DEFAULT_ID_PROPERTIES", "EXPORT_SCOPE", "HubSpotConfig"]

# Unique properties upserts match on: contacts' e-mail is unique by HubSpot's rule; companies and deals
# need a custom property created with ``hasUniqueValue: true`` (the sandbox ships ``external_id``).
DEFAULT_ID_PROPERTIES = {"contacts": "email", "companies": "external_id", "deals": "external_id"}
# The OAuth scope of HubSpot's Exports API; only a Super Admin can grant it (``crmhub connect hubspot
# --allow-exports`` asks for it). A connection granted it may read large objects through an export.
EXPORT_SCOPE = "crm.export"


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
    granted_scopes: tuple[str, ...] = Field(
        (), description="the OAuth scopes the connection was granted (crmhub's workers set them)"
    )
    export_threshold: int | None = Field(
        50_000,
        ge=1,
        description="a full read of an object with at least this many records goes through HubSpot's "
        "Exports API (one CSV file instead of one list call per 100 records) when the connection was "
        f"granted {EXPORT_SCOPE!r}; None: never",
    )
    export_poll_s: float = Field(1.0, gt=0, description="first pause between export status checks")
    export_poll_max_s: float = Field(15.0, gt=0, description="longest pause between status checks")
    export_wait_per_read_s: float = Field(
        60.0,
        gt=0,
        description="how long one read waits for an export to finish before it returns an empty page "
        "(the pull loop heartbeats and reads again)",
    )
    export_timeout_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="an export not finished this long after it started is abandoned for the list API",
    )
    archive_scan_interval_s: float = Field(
        0.0,
        ge=0,
        description="an incremental read pages the archived list (one call per 100 archived records: "
        "it cannot be filtered by time) at most this often; reads in between report no archives and "
        "the next scan covers the gap (deletes arrive up to this much later, none is lost); 0: every read",
    )
    merges_as_deletes: bool = Field(
        True,
        description="also report ids merged away at the source in Page.deleted_ids (they are always in "
        "Page.merged_into), so the losers' destination records are deleted; the workflow's merge guard "
        "keeps a destination record the winner was upserted into (same external id). Off: merged-away "
        "records stay at the destination until a reconciliation finds them",
    )
    portal_utc_offset_min: int | None = Field(
        None,
        ge=-14 * 60,
        le=14 * 60,
        description="the portal's time zone as minutes east of UTC: its daily API quota resets at its "
        "midnight; None: unknown (a sync stopped by the daily limit asks again each quarter hour)",
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

    @property
    def exports_allowed(self) -> bool:
        """Full reads may use the Exports API: a threshold is set and the connection has the scope."""
        return self.export_threshold is not None and EXPORT_SCOPE in self.granted_scopes
