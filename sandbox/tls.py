"""A local certificate authority for the sandbox CRMs: real TLS on loopback, never ``verify=False``.

The CA and the server certificate are generated once with ``trustme`` and kept under a directory
(``ca.pem``, ``server.pem``, ``server.key``, mode 0600 for the key), so a standalone
``crmhub sandbox`` and its clients agree across processes. Clients are given ``ca.pem``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from schemas.errors import ConfigError

__all__ = ["SANDBOX_HOSTS", "SandboxCA"]

# The names the server certificate is valid for: the sandbox only ever listens on loopback.
SANDBOX_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class SandboxCA:
    """Paths of the CA bundle and of the server's certificate chain and key."""

    directory: Path

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def cert_path(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "server.key"

    @classmethod
    def ensure(cls, directory: Path) -> SandboxCA:
        """Load the CA under ``directory``, creating it (and the server certificate) if absent."""
        ca = cls(directory)
        if ca.ca_path.exists() and ca.cert_path.exists() and ca.key_path.exists():
            return ca
        directory.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA(organization_name="crmhub sandbox CA")
        leaf = authority.issue_cert(*SANDBOX_HOSTS, common_name="crmhub sandbox")
        ca.ca_path.write_bytes(authority.cert_pem.bytes())
        ca.cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        fd = os.open(ca.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(leaf.private_key_pem.bytes())
        return ca

    @classmethod
    def existing(cls, directory: Path) -> SandboxCA:
        """Load an existing CA; a missing file is a :class:`ConfigError` naming the fix."""
        ca = cls(directory)
        for path in (ca.ca_path, ca.cert_path, ca.key_path):
            if not path.is_file():
                raise ConfigError(
                    f"sandbox CA file {path} is missing; run 'crmhub sandbox' once to create it, "
                    f"or point sandbox.data_dir (CRMHUB_SANDBOX__DATA_DIR) at a directory holding it"
                )
        return ca

    def server_context(self) -> ssl.SSLContext:
        """Server-side TLS context: TLS 1.2 minimum."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Client-side context trusting only the sandbox CA (for httpx and urllib3 clients)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx
