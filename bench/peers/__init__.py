"""Peer benchmark (issue 8, item 6): crmhub's connectors vs dlt, Singer and Airbyte on the sandbox.

See :mod:`bench.peers.harness`; ``python -m bench peers --help``.
"""

from __future__ import annotations

from bench.peers.harness import main

__all__ = ["main"]
