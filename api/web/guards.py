"""What the web app believes about a request's origin, and the limits anonymous clients meet.

* **Client address** (:func:`client_address`): the TCP peer — unless the peer is one of
  ``web.trusted_proxies``, whose ``X-Forwarded-For``/``-Proto`` uvicorn's
  :class:`~uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware` (installed by the app only when
  proxies are configured) resolves to the right-most untrusted address. ``crmhub web`` runs uvicorn
  with its own proxy handling off, so no client — on loopback or anywhere — can name its address.
* **Body timeout** (:class:`BodyTimeout`): a request body must arrive within ``web.body_timeout_s``
  (else 408), so a client trickling a body cannot hold a worker thread. The size cap is FastAPI's
  ``max_body_size`` (413).
* **/metrics** (:func:`metrics_allowed`): with ``web.metrics_token`` set, only
  ``Authorization: Bearer <token>``; unset, only loopback clients.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.settings import WebSettings

__all__ = ["BodyTimeout", "address_bucket", "client_address", "is_loopback", "metrics_allowed"]


def client_address(request: Request) -> str:
    """The client's IP address as the app believes it (see the module docstring); ``-`` if unknown."""
    return request.client.host if request.client else "-"


def address_bucket(address: str) -> str:
    """What a per-address limit counts: an IPv4 address itself, an IPv6 address's /64 (one subscriber
    usually holds a whole /64), anything else as given (cut to 64 characters)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def metrics_allowed(request: Request, web: WebSettings) -> bool:
    """Whether this request may read ``/metrics``."""
    if web.metrics_token is None:
        return is_loopback(client_address(request))
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    expected = web.metrics_token.get_secret_value()
    return scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), expected.encode())


class BodyTimeout:
    """408 when a request body has not fully arrived ``timeout_s`` after the request started. Pure
    ASGI; the deadline applies only while body chunks are outstanding (a later wait for the client's
    disconnect is not timed)."""

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.timeout_s
        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise HTTPException(
                    status_code=408, detail=f"the request body did not arrive within {self.timeout_s:g} s"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, receive_in_time, send)
