"""The warnings of background jobs that retry: ``RetriedFailure`` (a real logger, a clock of the test's)."""

from __future__ import annotations

import logging

import pytest

from wfe_sqlite._logging import RetriedFailure


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    found = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test.retried"]
    caplog.clear()
    return found


def test_a_failure_is_logged_once_then_reminded_each_minute_then_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="test.retried")
    clock = _Clock()
    job = RetriedFailure(logging.getLogger("test.retried"), "sweep", repeat_every=60.0, clock=clock)
    job.succeeded()  # nothing failed: nothing to say
    assert _messages(caplog) == [] and not job.failing

    job.failed(OSError("refused"), "next try in 2.0 s")
    assert _messages(caplog) == [("WARNING", "sweep failed (next try in 2.0 s): refused")]
    for _ in range(29):  # a minute of tries every 2 s, less one: nothing more
        clock.now += 2.0
        job.failed(OSError("refused"), "next try in 2.0 s")
    assert _messages(caplog) == [] and job.failing
    job.failed(ConnectionError("reset"), "next try in 2.0 s")  # a new message: at once
    assert _messages(caplog) == [("WARNING", "sweep failed (next try in 2.0 s): reset")]
    clock.now += 60.0
    job.failed(OSError("refused"), "next try in 2.0 s")
    assert _messages(caplog) == [
        ("WARNING", "sweep still failing (next try in 2.0 s): 32 tries failed in 118 s, the last with: refused")
    ]
    clock.now += 1.5
    job.succeeded()
    assert _messages(caplog) == [("INFO", "sweep works again, after 32 failed tries in 119.5 s")]
    assert not job.failing
    job.succeeded()
    assert _messages(caplog) == []

    job.failed(OSError("refused"), "next try in 2.0 s")  # a new outage starts afresh
    assert _messages(caplog) == [("WARNING", "sweep failed (next try in 2.0 s): refused")]


def test_messages_that_never_repeat_are_logged_a_bounded_number_of_times(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.retried")
    job = RetriedFailure(logging.getLogger("test.retried"), "job", clock=_Clock())
    for n in range(100):
        job.failed(RuntimeError(f"pid {n} gone"), "retrying")
    assert len(_messages(caplog)) == RetriedFailure.MAX_MESSAGES
    job.failed(RuntimeError(""), "retrying")  # no text: its type names it
    assert _messages(caplog) == []
    fresh = RetriedFailure(logging.getLogger("test.retried"), "job", clock=_Clock())
    fresh.failed(RuntimeError(""), "retrying")
    assert _messages(caplog) == [("WARNING", "job failed (retrying): RuntimeError")]
