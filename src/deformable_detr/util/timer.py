"""The one timer: wall-clock seconds (`time.perf_counter`), optionally synchronising a device at both ends.

    with Timer() as timer:
        run()
    timer.seconds                                   # wall seconds of the block
    seconds = time_once(step, sync=torch.cuda.synchronize)   # one call, GPU work included

Benchmarks and training time their work with it; benchmarks quote the minimum of interleaved runs
(`bench.harness.interleaved_times`), never a single reading on a shared machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType


class Timer:
    """Context manager measuring the wall seconds of its block; `elapsed` reads the time so far inside it.

    Args:
        sync: called on entry and on exit before the clock is read (e.g. `torch.cuda.synchronize`, so that
            queued GPU work is inside the measurement); None = nothing.
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self.seconds: float | None = None  # set on exit
        self._start: float | None = None

    def __enter__(self) -> Timer:
        if self.sync is not None:
            self.sync()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.sync is not None:
            self.sync()
        self.seconds = self.elapsed

    @property
    def elapsed(self) -> float:
        """Seconds since the block was entered (the final `seconds` once it has exited)."""
        if self._start is None:
            raise RuntimeError("Timer.elapsed read before the timer was started; use it as `with Timer() as t:`")
        if self.seconds is not None:
            return self.seconds
        return time.perf_counter() - self._start


def time_once(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    """Wall seconds of one call of `fn` (`sync` runs before and after, e.g. torch.cuda.synchronize)."""
    with Timer(sync) as timer:
        fn()
    return timer.seconds
