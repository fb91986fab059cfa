"""Replay recorded histories of SyncWorkflow, ReconcileWorkflow and NoticeDispatchWorkflow: a change
that breaks determinism fails the build.

Histories live in ``tests/workflows/histories/``; record them anew (only when a change is meant to
be incompatible, together with a workflow patch/version) with::

    CRMHUB_RECORD_HISTORIES=1 pytest tests/workflows/test_sync_workflow.py \
        tests/workflows/test_reconcile_workflow.py tests/workflows/test_notice_dispatch.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.notices import NoticeDispatchWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.sync import SyncWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_recorded() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"sync_completed", "sync_last_run_after_continue_as_new", "sync_paused_resumed", "sync_refused",
            "sync_cancelled", "sync_waited_for_region", "sync_retried_rejected", "reconcile_completed",
            "reconcile_listing_truncated", "notice_dispatch"} <= names  # fmt: skip


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    workflows = [SyncWorkflow, ReconcileWorkflow, NoticeDispatchWorkflow]
    replayer = Replayer(workflows=workflows, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
