"""``crmhub connect`` / ``crmhub connections`` as a user runs them: a real process, the sandbox CRMs
over HTTPS (started here; the CLI finds their OAuth clients in the clients file the sandbox wrote,
like any configuration), and the consent form submitted by the test (playing the browser)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from sandbox.runtime import RunningSandbox, start_sandbox
from sandbox.tls import SandboxCA
from tests.connectors.test_oauth_sandbox import consent
from tests.ports import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def redirect_uri() -> str:
    return f"http://127.0.0.1:{free_port()}/callback"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def sandbox(data_dir: Path, redirect_uri: str) -> Iterator[RunningSandbox]:
    with start_sandbox(data_dir, seed_counts=None, redirect_uris=(redirect_uri,)) as running:
        yield running


@pytest.fixture
def env(data_dir: Path, db_url: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    e.update(
        CRMHUB_DATA_DIR=str(data_dir),
        CRMHUB_DATABASE_URL=db_url,
        PYTHONPATH=str(REPO),
        COLUMNS="200",
    )
    return e


def crmhub(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


class Running:
    """A ``crmhub connect`` process whose stdout is read line by line in a thread."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api", "connect", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def authorize_url(self) -> str:
        while True:
            line = self.lines.get(timeout=30)
            self.seen.append(line)
            if line.startswith("https://"):
                return line

    def finish(self) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout=60)
        self._pump_thread.join(timeout=10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        stderr = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return rc, "\n".join(self.seen + rest), stderr


@pytest.mark.parametrize("provider", ["salesforce", "hubspot"])
def test_connect_then_list_then_disconnect(provider, sandbox, env, tmp_path, redirect_uri) -> None:
    ca = SandboxCA(Path(sandbox.info.ca_path).parent).client_context()
    run = Running(env, tmp_path, provider, "--tenant", "acme", "--no-browser", "--redirect-uri", redirect_uri)
    url = run.authorize_url()
    params = consent(url, ca)  # the user presses "Allow"
    browser = httpx.get(f"{redirect_uri}?{urlencode(params)}", timeout=30)  # the redirect lands on the CLI
    assert browser.status_code == 200 and "Connected" in browser.text
    rc, stdout, stderr = run.finish()
    assert rc == 0, stderr
    connection_id = next(
        line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("connection id:")
    )
    assert "status active" in stdout
    assert params["code"] not in stdout + stderr  # (the state is in the printed authorize URL, by design)

    listed = crmhub(env, tmp_path, "connections", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["tenant"], r["provider"], r["status"]) for r in rows] == [
        (connection_id, "acme", provider, "active")
    ]
    base = sandbox.info.salesforce_url if provider == "salesforce" else sandbox.info.hubspot_url
    assert rows[0]["instance_url"] == base and rows[0]["scopes"]
    assert set(rows[0]) == {  # no token field, sealed or not
        "id",
        "tenant",
        "provider",
        "status",
        "status_message",
        "instance_url",
        "scopes",
        "access_expires_at",
        "refreshed_at",
        "created_at",
        "updated_at",
        "region_instance",
    }
    assert rows[0]["region_instance"] == {"salesforce": "eu", "hubspot": "eu1"}[provider]  # read at connect
    assert "data hosted at " + rows[0]["region_instance"] in stdout

    table = crmhub(env, tmp_path, "connections", "list", "--tenant", "acme")
    assert table.returncode == 0 and connection_id in table.stdout and "active" in table.stdout
    assert connection_id not in crmhub(env, tmp_path, "connections", "list", "--tenant", "globex").stdout

    gone = crmhub(env, tmp_path, "connections", "disconnect", connection_id)
    assert gone.returncode == 0, gone.stderr
    assert "revoked" in gone.stdout
    rows = json.loads(crmhub(env, tmp_path, "connections", "list", "--json").stdout)
    assert rows[0]["status"] == "revoked"


def test_allow_exports_asks_for_the_export_scope_and_the_connection_keeps_it(
    sandbox, env, tmp_path, redirect_uri
) -> None:
    """``--allow-exports``: the consent page lists crm.export, the connection records it granted
    (which lets the worker read large objects through HubSpot exports); Salesforce refuses it."""
    ca = SandboxCA(Path(sandbox.info.ca_path).parent).client_context()
    args = ("hubspot", "--tenant", "acme", "--no-browser", "--redirect-uri", redirect_uri, "--allow-exports")
    run = Running(env, tmp_path, *args)
    url = run.authorize_url()
    assert "crm.export" in parse_qs(urlsplit(url).query)["scope"][0].split()
    params = consent(url, ca)
    assert httpx.get(f"{redirect_uri}?{urlencode(params)}", timeout=30).status_code == 200
    rc, _, stderr = run.finish()
    assert rc == 0, stderr
    rows = json.loads(crmhub(env, tmp_path, "connections", "list", "--json").stdout)
    assert "crm.export" in rows[0]["scopes"]

    refused = crmhub(
        env, tmp_path, "connect", "salesforce", "--tenant", "acme", "--no-browser", "--allow-exports"
    )
    assert refused.returncode != 0 and "hubspot only" in refused.stderr


def test_a_tampered_callback_is_refused(sandbox, env, tmp_path, redirect_uri) -> None:
    ca = SandboxCA(Path(sandbox.info.ca_path).parent).client_context()
    calls = sandbox.hubspot.oauth.token_calls
    run = Running(
        env, tmp_path, "hubspot", "--tenant", "acme", "--no-browser", "--redirect-uri", redirect_uri
    )
    params = consent(run.authorize_url(), ca)
    params["state"] = params["state"][::-1]
    # a stray request first: the listener answers 404 and keeps waiting for the callback
    assert httpx.get(redirect_uri.replace("/callback", "/favicon.ico"), timeout=10).status_code == 404
    browser = httpx.get(f"{redirect_uri}?{urlencode(params)}", timeout=30)
    assert browser.status_code == 400 and "Connection failed" in browser.text
    rc, _, stderr = run.finish()
    assert rc == 1 and "state" in stderr
    assert sandbox.hubspot.oauth.token_calls == calls
    assert json.loads(crmhub(env, tmp_path, "connections", "list", "--json").stdout) == []


def test_connect_gives_up_after_the_timeout(sandbox, env, tmp_path, redirect_uri) -> None:
    run = Running(
        env,
        tmp_path,
        "salesforce",
        "--tenant",
        "acme",
        "--no-browser",
        "--redirect-uri",
        redirect_uri,
        "--timeout",
        "1",
    )
    assert run.authorize_url().startswith(sandbox.info.salesforce_url + "/services/oauth2/authorize?")
    rc, _, stderr = run.finish()
    assert rc == 1 and "no OAuth callback within 1s" in stderr


def test_unregistered_or_non_loopback_redirect_is_a_config_error(sandbox, env, tmp_path) -> None:
    r = crmhub(
        env,
        tmp_path,
        "connect",
        "hubspot",
        "--tenant",
        "acme",
        "--no-browser",
        "--redirect-uri",
        "http://127.0.0.1:1/x",
    )
    assert r.returncode == 2 and "not registered with the hubspot app" in r.stderr
    assert "oauth-clients.yaml" in r.stderr  # where the registered URIs come from


def test_without_sandbox_or_credentials_connect_names_the_settings(env, tmp_path) -> None:
    r = crmhub(env, tmp_path, "connect", "salesforce", "--tenant", "acme", "--no-browser")
    assert r.returncode == 2 and "not configured" in r.stderr
    assert "CRMHUB_OAUTH__SALESFORCE__CLIENT_ID" in r.stderr and "oauth-clients.yaml" in r.stderr
    assert "crmhub sandbox" in r.stderr  # which writes that file for its CRMs
    r = crmhub(env, tmp_path, "connect", "salesforce", "--tenant", "acme", "--sandbox")
    assert r.returncode == 2 and "No such option" in r.stderr  # the clients file is just configuration


def test_the_flat_variables_of_earlier_versions_stop_connect_naming_the_new_ones(env, tmp_path) -> None:
    old = {
        **env,
        "CRMHUB_SALESFORCE_CLIENT_ID": "sf-id",
        "CRMHUB_SALESFORCE_CLIENT_SECRET": "sf-s3cret-value",
    }
    r = crmhub(old, tmp_path, "connect", "salesforce", "--tenant", "acme", "--no-browser")
    assert r.returncode == 2
    assert (
        "CRMHUB_SALESFORCE_CLIENT_ID is no longer read: set CRMHUB_OAUTH__SALESFORCE__CLIENT_ID" in r.stderr
    )
    assert "CRMHUB_OAUTH__SALESFORCE__CLIENT_SECRET" in r.stderr and "sf-s3cret-value" not in r.stderr


def test_a_fresh_data_dir_needs_no_db_upgrade_first(tmp_path: Path) -> None:
    """The embedded default migrates itself: a new user's first ``crmhub connections list`` (or
    ``connect``) on a fresh data dir answers instead of stopping with "run: crmhub db upgrade"."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    e.update(CRMHUB_DATA_DIR=str(tmp_path / "fresh"), PYTHONPATH=str(REPO), COLUMNS="200")
    listed = crmhub(e, tmp_path, "connections", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert "db upgrade" not in listed.stdout + listed.stderr
    assert (tmp_path / "fresh" / "crmhub.db").exists()
