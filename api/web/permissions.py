"""Which roles may use which route, read from the routes' own role guards — so a page shows a button,
form or link only when the server would accept it from the user looking at it.

A route whose dependencies include a role guard (:data:`api.web.tenancy.GUARD_ROLES`: ``AdminScope``,
``EditorScope``) admits the roles the guard names; any other route admits every logged-in user.
:class:`RoutePermissions` matches a method and a URL the way the router does (each route's compiled
path pattern), so templates ask about the exact URL they are about to render::

    {% if can("POST", "/syncs/" ~ s.id ~ "/run") %}<form …>{% else %}Only {{ only(…) }} can …{% endif %}

There is no second list of actions: a new guarded route is hidden from the roles it refuses as soon as
its template asks ``can``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, compile_path

from api.web.tenancy import GUARD_ROLES
from store.users import ROLES

__all__ = ["RoutePermissions", "RouteRule"]


@dataclass(frozen=True)
class RouteRule:
    """One route: its methods, its path pattern and the roles it admits (``None``: every role)."""

    path: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    roles: tuple[str, ...] | None

    def admits(self, role: str) -> bool:
        return self.roles is None or role in self.roles


def _guard_roles(route: Any) -> tuple[str, ...] | None:
    """The roles every role guard among the route's dependencies (their own included) admits."""
    roles: set[str] | None = None
    todo = [getattr(route, "dependant", None)]
    while todo:
        dep = todo.pop()
        if dep is None:
            continue
        allowed = GUARD_ROLES.get(dep.call) if dep.call is not None else None
        if allowed is not None:
            roles = set(allowed) if roles is None else roles & set(allowed)
        todo.extend(dep.dependencies)
    return None if roles is None else tuple(sorted(roles))


class RoutePermissions:
    """The app's routes with the roles each admits."""

    def __init__(self, rules: Iterable[RouteRule]) -> None:
        self.rules = list(rules)

    @classmethod
    def of(cls, routes: Iterable[BaseRoute]) -> RoutePermissions:
        rules = []
        for ctx in iter_route_contexts(list(routes)):
            methods = getattr(ctx, "methods", None)
            if not ctx.path or not methods:
                continue
            pattern, _format, _convertors = compile_path(ctx.path)
            rules.append(RouteRule(ctx.path, frozenset(methods), pattern, _guard_roles(ctx.original_route)))
        return cls(rules)

    def rule(self, method: str, url: str) -> RouteRule | None:
        """The route ``method url`` reaches (the URL's query ignored), or ``None`` (a 404 or 405)."""
        path = urlsplit(url).path
        method = method.upper()
        for rule in self.rules:
            if method in rule.methods and rule.pattern.match(path):
                return rule
        return None

    def allows(self, role: str | None, method: str, url: str) -> bool:
        """Whether a logged-in user of ``role`` reaches the route (never for no role or no route)."""
        rule = self.rule(method, url)
        return role is not None and rule is not None and rule.admits(role)

    def who(self, method: str, url: str) -> str:
        """Who may, for a page's note: "an admin", "an admin or an editor", "any user"."""
        rule = self.rule(method, url)
        if rule is None or rule.roles is None:
            return "any user"
        return " or ".join(f"an {r}" if r[0] in "aeiou" else f"a {r}" for r in _ranked(rule.roles))


def _ranked(roles: tuple[str, ...]) -> list[str]:
    return sorted(roles, key=lambda r: ROLES.index(r) if r in ROLES else len(ROLES))
