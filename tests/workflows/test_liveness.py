"""Keepalive: while an activity attempt waits on a slow vendor, its last resume point is re-sent
(never a newer one), and the attempt's starting details are kept until its first beat."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from typing import Any

from temporalio.testing import ActivityEnvironment

from workflows.liveness import Keepalive


class _Beats:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.changed = threading.Condition()

    def __call__(self, *details: Any) -> None:
        with self.changed:
            self.seen.append(details)
            self.changed.notify_all()

    def wait_for(self, details: tuple[Any, ...], times: int) -> None:
        """Until ``details`` were sent ``times`` times (bounded: 10 s)."""
        with self.changed:
            assert self.changed.wait_for(lambda: self.seen.count(details) >= times, timeout=10), self.seen


def _env(beats: _Beats, timeout: timedelta | None, details: list[Any]) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timeout, heartbeat_details=details)
    env.on_heartbeat = beats
    return env


def test_the_last_resume_point_is_resent_while_the_attempt_waits() -> None:
    beats = _Beats()

    def attempt() -> None:
        keepalive = Keepalive.start()
        try:
            beats.wait_for(("resumed",), 2)  # before any beat: what the attempt resumed from
            keepalive.beat("part 1")
            beats.wait_for(("part 1",), 3)  # the beat itself, then the ticker twice
        finally:
            keepalive.stop()

    _env(beats, timedelta(seconds=0.15), ["resumed"]).run(attempt)
    first = beats.seen.index(("part 1",))
    assert set(beats.seen[:first]) == {("resumed",)}
    assert set(beats.seen[first:]) == {("part 1",)}  # never anything the attempt had not reached
    after_stop = len(beats.seen)
    time.sleep(0.2)
    assert len(beats.seen) == after_stop, "the ticker outlived the attempt"


def test_without_a_heartbeat_timeout_nothing_ticks() -> None:
    beats = _Beats()

    def attempt() -> None:
        keepalive = Keepalive.start()
        keepalive.beat("part 1")
        time.sleep(0.1)
        keepalive.stop()

    _env(beats, None, []).run(attempt)
    assert beats.seen == [("part 1",)]
