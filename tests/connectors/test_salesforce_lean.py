"""connectors.salesforce.lean: simple-salesforce's Metadata API client (zeep, lxml) stays unloaded
until used, and works when used. Each check runs in a fresh interpreter (clean sys.modules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_connector_loads_without_zeep_or_lxml() -> None:
    out = run(
        "import sys\n"
        "from connectors.salesforce import SalesforceConnector\n"
        "import connectors.salesforce.client\n"
        "print(sorted(m for m in ('zeep', 'lxml', 'simple_salesforce.api') if m in sys.modules))"
    )
    assert out == "['simple_salesforce.api']"


def test_the_metadata_api_still_works_when_used() -> None:
    out = run(
        "import sys, requests\n"
        "import connectors.salesforce\n"
        "from simple_salesforce.api import Salesforce\n"
        "from simple_salesforce import metadata\n"  # the stand-in until first use
        "sf = Salesforce(instance_url='https://acme.my.salesforce.com', session_id='x',"
        " session=requests.Session())\n"
        "api = sf.mdapi\n"
        "real = sys.modules['simple_salesforce.metadata']\n"
        "print(type(api).__name__, 'zeep' in sys.modules, type(real).__name__, metadata.SfdcMetadataApi"
        " is real.SfdcMetadataApi)"
    )
    assert out == "SfdcMetadataApi True module True"


def test_nothing_is_deferred_when_simple_salesforce_came_first() -> None:
    out = run(
        "import sys\n"
        "import simple_salesforce\n"
        "import connectors.salesforce\n"
        "print(type(sys.modules['simple_salesforce.metadata']).__name__, 'zeep' in sys.modules)"
    )
    assert out == "module True"
