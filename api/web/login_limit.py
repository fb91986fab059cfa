"""The login rate limit: three counters per attempt, each atomic in the database
(:func:`store.login_limits.take_attempt`), counted in one ``web.login_window``:

* **address** — attempts from one client address (an IPv6 client: its /64) at any accounts:
  ``login_attempts_per_address`` (50). Checked first, so a client over it makes no further rows.
* **client** — attempts at one account (organisation + email) from one address:
  ``login_attempts_per_client`` (5).
* **account** — attempts at one account from all addresses: ``login_attempts_per_account`` (20), so
  spreading a guess over many addresses does not multiply it.

An attempt is counted *before* its password is checked, so N parallel wrong passwords are N counts
in the order the database serialised them: exactly the limit of them reach the password check, the
rest are 429. A login that succeeds clears its account's counters and takes back its address count;
an attempt refused for want of a password-hash slot (503) is taken back whole.

Keys are keyed HMACs (:meth:`Pseudonymizer.keyed_hash` under the vault's pseudonym key of
:data:`KEY_SCOPE`, wrapped by the deployment's key-encryption key): the database holds no email, no
address and nothing a dump alone lets anyone test guesses against. The same key on every web
process, so the limit holds across them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from governance.pseudonym import Pseudonymizer
from schemas.settings import WebSettings
from store import login_limits

__all__ = ["KEY_SCOPE", "LoginKeys", "LoginLimiter", "Taken"]

KEY_SCOPE = "crmhub:web-login"
"""The vault scope (not a tenant: tenant ids have no ':') of the limit keys' HMAC key."""


@dataclass(frozen=True, slots=True)
class LoginKeys:
    """The three counters one login attempt counts against (keyed hashes)."""

    address: str
    client: str
    account: str


@dataclass(frozen=True, slots=True)
class Taken:
    """What :meth:`LoginLimiter.take` counted, and whether the attempt may check its password."""

    allowed: bool
    keys: tuple[str, ...]


class LoginLimiter:
    """Counts login attempts against the limits of ``web`` (see the module docstring)."""

    def __init__(self, engine: Engine, pseudonymizer: Pseudonymizer, web: WebSettings) -> None:
        self.engine = engine
        self.pseudonymizer = pseudonymizer
        self.web = web

    def keys(self, tenant: str, email: str, bucket: str) -> LoginKeys:
        """The keys of an attempt at ``tenant``/``email`` (normalised by the caller) from the address
        bucket ``bucket`` (:func:`api.web.guards.address_bucket`)."""

        def h(*parts: str) -> str:
            return self.pseudonymizer.keyed_hash(KEY_SCOPE, "\x00".join(parts))

        return LoginKeys(
            address=h("address", bucket),
            client=h("client", tenant, email, bucket),
            account=h("account", tenant, email),
        )

    def take(self, keys: LoginKeys, *, now: datetime) -> Taken:
        """Prune the counters whose window has passed (a transaction of its own, see
        :func:`store.login_limits.prune`), then count the attempt (one transaction; the keys always
        in the same order, so concurrent attempts cannot deadlock)."""
        since = now - self.web.login_window
        with self.engine.begin() as conn:
            login_limits.prune(conn, since=since)
        limits = (
            (keys.address, self.web.login_attempts_per_address),
            (keys.client, self.web.login_attempts_per_client),
            (keys.account, self.web.login_attempts_per_account),
        )
        taken: list[str] = []
        with self.engine.begin() as conn:
            for key, limit in limits:
                taken.append(key)
                if login_limits.take_attempt(conn, key, now=now, since=since) > limit:
                    return Taken(False, tuple(taken))
        return Taken(True, tuple(taken))

    def refund(self, taken: Taken) -> None:
        """Take back everything :meth:`take` counted (the attempt was not judged)."""
        with self.engine.begin() as conn:
            for key in taken.keys:
                login_limits.refund(conn, key)

    def succeeded(self, keys: LoginKeys) -> None:
        """The password was right: the account's counters start again, the address's count of this
        attempt is taken back (logging in to one's own account does not reset an address's count).
        The rows in :meth:`take`'s order (address first), so the two cannot deadlock."""
        with self.engine.begin() as conn:
            login_limits.refund(conn, keys.address)
            login_limits.clear(conn, keys.client, keys.account)
