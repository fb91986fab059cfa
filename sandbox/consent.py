"""Press the button on a sandbox consent page, as the customer's browser would.

``crmhub demo`` and the tests connect CRMs through the real authorization-code flow; this is the
one step a person does by hand: open the provider's consent page (``authorize_url``), submit its
form with Allow (or Deny), and read the redirect the provider answers with — without following it.
"""

from __future__ import annotations

import ssl
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

__all__ = ["ConsentError", "press_consent"]


class ConsentError(RuntimeError):
    """The consent page did not behave like a consent page (no form, no redirect)."""


class _ConsentForm(HTMLParser):
    """The first form of a page: its action, hidden inputs and named submit buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.buttons: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        elif tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.hidden[a["name"]] = a.get("value", "")
        elif tag == "button" and a.get("name"):
            self.buttons.append((a["name"], a.get("value", "")))


def press_consent(authorize_url: str, verify: ssl.SSLContext, *, allow: bool = True) -> dict[str, str]:
    """Open the consent page, press Allow (or Deny); returns the redirect's query parameters
    (``code`` and ``state``, or ``error``)."""
    with httpx.Client(verify=verify, follow_redirects=False, timeout=10) as client:
        page = client.get(authorize_url)
        if page.status_code != 200:
            raise ConsentError(f"consent page answered {page.status_code}")
        form = _ConsentForm()
        form.feed(page.text)
        wanted = ("allow", "grant") if allow else ("deny",)
        button = next((b for b in form.buttons if b[1] in wanted), None)
        if form.action is None or button is None:
            raise ConsentError("no consent form with the expected button on the page")
        answer = client.post(urljoin(authorize_url, form.action), data={**form.hidden, button[0]: button[1]})
        if answer.status_code not in (302, 303) or "location" not in answer.headers:
            raise ConsentError(f"consent form answered {answer.status_code}, not a redirect")
        location = answer.headers["location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
