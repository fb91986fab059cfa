"""crmhub's settings: ``temporal.yaml`` (or the file named by ``CRMHUB_CONFIG``), validated, with
every value overridable by a ``CRMHUB_*`` environment variable (nested keys joined by ``__``, e.g.
``CRMHUB_TEMPORAL__ADDRESS``, ``CRMHUB_REGIONS__EU__TASK_QUEUE``; ``CRMHUB_DATABASE_URL``).

Precedence: environment > YAML file > defaults. A bad value fails at start with a
:class:`~schemas.errors.ConfigError` that names the field, the bad value's problem and the fix.

OAuth client registrations (``oauth.salesforce`` / ``oauth.hubspot``) may also come from a separate
secrets file, ``oauth.clients_file`` (default ``<data_dir>/oauth-clients.yaml``, the shape of
:class:`OAuthClients`), which a deployment mounts and ``crmhub sandbox`` writes for its CRMs; a
provider block set here wins over the file's (:mod:`services.oauth_clients`). The flat variables of
earlier versions (``CRMHUB_SALESFORCE_CLIENT_ID`` …, see :data:`RENAMED_ENV`) are refused, naming
their replacement, rather than silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from schemas.codec_misuse import CodecMisuseSettings
from schemas.errors import ConfigError

__all__ = [
    "RENAMED_ENV",
    "CodecSettings",
    "DevServerSettings",
    "GovernanceSettings",
    "HubSpotClientSettings",
    "NoticeSettings",
    "OAuthClientSettings",
    "OAuthClients",
    "OAuthSettings",
    "RegionSettings",
    "SalesforceClientSettings",
    "SandboxSettings",
    "ScheduleSettings",
    "Settings",
    "TemporalSettings",
    "WebSettings",
    "WorkerSettings",
    "config_path",
    "load_settings",
]

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DevServerSettings(_Model):
    """The local Temporal dev server started by ``crmhub temporal up`` / ``crmhub demo``."""

    ip: str = "127.0.0.1"
    port: int = Field(7233, ge=1, le=65535)
    ui_port: int = Field(8233, ge=1, le=65535)
    db_filename: str = Field(
        "temporal.db", description="SQLite file under data_dir; history survives restarts"
    )
    log_level: Literal["debug", "info", "warn", "error"] = "warn"
    ui_codec_endpoint: str | None = Field(
        None, description="codec server URL the Web UI calls to decode; default: codec.url when codec_server"
    )
    codec_server: bool = Field(
        True,
        description="start a loopback-dev codec server with the dev server (temporal up / demo) so its "
        "UI decodes payloads without a token; false: run crmhub codec-server yourself",
    )


class TemporalSettings(_Model):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    tls: bool = False
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    api_key_env: str | None = Field(None, description="name of the env var holding a Temporal Cloud API key")
    control_task_queue: str = Field(
        "crmhub-control",
        description="shared queue for workflows and metadata-only activities; every worker polls it",
    )
    dev_server: DevServerSettings = DevServerSettings()

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        m = _HOST_PORT.match(v)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:7233 or my-ns.tmprl.cloud:7233")
        return v

    @model_validator(mode="after")
    def _mtls_pair(self) -> TemporalSettings:
        if (self.tls_client_cert is None) != (self.tls_client_key is None):
            raise ValueError("tls_client_cert and tls_client_key must be set together (mTLS)")
        return self


class RegionSettings(_Model):
    """A processing region: the Temporal task queue its workers poll, and its jurisdiction."""

    task_queue: str
    jurisdiction: Literal["EEA", "US", "UK", "CH", "CA", "OTHER"]
    description: str = ""


class GovernanceSettings(_Model):
    """Where keys and the deployment's subprocessor registry come from."""

    key_provider: str = Field("local", description="local | env | a crmhub.key_providers plugin name")
    keyring_file: str = Field("keyring.json", description="local provider: file under data_dir (mode 0600)")
    kek_env_var: str = Field("CRMHUB_KEK", description="env provider: variable holding the base64 KEK")
    signing_key_file: str = Field(
        "ledger-signing.pem", description="Ed25519 key for checkpoints, under data_dir"
    )
    subprocessors_file: Path | None = Field(
        None, description="subprocessor/transfer registry YAML; default: the one shipped with crmhub"
    )
    shred_check_s: float = Field(
        1.0, gt=0, le=300, description="a crypto-shred reaches running processes within this many seconds"
    )


class NoticeSettings(_Model):
    """How notices reach controllers (:mod:`services.notices`): the SMTP relay and the limits."""

    smtp_host: str = Field("127.0.0.1", description="SMTP relay host the notice e-mails go through")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP relay port")
    smtp_starttls: bool = Field(False, description="upgrade the SMTP session with STARTTLS")
    sender: str = Field("crmhub@localhost", description="From address of notice e-mails")
    timeout_s: float = Field(10.0, gt=0, le=120, description="per SMTP session / webhook request")
    throttle: timedelta = Field(
        timedelta(hours=1), description="one notice per tenant, kind and subject within this window"
    )


class CodecSettings(_Model):
    """The codec server the Temporal Web UI calls to decode encrypted payloads."""

    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535)
    allowed_origins: tuple[str, ...] = ("http://127.0.0.1:8233", "http://localhost:8233")
    misuse: CodecMisuseSettings = CodecMisuseSettings()

    @property
    def url(self) -> str:
        """``http://host:port`` of the codec server (brackets around an IPv6 host)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class WorkerSettings(_Model):
    max_concurrent_activities: int = Field(16, ge=1, le=1024)
    activity_threads: int = Field(
        16, ge=1, le=1024, description="thread pool for the vendor SDKs' sync calls"
    )
    max_concurrent_workflow_tasks: int = Field(32, ge=1, le=1024)
    pages_per_activity: int = Field(25, ge=1, le=10_000, description="vendor pages one pull activity covers")
    records_per_batch: int = Field(
        10_000, ge=1, le=1_000_000, description="records one pull activity stages at most (one push each)"
    )
    activity_time_budget_s: float = Field(60.0, gt=0, le=3600)
    continue_as_new_after_batches: int = Field(200, ge=1, le=5000)
    heartbeat_timeout_s: float = Field(
        60.0, ge=1, le=3600, description="silence after which a worker is presumed dead"
    )
    region_wait_s: float = Field(
        60.0, ge=1, le=86_400, description="wait for a region's worker before reporting it"
    )
    metrics_port: int | None = Field(None, ge=1, le=65535)
    reconcile_max_delete_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a delete reconciliation that would delete more than this fraction of the records "
        "mapped at the destination deletes nothing and says so (a truncated listing looks like mass "
        "deletion); --force overrides it",
    )
    retry_rejected_per_run: int = Field(
        500,
        ge=0,
        le=100_000,
        description="dead letters one run retries at most after their sync's mapping or instruction "
        "changed (or on demand); the rest wait for the next run; 0 turns automatic retries off",
    )
    reconcile_list_attempts: int = Field(
        5, ge=1, le=100, description="tries of one id-listing activity before the listing counts as truncated"
    )


class ScheduleSettings(_Model):
    sync_interval: timedelta = timedelta(hours=1)
    retention_purge_interval: timedelta = timedelta(days=1)
    key_rotation_check_interval: timedelta = timedelta(days=1)
    notice_dispatch_interval: timedelta = Field(
        timedelta(minutes=1),
        description="how often the notice dispatch pass starts delivery of every pending controller notice",
    )
    incident_watch_interval: timedelta = Field(
        timedelta(minutes=15),
        description="how often the incident watch appends owed incident events and checks codec tokens",
    )

    @field_validator(
        "sync_interval", "retention_purge_interval", "key_rotation_check_interval",
        "notice_dispatch_interval", "incident_watch_interval",
    )  # fmt: skip
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v < timedelta(minutes=1):
            raise ValueError("must be at least 1 minute (ISO 8601 like PT15M or seconds like 900)")
        return v


class WebSettings(_Model):
    """The web app (``crmhub web``): whose forwarded headers to believe, the login limits, the
    password-hash budget, sessions, ``/metrics`` access and request limits."""

    trusted_proxies: tuple[str, ...] = Field(
        (),
        description="IP addresses or CIDR networks of the reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; default none: the TCP peer is the client",
    )
    login_window: timedelta = Field(timedelta(minutes=5), description="the window the login limits count in")
    login_attempts_per_client: int = Field(
        5, ge=1, le=1000, description="login attempts at one account from one client address per window"
    )
    login_attempts_per_account: int = Field(
        20, ge=1, le=10_000, description="login attempts at one account from all addresses per window"
    )
    login_attempts_per_address: int = Field(
        50,
        ge=1,
        le=100_000,
        description="login attempts from one client address (an IPv6 client: its /64) at any accounts "
        "per window; bounds the rows one anonymous client makes",
    )
    password_hash_slots: int = Field(
        2, ge=1, le=64, description="password hashes computed at once (scrypt: 16 MiB and ~50 ms each)"
    )
    password_hash_wait_s: float = Field(
        2.0, gt=0, le=60, description="how long a login waits for a hash slot before a 503"
    )
    sessions_per_user: int = Field(
        10, ge=1, le=1000, description="live sessions per user; a new login ends the oldest beyond it"
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="bearer token /metrics requires (CRMHUB_WEB__METRICS_TOKEN); unset: /metrics answers "
        "loopback clients only",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=1_073_741_824, description="request bodies above this are refused (413)"
    )
    body_timeout_s: float = Field(
        15.0, gt=0, le=3600, description="time a client has to send a request body (else 408)"
    )
    keep_alive_timeout_s: int = Field(5, ge=1, le=600, description="idle keep-alive connections close after")
    max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="connections and requests at once; beyond it uvicorn answers 503",
    )
    hsts_max_age_s: int = Field(
        31_536_000, ge=0, le=63_072_000, description="Strict-Transport-Security max-age on https; 0 omits it"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            try:
                ipaddress.ip_network(item)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or CIDR network without host bits (e.g. 10.0.0.5 "
                    "or 10.0.0.0/24)"
                ) from None
        return v

    @field_validator("login_window")
    @classmethod
    def _window(cls, v: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= v <= timedelta(days=1):
            raise ValueError("must be between 10 seconds and 1 day (ISO 8601 like PT5M or seconds)")
        return v


class SandboxSettings(_Model):
    host: str = "127.0.0.1"
    salesforce_port: int = Field(8701, ge=0, le=65535, description="0 picks a free port")
    hubspot_port: int = Field(8702, ge=0, le=65535, description="0 picks a free port")
    seed: int = 1
    contacts: int = Field(10_000, ge=0, le=5_000_000)


class OAuthClientSettings(_Model):
    """One OAuth app registered at a provider: a block of ``oauth.<provider>`` or of the clients file."""

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    ca_file: Path | None = Field(
        None,
        description="PEM bundle to trust instead of the system store, for this provider's OAuth and API "
        "calls (in the clients file: relative to the file)",
    )
    extra_hosts: tuple[str, ...] = Field(
        (), description="host or host:port added to the allowlist of API hosts a token response may name"
    )
    redirect_uris: tuple[str, ...] = Field(
        (),
        description="the redirect URIs registered with the app; when listed, crmhub refuses to start an "
        "authorization with another one",
    )


class SalesforceClientSettings(OAuthClientSettings):
    """A Salesforce connected app."""

    login_url: str = Field(
        "https://login.salesforce.com", description="https://login.salesforce.com, a My Domain, test.…"
    )


class HubSpotClientSettings(OAuthClientSettings):
    """A HubSpot public app."""

    app_url: str = Field("https://app.hubspot.com", description="where the authorize page is")
    api_url: str = Field("https://api.hubapi.com", description="token, revocation and API base")


class OAuthClients(_Model):
    """The provider blocks: the shape of ``oauth.salesforce`` / ``oauth.hubspot`` and of the clients file."""

    salesforce: SalesforceClientSettings | None = None
    hubspot: HubSpotClientSettings | None = None

    def to_yaml(self) -> str:
        """The file's YAML, client secrets in clear: write it with mode 0600 (it is a secrets file)."""
        data: dict[str, Any] = {}
        for name in ("salesforce", "hubspot"):
            block: OAuthClientSettings | None = getattr(self, name)
            if block is not None:
                fields = block.model_dump(mode="json", exclude_none=True)
                fields["client_secret"] = block.client_secret.get_secret_value()
                data[name] = fields
        return yaml.safe_dump(data, sort_keys=False)


class OAuthSettings(OAuthClients):
    """Where crmhub's OAuth clients come from, and the redirect URI it sends."""

    redirect_uri: str | None = Field(
        None,
        description="registered with the apps; default: the CLI's http://127.0.0.1:8765/callback, the web "
        "app's http://HOST:PORT/oauth/callback",
    )
    clients_file: Path = Field(
        Path("oauth-clients.yaml"), description="provider blocks read when present; relative to data_dir"
    )


RENAMED_ENV = {
    "CRMHUB_SALESFORCE_CLIENT_ID": "CRMHUB_OAUTH__SALESFORCE__CLIENT_ID",
    "CRMHUB_SALESFORCE_CLIENT_SECRET": "CRMHUB_OAUTH__SALESFORCE__CLIENT_SECRET",
    "CRMHUB_SALESFORCE_LOGIN_URL": "CRMHUB_OAUTH__SALESFORCE__LOGIN_URL",
    "CRMHUB_HUBSPOT_CLIENT_ID": "CRMHUB_OAUTH__HUBSPOT__CLIENT_ID",
    "CRMHUB_HUBSPOT_CLIENT_SECRET": "CRMHUB_OAUTH__HUBSPOT__CLIENT_SECRET",
    "CRMHUB_OAUTH_REDIRECT_URI": "CRMHUB_OAUTH__REDIRECT_URI",
}
"""Environment variables of earlier versions → the setting that replaced each (refused when set)."""


def _default_regions() -> dict[str, RegionSettings]:
    return {
        "eu": RegionSettings(task_queue="crmhub-eu", jurisdiction="EEA", description="EEA processing"),
        "us": RegionSettings(task_queue="crmhub-us", jurisdiction="US", description="US processing"),
    }


class Settings(BaseSettings):
    """Everything crmhub reads at start."""

    model_config = SettingsConfigDict(
        env_prefix="CRMHUB_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(
        Path(".crmhub"), description="state of the embedded default (DB, keys, dev server)"
    )
    database_url: str = ""
    temporal: TemporalSettings = TemporalSettings()
    regions: dict[str, RegionSettings] = Field(default_factory=_default_regions)  # see _DefaultRegions
    default_region: str = "eu"
    worker: WorkerSettings = WorkerSettings()
    schedules: ScheduleSettings = ScheduleSettings()
    sandbox: SandboxSettings = SandboxSettings()
    governance: GovernanceSettings = GovernanceSettings()
    codec: CodecSettings = CodecSettings()
    oauth: OAuthSettings = OAuthSettings()
    web: WebSettings = WebSettings()
    notices: NoticeSettings = NoticeSettings()
    connectors: dict[str, dict[str, JsonValue]] = Field(
        default_factory=dict,
        description="per provider, options of its connector's config (e.g. "
        "CRMHUB_CONNECTORS__HUBSPOT__EXPORT_THRESHOLD=20000); checked when a worker starts",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if v and not v.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        return v

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: dict[str, RegionSettings]) -> dict[str, RegionSettings]:
        if not v:
            raise ValueError("at least one region is required, e.g. eu and us")
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"region name {name!r} must be lowercase letters, digits or '-'")
        queues = [r.task_queue for r in v.values()]
        if len(set(queues)) != len(queues):
            raise ValueError("each region needs its own task_queue (isolation of regional processing)")
        return v

    @model_validator(mode="after")
    def _default_region_known(self) -> Settings:
        if self.default_region not in self.regions:
            raise ValueError(
                f"default_region {self.default_region!r} is not one of regions: {sorted(self.regions)}"
            )
        return self

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under ``data_dir``."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'crmhub.db').resolve()}"

    def region_for(self, registry_region: str) -> str:
        """The configured region whose jurisdiction is ``registry_region`` (e.g. ``eea`` → ``eu``)."""
        for name, region in self.regions.items():
            if region.jurisdiction.lower() == registry_region.lower():
                return name
        raise ConfigError(
            f"no configured region has jurisdiction {registry_region.upper()!r}; add one under regions "
            "in temporal.yaml (e.g. eu: {task_queue: crmhub-eu, jurisdiction: EEA})"
        )

    def task_queue(self, region: str) -> str:
        try:
            return self.regions[region].task_queue
        except KeyError:
            raise ConfigError(
                f"unknown region {region!r}; configured regions are {sorted(self.regions)} "
                "(temporal.yaml: regions)"
            ) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        file_defines_regions = False
        if path is not None:
            yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=path)
            file_defines_regions = "regions" in yaml_source()
            sources.append(yaml_source)
        if not file_defines_regions:
            # Lowest priority, so one CRMHUB_REGIONS__EU__TASK_QUEUE deep-merges into the default
            # region instead of replacing it. A file that lists regions gets exactly those.
            sources.append(_DefaultRegions(settings_cls))
        return tuple(sources)


class _DefaultRegions(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {"regions": {k: v.model_dump() for k, v in _default_regions().items()}}


def config_path() -> Path | None:
    """``$CRMHUB_CONFIG``, else ``./temporal.yaml`` if present, else None (defaults only)."""
    named = os.environ.get("CRMHUB_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"CRMHUB_CONFIG names {path}, which does not exist; fix the path or unset it")
        return path
    local = Path("temporal.yaml")
    return local if local.is_file() else None


def _env_name(loc: tuple[Any, ...]) -> str:
    return "CRMHUB_" + "__".join(str(p).upper() for p in loc)


def load_settings(**overrides: Any) -> Settings:
    """Load and validate settings; any problem becomes one :class:`ConfigError` naming field and fix."""
    renamed = [f"{old} is no longer read: set {new}" for old, new in RENAMED_ENV.items() if old in os.environ]
    if renamed:
        raise ConfigError("renamed settings: " + "; ".join(renamed) + " (same value)")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        where = config_path() or "temporal.yaml"
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p != "__root__")
            field = ".".join(str(p) for p in loc) or "(settings)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown setting; remove it or check its spelling against temporal.yaml"
            problems.append(f"{field}: {msg} (set it in {where} or {_env_name(loc)})")
        raise ConfigError("invalid crmhub settings: " + "; ".join(problems)) from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # unreadable or unparsable YAML
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"cannot read settings file {config_path()}: {detail}; fix the YAML syntax"
        ) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(
            f"cannot read settings file {config_path()}: the YAML nests too deeply; fix the structure"
        ) from None
