"""The connector contract suite: what every connector must pass, against a live (sandbox) source.

Use it by subclassing :class:`ConnectorContract` in a test module and providing three fixtures::

    class TestSalesforceContacts(ConnectorContract):
        @pytest.fixture
        def connector(self, ...): ...       # a connected Connector
        @pytest.fixture
        def harness(self, ...): ...         # a SourceHarness that can change the source
        @pytest.fixture
        def stream(self): return "Contact"

The suite checks: ``check()``; discovery (streams, describe); paging to exhaustion with exact
counts; cursor monotonicity; incremental = full (no record lost or duplicated across pages,
including records sharing one timestamp at page boundaries); deletes seen; write idempotency
(upserting the same batch twice changes nothing and creates nothing the second time); one outcome
per input record; error mapping (a bad record is a per-record failure with the vendor's code, a
dead token refreshes once and the same page is read again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from connectors.base import Connector
from schemas.connector import OutcomeStatus, Page, ReadMode, Record, StreamState, WriteMode

__all__ = ["ConnectorContract", "ReadResult", "SourceHarness", "read_all"]


class SourceHarness(Protocol):
    """What the suite needs to change and inspect the source behind a connector."""

    primary_key: str
    cursor_field: str
    external_id: str

    def live_ids(self, stream: str) -> set[str]: ...

    def create(self, stream: str, count: int) -> list[str]: ...

    def modify(self, stream: str, ids: Sequence[str]) -> None: ...

    def delete(self, stream: str, ids: Sequence[str]) -> None: ...

    def freeze_clock(self) -> None:
        """Make every following change share one modification timestamp."""
        ...

    def unfreeze_clock(self) -> None: ...

    def new_records(self, stream: str, count: int) -> list[Record]:
        """Records valid for writing (with unique external ids), not yet at the source."""
        ...

    def invalid_record(self, stream: str) -> tuple[Record, str]:
        """A record the vendor rejects, and the vendor error code expected for it."""
        ...

    def expire_tokens(self) -> None:
        """Make the connector's current access token invalid (vendor 401 on next call)."""
        ...

    def fields(self, stream: str) -> list[str]:
        """Fields to read in the suite."""
        ...


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    deleted_ids: list[str] = field(default_factory=list)
    states: list[StreamState] = field(default_factory=list)
    pages: int = 0

    @property
    def final_state(self) -> StreamState:
        return self.states[-1]


def read_all(
    connector: Connector,
    stream: str,
    state: StreamState,
    *,
    page_size: int,
    fields: Sequence[str],
    max_pages: int = 100_000,
) -> ReadResult:
    """Read ``stream`` from ``state`` until ``has_more`` is false (bounded by ``max_pages``)."""
    result = ReadResult(states=[state])
    while True:
        page: Page = connector.read_page(stream, result.states[-1], page_size, fields)
        result.pages += 1
        assert len(page.records) <= page_size, "a page must not exceed page_size"
        result.records.extend(page.records)
        result.deleted_ids.extend(page.deleted_ids)
        result.states.append(page.next_state)
        if not page.has_more:
            return result
        if result.pages >= max_pages:
            raise AssertionError(f"no end after {max_pages} pages: the connector loops")


def _ids(records: Sequence[Record], key: str) -> list[str]:
    return [str(r[key]) for r in records]


def _read(
    connector: Connector, harness: SourceHarness, stream: str, state: StreamState, page_size: int
) -> ReadResult:
    """:func:`read_all` of the fields the harness names for ``stream``."""
    return read_all(connector, stream, state, page_size=page_size, fields=harness.fields(stream))


def _caught_up(connector: Connector, harness: SourceHarness, stream: str) -> ReadResult:
    """A new incremental read to its end: its final state sees only the changes made after it."""
    return _read(connector, harness, stream, StreamState(mode=ReadMode.INCREMENTAL), 50)


class ConnectorContract:
    """Subclass and provide ``connector``, ``harness`` and ``stream`` fixtures."""

    page_size: int = 7  # small and not a multiple of typical tie groups: pages end inside ties

    def test_check(self, connector: Connector) -> None:
        result = connector.check()
        assert result.ok, result.message

    def test_discovery(self, connector: Connector, harness: SourceHarness, stream: str) -> None:
        names = {s.name for s in connector.streams()}
        assert stream in names
        schema = connector.describe(stream)
        assert schema.stream == stream
        assert harness.primary_key in schema.names()
        assert set(harness.fields(stream)) <= schema.names()

    def test_full_read_pages_to_exhaustion_exactly_once(
        self, connector: Connector, harness: SourceHarness, stream: str
    ) -> None:
        expected = harness.live_ids(stream)
        assert len(expected) > 3 * self.page_size, "seed enough records for several pages"
        res = _read(connector, harness, stream, StreamState(mode=ReadMode.FULL), self.page_size)
        got = _ids(res.records, harness.primary_key)
        assert len(got) == len(set(got)), "a record was delivered twice"
        assert set(got) == expected

    def test_incremental_equals_full_and_cursor_is_monotonic(
        self, connector: Connector, harness: SourceHarness, stream: str
    ) -> None:
        full = _read(connector, harness, stream, StreamState(mode=ReadMode.FULL), 50)
        inc = _read(connector, harness, stream, StreamState(mode=ReadMode.INCREMENTAL), self.page_size)
        inc_ids = _ids(inc.records, harness.primary_key)
        assert len(inc_ids) == len(set(inc_ids))
        assert set(inc_ids) == set(_ids(full.records, harness.primary_key))
        cursors = [(s.cursor or "", s.tie_break or "") for s in inc.states]
        assert cursors == sorted(cursors), "the cursor moved backwards"

    def test_changes_with_shared_timestamps_arrive_exactly_once(
        self, connector: Connector, harness: SourceHarness, stream: str
    ) -> None:
        start = _caught_up(connector, harness, stream)
        harness.freeze_clock()
        try:
            created = harness.create(stream, 3 * self.page_size + 2)  # one timestamp across page boundaries
        finally:
            harness.unfreeze_clock()
        after = _read(connector, harness, stream, start.final_state, self.page_size)
        got = _ids(after.records, harness.primary_key)
        assert sorted(got) == sorted(created)

    def test_modifications_and_deletes_are_seen(
        self, connector: Connector, harness: SourceHarness, stream: str
    ) -> None:
        start = _caught_up(connector, harness, stream)
        victims = sorted(harness.live_ids(stream))[:5]
        harness.modify(stream, victims[:3])
        harness.delete(stream, victims[3:])
        after = _read(connector, harness, stream, start.final_state, self.page_size)
        assert set(_ids(after.records, harness.primary_key)) >= set(victims[:3])
        assert set(after.deleted_ids) == set(victims[3:])

    def test_upsert_is_idempotent_with_one_outcome_per_record(
        self, connector: Connector, harness: SourceHarness, stream: str
    ) -> None:
        records = harness.new_records(stream, 12)
        first = connector.write_batch(stream, records, WriteMode.UPSERT, external_id=harness.external_id)
        assert [o.index for o in first.outcomes] == list(range(len(records)))
        assert [o.status for o in first.outcomes] == [OutcomeStatus.CREATED] * len(records)
        before = harness.live_ids(stream)
        second = connector.write_batch(stream, records, WriteMode.UPSERT, external_id=harness.external_id)
        assert [o.status for o in second.outcomes] == [OutcomeStatus.UPDATED] * len(records)
        assert [o.id for o in second.outcomes] == [o.id for o in first.outcomes]
        assert harness.live_ids(stream) == before, "a retried upsert created records"

    def test_partial_failure_is_per_record(
        self, connector: Connector, harness: SourceHarness, stream: str
    ) -> None:
        good = harness.new_records(stream, 4)
        bad, code = harness.invalid_record(stream)
        batch = [*good[:2], bad, *good[2:]]
        res = connector.write_batch(stream, batch, WriteMode.UPSERT, external_id=harness.external_id)
        assert len(res.outcomes) == len(batch)
        assert [o.ok for o in res.outcomes] == [True, True, False, True, True]
        failed = res.outcomes[2]
        assert failed.error_code == code
        assert failed.external_id == _str_or_none(bad.get(harness.external_id))

    def test_expired_token_refreshes_and_rereads_the_same_page(
        self, connector: Connector, harness: SourceHarness, stream: str
    ) -> None:
        fields = harness.fields(stream)
        state = StreamState(mode=ReadMode.FULL)
        first = connector.read_page(stream, state, self.page_size, fields)
        harness.expire_tokens()
        again = connector.read_page(stream, state, self.page_size, fields)
        assert _ids(again.records, harness.primary_key) == _ids(first.records, harness.primary_key)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
