"""The connector plugin contract (DESIGN.md §3).

A connector is a class registered under the entry-point group ``crmhub.connectors``::

    [project.entry-points."crmhub.connectors"]
    salesforce = "connectors.salesforce:SalesforceConnector"

It declares ``name``, a pydantic ``config_model`` (secrets as ``SecretStr``) and implements five
methods. Everything else (retries, dead letters, lineage, encryption) is crmhub's job, not the
connector's. Errors are raised as the :mod:`schemas.errors` tree, so each carries an ``ErrorKind``:
map vendor exceptions in the connector's own ``client.py``, the only module that imports the
vendor SDK.

Promises a connector makes (checked by :mod:`connectors.testing`):

* ``read_page`` returns at most ``page_size`` records (a vendor page may be smaller) and a
  ``next_state`` from which the read resumes exactly: no record lost or repeated, even when many
  records share one modification timestamp; ``has_more=False`` only at the end.
* incremental reads see deletes (``Page.deleted_ids``) and never move the cursor backwards; when
  the vendor can no longer prove every delete was seen (a purged delete log) a page says so in
  ``Page.reconcile``.
* ``list_ids`` (optional) pages through the id of every live record, so deletes the vendor never
  reports (purged recycle bins, GDPR erasure) can be found by comparison.
* ``write_batch`` returns exactly one outcome per input record, in input order; upserts by
  external id are idempotent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar, Protocol

from pydantic import BaseModel

from schemas.connector import (
    CheckResult,
    IdPage,
    Link,
    LinkResult,
    Page,
    Record,
    RecordsById,
    SchemaDrift,
    StreamSchema,
    StreamSpec,
    StreamState,
    WriteMode,
    WriteResult,
)
from schemas.errors import ConfigError

__all__ = ["Connector", "TokenSource", "diff_schema"]


class TokenSource(Protocol):
    """Gives a connector a valid access token; ``refresh`` after a 401 (single-flight, see oauth.py)."""

    def access_token(self) -> str: ...

    def refresh(self, rejected: str) -> str:
        """Return a new access token; ``rejected`` is the token the vendor refused (so concurrent
        refreshers can tell whether someone else already refreshed)."""
        ...


class Connector(ABC):
    """A CRM connection: streams to read and write. Instances are used from one thread at a time."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    region: str = "unknown"  # where the vendor endpoint processes data (for transfer checks)

    @abstractmethod
    def check(self) -> CheckResult:
        """Validate the connection (credentials, reachability, API budget) without side effects."""

    @abstractmethod
    def streams(self) -> list[StreamSpec]:
        """The object types this connection offers."""

    @abstractmethod
    def describe(self, stream: str) -> StreamSchema:
        """The live schema of ``stream`` (fields from the vendor's describe/properties API)."""

    @abstractmethod
    def read_page(self, stream: str, state: StreamState, page_size: int, fields: Sequence[str]) -> Page:
        """Read the next page of ``stream`` after ``state``, only ``fields`` (plus key and cursor)."""

    @abstractmethod
    def write_batch(
        self, stream: str, records: Sequence[Record], mode: WriteMode, *, external_id: str
    ) -> WriteResult:
        """Write ``records``; one outcome per record, in order. Upserts match on ``external_id``."""

    def hosting_instance(self) -> str | None:
        """Optional: where the vendor hosts this connection's data, as the subprocessor registry
        names endpoint instances (``governance/subprocessors.yaml``: HubSpot ``na1``/``eu1``,
        Salesforce ``na``/``eu``/``uk``), read from the vendor; ``None`` (the default): the connector
        cannot tell, so a sync must name its endpoint instance."""
        return None

    def retrying_since(self, began: datetime) -> None:  # noqa: B027 - optional hook
        """Optional: the writes that follow redo a write first attempted at ``began`` (a retried
        activity whose earlier attempt's answers were lost), so a record the vendor now reports as
        existing may have been created by that attempt. A connector whose vendor answers when each
        record was created counts one created at or after ``began`` as created (HubSpot: its
        ``createdAt``); the default does nothing (the vendor's created/updated answer stands)."""

    lists_ids: ClassVar[bool] = False
    """Whether :meth:`list_ids` is implemented (id reconciliation is possible)."""

    def list_ids(self, stream: str, state: StreamState, page_size: int) -> IdPage:
        """Optional: the next page of the ids of every live record of ``stream``, as cheaply as the
        vendor allows (start with ``StreamState()``; resume from ``IdPage.next_state``). A complete
        listing, compared with the ids mapped at the destination, finds deletes no read reports (a
        GDPR/permanent delete, a purged recycle bin). The default refuses with
        :class:`~schemas.errors.ConfigError` code ``LIST_IDS_UNSUPPORTED`` (see ``lists_ids``), so a
        caller can tell "not offered" from a failure."""
        raise ConfigError(
            f"the {self.name} connector cannot list the ids of {stream!r} (no id reconciliation)",
            code="LIST_IDS_UNSUPPORTED",
        )

    reads_by_ids: ClassVar[bool] = False
    """Whether :meth:`read_by_ids` is implemented (dead letters can be re-read and retried)."""

    def read_by_ids(self, stream: str, ids: Sequence[str], fields: Sequence[str]) -> RecordsById:
        """Optional: the live records of ``stream`` with these ids (only ``fields`` plus key and
        cursor, the shape ``read_page`` gives), through the vendor's batch reads at the fewest calls;
        ids the source no longer has are ``missing``. The default refuses with
        :class:`~schemas.errors.ConfigError` code ``READ_BY_IDS_UNSUPPORTED`` (see ``reads_by_ids``)."""
        raise ConfigError(
            f"the {self.name} connector cannot read {stream!r} records by id (no retry of rejected records)",
            code="READ_BY_IDS_UNSUPPORTED",
        )

    links: ClassVar[bool] = False
    """Whether :meth:`write_links` is implemented (relationships can be written)."""

    def write_links(self, stream: str, parent_stream: str, links: Sequence[Link]) -> LinkResult:
        """Optional: link records of ``stream`` to their parents in ``parent_stream`` (a HubSpot
        association, a Salesforce lookup field), unlinking each ``Link.previous_id`` first, through
        the vendor's batch endpoints only. The default refuses with
        :class:`~schemas.errors.ConfigError` code ``LINKS_UNSUPPORTED`` (see ``links``)."""
        raise ConfigError(
            f"the {self.name} connector cannot link {stream!r} records to {parent_stream!r}",
            code="LINKS_UNSUPPORTED",
        )

    reads_links: ClassVar[bool] = False
    """Whether :meth:`read_links` is implemented (relationships can be read at the source)."""

    def read_links(self, stream: str, parent_stream: str, child_ids: Sequence[str]) -> dict[str, list[str]]:
        """Optional: the parents (in ``parent_stream``) of each ``stream`` record (source ids; the
        primary parent first; children without a parent absent), through the vendor's batch read.
        The default refuses with :class:`~schemas.errors.ConfigError` code ``LINKS_UNSUPPORTED``."""
        raise ConfigError(
            f"the {self.name} connector cannot read the {parent_stream!r} of {stream!r} records",
            code="LINKS_UNSUPPORTED",
        )

    def close(self) -> None:  # noqa: B027 - optional hook: release HTTP sessions
        """Release resources (HTTP sessions). Optional."""


def diff_schema(planned: StreamSchema, live: StreamSchema) -> SchemaDrift:
    """Fields added, removed or retyped between the planned schema and the live one."""
    old = {f.name: f.type for f in planned.fields}
    new = {f.name: f.type for f in live.fields}
    return SchemaDrift(
        stream=live.stream,
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        retyped=tuple(sorted((n, old[n], new[n]) for n in old.keys() & new.keys() if old[n] != new[n])),
    )
