"""The processing instruction: canonical hash, immutability, and YAML errors that name the field and
the fix without echoing values; malformed files are ConfigErrors (regressions found by
tests/chaos/test_bad_input.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from governance.policy import load_instruction
from schemas.errors import ConfigError
from tests.governance.policy.support import BASE, EXAMPLE, instruction


def test_example_instruction_loads() -> None:
    ins = load_instruction(EXAMPLE)
    assert ins.tenant == "acme"
    assert ins.version == 3
    assert "Email" in ins.allowed_fields["Contact"]
    assert ins.pseudonymize["Contact"] == ("Email",)
    assert ins.content_hash.startswith("sha256:")


def test_content_hash_is_canonical() -> None:
    a = instruction()
    b = instruction(allowed_fields={"Contact": ["LastName", "FirstName", "Email", "Id"]})
    assert a.content_hash == b.content_hash
    assert instruction(retention_days=31).content_hash != a.content_hash
    expected = json.dumps(
        a.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert a.content_hash == "sha256:" + hashlib.sha256(expected.encode()).hexdigest()


def test_instruction_is_frozen() -> None:
    ins = instruction()
    with pytest.raises(Exception, match="frozen"):
        ins.purpose = "marketing"  # type: ignore[misc]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "instruction.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        ({"retention_days": 0}, "retention_days", "whole number of days"),
        ({"valid_from": "2025-01-01T00:00:00"}, "valid_from", "with a timezone"),
        ({"allowed_fields": {"Contact": []}}, "allowed_fields.Contact", "at least one field"),
        ({"allowed_fields": {"Contact": ["Id", "Id"]}}, "allowed_fields.Contact", "duplicate"),
        ({"pseudonymize": {"Contact": ["SSN"]}}, "pseudonymize.Contact", "not in allowed_fields"),
        ({"pseudonymize": {"Lead": ["Email"]}}, "pseudonymize.Lead", "not in allowed_fields"),
        ({"valid_to": "2024-01-01T00:00:00Z"}, "valid_to", "later than valid_from"),
        ({"permitted_regions": []}, "permitted_regions", "region code"),
        ({"purpos": "typo"}, "purpos", "fix its spelling"),
    ],
)
def test_yaml_errors_name_the_field_and_fix(
    tmp_path: Path, change: dict[str, Any], field: str, fix: str
) -> None:
    data = {**BASE, **change}
    path = _write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_instruction(path)
    message = str(info.value)
    assert field in message
    assert fix in message
    assert str(path) in message


def test_yaml_missing_field_and_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'purpose': Field required; fix: set purpose"):
        load_instruction(_write(tmp_path, "tenant: acme\nversion: 1\n"))
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_instruction(_write(tmp_path, "tenant: acme\n  version: [1\n"))
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_instruction(_write(tmp_path, "- just a list\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_instruction(tmp_path / "missing.yaml")


def test_yaml_errors_do_not_echo_values(tmp_path: Path) -> None:
    path = _write(tmp_path, yaml.safe_dump({**BASE, "retention_days": "alice@example.com"}))
    with pytest.raises(ConfigError) as info:
        load_instruction(path)
    assert "alice" not in str(info.value)


def _write_bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "instruction.yaml"
    path.write_bytes(data)
    return path


def test_a_key_given_twice_is_refused_not_last_one_wins(tmp_path: Path) -> None:
    base = EXAMPLE.read_bytes()
    assert load_instruction(_write_bytes(tmp_path, base)).tenant == "acme"
    with pytest.raises(ConfigError, match="'tenant' appears twice"):
        load_instruction(_write_bytes(tmp_path, base + b"\ntenant: other\n"))
    nested = base.replace(b"  Contact: [", b"  Contact: [Phone]\n  Contact: [", 1)
    with pytest.raises(ConfigError, match="'Contact' appears twice"):
        load_instruction(_write_bytes(tmp_path, nested))


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
        load_instruction(_write_bytes(tmp_path, data))
