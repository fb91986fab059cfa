"""Start both sandbox CRMs over HTTPS with one CA, ready-made OAuth clients and seeded data.

``crmhub sandbox``, ``crmhub demo``, tests and benchmarks use :func:`start_sandbox`. It writes two
files into ``data_dir``, both mode 0600 (they hold secrets):

* ``oauth-clients.yaml`` — an ordinary OAuth clients file (:class:`schemas.settings.OAuthClients`:
  per CRM the client id and secret, its URLs, the CA as ``ca_file``, its loopback ``host:port`` as
  ``extra_hosts``, the registered ``redirect_uris``), what a real deployment mounts as its secrets
  file: crmhub reads it like any other configuration and knows nothing of the sandbox. A file there
  that the sandbox did not write is never overwritten.
* ``sandbox.json`` — :class:`SandboxInfo`, for the sandbox's own consumers (tests, benchmarks, the
  demo): the same plus the control-API tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from sandbox.hubspot import HubSpotSandbox
from sandbox.salesforce import SalesforceSandbox
from sandbox.server import ServerThread
from sandbox.tls import SandboxCA
from schemas.errors import ConfigError
from schemas.settings import HubSpotClientSettings, OAuthClients, SalesforceClientSettings

__all__ = [
    "CLIENTS_FILE",
    "DEFAULT_REDIRECT_URIS",
    "RunningSandbox",
    "SandboxInfo",
    "clients_of",
    "start_sandbox",
]

CLIENTS_FILE = "oauth-clients.yaml"
"""The OAuth clients file the sandbox writes into ``data_dir`` (crmhub's default ``oauth.clients_file``)."""
_MARK = "# written by crmhub sandbox: OAuth clients of the local sandbox CRMs (rewritten at each start)\n"

# Where crmhub's connect flow receives the authorization code (web app and CLI loopback listener).
DEFAULT_REDIRECT_URIS = (
    "http://127.0.0.1:8000/oauth/callback",
    "http://localhost:8000/oauth/callback",
    "http://127.0.0.1:8765/callback",
)


@dataclass(frozen=True)
class SandboxInfo:
    salesforce_url: str
    hubspot_url: str
    ca_path: str
    salesforce_client_id: str
    salesforce_client_secret: str
    hubspot_client_id: str
    hubspot_client_secret: str
    salesforce_control_token: str
    hubspot_control_token: str
    redirect_uris: tuple[str, ...]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=2)

    @classmethod
    def read(cls, path: Path) -> SandboxInfo:
        data = json.loads(path.read_text())
        data["redirect_uris"] = tuple(data["redirect_uris"])
        return cls(**data)


def clients_of(info: SandboxInfo) -> OAuthClients:
    """The OAuth clients file's content for a running sandbox: both CRMs' apps, trusted through the
    sandbox CA, their loopback hosts allowlisted."""
    common: dict[str, Any] = {"ca_file": Path(info.ca_path), "redirect_uris": info.redirect_uris}
    return OAuthClients(
        salesforce=SalesforceClientSettings(
            client_id=info.salesforce_client_id,
            client_secret=SecretStr(info.salesforce_client_secret),
            login_url=info.salesforce_url,
            extra_hosts=(urlsplit(info.salesforce_url).netloc,),
            **common,
        ),
        hubspot=HubSpotClientSettings(
            client_id=info.hubspot_client_id,
            client_secret=SecretStr(info.hubspot_client_secret),
            app_url=info.hubspot_url,
            api_url=info.hubspot_url,
            extra_hosts=(urlsplit(info.hubspot_url).netloc,),
            **common,
        ),
    )


def _check_ours(path: Path) -> None:
    """Refuse to start over an OAuth clients file the sandbox did not write."""
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline()
    except FileNotFoundError:
        return
    if first != _MARK:
        raise ConfigError(
            f"{path} exists and was not written by the sandbox (a deployment's OAuth clients?); "
            "move it, or run the sandbox with another data_dir (CRMHUB_DATA_DIR)"
        )


def _write_clients_file(path: Path, clients: OAuthClients) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_MARK + clients.to_yaml())


@dataclass
class RunningSandbox:
    """Both emulators, their servers and the CA. Python handles for tests: ``.salesforce``, ``.hubspot``."""

    ca: SandboxCA
    salesforce: SalesforceSandbox
    hubspot: HubSpotSandbox
    servers: tuple[ServerThread, ServerThread]
    info: SandboxInfo
    clients_file: Path  # the OAuth clients file written for crmhub (see the module docstring)


def _hint(crm: str) -> str:
    return f"another with --{crm}-port or CRMHUB_SANDBOX__{crm.upper()}_PORT (0 picks a free one)"


def _previous_info(path: Path) -> SandboxInfo | None:
    try:
        return SandboxInfo.read(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None


@contextmanager
def start_sandbox(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    salesforce_port: int = 0,
    hubspot_port: int = 0,
    seed: int = 1,
    seed_counts: Mapping[str, Mapping[str, int]] | None = None,
    redirect_uris: tuple[str, ...] = DEFAULT_REDIRECT_URIS,
    salesforce_instance: str = "EU44",
    hubspot_location: str = "eu1",
) -> Iterator[RunningSandbox]:
    """Serve Salesforce and HubSpot emulators until the context exits.

    ``seed_counts`` e.g. ``{"salesforce": {"Contact": 10_000}, "hubspot": {"companies": 100}}``.
    ``salesforce_instance`` (``Organization.InstanceName``) and ``hubspot_location`` (the account's
    ``dataHostingLocation``) say where the emulated org's and portal's data live; the defaults are
    EU, like the demo's tenant.
    """
    _check_ours(data_dir / CLIENTS_FILE)
    ca = SandboxCA.ensure(data_dir / "sandbox-ca")
    sf = SalesforceSandbox(instance_name=salesforce_instance)
    hs = HubSpotSandbox(data_hosting_location=hubspot_location)
    counts = seed_counts or {}
    if counts.get("salesforce"):
        sf.seed(counts["salesforce"], seed=seed)
    if counts.get("hubspot"):
        hs.seed(counts["hubspot"], seed=seed)
    # Reuse the OAuth client credentials of an earlier run, so a configured crmhub keeps working
    # across sandbox restarts (the records themselves are re-seeded each time).
    previous = _previous_info(data_dir / "sandbox.json")
    sf_client = sf.oauth.register_client(
        list(redirect_uris),
        client_id=previous.salesforce_client_id if previous else None,
        client_secret=previous.salesforce_client_secret if previous else None,
        name="crmhub",
    )
    hs_client = hs.oauth.register_client(
        list(redirect_uris),
        client_id=previous.hubspot_client_id if previous else None,
        client_secret=previous.hubspot_client_secret if previous else None,
        name="crmhub",
    )
    sf_srv = ServerThread(
        sf.app(), ca, host=host, port=salesforce_port, name="salesforce", port_hint=_hint("salesforce")
    )
    try:
        hs_srv = ServerThread(
            hs.app(), ca, host=host, port=hubspot_port, name="hubspot", port_hint=_hint("hubspot")
        )
    except BaseException:
        sf_srv.stop()
        raise
    sf.base_url, hs.base_url = sf_srv.url, hs_srv.url
    info = SandboxInfo(
        salesforce_url=sf_srv.url,
        hubspot_url=hs_srv.url,
        ca_path=str(ca.ca_path),
        salesforce_client_id=sf_client.client_id,
        salesforce_client_secret=sf_client.client_secret,
        hubspot_client_id=hs_client.client_id,
        hubspot_client_secret=hs_client.client_secret,
        salesforce_control_token=sf.control_token,
        hubspot_control_token=hs.control_token,
        redirect_uris=tuple(redirect_uris),
    )
    sf_srv.start()
    try:
        hs_srv.start()
        try:
            _write_clients_file(data_dir / CLIENTS_FILE, clients_of(info))
            info.write(data_dir / "sandbox.json")
            yield RunningSandbox(ca, sf, hs, (sf_srv, hs_srv), info, data_dir / CLIENTS_FILE)
        finally:
            hs_srv.stop()
    finally:
        sf_srv.stop()
