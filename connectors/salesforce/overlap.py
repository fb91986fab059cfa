"""The overlap window of incremental reads: what was handed out near the cursor, so a re-read of the
last ``overlap_s`` seconds delivers late-committed rows and nothing twice.

A long transaction stamps its rows when it writes them but makes them visible only when it commits,
so a row can appear with a SystemModstamp *older* than rows already read. Salesforce's replication
API tells clients to restart from ``latestDateCovered`` "for safety" for exactly this reason
(https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_getupdated_getupdatedresult.htm),
and connectors meet it in production (airbytehq/airbyte#27146; singer-io/tap-salesforce#135 added a
lookback window). Each incremental run therefore re-reads from ``cursor - overlap_s`` and skips
exactly the ``(Id, SystemModstamp)`` pairs it handed out before: a row changed again has a new stamp
and is delivered; a late row was never seen and is delivered; the rest are skipped.

:class:`Seen` holds those pairs for stamps within the window of the high-water mark, grouped by
stamp, at most ``limit`` of them. When more changes than that fall inside the window, the oldest
pairs are forgotten and the next re-read hands them out again (logged): beyond the bound the window
is at-least-once, never lossy. (Until 2026-12-08 it raised a floor instead and re-read only above it,
so nothing repeated — and a row committed late below the floor was never read: the full-N crash
suite lost one of 1,000 late commits among 3,002 changes, docs/RELIABILITY.md.) A repeat is the same
(Id, SystemModstamp), so the destination's upsert writes the values it already holds. Encoded in
``StreamState.extra``: ``seen`` = ``<stamp ms base 36, as a step from the previous group>:<15-char
ids concatenated>`` groups joined by ``;``; 15 to ~20 bytes a pair (2,000 pairs ≤ 40 KB). A
``seen_floor`` left by an older state is ignored (its pairs below are re-read once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["FLOOR_KEY", "SEEN_KEY", "Key", "Seen"]

log = logging.getLogger(__name__)

SEEN_KEY = "seen"
FLOOR_KEY = "seen_floor"
_ID_WIDTH = 15
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"

Key = tuple[int, str]
"""A keyset position: (SystemModstamp in epoch ms, Id)."""


def _b36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if n == 0:
            return out


@dataclass
class Seen:
    """The ``(Id, SystemModstamp)`` pairs handed out within the overlap window (see module docstring)."""

    groups: dict[int, set[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, extra: Mapping[str, str]) -> Seen | None:
        """The pairs a state carries; None for a state written before there was a window (or a broken one)."""
        raw = extra.get(SEEN_KEY)
        if raw is None:
            return None
        seen = cls()
        try:
            stamp = 0
            for part in filter(None, raw.split(";")):
                delta, _, ids = part.partition(":")
                if len(ids) % _ID_WIDTH:
                    return None
                stamp += int(delta, 36)
                seen.groups[stamp] = {ids[i : i + _ID_WIDTH] for i in range(0, len(ids), _ID_WIDTH)}
        except ValueError:
            return None
        return seen

    def dump(self) -> dict[str, str]:
        parts, previous = [], 0
        for stamp, ids in sorted(self.groups.items()):
            if ids:
                parts.append(f"{_b36(stamp - previous)}:{''.join(sorted(ids))}")
                previous = stamp
        return {SEEN_KEY: ";".join(parts)}

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.groups.values())

    def __contains__(self, key: Key) -> bool:
        return key[1][:_ID_WIDTH] in self.groups.get(key[0], ())

    def add(self, key: Key) -> None:
        self.groups.setdefault(key[0], set()).add(key[1][:_ID_WIDTH])

    def _pairs(self) -> Iterator[Key]:
        for stamp in sorted(self.groups):
            for rid in sorted(self.groups[stamp]):
                yield stamp, rid

    def prune(self, high_water_ms: int, window_ms: int, limit: int) -> None:
        """Forget pairs older than the window; beyond ``limit``, forget the oldest (the next re-read
        hands those out again rather than risk passing a late commit among them)."""
        for stamp in [s for s in self.groups if s < high_water_ms - window_ms]:
            del self.groups[stamp]
        excess = len(self) - limit
        if excess <= 0:
            return
        for stamp, rid in list(self._pairs())[:excess]:
            self.groups[stamp].discard(rid)
            if not self.groups[stamp]:
                del self.groups[stamp]
        log.warning(
            "%d changes within the overlap window, more than overlap_max_ids=%d: the next re-read "
            "hands out the %d oldest again (at-least-once; raise overlap_max_ids to avoid it)",
            limit + excess,
            limit,
            excess,
        )
