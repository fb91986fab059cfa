"""Smoke tests of the peer benchmark's harness (``python -m bench peers``) at small N.

No peer venvs (CI has no time to build five) and no network beyond loopback: the URL-rewrite shim
really sends a ``requests`` call for a vendor host to a sandbox on 127.0.0.1 (and is inert without
its environment variable), the outside-in measurement counts records and samples the RSS of a whole
process tree, and the crmhub and bare-client pullers deliver exactly N. No timing asserts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.peers import dlt_extract
from bench.peers.harness import SHIM, Session, _median_row, run_puller
from bench.peers.measure import count_records, run_measured
from bench.peers.shim.sitecustomize import rewrite_url
from bench.peers.singer_catalog import select
from bench.peers.venvs import PINS, ensure_venv
from sandbox.runtime import RunningSandbox, start_sandbox

N = 250


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    seed = {"salesforce": {"Contact": N}, "hubspot": {"contacts": N}}
    with start_sandbox(tmp_path_factory.mktemp("peers-sandbox"), seed_counts=seed) as sb:
        hs: Any = sb.hubspot
        hs.set_burst_limit(None)
        yield sb


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120
    )


_CALL_VENDOR = """
    import json, requests, sitecustomize
    answer = requests.get(
        "https://api.hubapi.com/crm/v3/objects/contacts?limit=7&properties=email",
        headers={"Authorization": "Bearer %s"}, timeout=30,
    )
    body = answer.json()
    print(json.dumps({"shim": sitecustomize.__file__, "status": answer.status_code,
                      "ids": [r["id"] for r in body["results"]], "link": body["paging"]["next"]["link"]}))
"""


def test_the_shim_sends_a_vendor_host_call_to_the_sandbox(sandbox: RunningSandbox, tmp_path: Path) -> None:
    hs: Any = sandbox.hubspot
    hs.calls.clear()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(SHIM),
        "CRMHUB_BENCH_REWRITE": json.dumps({"https://api.hubapi.com": sandbox.info.hubspot_url}),
        "CRMHUB_BENCH_CA": sandbox.info.ca_path,  # verified against the sandbox CA, not the system's
    }
    proc = _python(_CALL_VENDOR % hs.issue_private_app_token(), env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert Path(out["shim"]).parent == SHIM
    assert out["status"] == 200
    assert out["ids"] == [str(i) for i in range(1, 8)]
    assert out["link"].startswith(sandbox.info.hubspot_url + "/crm/v3/objects/contacts?")
    assert hs.calls.counts() == {"hs.list.contacts": 1}  # it reached the sandbox, nowhere else


def test_the_shim_is_inert_without_its_variable() -> None:
    code = """
        import json, sitecustomize
        from requests.adapters import HTTPAdapter
        print(json.dumps({"shim": sitecustomize.__file__,
                          "patched": getattr(HTTPAdapter.send, "_crmhub_rewrite", False),
                          "module": HTTPAdapter.send.__module__}))
    """
    proc = _python(code, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SHIM)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert Path(out["shim"]).parent == SHIM
    assert out == {"shim": out["shim"], "patched": False, "module": "requests.adapters"}


def test_rewrite_prefers_the_longest_prefix_and_keeps_path_and_query() -> None:
    table = {
        "https://api.hubapi.com": "https://127.0.0.1:1",
        "https://api.hubapi.com/crm/v3/objects/contact": "https://127.0.0.1:1/crm/v3/objects/contacts",
        "https://api.hubapi.com/crm/v3/schemas": "https://127.0.0.1:2/crm/v3/schemas",
    }
    assert rewrite_url("https://api.hubapi.com/crm/v3/schemas", table) == "https://127.0.0.1:2/crm/v3/schemas"
    assert (
        rewrite_url("https://api.hubapi.com/crm/v3/objects/contact?limit=100", table)
        == "https://127.0.0.1:1/crm/v3/objects/contacts?limit=100"
    )
    # the plural is not the singular with an "s" appended to the rewrite
    assert (
        rewrite_url("https://api.hubapi.com/crm/v3/objects/contacts?after=3", table)
        == "https://127.0.0.1:1/crm/v3/objects/contacts?after=3"
    )
    assert rewrite_url("https://api.hubapi.com.evil.test/x", table) is None
    assert rewrite_url("https://login.salesforce.com/services/oauth2/token", table) is None


_PEER_LIKE = """
    import json, subprocess, sys, time
    hold = bytearray(48 * 2**20)  # touched below, so resident
    for i in range(0, len(hold), 4096):
        hold[i] = 1
    child = subprocess.Popen([sys.executable, "-c",
        "import time; b = bytearray(64 * 2**20)\\n"
        "for i in range(0, len(b), 4096): b[i] = 1\\n"
        "time.sleep(1.5)"])
    print(json.dumps({"type": "SCHEMA", "stream": "contacts"}))
    for i in range(300):
        print(json.dumps({"type": "RECORD", "stream": "contacts", "record": {"id": i % 290}}))
    print(json.dumps({"type": "RECORD", "record": {"data": {"Id": "a"}}}))  # Airbyte's shape
    print("INFO not a message")
    child.wait()
"""


def test_measurement_counts_records_and_the_peak_rss_of_the_whole_tree(tmp_path: Path) -> None:
    out = tmp_path / "stdout"
    m = run_measured(
        [sys.executable, "-c", textwrap.dedent(_PEER_LIKE)], env={"PATH": "/usr/bin:/bin"}, stdout_path=out
    )
    assert m.returncode == 0, m.stderr_tail
    assert count_records(out, ("id", "Id")) == (301, 291)
    # parent holds 48 MiB while its child holds 64 MiB: only the tree's sum exceeds 100 MiB
    assert m.peak_rss > 100 * 2**20
    assert m.seconds > 0


def test_a_small_peer_is_not_charged_with_the_benchmark_process(tmp_path: Path) -> None:
    ballast = bytearray(200 * 2**20)  # this process grows past 200 MiB before it starts the peer
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = (
        "import time; b = bytearray(20 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(0.5)"
    )
    m = run_measured([sys.executable, "-c", code], env={}, stdout_path=tmp_path / "o")
    assert m.returncode == 0, m.stderr_tail
    assert 20 * 2**20 < m.peak_rss < 100 * 2**20  # its own 20 MiB and an interpreter, not our 200
    del ballast


def test_a_failing_peer_is_measured_with_its_error(tmp_path: Path) -> None:
    m = run_measured(
        [sys.executable, "-c", "import sys; sys.exit('no such endpoint')"], env={}, stdout_path=tmp_path / "o"
    )
    assert m.returncode == 1
    assert "no such endpoint" in m.stderr_tail


def _session(sandbox: RunningSandbox, tmp_path: Path) -> Session:
    return Session(sandbox, "", tmp_path, tmp_path / "venvs", None, N)


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
@pytest.mark.parametrize("side", ["crmhub", "bare"])
def test_crmhub_and_bare_pullers_deliver_exactly_n(
    sandbox: RunningSandbox, tmp_path: Path, side: str, crm: str
) -> None:
    row = run_puller(_session(sandbox, tmp_path), side, crm, timeout_s=300)
    assert "error" not in row, row
    assert (row["records"], row["distinct"]) == (N, N)
    assert row["records_per_s"] > 0 and row["peak_rss_mb"] > 0


def test_the_export_puller_reads_exactly_n_through_one_hubspot_export(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    before = len(sandbox.hubspot.export_tasks())
    row = run_puller(_session(sandbox, tmp_path), "crmhub-export", "hubspot", timeout_s=300)
    assert "error" not in row, row
    assert (row["records"], row["distinct"]) == (N, N)
    tasks = sandbox.hubspot.export_tasks()[before:]
    assert [(t.status, t.rows) for t in tasks] == [("COMPLETE", N)]
    salesforce = run_puller(_session(sandbox, tmp_path), "crmhub-export", "salesforce", timeout_s=60)
    assert salesforce["cannot_run"] is True and "HubSpot only" in salesforce["error"]


def test_a_peer_that_cannot_run_says_why(sandbox: RunningSandbox, tmp_path: Path) -> None:
    row = run_puller(_session(sandbox, tmp_path), "dlt", "hubspot", timeout_s=60)
    assert row["cannot_run"] is True
    assert "--dlt-sources" in row["error"]
    assert not (tmp_path / "venvs").exists()  # no venv was built for a peer that cannot run


def test_medians_ignore_failed_runs_and_keep_the_error_when_all_failed() -> None:
    good = [
        {"records_per_s": r, "seconds": 1.0, "peak_rss_mb": m} for r, m in ((10, 5.0), (30, 7.0), (20, 6.0))
    ]
    row = _median_row([*good, {"error": "exit 1"}])
    assert (row["records_per_s"], row["peak_rss_mb"], row["good_runs"]) == (20, 6.0, 3)
    assert _median_row([{"error": "exit 1"}])["error"] == "exit 1"


def test_an_existing_venv_with_the_same_pins_is_reused(tmp_path: Path) -> None:
    venv = tmp_path / "tap-hubspot"
    venv.mkdir()
    (venv / ".crmhub-pins").write_text("\n".join(PINS["tap-hubspot"]) + "\n")
    assert ensure_venv(tmp_path, "tap-hubspot") == venv / "bin"  # returned without pip


def test_singer_selection_and_dlt_extract_files_are_read(tmp_path: Path) -> None:
    md = [
        {"breadcrumb": [], "metadata": {}},
        {"breadcrumb": ["properties", "x"], "metadata": {"inclusion": "unsupported"}},
    ]
    catalog = {
        "streams": [{"tap_stream_id": "Contact", "metadata": md}, {"tap_stream_id": "Lead", "metadata": []}]
    }
    (stream,) = select(catalog, "Contact")["streams"]
    assert stream["metadata"][0]["metadata"]["selected"] is True
    assert "selected" not in stream["metadata"][1]["metadata"]
    jobs = tmp_path / "bench_hubspot" / "normalize" / "extracted" / "1" / "new_jobs"
    jobs.mkdir(parents=True)
    page = [{"hs_object_id": "1", "id": "1"}, {"hs_object_id": "2", "id": "2"}]
    (jobs / "contacts.ab12.0.typed-jsonl").write_text(json.dumps(page) + "\n" + json.dumps(page[0]) + "\n")
    assert dlt_extract.extracted_ids(tmp_path, "hubspot") == (3, 2)
