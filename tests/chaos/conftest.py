"""Fixtures of the chaos suites: the stack's (``tests/sync_support.py``); a suite overrides
``worker_options``, ``seed_counts`` or ``demo_tenant`` to say what its run differs in.

Every chaos row is proven under the vendors' production faults (issue 13): the ``sandbox`` here is
the stack's with :func:`sandbox.faithful.turn_on` — HubSpot's short and empty search pages with a
cursor, opaque list cursors, batch create 200. Salesforce's late commits are turned on by the
phases written for them (``sf.late.mode(...)``). A suite that starts a sandbox of its own turns the
rules on itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox import faithful
from sandbox.runtime import RunningSandbox, start_sandbox
from schemas.settings import Settings
from tests.sync_support import demo, demo_tenant, seed_counts, settings, worker_options, world

__all__ = ["demo", "demo_tenant", "sandbox", "seed_counts", "settings", "worker_options", "world"]


@pytest.fixture
def sandbox(settings: Settings, seed_counts: dict[str, dict[str, int]] | None) -> Iterator[RunningSandbox]:
    """Both sandbox CRMs over HTTPS on loopback, holding ``seed_counts``, every vendor fault rule on."""
    with start_sandbox(settings.data_dir, seed_counts=seed_counts) as sb, faithful.faithful(sb):
        yield sb
