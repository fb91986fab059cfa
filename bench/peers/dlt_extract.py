"""The dlt peer: extract one verified source's contacts resource (no load), run with dlt's interpreter.

    python dlt_extract.py SOURCES_DIR hubspot|salesforce CONFIG_JSON PIPELINES_DIR

``SOURCES_DIR`` holds dlt's verified sources (``sources/hubspot``, ``sources/salesforce`` — what
``dlt init hubspot duckdb`` copies into a project); they are imported from there, unchanged. Only
the contacts resource is selected, and the pipeline runs ``extract`` only: the same work as the
other peers (pull and serialise), without normalising or loading into a destination. Prints one
JSON line: ``{"records": n}`` from dlt's own extract metrics. The extracted files stay in
``PIPELINES_DIR`` so the harness can check the ids after the clock stops (:func:`extracted_ids`).
"""

from __future__ import annotations

import gzip
import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESOURCES = {"hubspot": "contacts", "salesforce": "contact"}
ID_KEYS = {"hubspot": "hs_object_id", "salesforce": "id"}


def _source(crm: str, config: dict[str, Any]) -> Any:
    # imported by name: these are the verified sources in SOURCES_DIR, not packages of crmhub's venv
    if crm == "hubspot":
        return importlib.import_module("hubspot").hubspot(api_key=config["token"])
    auth = importlib.import_module("salesforce.helpers.client").InstanceAuth
    creds = auth(session_id=config["token"], instance_url=config["url"])
    return importlib.import_module("salesforce").salesforce_source(credentials=creds)


def extract(sources_dir: str, crm: str, config: dict[str, Any], pipelines_dir: str) -> int:
    dlt = importlib.import_module("dlt")  # dlt's venv only
    sys.path.insert(0, str(Path(sources_dir) / "sources"))
    source = _source(crm, config).with_resources(RESOURCES[crm])
    pipeline = dlt.pipeline(pipeline_name=f"bench_{crm}", pipelines_dir=pipelines_dir)
    info = pipeline.extract(source)
    metrics = info.metrics[info.loads_ids[0]][0]["table_metrics"]
    return int(sum(m.items_count for name, m in metrics.items() if not name.startswith("_dlt")))


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rt") as fh:
        for line in fh:  # a line is one item or a list of them (a page, as the source yielded it)
            if line.strip():
                item = json.loads(line)
                yield from item if isinstance(item, list) else [item]


def extracted_ids(pipelines_dir: Path, crm: str) -> tuple[int, int]:
    """(rows, distinct ids) in the files the extract left for the contacts table."""
    count, ids = 0, set()
    table = RESOURCES[crm]
    for path in pipelines_dir.rglob(f"{table}.*"):
        if path.is_file() and "jsonl" in path.name:
            for row in _rows(path):
                count += 1
                ids.add(str(row.get(ID_KEYS[crm], row.get("id"))))
    return count, len(ids)


def main() -> None:
    sources_dir, crm, config_json, pipelines_dir = sys.argv[1:5]
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    print(json.dumps({"records": extract(sources_dir, crm, json.loads(config_json), pipelines_dir)}))


if __name__ == "__main__":
    main()
