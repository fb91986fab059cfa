"""``crmhub codec-server``: serve the Temporal codec server for the Web UI and CLI.

Wired by ``register(app)`` from :mod:`api.cli`. Tokens come from ``CRMHUB_CODEC_TOKENS``
(``id:token:namespace,...``), allowed browser origins from ``CRMHUB_CODEC_ALLOWED_ORIGINS``
(default: the dev server UI on :8233).
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register"]


def codec_server_cmd(
    host: Annotated[
        str, typer.Option(help="interface to listen on (keep loopback unless behind TLS)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8081,
    loopback_dev: Annotated[
        bool,
        typer.Option(
            "--loopback-dev",
            help="dev only: also accept the local dev server UI without a token (loopback bind, "
            "loopback client, its Origin, temporal.namespace; audited as ui-loopback)",
        ),
    ] = False,
) -> None:
    """Decode (and encode) encrypted Temporal payloads for authorised ops; every request is audited.

    Point the Web UI at it (dev server: temporal.dev_server.ui_codec_endpoint, or the UI's
    "Codec Server" setting) or the CLI (temporal workflow show --codec-endpoint URL
    --codec-auth "Bearer TOKEN"). Tokens: CRMHUB_CODEC_TOKENS=id:token:namespace,...
    ``crmhub temporal up`` starts one with --loopback-dev for the dev server's UI by itself.
    """
    from schemas.settings import load_settings
    from workers.codec_process import dev_codec_settings
    from workers.codec_server import CodecServerSettings, serve_codec_server

    settings = load_settings()
    codec = dev_codec_settings(settings) if loopback_dev else CodecServerSettings.from_env()
    serve_codec_server(settings, host, port, codec_settings=codec)


def register(app: typer.Typer) -> None:
    """Add the ``codec-server`` command to ``app``."""
    app.command("codec-server")(codec_server_cmd)
