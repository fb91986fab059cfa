"""Run an ASGI app with uvicorn over TLS on loopback, in a background thread or in the foreground.

Tests and benchmarks use :class:`ServerThread` (random free port unless one is given); the CLI uses
it too and simply waits. A port in use is a :class:`ConfigError` naming the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from sandbox.tls import SandboxCA
from schemas.errors import ConfigError

__all__ = ["ServerThread", "bind_socket"]


def bind_socket(host: str, port: int, *, hint: str = "another port (0 picks a free one)") -> socket.socket:
    """Bind a listening socket; ``port=0`` picks a free one. Port in use → ConfigError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP;
    # with proto 0 every response written in two parts (headers, body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use; stop the other process or choose {hint}"
            ) from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the owning thread/CLI handles signals
        return None


class ServerThread:
    """An ASGI app served over HTTPS on ``host:port`` in a daemon thread.

    ``url`` is known as soon as the object exists (the socket is bound in ``__init__``), so a
    caller can hand it to clients before the server starts accepting.
    """

    def __init__(
        self,
        app: Any,
        ca: SandboxCA | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "sandbox",
        port_hint: str = "another port (0 picks a free one)",
    ) -> None:
        self.app = app
        self.name = name
        self._sock = bind_socket(host, port, hint=port_hint)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.scheme = "https" if ca is not None else "http"
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            # Don't wait long for idle keep-alive clients (e.g. a test still holding a session).
            timeout_graceful_shutdown=1,
            # Our own context: TLS 1.2 minimum, the sandbox CA's server certificate.
            ssl_context_factory=(lambda _cfg, _default: ca.server_context()) if ca else None,
        )
        self._server = _Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name} server failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} server did not start within {timeout}s")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
