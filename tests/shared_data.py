"""Where the external test data beside the checkout is (``/work/shared``: ``vectors/`` — RFC 9162
Merkle, Wycheproof AES-GCM — and ``vendor-fixtures/`` — recorded Salesforce and HubSpot payloads).

``CRMHUB_TEST_SHARED`` names the folder; otherwise it is the nearest ``shared/`` above this checkout
that exists (the repo's parent for the main checkout, two levels up for a git worktree under
``wt/``). The tests that use it fail when it is missing — never skip — so a CI machine without the
data cannot pass them silently.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED", "shared_path"]


def _find() -> Path:
    named = os.environ.get("CRMHUB_TEST_SHARED")
    if named:
        return Path(named)
    here = Path(__file__).resolve()
    for folder in here.parents:
        if (folder / "shared" / "vectors").is_dir():
            return folder / "shared"
    return here.parents[2] / "shared"  # tests/shared_data.py → the repo's parent


SHARED = _find()


def shared_path(*parts: str) -> Path:
    """A path under the shared folder (not checked: its users fail on a missing file)."""
    return SHARED.joinpath(*parts)
