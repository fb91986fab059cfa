"""The layering of DESIGN.md §2, checked on every product module's imports (``ast``, every import
statement: module level, inside functions and under ``TYPE_CHECKING`` alike)::

    schemas ← store ← governance ← services ← workflows ← workers, api
    schemas ← connectors (pure) ← services
    sandbox: a separate program that imports nothing of the product but schemas

A module may import its own package and any package below it, never one above: connectors import
no store, governance or services; store no governance; governance no services or workflows;
services no workflows, workers or api; workflows no workers or api. Only the dev/demo commands
(:data:`DEMO_COMMANDS`) import ``sandbox``; tests and benchmarks may. No product module is over
:data:`MAX_LINES` lines (sandbox, tests and benchmarks excepted).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600

_BELOW_SERVICES = {"schemas", "store", "governance", "connectors"}
MAY_IMPORT: dict[str, set[str]] = {
    "schemas": set(),
    "connectors": {"schemas"},
    "store": {"schemas"},
    "governance": {"schemas", "store"},
    "services": _BELOW_SERVICES,
    "workflows": _BELOW_SERVICES | {"services"},
    "workers": _BELOW_SERVICES | {"services", "workflows"},
    "api": _BELOW_SERVICES | {"services", "workflows", "workers"},
    "sandbox": {"schemas"},
}
"""Per product package, the other product packages it may import."""

PRODUCT = set(MAY_IMPORT)
DEMO_COMMANDS = {"api/demo.py", "api/cli_demo.py"}
"""``crmhub demo`` and ``crmhub sandbox``: the only product modules that may import ``sandbox``."""
UNSIZED = ("sandbox/",)


def product_modules() -> list[Path]:
    return sorted(p for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py"))


def imported_packages(path: Path) -> dict[str, int]:
    """Top-level product packages ``path`` imports → the line of the first such import."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PRODUCT:
                found.setdefault(top, node.lineno)
    return found


def violations() -> dict[str, str]:
    """Every violation, keyed ``kind path[ → package]``, with what is wrong."""
    out: dict[str, str] = {}
    for path in product_modules():
        rel = path.relative_to(ROOT).as_posix()
        package = rel.split("/")[0]
        for imported, line in imported_packages(path).items():
            if imported == package:
                continue
            if imported == "sandbox":
                if rel not in DEMO_COMMANDS:
                    out[f"sandbox {rel}"] = f"{rel}:{line} imports sandbox (only the demo commands may)"
            elif imported not in MAY_IMPORT[package]:
                out[f"upward {rel} → {imported}"] = (
                    f"{rel}:{line} imports {imported}, a layer above {package} (DESIGN.md §2)"
                )
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and not rel.startswith(UNSIZED):
            out[f"size {rel}"] = f"{rel} has {lines} lines (at most {MAX_LINES}): split it by concept"
    return out


def test_no_module_imports_upward_or_the_sandbox_or_is_too_long() -> None:
    found = violations()
    assert not found, "layering violations:\n" + "\n".join(sorted(found.values()))


def test_the_walk_sees_what_it_must_refuse(tmp_path: Path) -> None:
    """The import walk finds lazy and TYPE_CHECKING imports too (the ones a grep for ``^from`` misses)."""
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from sandbox.runtime import SandboxInfo\n"
        "def f():\n    import store.engine\n    from governance import vault\n"
    )
    assert imported_packages(module) == {"sandbox": 3, "store": 5, "governance": 6}
