"""CRM connections and pending OAuth authorizations: tables and the small functions that touch them.

``connections`` holds one row per connected CRM org/portal. Tokens are stored only as vault
ciphertexts (``*_sealed``, see :mod:`connectors.oauth` for their AAD); nothing here ever sees a
plaintext token. ``status`` moves ``active`` → ``reauthorization_required`` (the refresh token died;
a human must connect again) or → ``revoked`` (disconnected; tokens deleted).

``refresh_claim_owner``/``refresh_claimed_until`` are the lease a refresher takes on SQLite, where a
write lock cannot be held across the token call (see :mod:`connectors.oauth`); PostgreSQL uses a row
lock instead and leaves them empty.

``oauth_states`` holds the authorization requests in flight: only the SHA-256 of the ``state``
value, the tenant, provider and redirect URI it is bound to, the sealed PKCE verifier, and when it
expires and was used. A state is consumed by one conditional ``UPDATE`` so it is single use even
under concurrent callbacks; the verifier is erased when it is consumed.

Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import DateTime, Index, LargeBinary, PrimaryKeyConstraint, String, delete, select, update
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import as_bytes, aware, required_aware, table_of

__all__ = [
    "ConnectionInfo",
    "ConnectionRow",
    "ConnectionStatus",
    "ConnectionTable",
    "OAuthStateRow",
    "OAuthStateTable",
    "claim_refresh",
    "connections",
    "consume_state",
    "delete_tokens",
    "delete_tokens_if_unchanged",
    "get_connection",
    "get_state",
    "insert_connection",
    "insert_state",
    "list_connections",
    "mark_reauthorization_required",
    "oauth_states",
    "purge_states",
    "release_claim",
    "set_region_instance",
    "store_tokens",
]


class ConnectionTable(SQLModel, table=True):
    """Declaration of the ``connections`` table (read and written through :data:`connections`)."""

    __tablename__ = "connections"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_connections"),
        Index("ix_connections_tenant", "tenant", "provider"),
    )

    id: str = Field(sa_type=String(64), primary_key=True)
    tenant: str = Field(sa_type=String(255))
    provider: str = Field(sa_type=String(32))
    status: str = Field(sa_type=String(32))
    status_message: str | None = Field(sa_type=String(500))
    instance_url: str | None = Field(sa_type=String(500))
    # the registry endpoint instance the vendor said hosts the data (set after connect; None: unknown)
    region_instance: str | None = Field(default=None, sa_type=String(32))
    scopes: str = Field(default="", sa_type=String(2000), sa_column_kwargs={"server_default": ""})
    access_token_sealed: bytes | None = Field(sa_type=LargeBinary)
    refresh_token_sealed: bytes | None = Field(sa_type=LargeBinary)
    access_expires_at: datetime | None = Field(sa_type=DateTime(timezone=True))
    refreshed_at: datetime | None = Field(sa_type=DateTime(timezone=True))
    refresh_claim_owner: str | None = Field(sa_type=String(64))
    refresh_claimed_until: datetime | None = Field(sa_type=DateTime(timezone=True))
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(sa_type=DateTime(timezone=True))


class OAuthStateTable(SQLModel, table=True):
    """Declaration of the ``oauth_states`` table (read and written through :data:`oauth_states`)."""

    __tablename__ = "oauth_states"
    __table_args__ = (
        PrimaryKeyConstraint("state_hash", name="pk_oauth_states"),
        Index("ix_oauth_states_expires_at", "expires_at"),
    )

    state_hash: str = Field(sa_type=String(64), primary_key=True)
    tenant: str = Field(sa_type=String(255))
    provider: str = Field(sa_type=String(32))
    redirect_uri: str = Field(sa_type=String(2000))
    pkce_verifier_sealed: bytes | None = Field(sa_type=LargeBinary)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))
    used_at: datetime | None = Field(sa_type=DateTime(timezone=True))


connections = table_of(ConnectionTable)
oauth_states = table_of(OAuthStateTable)


class ConnectionStatus(StrEnum):
    """Where a connection stands; only ``active`` connections are refreshed or used."""

    ACTIVE = "active"
    REAUTHORIZATION_REQUIRED = "reauthorization_required"
    REVOKED = "revoked"


class ConnectionInfo(BaseModel):
    """What users and ops may see about a connection: never tokens, sealed or not."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    provider: str
    status: ConnectionStatus
    status_message: str | None
    instance_url: str | None
    scopes: tuple[str, ...]
    access_expires_at: datetime | None
    refreshed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    region_instance: str | None = None  # where the vendor hosts the data (registry endpoint instance)


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    """One ``connections`` row, sealed tokens included (for :mod:`connectors.oauth` only)."""

    id: str
    tenant: str
    provider: str
    status: ConnectionStatus
    status_message: str | None
    instance_url: str | None
    scopes: tuple[str, ...]
    access_token_sealed: bytes | None
    refresh_token_sealed: bytes | None
    access_expires_at: datetime | None
    refreshed_at: datetime | None
    refresh_claim_owner: str | None
    refresh_claimed_until: datetime | None
    created_at: datetime
    updated_at: datetime
    region_instance: str | None = None

    @classmethod
    def from_mapping(cls, m: Any) -> ConnectionRow:
        return cls(
            id=m["id"],
            tenant=m["tenant"],
            provider=m["provider"],
            status=ConnectionStatus(m["status"]),
            status_message=m["status_message"],
            instance_url=m["instance_url"],
            scopes=tuple(m["scopes"].split()) if m["scopes"] else (),
            access_token_sealed=as_bytes(m["access_token_sealed"]),
            refresh_token_sealed=as_bytes(m["refresh_token_sealed"]),
            access_expires_at=aware(m["access_expires_at"]),
            refreshed_at=aware(m["refreshed_at"]),
            refresh_claim_owner=m["refresh_claim_owner"],
            refresh_claimed_until=aware(m["refresh_claimed_until"]),
            created_at=required_aware(m["created_at"]),
            updated_at=required_aware(m["updated_at"]),
            region_instance=m["region_instance"],
        )

    def info(self) -> ConnectionInfo:
        """The public view of this row (no sealed tokens)."""
        return ConnectionInfo(
            id=self.id,
            tenant=self.tenant,
            provider=self.provider,
            status=self.status,
            status_message=self.status_message,
            instance_url=self.instance_url,
            scopes=self.scopes,
            access_expires_at=self.access_expires_at,
            refreshed_at=self.refreshed_at,
            created_at=self.created_at,
            updated_at=self.updated_at,
            region_instance=self.region_instance,
        )


def insert_connection(
    conn: Connection,
    *,
    id: str,
    tenant: str,
    provider: str,
    instance_url: str | None,
    scopes: Sequence[str],
    access_token_sealed: bytes,
    refresh_token_sealed: bytes,
    access_expires_at: datetime | None,
    now: datetime,
) -> None:
    """Insert a new ``active`` connection holding sealed tokens."""
    conn.execute(
        connections.insert().values(
            id=id,
            tenant=tenant,
            provider=provider,
            status=ConnectionStatus.ACTIVE.value,
            status_message=None,
            instance_url=instance_url,
            scopes=" ".join(scopes),
            access_token_sealed=access_token_sealed,
            refresh_token_sealed=refresh_token_sealed,
            access_expires_at=access_expires_at,
            refreshed_at=None,
            created_at=now,
            updated_at=now,
        )
    )


def get_connection(conn: Connection, id: str, *, for_update: bool = False) -> ConnectionRow | None:
    """The row of connection ``id``, or ``None``. ``for_update`` locks the row until the transaction
    ends (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite ignores it, callers lock with
    ``BEGIN IMMEDIATE`` there)."""
    stmt = select(connections).where(connections.c.id == id)
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().one_or_none()
    return None if row is None else ConnectionRow.from_mapping(row)


def list_connections(conn: Connection, *, tenant: str | None = None) -> list[ConnectionRow]:
    """Connections (of one tenant, or all), oldest first."""
    stmt = select(connections).order_by(connections.c.created_at, connections.c.id)
    if tenant is not None:
        stmt = stmt.where(connections.c.tenant == tenant)
    return [ConnectionRow.from_mapping(m) for m in conn.execute(stmt).mappings()]


def set_region_instance(conn: Connection, id: str, instance: str | None, *, now: datetime) -> None:
    """Record where the vendor hosts connection ``id``'s data (a registry endpoint instance)."""
    conn.execute(
        update(connections).where(connections.c.id == id).values(region_instance=instance, updated_at=now)
    )


def store_tokens(
    conn: Connection,
    id: str,
    *,
    access_token_sealed: bytes,
    refresh_token_sealed: bytes | None,
    access_expires_at: datetime | None,
    now: datetime,
) -> None:
    """Replace the sealed access token (and the refresh token when one is given: rotation) and
    release any refresh claim."""
    values: dict[str, Any] = {
        "access_token_sealed": access_token_sealed,
        "access_expires_at": access_expires_at,
        "refreshed_at": now,
        "updated_at": now,
        "refresh_claim_owner": None,
        "refresh_claimed_until": None,
    }
    if refresh_token_sealed is not None:
        values["refresh_token_sealed"] = refresh_token_sealed
    conn.execute(update(connections).where(connections.c.id == id).values(**values))


def _drop_tokens(
    conn: Connection, id: str, status: ConnectionStatus, message: str, now: datetime, *conditions: Any
) -> bool:
    """Erase the sealed tokens (and any refresh claim) and set the connection's status, where
    ``conditions`` hold too; True if the row was changed."""
    result = conn.execute(
        update(connections)
        .where(connections.c.id == id, *conditions)
        .values(
            status=status.value,
            status_message=message[:500],
            access_token_sealed=None,
            refresh_token_sealed=None,
            access_expires_at=None,
            refresh_claim_owner=None,
            refresh_claimed_until=None,
            updated_at=now,
        )
    )
    return result.rowcount == 1


def mark_reauthorization_required(conn: Connection, id: str, message: str, *, now: datetime) -> None:
    """Flag the connection as needing a new OAuth connect; its dead tokens are deleted."""
    _drop_tokens(conn, id, ConnectionStatus.REAUTHORIZATION_REQUIRED, message, now)


def delete_tokens(conn: Connection, id: str, message: str, *, now: datetime) -> None:
    """Erase the sealed tokens and mark the connection ``revoked`` (disconnect)."""
    _drop_tokens(conn, id, ConnectionStatus.REVOKED, message, now)


def delete_tokens_if_unchanged(
    conn: Connection, id: str, *, refresh_token_sealed: bytes | None, message: str, now: datetime
) -> bool:
    """:func:`delete_tokens`, only if the connection still holds ``refresh_token_sealed`` (the
    grant that was just revoked); False if a refresh rotated it meanwhile (revoke the new one)."""
    held = connections.c.refresh_token_sealed
    same = held.is_(None) if refresh_token_sealed is None else held == refresh_token_sealed
    return _drop_tokens(conn, id, ConnectionStatus.REVOKED, message, now, same)


def claim_refresh(conn: Connection, id: str, *, owner: str, until: datetime) -> None:
    """Record that ``owner`` is refreshing the connection until ``until`` (call under a write lock)."""
    conn.execute(
        update(connections)
        .where(connections.c.id == id)
        .values(refresh_claim_owner=owner, refresh_claimed_until=until)
    )


def release_claim(conn: Connection, id: str, *, owner: str) -> None:
    """Drop ``owner``'s refresh claim, if it still holds it."""
    conn.execute(
        update(connections)
        .where(connections.c.id == id, connections.c.refresh_claim_owner == owner)
        .values(refresh_claim_owner=None, refresh_claimed_until=None)
    )


# ---- authorization states ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OAuthStateRow:
    """One pending (or used) authorization request."""

    state_hash: str
    tenant: str
    provider: str
    redirect_uri: str
    pkce_verifier_sealed: bytes | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


def insert_state(
    conn: Connection,
    *,
    state_hash: str,
    tenant: str,
    provider: str,
    redirect_uri: str,
    pkce_verifier_sealed: bytes,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    """Record a new authorization request (``state_hash`` is the SHA-256 hex of the state)."""
    conn.execute(
        oauth_states.insert().values(
            state_hash=state_hash,
            tenant=tenant,
            provider=provider,
            redirect_uri=redirect_uri,
            pkce_verifier_sealed=pkce_verifier_sealed,
            created_at=created_at,
            expires_at=expires_at,
            used_at=None,
        )
    )


def get_state(conn: Connection, state_hash: str) -> OAuthStateRow | None:
    """The authorization request with this state hash, used or not; ``None`` if unknown."""
    m = (
        conn.execute(select(oauth_states).where(oauth_states.c.state_hash == state_hash))
        .mappings()
        .one_or_none()
    )
    if m is None:
        return None
    return OAuthStateRow(
        state_hash=m["state_hash"],
        tenant=m["tenant"],
        provider=m["provider"],
        redirect_uri=m["redirect_uri"],
        pkce_verifier_sealed=as_bytes(m["pkce_verifier_sealed"]),
        created_at=required_aware(m["created_at"]),
        expires_at=required_aware(m["expires_at"]),
        used_at=aware(m["used_at"]),
    )


def consume_state(conn: Connection, state_hash: str, *, now: datetime) -> bool:
    """Mark the state used and erase its verifier; True only for the one caller that did it first."""
    result = conn.execute(
        update(oauth_states)
        .where(oauth_states.c.state_hash == state_hash, oauth_states.c.used_at.is_(None))
        .values(used_at=now, pkce_verifier_sealed=None)
    )
    return result.rowcount == 1


def purge_states(conn: Connection, *, expired_before: datetime) -> int:
    """Delete authorization requests that expired before ``expired_before``; returns how many."""
    result = conn.execute(delete(oauth_states).where(oauth_states.c.expires_at < expired_before))
    return int(result.rowcount)
