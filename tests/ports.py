"""Free loopback ports for the servers a test starts (dev server, web app, codec server, metrics)."""

from __future__ import annotations

import random
import socket

# Linux hands out source ports for outgoing connections from 32768 up (ip_local_port_range). A port
# taken from there (bind to 0) can become some connection's source port once its listener closes, so
# a server restarted on it fails with "address already in use" (seen in CI on the demo's second run).
_BELOW_EPHEMERAL = (20_000, 32_000)


def free_port() -> int:
    """A TCP port on 127.0.0.1, free now, below the kernel's ephemeral range."""
    low, high = _BELOW_EPHEMERAL
    start = random.randrange(low, high)
    for i in range(high - low):
        port = low + (start - low + i) % (high - low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free loopback port in {low} to {high}")
