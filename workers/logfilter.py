"""Keep record content out of worker logs.

temporalio's worker logs a failing activity's message *and traceback* ("Completing activity as
failed"); a traceback's frames and an unexpected exception's text may hold record data. crmhub's
own errors carry no PII by design, but a vendor SDK's may. This filter drops tracebacks from
temporalio's loggers and replaces the text of non-crmhub exceptions by their type name.
"""

from __future__ import annotations

import logging

from temporalio.exceptions import ApplicationError

from schemas.errors import CrmhubError

__all__ = ["RedactActivityFailures", "install_log_redaction"]

_LOGGERS = ("temporalio.activity", "temporalio.worker", "temporalio.workflow", "temporalio.worker._activity",
            "temporalio.worker._workflow_instance")  # fmt: skip


class RedactActivityFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            kind = type(exc).__name__
            # crmhub errors and the ApplicationErrors mapped from them are PII-free by construction.
            safe = isinstance(exc, CrmhubError | ApplicationError)
            note = str(exc) if safe else "details withheld from logs"
            record.msg = f"{record.getMessage()} [{kind}: {note}]"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def install_log_redaction() -> None:
    """Attach the filter to temporalio's loggers (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactActivityFailures) for f in logger.filters):
            logger.addFilter(RedactActivityFailures())
