"""Shared helpers of the chaos suites (issue 7): seeded, time-bounded, against the real dev server,
the sandbox CRMs and the database of ``db_url`` (SQLite, or PostgreSQL with
``CRMHUB_TEST_DATABASE_URL``); loopback only.

Every suite runs at a reduced size in the normal ``bin/test``; ``CRMHUB_CHAOS_FULL=1 pytest -m chaos``
runs the full sizes of docs/RELIABILITY.md.
"""

from __future__ import annotations

import os

FULL = os.environ.get("CRMHUB_CHAOS_FULL", "") not in ("", "0")


def size(reduced: int, full: int) -> int:
    """``full`` when ``CRMHUB_CHAOS_FULL`` is set, else ``reduced`` (what CI runs)."""
    return full if FULL else reduced
