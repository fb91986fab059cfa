"""``python -m bench NAME [options]`` runs one benchmark; ``python -m bench`` lists them."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "governance": "bench.governance_core",
    "sandbox": "bench.sandbox_paging",
    "hubspot-connector": "bench.hubspot_connector",
    "salesforce-connector": "bench.salesforce_connector",
    "sync-activities": "bench.sync_activities",
    "sync-overhead": "bench.sync_overhead",
    "peers": "bench.peers",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print("usage: python -m bench {" + "|".join(BENCHMARKS) + "} [options]")
        sys.exit(2)
    module = importlib.import_module(BENCHMARKS[sys.argv[1]])
    module.main(sys.argv[2:])


main()
