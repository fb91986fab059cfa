"""Leaf package: pydantic models and the error tree shared by every other package."""

from schemas.errors import (
    AuthError,
    ConfigError,
    CrmhubError,
    DataError,
    ErrorKind,
    IntegrityError,
    PolicyError,
    PurposeViolation,
    RateLimited,
    ReauthorizationRequired,
    TransferNotPermitted,
    TransientError,
)

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
