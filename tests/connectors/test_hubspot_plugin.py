"""The HubSpot connector as a plugin: registered under its entry point, its public surface honest,
its configuration strict, and hubspot-api-client imported by client.py alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

import connectors.hubspot as package
from connectors.hubspot import HubSpotConfig, HubSpotConnector
from connectors.registry import load_registry

PACKAGE_DIR = Path(package.__file__).parent


def test_entry_point_resolves_to_the_connector() -> None:
    cls = load_registry().get("hubspot")
    assert cls is HubSpotConnector
    assert cls.config_model is HubSpotConfig


def test_exported_members_are_exactly_all() -> None:
    public = {n for n in dir(package) if not n.startswith("_") and n[0].isupper()}
    assert set(package.__all__) == public


def test_only_client_py_imports_the_vendor_sdk() -> None:
    importers = set()
    for path in PACKAGE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "hubspot" or n.startswith("hubspot.") for n in names):
                importers.add(path.name)
    assert importers == {"client.py"}


def test_config_is_strict_and_region_is_not_guessed() -> None:
    with pytest.raises(ValidationError, match="https"):
        HubSpotConfig(base_url="http://api.hubapi.com")
    with pytest.raises(ValidationError):
        HubSpotConfig(page_size=201)
    assert HubSpotConfig().id_property("contacts") == "email"
    for config, region in (
        (HubSpotConfig(), "unknown"),
        (HubSpotConfig(base_url="https://api-eu1.hubapi.com"), "eu"),
        (HubSpotConfig(region="us"), "us"),
    ):
        conn = HubSpotConnector(config, _Tokens())
        assert conn.region == region
        conn.close()


class _Tokens:
    def access_token(self) -> str:
        return "unused"

    def refresh(self, rejected: str) -> str:
        return "unused"
