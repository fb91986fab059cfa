"""Where the external test vectors (/work/shared/vectors: RFC 9162 Merkle, Wycheproof AES-GCM) are.

``CRMHUB_TEST_VECTORS`` names the folder; otherwise it is ``shared/vectors`` in the nearest folder
above this checkout that has one (the repo's parent for the main checkout, two levels up for a git
worktree under ``wt/``). A missing folder fails the tests that count the vectors, never skips them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["VECTORS"]


def _find() -> Path:
    named = os.environ.get("CRMHUB_TEST_VECTORS")
    if named:
        return Path(named)
    here = Path(__file__).resolve()
    for folder in here.parents:
        candidate = folder / "shared" / "vectors"
        if candidate.is_dir():
            return candidate
    # tests/governance/vectors.py -> parents[3] is the repo's parent, where shared/ lives.
    return here.parents[3] / "shared" / "vectors"


VECTORS = _find()
