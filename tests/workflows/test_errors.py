"""to_application_error: every ErrorKind has its Temporal retry meaning; messages stay clean."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connectors.oauth import InstanceNotAllowed, OAuthCallbackError
from governance.policy import PlanRefused
from governance.vault import TenantKeysDestroyed
from schemas.errors import (
    AuthError,
    ConfigError,
    CrmhubError,
    DataError,
    IntegrityError,
    PolicyError,
    PurposeViolation,
    RateLimited,
    ReauthorizationRequired,
    TransferNotPermitted,
    TransientError,
)
from workflows.errors import NON_RETRYABLE_TYPES, to_application_error, unexpected_error

TABLE: list[tuple[CrmhubError, str, bool, timedelta | None]] = [
    (ConfigError("bad setting"), "ConfigError", True, None),
    (AuthError("token refused", code="INVALID_SESSION_ID"), "AuthError", True, None),
    (ReauthorizationRequired("reconnect"), "ReauthorizationRequired", True, None),
    (OAuthCallbackError("bad state", reason="state_unknown"), "AuthError", True, None),
    (DataError("bad batch"), "DataError", True, None),
    (PolicyError("unknown subprocessor"), "PolicyError", True, None),
    (PurposeViolation("outside"), "PurposeViolation", True, None),
    (PlanRefused("mapping reads X", reason={"rule": "mapping"}), "PurposeViolation", True, None),
    (TransferNotPermitted("no route"), "TransferNotPermitted", True, None),
    (IntegrityError("tampered"), "IntegrityError", True, None),
    (TenantKeysDestroyed("shredded"), "IntegrityError", True, None),
    (InstanceNotAllowed("off the allowlist"), "PolicyError", True, None),
    (RateLimited("slow down", retry_after=30), "RateLimited", False, timedelta(seconds=30)),
    (RateLimited("slow down"), "RateLimited", False, None),
    (TransientError("HTTP 503"), "TransientError", False, None),
]


@pytest.mark.parametrize(("exc", "type_", "non_retryable", "delay"), TABLE, ids=lambda v: repr(v)[:40])
def test_every_kind_maps_to_its_retry_meaning(
    exc: CrmhubError, type_: str, non_retryable: bool, delay: timedelta | None
) -> None:
    err = to_application_error(exc)
    assert (err.type, err.non_retryable, err.next_retry_delay) == (type_, non_retryable, delay)
    assert err.message == str(exc)
    assert err.details == ({"code": exc.code, "kind": exc.kind.value},)
    assert (type_ in NON_RETRYABLE_TYPES) is non_retryable
    assert err.__cause__ is None


def test_an_unexpected_exception_stays_retryable_and_withholds_its_message() -> None:
    try:
        {"a": 1}["jane.doe@example.com"]
    except KeyError as exc:
        err = unexpected_error(exc, "push_batch")
    assert err.type == "KeyError" and not err.non_retryable
    assert "jane" not in err.message and "push_batch" in err.message
    assert "test_errors.py:" in err.message  # where it came from, for whoever debugs it
