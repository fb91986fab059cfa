"""``retry_rejected`` called directly (ActivityEnvironment) against the sandbox CRMs over HTTPS: what
a retry cannot take up stays, costs no vendor call and is counted — a letter whose staged record
lacks the source id (the instruction withholds it) and one sealed under another purpose (its AAD
does not open for this one) — and a second attempt after the write records only the lineage."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from governance.policy import ProcessingInstruction
from schemas.lineage import EventKind
from schemas.sync import RetryInput
from store import dead_letters as dead_letter_store
from store import instructions as instruction_store
from store import syncs as sync_store
from tests.workflows import test_activities
from tests.workflows.test_activities import INSTRUCTION, TENANT, World
from workflows.retry import RetryProgress, retry_batch_id

world = test_activities.world
WITHOUT_ID = ["Email", "FirstName", "LastName", "Phone"]


def _refuse_three(world: World) -> list[dead_letter_store.DeadLetter]:
    sf: Any = world.sb.salesforce
    for i in range(3):
        sf.create_record(
            "Contact", {"FirstName": f"Bad{i}", "LastName": "Record", "Email": f"not-an-email-{i}"}
        )
    world.run()
    with world.engine.connect() as conn:
        letters = dead_letter_store.list_dead_letters(conn, TENANT, "contacts")
    assert [d.error_code for d in letters] == ["INVALID_EMAIL"] * 3
    return letters


def test_letters_without_a_source_id_are_not_retried_and_cost_no_call(world: World) -> None:
    """Instruction v2 withholds Id (the sync keys on Email): the staged record has no source id."""
    v2 = ProcessingInstruction.model_validate(
        {
            **INSTRUCTION,
            "version": 2,
            "allowed_fields": {"Contact": ["Email", "FirstName", "LastName", "Phone"]},
        }
    )
    with world.engine.begin() as conn:
        instruction_store.add_instruction(
            conn, tenant=TENANT, version=2, content=v2.model_dump(mode="json"), content_hash=v2.content_hash,
            now=datetime.now(UTC),
        )  # fmt: skip
    world.add_sync(instruction_version=2)
    letters = _refuse_three(world)
    plan = world.plan(run_id="run-2")
    sf: Any = world.sb.salesforce
    sf.calls.clear()
    result = world.env().run(world.acts.retry_rejected, RetryInput(plan=plan, limit=10, everything=True))
    assert (result.retried, result.resolved, result.source_calls, result.pushed) == (3, 0, 0, 0)
    assert "sf.query" not in sf.calls.counts()
    with world.engine.connect() as conn:
        left = dead_letter_store.list_dead_letters(conn, TENANT, "contacts")
        row = sync_store.get_sync(conn, TENANT, "contacts")
    assert [d.id for d in left] == [d.id for d in letters]  # kept
    assert row is not None and {(d.instruction_version, d.mapping_hash) for d in left} == {
        (2, sync_store.mapping_hash(row.spec))
    }
    (pull,) = [
        e for e in world.events("run-2") if e.kind is EventKind.PULL and e.details.get("step") == "retry"
    ]
    assert (pull.counts["letters"], pull.counts["not_retryable"], pull.counts["records"]) == (3, 3, 0)


def test_a_letter_sealed_under_another_purpose_is_not_opened_and_a_repeat_only_records_lineage(
    world: World,
) -> None:
    world.add_sync()
    letters = _refuse_three(world)
    foreign = dataclasses.replace(letters[0], sealed_record=world.deps.vault.seal(
        TENANT, b'{"record": {"Id": "x"}}', dataset="dead-letter", object_id=letters[0].id,
        purpose="marketing",
    ))  # fmt: skip
    with world.engine.begin() as conn:
        dead_letter_store.resolve_dead_letters(conn, TENANT, "contacts", [letters[0].record_key_hash])
        dead_letter_store.add_dead_letters(conn, [foreign])
    plan = world.plan(run_id="run-2")
    result = world.env().run(world.acts.retry_rejected, RetryInput(plan=plan, limit=10, everything=True))
    # The two others were read again (one query) and refused again: Salesforce still holds bad e-mails.
    assert (result.retried, result.failed, result.resolved, result.source_calls) == (3, 2, 0, 1)
    done = world.heartbeats[-1]
    assert RetryProgress.model_validate(done).not_retryable == 1
    before = len(world.events("run-2"))
    sf: Any = world.sb.salesforce
    sf.calls.clear()
    env = world.env([done])
    env.info = dataclasses.replace(env.info, attempt=2)
    again = env.run(world.acts.retry_rejected, RetryInput(plan=plan, limit=10, everything=True))
    assert again == result and sf.calls.counts() == {}
    assert len(world.events("run-2")) == before  # appended once
    assert retry_batch_id("run-2") == done["batch_id"]
