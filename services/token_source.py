"""The :class:`~connectors.base.TokenSource` a connector gets for one stored connection: access tokens
cached in memory, read from and refreshed through :class:`services.credentials.OAuthService`."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.credentials import OAuthService

__all__ = ["DbTokenSource"]


class DbTokenSource:
    """The :class:`~connectors.base.TokenSource` of one stored connection.

    ``access_token()`` answers from memory while the cached token is more than ``skew_s`` seconds
    from its expiry (tokens without a known expiry are used until the vendor rejects them), else it
    reads the database and refreshes through :meth:`OAuthService.refresh` if needed. After a 401 a
    connector calls ``refresh(rejected)`` once and retries the same page. Thread-safe.
    """

    def __init__(self, service: OAuthService, connection_id: str, *, skew_s: float = 60.0) -> None:
        self.service = service
        self.connection_id = connection_id
        self.skew = timedelta(seconds=skew_s)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires: datetime | None = None

    def _fresh(self, expires: datetime | None) -> bool:
        return expires is None or expires - self.skew > self.service.clock()

    def access_token(self) -> str:
        """A token that is not known to be expired (or about to be, within ``skew_s``)."""
        with self._lock:
            if self._token is not None and self._fresh(self._expires):
                return self._token
        token, expires = self.service.access_token(self.connection_id)
        if not self._fresh(expires):
            token, expires = self.service.refresh_with_expiry(self.connection_id, token)
        with self._lock:
            self._token, self._expires = token, expires
        return token

    def refresh(self, rejected: str) -> str:
        """A new access token after the vendor rejected ``rejected`` (single-flight across workers)."""
        token, expires = self.service.refresh_with_expiry(self.connection_id, rejected)
        with self._lock:
            self._token, self._expires = token, expires
        return token

    @property
    def instance_url(self) -> str:
        """The connection's API base URL (https, allowlisted)."""
        return self.service.instance_url(self.connection_id)
