"""The web app's multi-field POST forms as pydantic models, each read whole from the request body with
``Annotated[Model, Form()]``: the field names are the ``name`` attributes of the inputs in the
templates, the constraints are what the server accepts (a value outside them is a 422, as for any
form field), and a route that takes the same form takes the same model.

FastAPI's own 422 answer echoes every field received as its ``input`` (for a form model with a
missing field: all of them, a password included); the app's validation handler
(:func:`api.web.app.create_app`) answers with each problem's location, message and type only, so a
model may hold password fields (:class:`PasswordChangeForm`).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.sync import SyncWriteMode
from store.syncs import SyncSpec

__all__ = ["InstructionForm", "NewSyncForm", "PasswordChangeForm", "parse_mapping"]

_MAX_ID = 64
_MAX_NAME = 128
_MAX_LIST = 500
_MAX_PASSWORD = 1024  # scrypt hashes any length; this bounds the work and the body


class PasswordChangeForm(BaseModel):
    """The password-change form (``account_password.html``), posted to ``/account/password``."""

    current_password: str = Field(max_length=_MAX_PASSWORD)
    new_password: str = Field(max_length=_MAX_PASSWORD)
    confirm_password: str = Field(max_length=_MAX_PASSWORD)


class InstructionForm(BaseModel):
    """The instruction editor (``instruction_edit.html``), posted to ``/instructions/preview`` and
    ``/instructions/save``: one source object, the fields ticked as allowed and to pseudonymize, and
    the rest of the instruction (lists comma- or newline-separated)."""

    connection_id: str = Field(max_length=_MAX_ID)
    stream: str = Field(max_length=_MAX_NAME)
    purpose: str = Field(max_length=_MAX_NAME)
    retention_days: int = Field(ge=1, le=36_500)
    permitted_regions: str = Field(max_length=_MAX_LIST)
    permitted_subprocessors: str = Field("", max_length=_MAX_LIST)
    data_categories: str = Field("", max_length=_MAX_LIST)
    allowed: list[str] | None = None
    pseudonymize: list[str] | None = None


class NewSyncForm(BaseModel):
    """The new-sync form's last step (``sync_new.html``), posted to ``/syncs``: the sync from one
    connection's object to another's and its mapping. ``mapping`` entries are the editor's selects
    (``SourceField=destination_field``, empty for a field not synced) or lines of
    ``SourceField=destination_field`` (one textarea); ``same_connection`` says a sync of a
    connection into itself is meant. The endpoints are optional: the connections' stored regions
    are used when they are empty."""

    sync_id: str = Field(max_length=_MAX_ID)
    source_connection_id: str = Field(max_length=_MAX_ID)
    source_stream: str = Field(max_length=_MAX_NAME)
    destination_connection_id: str = Field(max_length=_MAX_ID)
    destination_stream: str = Field(max_length=_MAX_NAME)
    mapping: list[str] = Field(default_factory=list, max_length=_MAX_LIST)
    source_key_property: str = Field(max_length=_MAX_NAME)
    destination_id_property: str = Field(max_length=_MAX_NAME)
    name: str = Field("", max_length=255)
    source_endpoint: str = Field("", max_length=_MAX_ID)
    destination_endpoint: str = Field("", max_length=_MAX_ID)
    same_connection: bool = False
    write_mode: SyncWriteMode = SyncWriteMode.UPSERT

    def pairs(self) -> dict[str, str]:
        """The mapping chosen (``ValueError`` as :func:`parse_mapping`)."""
        return parse_mapping("\n".join(self.mapping))

    def spec(self, tenant: str, instruction_version: int) -> SyncSpec:
        """The sync this form describes, under ``instruction_version``; raises ``ValueError`` for a
        mapping that is not ``SourceField=destination_field`` entries, ``ValidationError`` for a
        value :class:`SyncSpec` refuses."""
        return SyncSpec(
            tenant=tenant,
            id=self.sync_id,
            name=self.name or self.sync_id,
            source_connection_id=self.source_connection_id,
            source_stream=self.source_stream,
            source_endpoint=self.source_endpoint or None,
            destination_connection_id=self.destination_connection_id,
            destination_stream=self.destination_stream,
            destination_endpoint=self.destination_endpoint or None,
            mapping=self.pairs(),
            destination_id_property=self.destination_id_property,
            source_key_property=self.source_key_property,
            instruction_version=instruction_version,
            write_mode=self.write_mode,
        )


def parse_mapping(text: str) -> dict[str, str]:
    """``SourceField=destination_field`` lines (blank lines skipped) as a dict; ``ValueError`` for a
    line without both sides or for no line at all."""
    mapping: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        src, sep, dst = line.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"mapping line {line[:60]!r} is not 'SourceField=destination_field'")
        mapping[src.strip()] = dst.strip()
    if not mapping:
        raise ValueError("the mapping is empty: map at least one source field to a destination field")
    return mapping
