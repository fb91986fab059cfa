"""Where the external test vectors (/work/shared/vectors: RFC 9162 Merkle, Wycheproof AES-GCM) are.

``CRMHUB_TEST_VECTORS`` names the folder; otherwise it is ``vectors/`` of the shared folder
(:mod:`tests.shared_data`). A missing folder fails the tests that count the vectors, never skips them.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.shared_data import shared_path

__all__ = ["VECTORS"]

# CRMHUB_TEST_VECTORS (older name) still names the vectors folder itself.
VECTORS = (
    Path(os.environ["CRMHUB_TEST_VECTORS"])
    if os.environ.get("CRMHUB_TEST_VECTORS")
    else shared_path("vectors")
)
