"""The Temporal Web UI of ``crmhub temporal up`` decodes crmhub's encrypted payloads out of the box:
``temporal up`` starts the dev server and the loopback-dev codec server and points the UI at it;
the UI, opened in Debian Chromium, shows a workflow's input as text and every decode is audited as
``ui-loopback``. The screenshot is the one in README (docs/img/temporal-ui-decoded.png)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.async_api import async_playwright
from sqlalchemy.engine import Engine

from schemas.settings import CodecSettings, DevServerSettings, Settings, TemporalSettings
from store.codec_audit import list_audit
from tests.api.web.test_web_browser import CHROMIUM, CHROMIUM_ARGS
from tests.ports import free_port
from workers.client import connect
from workers.codec_server import LOOPBACK_ACTOR

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "temporal-ui"
CRMHUB = [sys.executable, "-m", "api"]
# A made-up person: the test asserts it is readable in the UI and absent from the raw history.
SECRET_INPUT = "Contact Ada Lovelace <ada.lovelace@example.org>"


def _crmhub(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CRMHUB, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


async def test_temporal_up_ui_shows_decoded_input(tmp_path: Path, db_url: str, db_engine: Engine) -> None:
    grpc, ui, codec = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(
        CRMHUB_DATA_DIR=str(tmp_path / "data"),
        CRMHUB_DATABASE_URL=db_url,
        CRMHUB_TEMPORAL__DEV_SERVER__PORT=str(grpc),
        CRMHUB_TEMPORAL__DEV_SERVER__UI_PORT=str(ui),
        CRMHUB_CODEC__PORT=str(codec),
        COLUMNS="200",
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        temporal=TemporalSettings(
            address=f"127.0.0.1:{grpc}", dev_server=DevServerSettings(port=grpc, ui_port=ui)
        ),
        codec=CodecSettings(port=codec),
    )
    try:
        up = _crmhub(["temporal", "up"], env, tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{codec}" in up.stdout

        connected = await connect(settings)
        try:
            handle = await connected.client.start_workflow(
                "CrmhubCodecProbe", SECRET_INPUT, id="codec-ui-probe", task_queue="nobody-polls"
            )
            history = await handle.fetch_history()
            started = history.events[0].workflow_execution_started_event_attributes
            raw = started.input.payloads[0]
            assert b"Ada" not in raw.data and b"lovelace" not in raw.data  # encrypted in history
            assert raw.metadata["encoding"] != b"json/plain"
        finally:
            connected.engine.dispose()

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                await page.goto(f"http://127.0.0.1:{ui}/namespaces/default/workflows/codec-ui-probe")
                await page.get_by_text("Ada Lovelace", exact=False).first.wait_for(timeout=30_000)
                await page.wait_for_timeout(500)  # let the remaining decodes settle before looking
                body = (await page.inner_text("body")).lower()
                assert "could not connect" not in body
                assert "ada.lovelace@example.org" in body
                await page.screenshot(path=str(ARTIFACTS / "temporal-ui-decoded.png"), full_page=False)
            finally:
                await browser.close()

        with db_engine.connect() as conn:
            rows = list_audit(conn, namespace="default")
        decodes = [r for r in rows if r.operation == "decode"]
        assert decodes, "the UI's decodes must be audited"
        assert {r.token_id for r in decodes} == {LOOPBACK_ACTOR}
        assert all(r.outcome == "ok" for r in decodes)
        assert all(r.client is not None and r.client.startswith("127.0.0.1:") for r in decodes)
    finally:
        down = _crmhub(["temporal", "down"], env, tmp_path)
    assert down.returncode == 0, down.stderr
    assert "codec server stopped" in down.stdout
    assert not (tmp_path / "data" / "codec-server.pid").exists()
