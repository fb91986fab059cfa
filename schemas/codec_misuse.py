"""Settings of the codec-token misuse signal (:mod:`services.codec_misuse`), apart from
:mod:`schemas.settings` so that module keeps one job per model group."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["CodecMisuseSettings"]


class CodecMisuseSettings(BaseModel):
    """Thresholds of the codec-token misuse signal (``crmhub incident check-codec``,
    :mod:`services.codec_misuse`); env ``CRMHUB_CODEC__MISUSE__<NAME>``
    (a part of :class:`schemas.settings.CodecSettings`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: timedelta = Field(timedelta(hours=1), description="requests looked at: the last this long")
    forbidden_threshold: int = Field(
        3, ge=1, description="requests of one token naming another namespace (403) in the window"
    )
    failed_threshold: int = Field(
        5, ge=1, description="requests of one token whose payloads did not authenticate (400) in the window"
    )
    volume_floor: int = Field(
        5000, ge=1, description="payloads one token decodes in the window before volume can count"
    )
    volume_factor: float = Field(
        10.0, ge=1.0, description="decoded payloads above this many times the token's baseline per window"
    )
    baseline: timedelta = Field(
        timedelta(days=7), description="the token's history before the window its baseline is taken from"
    )
    new_client: bool = Field(
        False, description="flag decodes from a client host the token has not used in the baseline period"
    )
    history_reach: timedelta = Field(
        timedelta(days=3),
        description="how far back a decoded workflow history reaches (the namespace's retention)",
    )
    max_groups: int = Field(
        10_000, ge=1, le=1_000_000, description="(token, client) groups read per check (bounds one check)"
    )

    @field_validator("window", "baseline", "history_reach")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v < timedelta(minutes=1):
            raise ValueError("must be at least 1 minute (ISO 8601 like PT1H or seconds like 3600)")
        return v
