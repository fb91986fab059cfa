"""``HubSpotConnector``: contacts, companies, deals and the custom objects of one HubSpot portal
(DESIGN.md §3; custom objects: :mod:`connectors.hubspot.objects`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from connectors.base import Connector, TokenSource
from connectors.hubspot.associations import Linker
from connectors.hubspot.byids import read_by_ids as read_records_by_ids
from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.objects import ObjectCatalog
from connectors.hubspot.pairs import PAIR_STREAMS, pair_schema, pair_specs, read_pairs
from connectors.hubspot.reader import CUSTOM_MODIFIED, ID_PROPERTY, MODIFIED_PROPERTY, StreamReader
from connectors.hubspot.writer import BatchWriter
from schemas.connector import (
    CheckResult,
    FieldSpec,
    IdPage,
    Link,
    LinkResult,
    Page,
    Record,
    RecordsById,
    StreamSchema,
    StreamSpec,
    StreamState,
    WriteMode,
    WriteResult,
)
from schemas.errors import ConfigError, CrmhubError

__all__ = ["HubSpotConnector"]


class HubSpotConnector(Connector):
    """HubSpot CRM v3 through hubspot-api-client (see :mod:`connectors.hubspot.reader` for the read
    algorithm and :mod:`connectors.hubspot.writer` for batch writes and failure isolation)."""

    name: ClassVar[str] = "hubspot"
    config_model: ClassVar[type[HubSpotConfig]] = HubSpotConfig

    def __init__(self, config: HubSpotConfig, tokens: TokenSource, **client_options: Any) -> None:
        self.config = config
        self.client = HubSpotClient(config, tokens, **client_options)
        self._reader = StreamReader(self.client, config)
        self._writer = BatchWriter(self.client, config)
        self._linker = Linker(self.client)
        self.catalog = ObjectCatalog(self.client, config)
        self.region = config.region or ("eu" if "api-eu1." in config.base_url else "unknown")

    def _stream(self, stream: str) -> str:
        """The path segment of ``stream`` (a custom object's objectTypeId); ConfigError if unknown."""
        return self.catalog.resolve(stream).api_type

    def check(self) -> CheckResult:
        """One list call for a single contact: proves the token, the scopes and reachability."""
        try:
            self.client.refresh_token_view()
            self.client.list_page("contacts", limit=1, after=None, properties=[ID_PROPERTY])
        except CrmhubError as exc:
            return CheckResult(ok=False, message=f"{exc.kind.value}: {exc}")
        return CheckResult(ok=True, message="HubSpot portal reachable; token accepted")

    def streams(self) -> list[StreamSpec]:
        """The standard objects, the portal's custom objects (one schemas call, see
        :mod:`connectors.hubspot.objects`) and the association streams (:mod:`connectors.hubspot.pairs`)."""
        self.client.refresh_token_view()
        return [*self._object_specs(), *pair_specs()]

    def _object_specs(self) -> list[StreamSpec]:
        return [
            StreamSpec(
                name=obj.stream,
                primary_key=ID_PROPERTY,
                cursor_field=obj.modified,
                default_external_id=self.catalog.default_external_id(obj),
                label=obj.label,
                custom=obj.custom,
                aliases=obj.aliases,
            )
            for obj in self.catalog.objects()
        ]

    def describe(self, stream: str) -> StreamSchema:
        """Live properties: HubSpot type, writable unless calculated/read-only, unique if hasUniqueValue;
        required if a custom object's schema lists it in ``requiredProperties``."""
        self.client.refresh_token_view()
        if stream in PAIR_STREAMS:
            return pair_schema(stream)
        obj = self.catalog.resolve(stream)
        fields = []
        for p in self.client.properties(obj.api_type):
            meta = p.get("modificationMetadata") or {}
            unique = bool(p.get("hasUniqueValue")) or (stream == "contacts" and p.get("name") == "email")
            fields.append(
                FieldSpec(
                    name=str(p.get("name")),
                    type=str(p.get("type") or "string"),
                    label=str(p.get("label") or ""),
                    nullable=p.get("name") != ID_PROPERTY,
                    writable=not p.get("calculated") and not meta.get("readOnlyValue"),
                    unique=unique,
                    external_id=unique,
                    required=p.get("name") in obj.required,
                )
            )
        self._writer.know_types(obj.api_type, {f.name: f.type for f in fields})
        return StreamSchema(stream=obj.stream, fields=tuple(sorted(fields, key=lambda f: f.name)))

    def hosting_instance(self) -> str | None:
        """The portal's ``dataHostingLocation`` from the account information API (``na1``, ``eu1``,
        … — the registry's HubSpot endpoint instances are named the same); ``None`` if it answers
        none."""
        self.client.refresh_token_view()
        location = self.client.account_details().get("dataHostingLocation")
        return location.strip().lower() if isinstance(location, str) and location.strip() else None

    def read_page(self, stream: str, state: StreamState, page_size: int, fields: Sequence[str]) -> Page:
        """See :mod:`connectors.hubspot.reader`: full via the list API (or an export, see
        :mod:`connectors.hubspot.exports`), incremental via keyset search; an association stream's
        pairs: :mod:`connectors.hubspot.pairs`."""
        self.client.refresh_token_view()
        if stream in PAIR_STREAMS:
            return read_pairs(self._reader, self._linker, stream, state, page_size)
        return self._reader.read_page(self._stream(stream), state, page_size, fields)

    def write_batch(
        self, stream: str, records: Sequence[Record], mode: WriteMode, *, external_id: str
    ) -> WriteResult:
        """See :mod:`connectors.hubspot.writer`: one outcome per record, bad records isolated."""
        self.client.refresh_token_view()
        return self._writer.write_batch(self._stream(stream), records, mode, external_id=external_id)

    def retrying_since(self, began: datetime) -> None:
        """A contact (or other record) HubSpot created at or after ``began`` is counted created even
        when the redone upsert answers ``new: false`` (see :mod:`connectors.hubspot.writer`)."""
        self._writer.created_since = began

    reads_by_ids: ClassVar[bool] = True

    def read_by_ids(self, stream: str, ids: Sequence[str], fields: Sequence[str]) -> RecordsById:
        """``batch/read`` 100 ids a call (:mod:`connectors.hubspot.byids`), ``fields`` plus the id
        and modification properties."""
        self.client.refresh_token_view()
        api_type = self._stream(stream)
        modified = MODIFIED_PROPERTY.get(api_type, CUSTOM_MODIFIED)
        calls = self.client.calls
        props = list(dict.fromkeys([*fields, ID_PROPERTY, modified]))
        records, missing = read_records_by_ids(self.client, api_type, ids, props) if ids else ([], [])
        return RecordsById(records, missing, calls=self.client.calls - calls)

    links: ClassVar[bool] = True

    def write_links(self, stream: str, parent_stream: str, links: Sequence[Link]) -> LinkResult:
        """Associations v4 batch archive + create (see :mod:`connectors.hubspot.associations`)."""
        self.client.refresh_token_view()
        return self._linker.write_links(self._stream(stream), self._stream(parent_stream), links)

    @property
    def calls(self) -> int:
        """HTTP calls made so far (every endpoint)."""
        return self.client.calls

    reads_links: ClassVar[bool] = True

    def read_links(self, stream: str, parent_stream: str, child_ids: Sequence[str]) -> dict[str, list[str]]:
        """Each child's associated parents, primary first (associations v4 batch read)."""
        self.client.refresh_token_view()
        return self._linker.read_links(self._stream(stream), self._stream(parent_stream), child_ids)

    lists_ids: ClassVar[bool] = True

    def list_ids(self, stream: str, state: StreamState, page_size: int) -> IdPage:
        """Every live id of ``stream`` through the list API, 100 a call (the most it pages): a
        portal of n records costs ceil(n / 100) calls; the list cursor resumes in
        ``state.page_token``. Archived, merged-away and GDPR-deleted records are not listed, so a
        complete listing is what id reconciliation compares with."""
        if page_size < 1:
            raise ConfigError("page_size must be at least 1")
        self.client.refresh_token_view()
        calls = self.client.calls
        ids, after = self._reader.id_page(self._stream(stream), state.page_token, page_size)
        nxt = state.model_copy(update={"page_token": after})
        return IdPage(ids, nxt, after is not None, self.client.calls - calls)

    def close(self) -> None:
        self._reader.close()
        self.client.close()
