"""The one timer: seconds from time.perf_counter, the sync callback at both ends."""

import pytest

from deformable_detr.util import timer as timer_module
from deformable_detr.util.timer import Timer, time_once


def test_timer_reads_the_clock_at_both_ends_after_syncing(monkeypatch):
    readings = iter([10.0, 10.25, 12.5])
    monkeypatch.setattr(timer_module.time, "perf_counter", lambda: next(readings))
    events = []
    with Timer(sync=lambda: events.append("sync")) as timer:
        events.append("work")
        assert timer.elapsed == 0.25  # the clock read inside the block
    assert events == ["sync", "work", "sync"]
    assert timer.seconds == 2.5 and timer.elapsed == 2.5  # 12.5 - 10.0, frozen after exit


def test_time_once_and_unstarted_timer(monkeypatch):
    readings = iter([1.0, 1.75])
    monkeypatch.setattr(timer_module.time, "perf_counter", lambda: next(readings))
    assert time_once(lambda: None) == 0.75
    with pytest.raises(RuntimeError, match="before the timer was started"):
        _ = Timer().elapsed
