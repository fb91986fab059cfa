"""The data subject of a request, sealed: what ``crmhub dsr`` seals into :class:`DsrInput` and the
region activity opens (e-mail, record ids and, for a rectification, the corrected values), and the
sealed export a ``dsr_export`` leaves for the CLI. Nothing here crosses Temporal in clear."""

from __future__ import annotations

import base64
import json
from typing import Any

from governance.vault import Vault
from schemas.dsr import DSR_PURPOSE, DsrInput
from schemas.errors import ConfigError, DataError

__all__ = ["open_corrections", "open_export", "open_subject", "seal_subject"]


def seal_subject(
    vault: Vault,
    tenant: str,
    request_id: str,
    email: str | None,
    ids: list[str],
    corrections: dict[str, Any] | None = None,
) -> str:
    """The ``sealed_subject`` of a :class:`DsrInput` (base64 of the vault ciphertext); a
    rectification's ``corrections`` (source field → value) travel sealed with the subject."""
    if not email and not ids:
        raise ConfigError("a data-subject request needs the subject's e-mail or a record id")
    subject: dict[str, Any] = {"email": email, "ids": ids}
    if corrections:
        subject["corrections"] = corrections
    body = json.dumps(subject, separators=(",", ":")).encode()
    sealed = vault.seal(tenant, body, dataset="dsr-subject", object_id=request_id, purpose=DSR_PURPOSE)
    return base64.b64encode(sealed).decode("ascii")


def open_subject(vault: Vault, inp: DsrInput) -> tuple[str | None, list[str]]:
    """The subject's e-mail and record ids of a request."""
    body = _open_body(vault, inp)
    return body.get("email"), [str(i) for i in body.get("ids", [])]


def open_corrections(vault: Vault, inp: DsrInput) -> dict[str, Any]:
    """The corrected values (source field → value) a rectification carries."""
    corrections = _open_body(vault, inp).get("corrections") or {}
    return dict(corrections)


def _open_body(vault: Vault, inp: DsrInput) -> dict[str, Any]:
    try:
        sealed = base64.b64decode(inp.sealed_subject, validate=True)
    except ValueError:
        raise DataError("the request's sealed subject is not base64") from None
    body: dict[str, Any] = json.loads(
        vault.open(inp.tenant, sealed, dataset="dsr-subject", object_id=inp.request_id, purpose=DSR_PURPOSE)
    )
    return body


def open_export(vault: Vault, tenant: str, request_id: str, sealed: bytes) -> dict[str, Any]:
    """The export JSON a ``dsr_export`` stored (the CLI calls this)."""
    blob = vault.open(tenant, sealed, dataset="dsr-export", object_id=request_id, purpose=DSR_PURPOSE)
    data: dict[str, Any] = json.loads(blob)
    return data
