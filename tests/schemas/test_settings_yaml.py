"""Regression test: a temporal.yaml nested too deeply is a ConfigError, not a RecursionError (found by
tests/chaos/test_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from schemas.settings import load_settings


@pytest.mark.parametrize(
    "data",
    [
        b"temporal: " + b"[" * 10_000 + b"]" * 10_000 + b"\n",
        b"".join(b"  " * i + b"a:\n" for i in range(3_000)),
    ],
)
def test_too_deep_yaml_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "temporal.yaml"
    path.write_bytes(data)
    monkeypatch.setenv("CRMHUB_CONFIG", str(path))
    with pytest.raises(ConfigError, match="nests too deeply"):
        load_settings(data_dir=tmp_path)
