"""The codec server beside the local dev server: started by ``crmhub temporal up`` (a detached
process with a pid file under ``data_dir``, stopped by ``crmhub temporal down``) and by the demo (in
this process, :func:`codec_server_in_thread`), in loopback-dev mode for the dev server's namespace
and UI origin, so the dev server's Web UI decodes payloads with no token to configure.

The detached process is ``python -m workers.codec_process``; it reads its :class:`Settings` as JSON
on stdin (not argv or the environment, which other local users can read), so it serves exactly the
settings of the command that started it. Bearer tokens in ``CRMHUB_CODEC_TOKENS`` keep working
beside the UI (for ``temporal workflow show --codec-endpoint ... --codec-auth``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ConfigError
from schemas.settings import OAuthSettings, Settings
from workers.codec_server import CodecServerSettings, is_loopback
from workers.devserver import port_open, read_pid, stop_detached, wait_started

__all__ = [
    "CodecProcessStatus",
    "codec_server_in_thread",
    "codec_server_status",
    "dev_codec_settings",
    "dev_ui_origins",
    "start_codec_server",
    "stop_codec_server",
]

_started: dict[int, subprocess.Popen[bytes]] = {}


def dev_ui_origins(settings: Settings) -> tuple[str, ...]:
    """The browser origins of the dev server's Web UI (``localhost`` too when it is on loopback)."""
    dev = settings.temporal.dev_server
    host = f"[{dev.ip}]" if ":" in dev.ip else dev.ip
    origins = [f"http://{host}:{dev.ui_port}"]
    if is_loopback(dev.ip):
        origins += [f"http://localhost:{dev.ui_port}", f"http://127.0.0.1:{dev.ui_port}"]
    return tuple(dict.fromkeys(origins))


def dev_codec_settings(settings: Settings) -> CodecServerSettings:
    """Loopback-dev for the dev server's namespace and UI, plus any ``CRMHUB_CODEC_TOKENS``."""
    from_env = CodecServerSettings.from_env()
    return from_env.model_copy(
        update={
            "allowed_origins": dev_ui_origins(settings),
            "loopback_namespace": settings.temporal.namespace,
        }
    )


def _check_loopback(settings: Settings) -> None:
    if not is_loopback(settings.codec.host):
        raise ConfigError(
            f"codec.host is {settings.codec.host!r}: the dev server's codec server runs in loopback-dev "
            "mode and binds only to loopback; set CRMHUB_CODEC__HOST=127.0.0.1, or set "
            "CRMHUB_TEMPORAL__DEV_SERVER__CODEC_SERVER=false and run crmhub codec-server with tokens"
        )


def _paths(settings: Settings) -> tuple[Path, Path]:
    d = settings.data_dir.resolve()
    return d / "codec-server.pid", d / "codec-server.log"


@dataclass(frozen=True)
class CodecProcessStatus:
    running: bool
    pid: int | None
    url: str
    healthy: bool
    log_path: Path


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:  # noqa: S310 - http from settings
            return bool(resp.status == 200)
    except OSError:
        return False


def codec_server_status(settings: Settings) -> CodecProcessStatus:
    pid_file, log_path = _paths(settings)
    pid = read_pid(pid_file)
    url = settings.codec.url
    return CodecProcessStatus(pid is not None, pid, url, _healthy(url), log_path)


def start_codec_server(settings: Settings, *, timeout: float = 30.0) -> CodecProcessStatus:
    """Start the detached loopback-dev codec server (idempotent) and wait until ``/healthz`` answers."""
    from store.migrate import ensure_current

    _check_loopback(settings)
    codec = settings.codec
    pid_file, log_path = _paths(settings)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    if read_pid(pid_file) is None:
        if port_open(codec.host, codec.port):
            raise ConfigError(
                f"port {codec.port} on {codec.host} is already in use by another process; stop it or "
                "set codec.port (CRMHUB_CODEC__PORT)"
            )
        ensure_current(settings.effective_database_url)  # its audit table; errors here, not in a log
        dev_codec_settings(settings)  # CRMHUB_CODEC_TOKENS errors here too
        with log_path.open("ab") as log:
            proc = subprocess.Popen(  # fixed argv; settings travel on stdin
                [sys.executable, "-m", "workers.codec_process"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the CLI; stopped by `crmhub temporal down`
            )
        assert proc.stdin is not None
        proc.stdin.write(_settings_json(settings))
        proc.stdin.close()
        pid_file.write_text(str(proc.pid))
        _started[proc.pid] = proc
    wait_started(pid_file, _started, lambda: _healthy(codec.url), "the codec server", log_path, timeout)
    return codec_server_status(settings)


def stop_codec_server(settings: Settings, *, timeout: float = 10.0) -> bool:
    """Stop the codec server started by :func:`start_codec_server`; False if none was running."""
    pid_file, _ = _paths(settings)
    return stop_detached(pid_file, _started, timeout)


def _settings_json(settings: Settings) -> bytes:
    # The codec server needs no OAuth clients; dropping them keeps client secrets out of the pipe
    # (and SecretStr would dump them masked anyway).
    return settings.model_copy(update={"oauth": OAuthSettings()}).model_dump_json().encode()


@contextlib.contextmanager
def codec_server_in_thread(settings: Settings) -> Iterator[str]:
    """Serve the loopback-dev codec server in a thread of this process until the block ends;
    yields its URL (the demo)."""
    import uvicorn

    from services.access_ledger import settings_signer
    from services.wiring import make_vault
    from store.engine import make_engine
    from workers.codec_access import DecodeLedger
    from workers.codec_server import create_codec_app

    _check_loopback(settings)
    codec = settings.codec
    if port_open(codec.host, codec.port):
        raise ConfigError(
            f"port {codec.port} on {codec.host} is in use (a codec server of `crmhub temporal up`? "
            "stop it with `crmhub temporal down`), or set codec.port (CRMHUB_CODEC__PORT)"
        )
    engine = make_engine(settings.effective_database_url)
    try:
        ledger = DecodeLedger(engine, signer=settings_signer(settings))
        app = create_codec_app(
            dev_codec_settings(settings), make_vault(settings, engine), bind_host=codec.host,
            decode_ledger=ledger,
        )  # fmt: skip
        server = uvicorn.Server(
            uvicorn.Config(app, host=codec.host, port=codec.port, log_level="warning", lifespan="off")
        )
        thread = threading.Thread(target=server.run, name="codec-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the codec server did not start on {codec.url}")
            time.sleep(0.05)
        try:
            yield codec.url
        finally:
            server.should_exit = True
            thread.join(10)
    finally:
        engine.dispose()


def main() -> None:
    """``python -m workers.codec_process``: serve with the settings read from stdin (JSON)."""
    from workers.codec_server import serve_codec_server

    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    serve_codec_server(
        settings, settings.codec.host, settings.codec.port, codec_settings=dev_codec_settings(settings)
    )


if __name__ == "__main__":
    main()
