"""Configuration of one Salesforce connection (no secrets: tokens come from a TokenSource)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator

from connectors.http import RetryConfig

__all__ = ["DEFAULT_API_VERSION", "SalesforceConfig"]

# simple-salesforce 1.12's default and the sandbox's default.
DEFAULT_API_VERSION = "59.0"
_VERSION_RE = re.compile(r"^v?(\d{2,3})\.0$")


class SalesforceConfig(RetryConfig):
    """Where the org is and how to read and write it.

    ``instance_url`` must be https (the OAuth layer checks it against the allowlist; this model only
    refuses anything else). ``ca_bundle`` pins TLS trust to one CA file for every request, even when
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` are set (requests lets them override ``verify``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    instance_url: str = Field(description="https://<my-domain>.my.salesforce.com")
    api_version: str = Field(DEFAULT_API_VERSION, description="REST API version, e.g. 59.0")
    ca_bundle: Path | None = Field(None, description="PEM file: the only CA trusted for the instance")
    bulk_threshold: int = Field(
        50_000,
        ge=0,
        description="full reads of more records than this (by COUNT()) use a Bulk API 2.0 job; 0 = always",
    )
    bulk_order_by_max: int = Field(
        100_000,
        ge=0,
        description=(
            "Bulk jobs of reads counted above this many records leave out ORDER BY (it turns PK "
            "chunking off and times out on large objects); ordered jobs resume exactly after a loss"
        ),
    )
    page_size: int = Field(
        2000, ge=1, le=50_000, description="records per read_page for callers without their own"
    )
    external_id_field: str = Field("External_Id__c", description="default upsert key")
    daily_quota_share: float = Field(
        0.8, gt=0, le=1, description="stop (RateLimited) once this share of DailyApiRequests is used"
    )
    quota_pause_s: float = Field(
        3600.0, gt=0, description="retry_after when our share of the daily allocation is used up"
    )
    rate_limit_pause_s: float = Field(
        30.0, gt=0, description="retry_after for REQUEST_LIMIT_EXCEEDED/503 without Retry-After"
    )
    timeout_s: float = Field(60.0, gt=0, description="connect/read timeout per HTTP request")
    max_retry_pause_s: float = Field(
        10.0, ge=0, description="longest single pause before a resend (a longer Retry-After: the activity)"
    )
    bulk_wait_s: float = Field(
        20.0, ge=0, description="how long one read_page waits for a Bulk job before returning an empty page"
    )
    describe_ttl_s: float = Field(
        600.0, ge=0, description="re-describe a stream after this long (drift seen during long reads)"
    )
    modstamp_lag_s: float = Field(
        0.0,
        ge=0,
        description=(
            "incremental reads stop this many seconds before now, so records committed late with an "
            "earlier SystemModstamp (long transactions) are not passed by the cursor"
        ),
    )

    overlap_s: float = Field(
        600.0,
        ge=0,
        description=(
            "each incremental run re-reads this many seconds before its cursor and skips the (Id, "
            "SystemModstamp) pairs it already delivered, so rows a long transaction commits late are "
            "not lost (600 s: an Apex transaction's longest run); 0 = off"
        ),
    )
    overlap_max_ids: int = Field(
        2000,
        ge=1,
        le=20_000,
        description=(
            "most pairs the overlap window keeps (15-20 bytes each in the state); beyond, the oldest "
            "are handed out again by the next re-read (at-least-once), never skipped"
        ),
    )
    delete_log_check: bool = Field(
        True,
        description=(
            "one getDeleted call per incremental run: a recycle bin purged past the last read makes "
            "the page say a reconciliation is needed (Page.reconcile)"
        ),
    )

    @field_validator("instance_url")
    @classmethod
    def _https(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("instance_url must be an https:// URL")
        if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
            raise ValueError("instance_url must be scheme://host[:port] only")
        return f"https://{parts.netloc}"

    @field_validator("api_version")
    @classmethod
    def _version(cls, v: str) -> str:
        m = _VERSION_RE.match(v.strip())
        if m is None:
            raise ValueError("api_version must look like 59.0")
        return f"{m.group(1)}.0"

    @field_validator("ca_bundle")
    @classmethod
    def _ca(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError("ca_bundle must be an existing PEM file")
        return v

    @field_validator("external_id_field")
    @classmethod
    def _ext(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", v):
            raise ValueError("external_id_field must be a field API name")
        return v
