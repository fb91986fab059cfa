from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from connectors.http import RequestRetry, parse_retry_after, send_with_retries
from schemas.errors import AuthError, DataError, RateLimited, TransientError

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Thu, 01 Jan 2026 12:00:30 GMT", 30.0),
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # in the past: retry now
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


# -- send_with_retries ------------------------------------------------------------------------------


class _Flaky:
    """Raises the queued errors in turn, then answers "ok"; counts sends."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.sends = 0

    def __call__(self) -> str:
        self.sends += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _send(
    flaky: _Flaky, policy: RequestRetry | None = None, *, idempotent: bool = True
) -> tuple[str, list[float]]:
    pauses: list[float] = []
    result = send_with_retries(
        flaky,
        what="test call",
        idempotent=idempotent,
        policy=policy or RequestRetry(),
        sleep=pauses.append,
        rng=random.Random(7),
        final=(_Final,),
    )
    return result, pauses


class _Final(TransientError):
    pass


def test_a_rate_limit_is_waited_out_exactly_then_resent() -> None:
    flaky = _Flaky(RateLimited("slow down", retry_after=2.5), RateLimited("again", retry_after=1.0))
    assert _send(flaky) == ("ok", [2.5, 1.0])
    assert flaky.sends == 3


def test_transient_failures_back_off_exponentially_with_bounded_jitter() -> None:
    flaky = _Flaky(*(TransientError(f"503 #{i}") for i in range(4)))
    result, pauses = _send(flaky, RequestRetry(base_s=0.5, cap_s=2.0))
    assert result == "ok" and flaky.sends == 5
    for attempt, pause in enumerate(pauses, start=1):
        ceiling = min(2.0, 0.5 * 2 ** (attempt - 1))
        assert ceiling / 2 <= pause <= ceiling


@pytest.mark.parametrize(
    ("error", "policy", "sends"),
    [
        (TransientError("503"), RequestRetry(attempts=3), 3),  # attempts bound the sends
        (RateLimited("429", retry_after=11.0), RequestRetry(max_pause_s=10.0), 1),  # one pause too long
        (RateLimited("429", retry_after=4.0), RequestRetry(budget_s=10.0), 3),  # 4 + 4, then 12 > 10
        (_Final("expired locator"), RequestRetry(), 1),  # the same request can never cure it
        (DataError("400"), RequestRetry(), 1),  # the vendor refused the request itself
        (AuthError("403"), RequestRetry(), 1),
    ],
    ids=["attempts", "max-pause", "budget", "final", "data", "auth"],
)
def test_resends_are_bounded_and_the_last_error_goes_up_unchanged(
    error: Exception, policy: RequestRetry, sends: int
) -> None:
    flaky = _Flaky(*([error] * 10))
    with pytest.raises(type(error)) as raised:
        _send(flaky, policy)
    assert raised.value is error
    assert flaky.sends == sends


def test_a_request_that_is_not_idempotent_is_resent_only_after_a_rate_limit() -> None:
    assert _send(_Flaky(RateLimited("429", retry_after=0.5)), idempotent=False) == ("ok", [0.5])
    flaky = _Flaky(TransientError("timed out: it may have been done"))
    with pytest.raises(TransientError):
        _send(flaky, idempotent=False)
    assert flaky.sends == 1
