"""The one error tree of crmhub. Every error carries a retry meaning (its :class:`ErrorKind`).

::

    CrmhubError                      kind decides Temporal retry behaviour (workflows/activities map it once)
    ├── ConfigError                  config     — non-retryable; message names the field and the fix
    ├── AuthError                    auth       — non-retryable; the connection needs re-authorisation
    │   └── ReauthorizationRequired
    ├── RateLimited                  rate_limited — retry after ``retry_after`` seconds (vendor asked)
    ├── TransientError               transient  — retry with backoff (5xx, dropped connection, timeout)
    ├── DataError                    data       — non-retryable for the record/batch; dead-letter it
    └── PolicyError                  policy     — non-retryable; fail closed
        ├── PurposeViolation         a plan reads/serves outside the processing instruction
        ├── TransferNotPermitted     a cross-region move without a recorded mechanism
        └── IntegrityError           a ciphertext, key or ledger failed verification

Messages must never contain PII, secrets or tokens: they end up in logs and (encrypted) in
Temporal history.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AuthError",
    "ConfigError",
    "CrmhubError",
    "DataError",
    "ErrorKind",
    "IntegrityError",
    "PolicyError",
    "PurposeViolation",
    "RateLimited",
    "ReauthorizationRequired",
    "TransferNotPermitted",
    "TransientError",
]


class ErrorKind(StrEnum):
    """What an error means for retrying."""

    CONFIG = "config"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    DATA = "data"
    POLICY = "policy"

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.RATE_LIMITED, ErrorKind.TRANSIENT)


class CrmhubError(Exception):
    """Base of every crmhub error; ``kind`` says whether a retry can help."""

    kind: ErrorKind = ErrorKind.TRANSIENT

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class ConfigError(CrmhubError):
    """A setting, argument or stored definition is wrong or missing: retrying cannot help, the
    message names the field and the fix."""

    kind = ErrorKind.CONFIG


class AuthError(CrmhubError):
    """Not allowed: the vendor refused the token or the connected user's permissions, or an OAuth
    flow did not complete. Retrying cannot help; a person connects (or grants) again."""

    kind = ErrorKind.AUTH


class ReauthorizationRequired(AuthError):
    """The refresh token is dead (revoked/expired): a human must connect the CRM again."""


class RateLimited(CrmhubError):
    """The vendor asked to slow down: retry after ``retry_after`` seconds (None: it did not say)."""

    kind = ErrorKind.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class TransientError(CrmhubError):
    """Worth retrying with backoff: a 5xx, a dropped connection, a timeout, a service restarting."""

    kind = ErrorKind.TRANSIENT


class DataError(CrmhubError):
    """A record or batch the vendor (or crmhub) cannot take as it is: retrying the same data fails
    the same way, so it is dead-lettered."""

    kind = ErrorKind.DATA


class PolicyError(CrmhubError):
    """Processing would break the controller's instruction, a transfer rule or an integrity check:
    the run fails closed."""

    kind = ErrorKind.POLICY


class PurposeViolation(PolicyError):
    """A plan would process data outside the controller's processing instruction."""


class TransferNotPermitted(PolicyError):
    """A move to another region has no recorded transfer mechanism for its route."""


class IntegrityError(PolicyError):
    """Sealed data, a wrapped key or the lineage ledger failed verification."""
