"""The human access ledger: every time a person touches a tenant's personal data or its protection,
an ``access`` event in the tenant's lineage ledger (so the auditor's offline verification covers it
and ``GET /audit/access`` lists it).

Actions (:data:`ACTIONS`): decoding Temporal payloads in the codec server, data-subject exports and
other requests, offboarding exports, key rotation, rewrap and shred, instruction edits and which
instruction a sync runs under, connects and disconnects, web user and auditor token changes (a
user's sessions ended included).

**The actor is never an e-mail or a name in clear**: a web user is ``web:<user id>`` (an opaque
uuid the tenant's admin can resolve with ``crmhub web user list``); an operator at the CLI is
``cli:kh_…``, the tenant's keyed hash of their login name (``$CRMHUB_ACTOR``, else the OS user), so
the same person is the same actor across events and a controller holding the key can check a name;
the codec server's caller is ``codec:<token id>`` (the token's public id, never the token).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from governance.lineage import CheckpointSigner, Ledger, RunRef
from governance.pseudonym import Pseudonymizer, PseudonymKeySource
from schemas.lineage import DetailValue, EventKind
from schemas.settings import Settings

__all__ = [
    "ACCESS_PURPOSE",
    "ACTIONS",
    "cli_actor",
    "codec_actor",
    "record_access",
    "record_cli_access",
    "settings_signer",
    "web_actor",
]

ACCESS_PURPOSE = "human-access"
ACTIONS = frozenset(
    {
        "codec_decode", "dsr_export", "dsr_erase", "dsr_restrict", "dsr_object", "dsr_rectify",
        "offboarding_export", "key_rotate", "key_rewrap", "key_shred", "instruction_edit",
        "sync_instruction", "connect", "disconnect", "user_add", "user_remove", "user_role",
        "user_logout", "auditor_token_create",
    }
)  # fmt: skip


def web_actor(user_id: str) -> str:
    """The actor of a web request: the logged-in user's opaque id."""
    return f"web:{user_id}"


def cli_actor(pseudonymizer: Pseudonymizer, tenant: str, name: str | None = None) -> str:
    """The actor of a CLI command: the tenant's keyed hash of the operator's login name
    (``name``, else ``$CRMHUB_ACTOR``, else the OS user)."""
    who = name or os.environ.get("CRMHUB_ACTOR") or getpass.getuser()
    return f"cli:{pseudonymizer.keyed_hash(tenant, who.strip().lower())}"


def codec_actor(token_id: str) -> str:
    """The actor of a codec server request: the token's public id."""
    return f"codec:{token_id}"


def record_access(
    engine: Engine,
    tenant: str,
    action: str,
    actor: str,
    *,
    at: datetime,
    target: str | None = None,
    counts: Mapping[str, int] | None = None,
    details: Mapping[str, DetailValue] | None = None,
    signer: CheckpointSigner | None = None,
) -> int:
    """Append one ``access`` event to the tenant's ledger and, with ``signer``, sign a checkpoint over
    it (the auditor's ledger report reaches the latest checkpoint); returns its index. ``target``
    names what was touched (a connection, sync, instruction version, request id — never personal
    data)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown human-access action {action!r}")
    run = RunRef.of(tenant, f"access:{action}", purpose=ACCESS_PURPOSE)
    event = run.event(
        EventKind.ACCESS,
        at=at,
        counts=dict(counts or {}),
        details={"action": action, "actor": actor, "target": target, **(details or {})},
    )
    ledger = Ledger(engine, tenant)
    (index,) = ledger.append([event])
    if signer is not None:
        ledger.checkpoint(signer)
    return index


def settings_signer(settings: Settings) -> CheckpointSigner:
    """The deployment's checkpoint signer (its key file under the data directory)."""
    return CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)


def record_cli_access(
    settings: Settings,
    engine: Engine,
    keys: PseudonymKeySource,
    tenant: str,
    action: str,
    *,
    target: str | None = None,
    counts: Mapping[str, int] | None = None,
) -> int:
    """:func:`record_access` for a CLI command on ``tenant`` (actor :func:`cli_actor`, now), signed.
    Call it before a step that destroys the tenant's keys (the actor is a keyed hash)."""
    actor = cli_actor(Pseudonymizer(keys), tenant)
    return record_access(
        engine, tenant, action, actor, at=datetime.now(UTC), target=target, counts=counts,
        signer=settings_signer(settings),
    )  # fmt: skip
