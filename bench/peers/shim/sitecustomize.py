"""URL-rewrite shim for the peer benchmark: point peers that hard-code vendor hosts at the sandbox.

Put this directory on ``PYTHONPATH`` of a peer's process; Python imports ``sitecustomize`` at start.
It is inert unless ``CRMHUB_BENCH_REWRITE`` holds a JSON object of URL prefixes, e.g.
``{"https://api.hubapi.com": "https://127.0.0.1:8443"}``. Then every request sent through
``requests`` (``HTTPAdapter.send``, which every ``Session`` ends in) whose URL starts with one of the
prefixes is sent to the replacement instead, and, if ``CRMHUB_BENCH_CA`` names a CA bundle,
verified against that bundle (the sandbox's CA). Nothing else of the peer changes: no logic is
patched, only where its requests go. Stdlib only, and it imports ``requests`` only when enabled.
"""

from __future__ import annotations

import json
import os
from typing import Any

_ENV = "CRMHUB_BENCH_REWRITE"
_CA_ENV = "CRMHUB_BENCH_CA"


def rewrite_url(url: str, prefixes: dict[str, str]) -> str | None:
    """The sandbox URL for ``url``, or None when no prefix matches (the longest prefix wins)."""
    for prefix, target in sorted(prefixes.items(), key=lambda kv: -len(kv[0])):
        if url == prefix or url.startswith((prefix.rstrip("/") + "/", prefix + "?")):
            return target.rstrip("/") + url[len(prefix.rstrip("/")) :]
    return None


def install(prefixes: dict[str, str], ca_path: str | None) -> None:
    """Wrap ``requests.adapters.HTTPAdapter.send`` so matching URLs go to their replacement."""
    from requests import PreparedRequest, Response
    from requests.adapters import HTTPAdapter

    original = HTTPAdapter.send
    if getattr(original, "_crmhub_rewrite", False):
        return

    def send(self: HTTPAdapter, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        target = rewrite_url(request.url or "", prefixes)
        if target is not None:
            request.url = target
            if ca_path:
                if len(args) >= 3:  # send(request, stream, timeout, verify, ...)
                    args = (*args[:2], ca_path, *args[3:])
                else:
                    kwargs["verify"] = ca_path
        return original(self, request, *args, **kwargs)

    send._crmhub_rewrite = True  # type: ignore[attr-defined]  # marks the wrapper: install once
    HTTPAdapter.send = send  # type: ignore[method-assign]


def _enable_from_env() -> None:
    raw = os.environ.get(_ENV)
    if raw:
        install(json.loads(raw), os.environ.get(_CA_ENV) or None)


_enable_from_env()
