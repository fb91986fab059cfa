"""``crmhub sync create`` as a user runs it: real processes, both sandbox CRMs connected through
``crmhub connect`` (which stores where each one's data lives), and the same checks as the web form
(:mod:`services.sync_setup`): a typo in an object → "did you mean Contact?", a field outside the
instruction, a required destination field unmapped, the same connection as both ends (refused unless
``--same-connection``), each naming the field and the fix; a definition with no endpoints is created
and cites the regions the vendors reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from api.demo import demo_instruction
from sandbox.runtime import RunningSandbox
from sandbox.tls import SandboxCA
from tests.api.test_cli_connect import Running, crmhub, data_dir, env, redirect_uri, sandbox  # noqa: F401
from tests.connectors.test_oauth_sandbox import consent

pytestmark = pytest.mark.integration


def connect(env: dict[str, str], cwd: Path, sandbox: RunningSandbox, redirect: str, provider: str) -> str:  # noqa: F811
    ca = SandboxCA(Path(sandbox.info.ca_path).parent).client_context()
    run = Running(env, cwd, provider, "--tenant", "acme", "--no-browser", "--redirect-uri", redirect)
    params = consent(run.authorize_url(), ca)
    assert httpx.get(f"{redirect}?{urlencode(params)}", timeout=30).status_code == 200
    rc, stdout, stderr = run.finish()
    assert rc == 0, stderr
    return next(line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("connection id:"))


def test_sync_create_runs_the_web_forms_checks(
    sandbox: RunningSandbox,  # noqa: F811
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
    redirect_uri: str,  # noqa: F811
) -> None:
    assert crmhub(env, tmp_path, "tenant", "create", "acme").returncode == 0
    sf = connect(env, tmp_path, sandbox, redirect_uri, "salesforce")
    hs = connect(env, tmp_path, sandbox, redirect_uri, "hubspot")
    ins = tmp_path / "instruction.yaml"
    ins.write_text(yaml.safe_dump(demo_instruction("acme").model_dump(mode="json")), encoding="utf-8")
    assert crmhub(env, tmp_path, "instruction", "load", str(ins)).returncode == 0

    good: dict[str, Any] = {
        "tenant": "acme",
        "id": "contacts",
        "source_connection_id": sf,
        "source_stream": "Contact",
        "destination_connection_id": hs,
        "destination_stream": "contacts",
        "mapping": {"Email": "email", "FirstName": "firstname", "LastName": "lastname"},
        "destination_id_property": "email",
        "source_key_property": "Email",
        "instruction_version": 1,
    }

    def create(*flags: str, **change: Any) -> tuple[int, str]:
        path = tmp_path / "sync.yaml"
        path.write_text(yaml.safe_dump({**good, **change}), encoding="utf-8")
        r = crmhub(env, tmp_path, "sync", "create", str(path), *flags)
        return r.returncode, " ".join((r.stdout + r.stderr).split())  # rich wraps long lines

    rc, said = create(source_stream="Contacts")
    assert rc != 0
    assert "source_stream: the salesforce connection has no object 'Contacts'; did you mean Contact?" in said
    rc, said = create(mapping={"Email": "email", "Title": "jobtitle"})
    assert rc != 0 and "mapping: instruction v1 does not allow Contact.Title" in said
    assert "fix: allow Title in allowed_fields.Contact of a new instruction version" in said
    rc, said = create(mapping={"Email": "email", "FirstName": "first_name"})
    assert (
        rc != 0
        and "mapping: the hubspot object contacts has no field 'first_name'; did you mean firstname" in said
    )
    into_sf = {
        "destination_connection_id": sf,
        "destination_stream": "Contact",
        "mapping": {"Email": "Email", "FirstName": "FirstName"},
        "destination_id_property": "Email",
    }
    rc, said = create(**into_sf)
    assert rc != 0 and f"destination_connection_id: the destination is the source connection ({sf})" in said
    assert "CLI: --same-connection" in said
    rc, said = create("--same-connection", **into_sf)  # meant: now the next check speaks
    assert rc != 0 and "mapping: the salesforce object Contact requires LastName on create" in said
    rc, said = create(
        "--same-connection",
        **{**into_sf, "id": "dedupe", "mapping": {"Email": "Email", "LastName": "LastName"}},
    )
    assert rc == 0, said

    rc, said = create()  # no endpoints, no name: the regions read at connect
    assert rc == 0, said
    assert "sync contacts of acme created: Contact → contacts" in said
    listed = json.loads(crmhub(env, tmp_path, "connections", "list", "--json").stdout)
    assert {r["provider"]: r["region_instance"] for r in listed} == {"salesforce": "eu", "hubspot": "eu1"}
