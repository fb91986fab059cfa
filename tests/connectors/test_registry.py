"""Connectors come from the ``crmhub.connectors`` entry-point group: a pip-installed third-party
plugin appears with no change to crmhub; a broken one is reported and skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.registry import load_registry
from schemas.connector import WriteMode
from schemas.errors import ConfigError

PLUGINS = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """pip-install the two fixture plugins into a private directory (no network: no build isolation)."""
    target: Path = tmp_path_factory.mktemp("site")
    for name in ("example", "broken"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--target", str(target), str(PLUGINS / name)],
            check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    return target


@pytest.fixture
def with_plugins(plugin_site: Path, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(plugin_site))
    return plugin_site


def test_third_party_plugin_appears_and_works(with_plugins) -> None:
    registry = load_registry()
    cls = registry.get("memory")
    assert registry.sources["memory"] == "crmhub-example-connector"
    conn = cls()
    result = conn.write_batch(
        "people", [{"email": "a@x.test"}, {"email": "b@x.test"}], WriteMode.UPSERT, external_id="email"
    )
    assert [o.status.value for o in result.outcomes] == ["created", "created"]


def test_broken_plugins_are_reported_and_skipped(with_plugins) -> None:
    registry = load_registry()
    reasons = {b.name: b.reason for b in registry.broken}
    assert "some_missing_vendor_sdk" in reasons["broken"]
    assert "not a subclass" in reasons["notaconnector"]
    assert "broken" not in registry.connectors
    assert "memory" in registry.connectors  # the others still load
    with pytest.raises(ConfigError, match="installed but broken"):
        registry.get("broken")


def test_unknown_connector_names_the_installed_ones() -> None:
    with pytest.raises(ConfigError, match="installed connectors"):
        load_registry().get("nope")


def test_cli_lists_plugins(with_plugins, tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(with_plugins), *sys.path])}
    res = subprocess.run(
        [sys.executable, "-m", "api", "connectors", "list", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    names = {c["name"]: c for c in data["connectors"]}
    assert names["memory"]["distribution"] == "crmhub-example-connector"
    assert {b["name"] for b in data["broken"]} == {"broken", "notaconnector"}
