"""Start both sandbox CRMs over HTTPS with one CA, ready-made OAuth clients and seeded data.

``crmhub sandbox``, ``crmhub demo``, tests and benchmarks use :func:`start_sandbox`. Everything a
client in another process needs (URLs, CA path, OAuth client credentials, control tokens) is in
:class:`SandboxInfo`, also written to ``<data_dir>/sandbox.json`` (mode 0600: it holds secrets).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sandbox.hubspot import HubSpotSandbox
from sandbox.salesforce import SalesforceSandbox
from sandbox.server import ServerThread
from sandbox.tls import SandboxCA

__all__ = ["DEFAULT_REDIRECT_URIS", "RunningSandbox", "SandboxInfo", "start_sandbox"]

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


@dataclass
class RunningSandbox:
    """Both emulators, their servers and the CA. Python handles for tests: ``.salesforce``, ``.hubspot``."""

    ca: SandboxCA
    salesforce: SalesforceSandbox
    hubspot: HubSpotSandbox
    servers: tuple[ServerThread, ServerThread]
    info: SandboxInfo


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
) -> Iterator[RunningSandbox]:
    """Serve Salesforce and HubSpot emulators until the context exits.

    ``seed_counts`` e.g. ``{"salesforce": {"Contact": 10_000}, "hubspot": {"companies": 100}}``.
    """
    ca = SandboxCA.ensure(data_dir / "sandbox-ca")
    sf = SalesforceSandbox()
    hs = HubSpotSandbox()
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
            info.write(data_dir / "sandbox.json")
            yield RunningSandbox(ca, sf, hs, (sf_srv, hs_srv), info)
        finally:
            hs_srv.stop()
    finally:
        sf_srv.stop()
