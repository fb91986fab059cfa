"""A ``requests`` session that trusts the sandbox CA, whatever REQUESTS_CA_BUNDLE says.

requests lets the REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE environment variables override
``session.verify`` (https://github.com/psf/requests/issues/3829): with the machine's system
bundle in those variables, ``session.verify = "ca.pem"`` is silently replaced and the sandbox's
certificate fails to verify. The adapter below pins the CA at the transport level instead, so the
session still honours proxy environment variables and still verifies (``verify=False`` passed by
a caller is ignored too — the sandbox is never used without verification).
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

import requests
from requests.adapters import HTTPAdapter

__all__ = ["PinnedCAAdapter", "sandbox_session"]


class PinnedCAAdapter(HTTPAdapter):
    """An HTTPS adapter that always verifies against one CA bundle file."""

    def __init__(self, ca_path: str | PathLike[str], **kwargs: Any) -> None:
        self.ca_path = str(ca_path)
        super().__init__(**kwargs)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        return super().send(
            request, stream=stream, timeout=timeout, verify=self.ca_path, cert=cert, proxies=proxies
        )


def sandbox_session(ca_path: str | PathLike[str]) -> requests.Session:
    """A session whose HTTPS requests verify against ``ca_path`` only (the sandbox CA)."""
    session = requests.Session()
    session.verify = str(ca_path)
    session.mount("https://", PinnedCAAdapter(ca_path))
    return session
