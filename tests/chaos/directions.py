"""Old names of ``tests/sync_support.py``'s helpers, still imported by tests/chaos/test_partial_failure.py;
delete this module once it imports ``SF_CONTACTS_TO_HS``, ``open_world`` and ``World.run`` from there."""

from __future__ import annotations

from schemas.sync import Progress, SyncMode
from tests.sync_support import SF_CONTACTS_TO_HS, Direction, World
from tests.sync_support import open_world as sync_world

__all__ = ["SF_CONTACTS_TO_HS", "run_full", "sync_world"]


async def run_full(world: World, d: Direction) -> Progress:
    """A full run of ``d`` awaited to its end; its progress (a failed run does not raise)."""
    return await world.run(d, SyncMode.FULL, may_fail=True)
