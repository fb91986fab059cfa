"""The dead-letter store: idempotent by id, one letter per refused record.

Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from store import dead_letters as dead_letter_store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def letter(i: int, run: str = "r1", key: int | None = None) -> dead_letter_store.DeadLetter:
    return dead_letter_store.DeadLetter(
        id=f"dl{i}",
        tenant="acme",
        sync_id="contacts",
        run_id=run,
        batch_id="b1",
        record_key_hash=f"kh_{i if key is None else key:032x}",
        sealed_record=b"\x01rec",
        error_code="INVALID_EMAIL",
        error_message="property email: INVALID_EMAIL",
        created=NOW + timedelta(seconds=i),
    )


def test_dead_letters_are_idempotent(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        assert dead_letter_store.add_dead_letters(conn, [letter(1), letter(2)]) == 2
        assert dead_letter_store.add_dead_letters(conn, [letter(2), letter(3, run="r2")]) == 1
        assert dead_letter_store.add_dead_letters(conn, []) == 0
    with db_engine.connect() as conn:
        assert dead_letter_store.count_dead_letters(conn, "acme", "contacts") == 3
        assert dead_letter_store.count_dead_letters(conn, "acme", "contacts", run_id="r1") == 2
        listed = dead_letter_store.list_dead_letters(conn, "acme", "contacts")
    assert [d.id for d in listed] == ["dl1", "dl2", "dl3"]
    assert listed[0] == letter(1)


def test_a_record_refused_again_keeps_one_dead_letter(db_engine: Engine) -> None:
    """A rerun that refuses the same records replaces their letters (found by tests/chaos/
    test_partial_failure.py: 7 refused records were 14 dead letters after a second run)."""
    with db_engine.begin() as conn:
        assert dead_letter_store.add_dead_letters(conn, [letter(1), letter(2), letter(3)]) == 3
        other = dataclasses.replace(letter(9, key=1), sync_id="other")  # another sync keeps its own
        assert dead_letter_store.add_dead_letters(conn, [other]) == 1
        assert (
            dead_letter_store.add_dead_letters(conn, [letter(4, run="r2", key=1), letter(5, run="r2", key=2)])
            == 2
        )
    with db_engine.connect() as conn:
        listed = dead_letter_store.list_dead_letters(conn, "acme", "contacts")
        assert [(d.id, d.run_id) for d in listed] == [("dl3", "r1"), ("dl4", "r2"), ("dl5", "r2")]
        assert [d.id for d in dead_letter_store.list_dead_letters(conn, "acme", "other")] == ["dl9"]


def _refused(
    i: int, *, version: int | None, mapping: str | None, message: str = "upsert refused: X"
) -> dead_letter_store.DeadLetter:
    return dataclasses.replace(
        letter(i), error_message=message, instruction_version=version, mapping_hash=mapping
    )


def test_retry_candidates_are_the_letters_a_change_affects_bounded_and_oldest_first(
    db_engine: Engine,
) -> None:
    """Issue 14 item 4: a letter refused under another instruction version or mapping hash, or
    under unknown ones (NULL: written before 0022), is a candidate; quarantined records, refused
    deletes and links are not; ``everything`` (on demand) takes every refused upsert."""
    letters = [
        _refused(1, version=1, mapping="m1"),  # same as now: not affected
        _refused(2, version=1, mapping="m0"),  # the mapping changed since
        _refused(3, version=0, mapping="m1"),  # the instruction changed since
        _refused(4, version=None, mapping=None),  # before 0022: unknown → retried once
        _refused(5, version=0, mapping="m0", message="delete refused: DELETE_NOT_SUPPORTED"),
        dataclasses.replace(_refused(6, version=0, mapping="m0"), error_code=dead_letter_store.QUARANTINED),
        _refused(7, version=0, mapping="m0", message="link AccountId refused: PARENT_NOT_SYNCED"),
    ]
    with db_engine.begin() as conn:
        assert dead_letter_store.add_dead_letters(conn, letters) == 7
    with db_engine.connect() as conn:

        def pick(sync: str = "contacts", *, limit: int = 10, everything: bool = False) -> list[str]:
            found = dead_letter_store.retry_candidates(
                conn,
                "acme",
                sync,
                instruction_version=1,
                mapping_hash="m1",
                everything=everything,
                limit=limit,
            )
            return [d.id for d in found]

        assert pick() == ["dl2", "dl3", "dl4"]
        assert pick(limit=2) == ["dl2", "dl3"]  # the rest next run
        assert pick(everything=True) == ["dl1", "dl2", "dl3", "dl4"]
        assert pick("other") == []
        (got, *_) = dead_letter_store.retry_candidates(
            conn, "acme", "contacts", instruction_version=1, mapping_hash="m1", limit=1
        )
        assert (got.instruction_version, got.mapping_hash) == (1, "m0")  # round-trips
    with db_engine.begin() as conn:  # a retry could not settle dl2, dl4: stamped, not picked again
        stamped = dead_letter_store.mark_retried(
            conn, "acme", ["dl2", "dl4"], instruction_version=1, mapping_hash="m1"
        )
        assert stamped == 2
    with db_engine.connect() as conn:
        assert pick() == ["dl3"]
