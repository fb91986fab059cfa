"""The one place where crmhub errors become Temporal retry behaviour (STYLE habit 4).

::

    raised in an activity                         ApplicationError                        Temporal
    ────────────────────────────────────────────  ──────────────────────────────────────  ───────────────
    ConfigError          (config)                 type=ConfigError, non_retryable         fails the run
    AuthError            (auth)                   type=AuthError / ReauthorizationRequired non_retryable
    DataError            (data)                   type=DataError, non_retryable           (records are
                                                                                          dead-lettered
                                                                                          one by one; a
                                                                                          DataError here
                                                                                          is a whole batch)
    PolicyError          (policy)                 type=PolicyError / PurposeViolation /   fails closed
                                                  TransferNotPermitted / IntegrityError,
                                                  non_retryable
    RateLimited          (rate_limited)           type=RateLimited, retryable,            retried after
                                                  next_retry_delay=retry_after            the vendor's delay
    TransientError       (transient)              type=TransientError, retryable          backoff
    anything else        (a bug, a library)       type=<class name>, retryable,           backoff; the
                                                  message names only the type             message holds no
                                                                                          record content

``type`` is the most specific class of the :mod:`schemas.errors` tree the exception belongs to
(``PlanRefused`` → ``PurposeViolation``, a connector's ``InvalidField(DataError)`` → ``DataError``),
so workflows match on a small, stable set of names. ``details`` carries the error's ``code`` (a
vendor or rule code, never a value). The original exception is not chained: its cause could hold
a vendor response body.
"""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta
from typing import Final

from temporalio.exceptions import ApplicationError

import schemas.errors as tree
from schemas.errors import CrmhubError, ErrorKind, RateLimited

__all__ = ["NON_RETRYABLE_TYPES", "error_type", "to_application_error", "unexpected_error"]

log = logging.getLogger(__name__)

NON_RETRYABLE_TYPES: Final = (
    "ConfigError",
    "AuthError",
    "ReauthorizationRequired",
    "DataError",
    "PolicyError",
    "PurposeViolation",
    "TransferNotPermitted",
    "IntegrityError",
)
"""Every ``type`` :func:`to_application_error` marks non-retryable (for workflow retry policies)."""

_TREE: Final = frozenset(
    obj
    for name in tree.__all__
    if isinstance(obj := getattr(tree, name), type) and issubclass(obj, CrmhubError)
)


def error_type(exc: CrmhubError) -> str:
    """The name of the most specific :mod:`schemas.errors` class ``exc`` is an instance of."""
    for cls in type(exc).__mro__:
        if cls in _TREE:
            return cls.__name__
    return CrmhubError.__name__  # pragma: no cover - every CrmhubError has CrmhubError in its MRO


def to_application_error(exc: CrmhubError) -> ApplicationError:
    """Map ``exc`` by its :class:`~schemas.errors.ErrorKind` (see the table in the module docstring).

    The message is the error's own (crmhub error messages carry no PII, secrets or tokens).
    """
    kind = exc.kind
    delay: timedelta | None = None
    if isinstance(exc, RateLimited) and exc.retry_after is not None and exc.retry_after > 0:
        delay = timedelta(seconds=exc.retry_after)
    return ApplicationError(
        str(exc),
        {"code": exc.code, "kind": kind.value},
        type=error_type(exc),
        non_retryable=kind in (ErrorKind.CONFIG, ErrorKind.AUTH, ErrorKind.DATA, ErrorKind.POLICY),
        next_retry_delay=delay,
    )


def unexpected_error(exc: BaseException, where: str) -> ApplicationError:
    """A retryable error for an exception outside the crmhub tree, naming only its type and the code
    location (file:line) it came from: its message could quote record content, so it is not kept,
    logged or chained."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    message = f"{where}: unexpected {type(exc).__name__}{at} (message withheld: it may quote record data)"
    log.error("%s", message)
    return ApplicationError(message, type=type(exc).__name__, non_retryable=False)
