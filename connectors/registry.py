"""Discover connectors from the ``crmhub.connectors`` entry-point group.

A third-party package ships a connector by declaring an entry point in that group; it appears in
``crmhub connectors list`` with no change to crmhub. A plugin that fails to import, or is not a
:class:`~connectors.base.Connector`, is reported (with the reason) and skipped — never fatal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from connectors.base import Connector
from schemas.errors import ConfigError

__all__ = ["GROUP", "BrokenPlugin", "Registry", "load_registry"]

GROUP = "crmhub.connectors"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    target: str
    distribution: str | None
    reason: str


@dataclass(frozen=True)
class Registry:
    connectors: dict[str, type[Connector]]
    sources: dict[str, str]  # connector name → distribution that provides it
    broken: tuple[BrokenPlugin, ...]

    def get(self, name: str) -> type[Connector]:
        try:
            return self.connectors[name]
        except KeyError:
            known = ", ".join(sorted(self.connectors)) or "none"
            broken = [b for b in self.broken if b.name == name]
            hint = f" (it is installed but broken: {broken[0].reason})" if broken else ""
            raise ConfigError(
                f"unknown connector {name!r}{hint}; installed connectors: {known}. "
                f"Install a plugin that declares it in the {GROUP!r} entry-point group"
            ) from None


def _load(ep: EntryPoint) -> type[Connector]:
    obj = ep.load()
    if not (isinstance(obj, type) and issubclass(obj, Connector)):
        raise TypeError(f"{ep.value} is not a subclass of connectors.base.Connector")
    if getattr(obj, "name", None) != ep.name:
        raise TypeError(f"{ep.value}.name is {getattr(obj, 'name', None)!r}, expected {ep.name!r}")
    return obj


def load_registry() -> Registry:
    connectors: dict[str, type[Connector]] = {}
    sources: dict[str, str] = {}
    broken: list[BrokenPlugin] = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else None
        if ep.name in connectors:
            broken.append(
                BrokenPlugin(
                    ep.name, ep.value, dist, f"duplicate name, already provided by {sources[ep.name]}"
                )
            )
            continue
        try:
            connectors[ep.name] = _load(ep)
            sources[ep.name] = dist or "?"
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("skipping broken connector plugin %s (%s): %s", ep.name, ep.value, reason)
            broken.append(BrokenPlugin(ep.name, ep.value, dist, reason))
    return Registry(connectors, sources, tuple(broken))
