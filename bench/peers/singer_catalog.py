"""Write a Singer catalog that selects one stream, using the tap's own discovery for that stream.

Run with the tap's interpreter (stdlib + the tap only), before the timed run:

    python singer_catalog.py TAP_MODULE STREAM CONFIG_JSON OUT_JSON

tap-hubspot's full ``--discover`` walks every stream, and some (v1 deal properties, campaigns) are
not emulated by the sandbox; its ``load_discovered_schema`` for the one stream benchmarked is. For
taps whose ``--discover`` works (tap-salesforce) the harness runs that and :func:`select` only.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def select(catalog: dict[str, Any], stream: str) -> dict[str, Any]:
    """Keep ``stream`` only and mark it (and every field in it) selected."""
    streams = [s for s in catalog["streams"] if s["tap_stream_id"] == stream]
    for s in streams:
        for entry in s["metadata"]:
            if entry["breadcrumb"] == [] or entry["metadata"].get("inclusion") != "unsupported":
                entry["metadata"]["selected"] = True
    return {"streams": streams}


def discover_one(tap_module: str, stream: str, config: dict[str, Any]) -> dict[str, Any]:
    tap = importlib.import_module(tap_module)
    tap.CONFIG.update(config)
    (spec,) = [s for s in tap.STREAMS if s.tap_stream_id == stream]
    schema, mdata = tap.load_discovered_schema(spec)
    return {"streams": [{"stream": stream, "tap_stream_id": stream, "schema": schema, "metadata": mdata}]}


def main() -> None:
    tap_module, stream, config_path, out_path = sys.argv[1:5]
    with open(config_path) as fh:
        config = json.load(fh)
    catalog = select(discover_one(tap_module, stream, config), stream)
    with open(out_path, "w") as fh:
        json.dump(catalog, fh)


if __name__ == "__main__":
    main()
