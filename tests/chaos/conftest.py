"""Fixtures of the chaos suites: the stack's (``tests/sync_support.py``); a suite overrides
``worker_options``, ``seed_counts`` or ``demo_tenant`` to say what its run differs in."""

from __future__ import annotations

from tests.sync_support import demo, demo_tenant, sandbox, seed_counts, settings, worker_options, world

__all__ = ["demo", "demo_tenant", "sandbox", "seed_counts", "settings", "worker_options", "world"]
