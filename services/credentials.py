"""The credentials of CRM connections: the OAuth connect flow, sealed tokens in the database, single-
flight refresh and disconnect, built on the pure protocol package :mod:`connectors.oauth`.

Connect (RFC 6749 §4.1 with PKCE S256, RFC 7636)::

    svc.begin_authorization(tenant, "salesforce")  → AuthorizationRequest(url, state, expires_at)
        state: 256 random bits, single use, bound to tenant + provider + redirect URI, ≤ 10 minutes;
        the database keeps only SHA-256(state) and the PKCE verifier sealed by the vault
    the user consents at the provider, which redirects to redirect_uri?code=…&state=…
    svc.complete_authorization("salesforce", tenant=…, state=…, code=…, redirect_uri=…) → ConnectionInfo
        the state is consumed first (one conditional UPDATE); missing, unknown, replayed, expired,
        other-tenant, other-provider or other-redirect-URI → OAuthCallbackError (http_status 400)
        and no token call; then the code exchange, the instance URL allowlist, sealed tokens.

Refresh is single-flight per connection, across threads and processes, with the "rejected token"
pattern: ``refresh(connection_id, rejected)`` takes a database lock, re-reads the connection and
returns the stored access token if it differs from ``rejected`` (someone else refreshed), else calls
the token endpoint once. On PostgreSQL the lock is ``SELECT … FOR UPDATE`` on the connection row,
held across the token call. On SQLite, ``BEGIN IMMEDIATE`` guards a short claim (a lease in the
row) and a short store, and the token call runs between them: a SQLite write lock held across the
call would block every other writer, the vault's key reservations included. Threads of one process
also queue on an in-memory lock first, so they do not poll. A rotated refresh token is committed
before the new access token is returned to anyone. A dead refresh token (Salesforce
``invalid_grant``, HubSpot ``BAD_REFRESH_TOKEN``) marks the connection ``reauthorization_required``
and raises :class:`~schemas.errors.ReauthorizationRequired`: it is never retried.

Errors (all from :mod:`schemas.errors`; see :mod:`connectors.oauth.client` for the token calls')::

    OAuthCallbackError(AuthError)   bad callback (state/redirect/code): http_status 400, no token call
    ReauthorizationRequired         refresh token dead, or the connection is not active
    RateLimited / TransientError    the token endpoint asked to wait / failed transiently
    ConfigError                     client credentials refused, provider not configured, unknown connection
    InstanceNotAllowed(PolicyError) a token response named an instance URL off the allowlist

Messages never contain tokens, codes, verifiers or response bodies. Tokens at rest are vault
ciphertexts (dataset ``oauth-token``, purpose ``connection-credentials``, object id
``<connection id>/access`` or ``/refresh`` so the two cannot be swapped); the PKCE verifier is
sealed under dataset ``oauth-pkce-verifier``, object id = the state hash.

Disconnect revokes at the provider (Salesforce ``POST /services/oauth2/revoke`` of the refresh
token, which also revokes its access tokens; HubSpot ``DELETE /oauth/v1/refresh-tokens/{token}``,
after which access tokens only live out their 30 minutes) and deletes the local tokens.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx
from sqlalchemy.engine import Connection, Engine

from connectors.oauth import (
    AuthorizationRequest,
    DeadRefreshToken,
    Grant,
    InstanceNotAllowed,
    OAuthCallbackError,
    OAuthProviderConfig,
    Provider,
    TokenClient,
    authorize_url,
    check_instance_url,
    is_error_code,
    new_pkce_verifier,
    new_state,
    state_hash,
)
from governance.vault import Vault
from schemas.errors import AuthError, ConfigError, RateLimited, ReauthorizationRequired, TransientError
from services.notices import NoticeKind, enqueue_notice
from services.token_source import DbTokenSource
from store import connections as store
from store.connections import ConnectionInfo, ConnectionRow, ConnectionStatus
from store.engine import is_sqlite

__all__ = ["DATASET_TOKEN", "DATASET_VERIFIER", "PURPOSE", "OAuthService"]

log = logging.getLogger(__name__)

DATASET_TOKEN: Final = "oauth-token"  # noqa: S105 - a vault dataset name, not a secret
DATASET_VERIFIER: Final = "oauth-pkce-verifier"
PURPOSE: Final = "connection-credentials"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OAuthService:
    """Connect, refresh and disconnect CRM connections; one instance per process (thread-safe).

    ``configs`` holds one :class:`OAuthProviderConfig` per configured provider (see
    :func:`services.oauth_clients.oauth_configs`). ``clock`` and ``transport`` are for tests.
    ``claim_s`` bounds how long a SQLite refresh claim is honoured if its holder dies.
    """

    def __init__(
        self,
        engine: Engine,
        vault: Vault,
        configs: Iterable[OAuthProviderConfig],
        *,
        clock: Callable[[], datetime] = _utcnow,
        claim_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.vault = vault
        self.configs: dict[Provider, OAuthProviderConfig] = {c.provider: c for c in configs}
        self.clock = clock
        self.claim_s = claim_s
        self._sqlite = is_sqlite(engine)
        self._clients = {
            p: TokenClient(cfg, transport=transport, clock=clock) for p, cfg in self.configs.items()
        }
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        """Close the HTTP clients."""
        for client in self._clients.values():
            client.close()

    def __enter__(self) -> OAuthService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def config(self, provider: str | Provider) -> OAuthProviderConfig:
        """The configuration of ``provider``; :class:`ConfigError` naming what to set if it has none."""
        return self._client(provider).config

    def _client(self, provider: str | Provider) -> TokenClient:
        try:
            return self._clients[Provider(provider)]
        except (KeyError, ValueError):
            configured = ", ".join(sorted(self.configs)) or "none"
            name = str(provider)
            hint = (
                f"; set CRMHUB_OAUTH__{name.upper()}__CLIENT_ID and …__CLIENT_SECRET (or oauth.{name} in "
                "temporal.yaml), or give it a block in the OAuth clients file (oauth.clients_file, "
                "default <data_dir>/oauth-clients.yaml, which 'crmhub sandbox' writes)"
                if name in tuple(Provider)
                else ""
            )
            raise ConfigError(
                f"OAuth provider {name!r} is not configured (configured: {configured}){hint}"
            ) from None

    def client(self, provider: str | Provider) -> TokenClient:
        """The token client of ``provider`` (revocation uses it); :class:`ConfigError` if not configured."""
        return self._client(provider)

    def open_tokens(self, row: ConnectionRow) -> tuple[str | None, str | None]:
        """The connection's (access, refresh) tokens in the clear, None where it holds none: for
        ending the grant at the provider (:mod:`services.revocation`) and nothing else."""
        access = (
            None if row.access_token_sealed is None else self._open(row, "access", row.access_token_sealed)
        )
        refresh = (
            None if row.refresh_token_sealed is None else self._open(row, "refresh", row.refresh_token_sealed)
        )
        return access, refresh

    # ---- connect -----------------------------------------------------------------------------

    def begin_authorization(
        self, tenant: str, provider: str | Provider, *, extra_scopes: Sequence[str] = ()
    ) -> AuthorizationRequest:
        """Record a new single-use state (hash only) and sealed PKCE verifier; return the authorize URL.

        ``extra_scopes`` are asked for beside the app's own (e.g. HubSpot's ``crm.export`` when the
        customer allows exports); the connection records what the provider granted."""
        if not tenant:
            raise ConfigError("tenant must not be empty")
        cfg = self.config(provider)
        state = new_state()
        verifier = new_pkce_verifier()
        hashed = state_hash(state)
        now = self.clock()
        expires = now + timedelta(seconds=cfg.state_ttl_s)
        sealed = self.vault.seal(
            tenant, verifier.encode("ascii"), dataset=DATASET_VERIFIER, object_id=hashed, purpose=PURPOSE
        )
        with self.engine.begin() as conn:
            store.purge_states(conn, expired_before=now - timedelta(days=1))
            store.insert_state(
                conn,
                state_hash=hashed,
                tenant=tenant,
                provider=cfg.provider.value,
                redirect_uri=cfg.redirect_uri,
                pkce_verifier_sealed=sealed,
                created_at=now,
                expires_at=expires,
            )
        url = authorize_url(
            cfg.authorize_url,
            client_id=cfg.client_id,
            redirect_uri=cfg.redirect_uri,
            scopes=(*cfg.scopes, *extra_scopes),
            state=state,
            verifier=verifier,
        )
        log.info("oauth authorization started: tenant=%s provider=%s", tenant, cfg.provider.value)
        return AuthorizationRequest(url, state, tenant, cfg.provider, cfg.redirect_uri, expires)

    def complete_authorization(
        self,
        provider: str | Provider,
        *,
        tenant: str,
        state: str | None,
        code: str | None,
        redirect_uri: str,
        error: str | None = None,
    ) -> ConnectionInfo:
        """Accept the callback and create an ``active`` connection with sealed tokens.

        The state is consumed before anything else is checked, so every callback burns it. Any
        problem with state or redirect URI raises :class:`OAuthCallbackError` before a token call.
        """
        client = self._client(provider)
        cfg = client.config
        if not state:
            raise OAuthCallbackError("the callback carries no state parameter", reason="state_missing")
        row = self._consume_state(state)
        if error:
            reason = error if is_error_code(error) else "provider_error"
            raise OAuthCallbackError(f"the provider refused the authorization ({reason})", reason=reason)
        if self.clock() >= row.expires_at:
            raise OAuthCallbackError(
                "the authorization took too long (state expired); start again", reason="state_expired"
            )
        if row.provider != cfg.provider.value or row.tenant != tenant:
            raise OAuthCallbackError(
                "the state belongs to another tenant or provider", reason="state_mismatch"
            )
        if redirect_uri != row.redirect_uri or redirect_uri != cfg.redirect_uri:
            raise OAuthCallbackError(
                "the redirect URI does not match the authorization request", reason="redirect_uri_mismatch"
            )
        if not code:
            raise OAuthCallbackError("the callback carries no authorization code", reason="code_missing")
        if row.pkce_verifier_sealed is None:  # pragma: no cover - consume_state read it before erasing
            raise OAuthCallbackError("the authorization request has no verifier", reason="state_unknown")
        verifier = self.vault.open(
            row.tenant,
            row.pkce_verifier_sealed,
            dataset=DATASET_VERIFIER,
            object_id=row.state_hash,
            purpose=PURPOSE,
        ).decode("ascii")
        grant = client.exchange_code(code=code, verifier=verifier, redirect_uri=row.redirect_uri)
        if grant.refresh_token is None:
            raise ConfigError(
                f"{cfg.provider.value} issued no refresh token; the app must be allowed the scopes "
                f"{' '.join(cfg.scopes)}"
            )
        try:
            instance = cfg.instance_url_fixed or check_instance_url(
                grant.instance_url, cfg.instance_allowlist
            )
        except InstanceNotAllowed:
            client.revoke_quietly(grant.refresh_token)  # do not leave live tokens we will not store
            raise
        connection_id = str(uuid.uuid4())
        access_sealed, refresh_sealed = self._seal_tokens(row.tenant, connection_id, grant)
        assert refresh_sealed is not None  # a grant without a refresh token was refused above
        now = self.clock()
        with self.engine.begin() as conn:
            store.insert_connection(
                conn,
                id=connection_id,
                tenant=row.tenant,
                provider=cfg.provider.value,
                instance_url=instance,
                scopes=grant.scopes if grant.scopes is not None else cfg.scopes,
                access_token_sealed=access_sealed,
                refresh_token_sealed=refresh_sealed,
                access_expires_at=self._expiry(grant, now),
                now=now,
            )
            created = store.get_connection(conn, connection_id)
        assert created is not None
        log.info(
            "oauth connection created: id=%s tenant=%s provider=%s", connection_id, tenant, cfg.provider.value
        )
        return created.info()

    def _consume_state(self, state: str) -> store.OAuthStateRow:
        hashed = state_hash(state)
        with self.engine.begin() as conn:
            row = store.get_state(conn, hashed)
            if row is None:
                raise OAuthCallbackError("unknown state: start the connection again", reason="state_unknown")
            if row.used_at is not None or not store.consume_state(conn, hashed, now=self.clock()):
                raise OAuthCallbackError("this authorization was already used", reason="state_replayed")
        return row

    # ---- tokens ------------------------------------------------------------------------------

    def access_token(self, connection_id: str) -> tuple[str, datetime | None]:
        """The stored access token of an active connection and its expiry (None: unknown)."""
        with self.engine.connect() as conn:
            row = self._row(conn, connection_id)
        self._require_active(row)
        if row.access_token_sealed is None:  # pragma: no cover - active rows always hold tokens
            raise ReauthorizationRequired(f"connection {row.id} holds no access token; reconnect it")
        return self._open(row, "access", row.access_token_sealed), row.access_expires_at

    def instance_url(self, connection_id: str) -> str:
        """The API base of the connection (allowlisted at connect time)."""
        with self.engine.connect() as conn:
            row = self._row(conn, connection_id)
        if row.instance_url is None:  # pragma: no cover - set at connect
            raise ConfigError(f"connection {connection_id} has no instance URL")
        return row.instance_url

    def refresh(self, connection_id: str, rejected_access_token: str | None) -> str:
        """A valid access token for the connection, refreshing at most once across all workers.

        ``rejected_access_token`` is the token the vendor refused (or that expired); if the stored
        token differs and has not expired, someone already refreshed and it is returned without a
        token call. ``None`` forces a refresh.
        """
        return self.refresh_with_expiry(connection_id, rejected_access_token)[0]

    def refresh_with_expiry(
        self, connection_id: str, rejected_access_token: str | None
    ) -> tuple[str, datetime | None]:
        """:meth:`refresh`, also returning the new token's expiry (None: unknown)."""
        with self._local_lock(connection_id):
            if self._sqlite:
                return self._refresh_claimed(connection_id, rejected_access_token)
            return self._refresh_row_locked(connection_id, rejected_access_token)

    def _notify_reauthorization(self, tenant: str, connection_id: str, provider: str) -> None:
        """Tell the controller a person must connect again (one notice per connection and window)."""
        facts = {"connection_id": connection_id, "provider": provider}
        try:
            enqueue_notice(self.engine, tenant=tenant, kind=NoticeKind.REAUTHORIZATION_NEEDED, facts=facts,
                           subject=connection_id, now=self.clock())  # fmt: skip
        except Exception as exc:  # the refusal itself must still reach the caller
            log.error("reauthorization notice for %s not enqueued: %s", connection_id, type(exc).__name__)

    def _refresh_row_locked(self, connection_id: str, rejected: str | None) -> tuple[str, datetime | None]:
        """PostgreSQL: hold ``SELECT … FOR UPDATE`` across the token call; commit before returning."""
        dead: ReauthorizationRequired | None = None
        with self.engine.begin() as conn:
            row = self._row(conn, connection_id, for_update=True)
            reuse = self._reusable(row, rejected)
            if reuse is not None:
                return reuse
            try:
                grant = self._refresh_call(row)
            except ReauthorizationRequired as exc:
                store.mark_reauthorization_required(conn, row.id, exc.message, now=self.clock())
                dead = exc
            else:
                sealed = self._seal_tokens(row.tenant, row.id, grant)  # PostgreSQL: other rows, no conflict
                result = self._store_grant(conn, row, grant, sealed)
        if dead is not None:
            log.warning("oauth connection %s needs reauthorization", connection_id)
            self._notify_reauthorization(row.tenant, connection_id, row.provider)
            raise dead
        return result

    def _refresh_claimed(self, connection_id: str, rejected: str | None) -> tuple[str, datetime | None]:
        """SQLite: claim under BEGIN IMMEDIATE, call the token endpoint, store under BEGIN IMMEDIATE."""
        owner = uuid.uuid4().hex
        give_up = time.monotonic() + self.claim_s + 30.0
        delay = 0.01
        while True:
            with self._write_locked() as conn:
                row = self._row(conn, connection_id)
                reuse = self._reusable(row, rejected)
                if reuse is not None:
                    return reuse
                now = self.clock()
                busy = (
                    row.refresh_claim_owner is not None
                    and row.refresh_claimed_until is not None
                    and row.refresh_claimed_until > now
                )
                if not busy:
                    store.claim_refresh(
                        conn, row.id, owner=owner, until=now + timedelta(seconds=self.claim_s)
                    )
            if not busy:
                break
            if time.monotonic() > give_up:
                raise TransientError(
                    f"connection {connection_id} is being refreshed by another worker; retry"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        try:
            grant = self._refresh_call(row)
        except ReauthorizationRequired as exc:
            with self._write_locked() as conn:
                store.mark_reauthorization_required(conn, row.id, exc.message, now=self.clock())
            log.warning("oauth connection %s needs reauthorization", connection_id)
            self._notify_reauthorization(row.tenant, connection_id, row.provider)
            raise
        except BaseException:
            with self._write_locked() as conn:
                store.release_claim(conn, row.id, owner=owner)
            raise
        sealed = self._seal_tokens(row.tenant, row.id, grant)  # outside the write lock (see _store_grant)
        with self._write_locked() as conn:
            latest = self._row(conn, connection_id)
            if latest.status is not ConnectionStatus.ACTIVE:  # disconnected while we refreshed
                raise ReauthorizationRequired(
                    f"connection {connection_id} is {latest.status.value}; reconnect it",
                    code=latest.status.value,
                )
            if latest.refresh_claim_owner != owner:  # pragma: no cover - only if a claim outlived claim_s
                log.warning(
                    "oauth refresh claim of connection %s expired before the token call ended", row.id
                )
            return self._store_grant(conn, row, grant, sealed)

    def _reusable(self, row: ConnectionRow, rejected: str | None) -> tuple[str, datetime | None] | None:
        """The stored token if it is not the rejected one and not expired (someone refreshed)."""
        self._require_active(row)
        if row.access_token_sealed is None or rejected is None:
            return None
        current = self._open(row, "access", row.access_token_sealed)
        if hmac.compare_digest(current.encode(), rejected.encode()):
            return None
        if row.access_expires_at is not None and row.access_expires_at <= self.clock():
            return None
        return current, row.access_expires_at

    def _refresh_call(self, row: ConnectionRow) -> Grant:
        """One refresh grant; a dead refresh token becomes :class:`ReauthorizationRequired`."""
        if row.refresh_token_sealed is None:  # pragma: no cover - active rows always hold tokens
            raise ReauthorizationRequired(
                "the connection holds no refresh token; reconnect it", code="no_refresh_token"
            )
        client = self._client(row.provider)
        try:
            return client.refresh(self._open(row, "refresh", row.refresh_token_sealed))
        except DeadRefreshToken as dead:
            name = client.name
            detail = f": {dead.description}" if dead.description else ""
            raise ReauthorizationRequired(
                f"{name} refused the stored refresh token ({dead.label}{detail}); the connection "
                f"needs reauthorization: crmhub connect {name} --tenant {row.tenant}",
                code=dead.label,
            ) from None

    def _store_grant(
        self, conn: Connection, row: ConnectionRow, grant: Grant, sealed: tuple[bytes, bytes | None]
    ) -> tuple[str, datetime | None]:
        """Write the sealed tokens (the rotated refresh token too) in the caller's transaction.

        ``sealed`` comes from :meth:`_seal_tokens`, called *before* a SQLite write lock is taken:
        the vault may need to write (key-use reservations) and would wait on our own lock.
        """
        now = self.clock()
        expires = self._expiry(grant, now)
        store.store_tokens(
            conn,
            row.id,
            access_token_sealed=sealed[0],
            refresh_token_sealed=sealed[1],
            access_expires_at=expires,
            now=now,
        )
        log.info(
            "oauth token refreshed: connection=%s rotated_refresh_token=%s",
            row.id,
            grant.refresh_token is not None,
        )
        return grant.access_token, expires

    # ---- disconnect --------------------------------------------------------------------------

    def disconnect(self, connection_id: str, *, force: bool = False) -> ConnectionInfo:
        """Revoke the connection's tokens at the provider, then delete them locally (status ``revoked``).

        If the provider cannot be reached the tokens are kept and the error raised, unless ``force``:
        then they are deleted anyway and ``status_message`` says revocation failed.
        """
        with self._local_lock(connection_id), self._row_locked(connection_id) as (conn, row):
            if row.status is ConnectionStatus.REVOKED:
                return row.info()
            client = self._client(row.provider)
            message = f"disconnected at {self.clock():%Y-%m-%dT%H:%M:%SZ}: tokens revoked and deleted"
            # The refresh token first (revoking it ends the grant). Salesforce access tokens are
            # revoked too, so a live session does not depend on the cascade; HubSpot has no
            # access-token revocation (they expire within 30 minutes).
            revocable = [("refresh", row.refresh_token_sealed)]
            if client.config.provider is Provider.SALESFORCE:
                revocable.append(("access", row.access_token_sealed))
            try:
                for kind, sealed in revocable:
                    if sealed is not None:
                        client.revoke(self._open(row, kind, sealed))
            except (TransientError, RateLimited, AuthError) as exc:
                if not force:
                    raise
                message = f"disconnected: provider revocation failed ({exc.kind.value}); local tokens deleted"
            store.delete_tokens(conn, row.id, message, now=self.clock())
            updated = self._row(conn, row.id)
        log.info("oauth connection disconnected: id=%s", connection_id)
        return updated.info()

    # ---- listing -----------------------------------------------------------------------------

    def get(self, connection_id: str) -> ConnectionInfo:
        """The public view of one connection; :class:`ConfigError` if unknown."""
        with self.engine.connect() as conn:
            return self._row(conn, connection_id).info()

    def list(self, tenant: str | None = None) -> list[ConnectionInfo]:
        """Every connection (of ``tenant``), oldest first."""
        with self.engine.connect() as conn:
            return [r.info() for r in store.list_connections(conn, tenant=tenant)]

    def token_source(self, connection_id: str, *, skew_s: float = 60.0) -> DbTokenSource:
        """A :class:`~services.token_source.DbTokenSource` for the connection."""
        return DbTokenSource(self, connection_id, skew_s=skew_s)

    # ---- internals ---------------------------------------------------------------------------

    def _seal_tokens(self, tenant: str, connection_id: str, grant: Grant) -> tuple[bytes, bytes | None]:
        """Both tokens sealed, each bound to its connection and kind (``<id>/access``, ``<id>/refresh``)."""

        def seal(kind: str, token: str) -> bytes:
            object_id = f"{connection_id}/{kind}"
            return self.vault.seal(
                tenant, token.encode(), dataset=DATASET_TOKEN, object_id=object_id, purpose=PURPOSE
            )

        refresh = None if grant.refresh_token is None else seal("refresh", grant.refresh_token)
        return seal("access", grant.access_token), refresh

    def _open(self, row: ConnectionRow, kind: str, sealed: bytes) -> str:
        return self.vault.open(
            row.tenant, sealed, dataset=DATASET_TOKEN, object_id=f"{row.id}/{kind}", purpose=PURPOSE
        ).decode()

    @staticmethod
    def _expiry(grant: Grant, now: datetime) -> datetime | None:
        return None if grant.expires_in is None else now + timedelta(seconds=grant.expires_in)

    @staticmethod
    def _row(conn: Connection, connection_id: str, *, for_update: bool = False) -> ConnectionRow:
        row = store.get_connection(conn, connection_id, for_update=for_update)
        if row is None:
            raise ConfigError(f"no connection {connection_id!r}; list them with: crmhub connections list")
        return row

    @staticmethod
    def _require_active(row: ConnectionRow) -> None:
        if row.status is not ConnectionStatus.ACTIVE:
            raise ReauthorizationRequired(
                f"connection {row.id} is {row.status.value}"
                + (f" ({row.status_message})" if row.status_message else "")
                + f"; reconnect with: crmhub connect {row.provider} --tenant {row.tenant}",
                code=row.status.value,
            )

    def _local_lock(self, connection_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(connection_id, threading.Lock())

    @contextmanager
    def _write_locked(self) -> Iterator[Connection]:
        """A SQLite transaction holding the database write lock from its first statement."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextmanager
    def _row_locked(self, connection_id: str) -> Iterator[tuple[Connection, ConnectionRow]]:
        """The connection row under the dialect's write lock, committed on success."""
        if self._sqlite:
            with self._write_locked() as conn:
                yield conn, self._row(conn, connection_id)
        else:
            with self.engine.begin() as conn:
                yield conn, self._row(conn, connection_id, for_update=True)
