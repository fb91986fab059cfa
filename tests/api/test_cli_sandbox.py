"""``crmhub sandbox`` serves both CRMs over HTTPS and prints what a client needs; ``crmhub demo``
brings the embedded default up and down."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sandbox.runtime import SandboxInfo
from sandbox.tls import SandboxCA
from tests.ports import free_port

pytestmark = pytest.mark.integration


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(CRMHUB_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    return env


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "sandbox did not start"
        time.sleep(0.1)


def test_sandbox_command_serves_both_crms(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "sandbox", "--contacts", "500", "--hubspot-contacts", "50",
         "--salesforce-port", "0", "--hubspot-port", "0"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        info_path = tmp_path / "data" / "sandbox.json"
        _wait_for(info_path, proc)
        assert info_path.stat().st_mode & 0o777 == 0o600
        info = SandboxInfo.read(info_path)
        ctx = SandboxCA(Path(info.ca_path).parent).client_context()
        # Salesforce: unauthenticated versions resource; HubSpot: a 401 in HubSpot's shape.
        versions = httpx.get(f"{info.salesforce_url}/services/data/", verify=ctx)
        assert versions.status_code == 200
        assert any(v["version"] for v in versions.json())
        denied = httpx.get(f"{info.hubspot_url}/crm/v3/objects/contacts", verify=ctx)
        assert denied.status_code == 401
        state = httpx.get(
            f"{info.salesforce_url}/__sandbox/state",
            headers={"Authorization": f"Bearer {info.salesforce_control_token}"},
            verify=ctx,
        ).json()
        assert state["objects"]["Contact"] == 500
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert info.salesforce_url in out
    assert info.hubspot_url in out
    assert info.ca_path in out
    assert info.salesforce_client_id in out
    assert info.hubspot_client_secret in out


def test_sandbox_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "api", "sandbox", "--salesforce-port", str(port), "--hubspot-port", "0"],
            env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert res.returncode == 2
    assert re.fullmatch(r"config error: port \d+ .*already in use.*--salesforce-port.*\n", res.stderr)


def test_demo_runs_the_walk_and_shuts_down(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["CRMHUB_TEMPORAL__DEV_SERVER__PORT"] = str(free_port())
    env["CRMHUB_TEMPORAL__DEV_SERVER__UI_PORT"] = str(free_port())
    codec_port = free_port()
    env["CRMHUB_CODEC__PORT"] = str(codec_port)
    res = subprocess.run(
        [sys.executable, "-m", "api", "demo", "--contacts", "1000"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = " ".join(res.stdout.split())
    assert "HubSpot now holds 980 contacts" in out  # 1,000 synced, then 20 deleted at the source
    assert "ledger: verified" in out
    # where each CRM's data lives is read from the vendor at connect, not written into the sync
    assert re.search(r"Salesforce \(\S+, data hosted at eu\), HubSpot \(\S+, data hosted at eu1\), as each "
                     r"vendor reported it", out), out  # fmt: skip
    assert "Title" in out  # named among the fields the instruction withholds
    # the dev server's UI decodes through the codec server the demo served in-process
    assert f"codec server http://127.0.0.1:{codec_port}: the UI decodes inputs and results" in out
    report = tmp_path / "data" / "reports" / "demo-lineage.json"
    verified = subprocess.run(
        [sys.executable, "-m", "api", "audit", "verify", str(report), "--public-key",
         str(report.with_suffix(".pub.pem"))],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout
    audit = [sys.executable, "-m", "api", "audit", "report", "--tenant", "demo", "--format", "html"]
    html = subprocess.run(
        audit, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert html.returncode == 0, html.stderr
    assert "all 2 run(s) reconcile" in html.stdout  # the auditor's first page
    # created vs updated as HubSpot answered: the full sync into the empty sandbox HubSpot created
    # every contact; the incremental one updated the 50 modified at the source
    assert "1,000 (1,000 / 0)" in html.stdout and "50 (0 / 50)" in html.stdout
    status = subprocess.run(
        [sys.executable, "-m", "api", "temporal", "status", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert json.loads(status.stdout)["reachable"] is False  # the demo stopped what it started
    assert json.loads(status.stdout)["codec_server"]["healthy"] is False
    rerun = subprocess.run(
        [sys.executable, "-m", "api", "demo", "--contacts", "1000"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr  # re-running it works: on new sandbox CRMs, ...
    again = " ".join(rerun.stdout.split())
    assert "HubSpot now holds 980 contacts" in again  # ... the sync follows the new connections
    assert "ledger: verified" in again and again.count("completed") == 2  # the full and incremental rows
    html = subprocess.run(
        audit, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert "all 4 run(s) reconcile" in html.stdout
    assert html.stdout.count("1,000 (1,000 / 0)") == 2  # the new sandbox's HubSpot was empty again
