"""Regression tests: malformed instruction files are ConfigErrors (found by tests/chaos/test_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.policy import load_instruction
from schemas.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "instruction.yaml"


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "instruction.yaml"
    path.write_bytes(data)
    return path


def test_a_key_given_twice_is_refused_not_last_one_wins(tmp_path: Path) -> None:
    base = EXAMPLE.read_bytes()
    assert load_instruction(_write(tmp_path, base)).tenant == "acme"
    with pytest.raises(ConfigError, match="'tenant' appears twice"):
        load_instruction(_write(tmp_path, base + b"\ntenant: other\n"))
    nested = base.replace(b"  Contact: [", b"  Contact: [Phone]\n  Contact: [", 1)
    with pytest.raises(ConfigError, match="'Contact' appears twice"):
        load_instruction(_write(tmp_path, nested))


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"tenant: \xff\xfe\n", "not UTF-8"),
        (b"tenant: " + b"[" * 10_000 + b"]" * 10_000, "nests too deeply"),
        (b"".join(b"  " * i + b"a:\n" for i in range(3_000)), "nests too deeply"),
    ],
)
def test_undecodable_or_too_deep_files_are_config_errors(tmp_path: Path, data: bytes, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_instruction(_write(tmp_path, data))
