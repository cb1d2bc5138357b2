"""Dynamic batching: concurrent requests gathered into batches that run on one model thread.

The event loop only queues work and awaits futures; the model runs in a single worker thread, so a
slow forward never blocks other requests from being accepted, answered from cache or refused.

    batcher = DynamicBatcher(runner.detect, max_batch=8, max_wait_s=0.01, max_queue=64)
    await batcher.start()
    detections = await batcher.submit(image)           # raises QueueFullError when max_queue are waiting
    explained = await batcher.run_exclusive(runner.explain, image, 5, 0.3)
    await batcher.stop()                               # finishes everything already queued
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class QueueFullError(Exception):
    """The queue holds `max_queue` requests; `retry_after_s` is an estimate of when there is room."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the server is busy (queue full); retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class DynamicBatcher:
    """Gathers `submit`ted items into lists of at most `max_batch` and runs `run_batch` on each list.

    A batch starts with the oldest waiting item and takes every item that arrives within `max_wait_s`
    of it (or is already waiting), up to `max_batch`. Batches run one at a time on one thread, in order.

    Args:
        run_batch: items -> one result per item, in order; runs on the model thread.
        max_batch: most items per batch (>= 1). max_wait_s: how long a batch waits to fill (>= 0).
        max_queue: most items waiting (not yet in a running batch); `submit` refuses more.
    """

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], max_batch: int, max_wait_s: float, max_queue: int):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deformable-detr-model")
        self.batches_formed = 0
        self.items_done = 0
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.running = 0  # items in the batch now on the model thread
        self._exclusive_waiting = 0
        self._last_batch_s = 0.1
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    @property
    def queue_depth(self) -> int:
        """Batch items waiting for the model thread, plus exclusive calls waiting or running."""
        return (self._queue.qsize() if self._queue is not None else 0) + self._exclusive_waiting

    async def start(self) -> None:
        """Start gathering; call from the event loop that will call `submit`."""
        self._queue = asyncio.Queue(self.max_queue)
        self._task = asyncio.create_task(self._gather_and_run(), name="deformable-detr-batcher")

    async def stop(self) -> None:
        """Finish every queued item, then stop the gathering task and the model thread."""
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    def _retry_after_s(self) -> int:
        batches_ahead = math.ceil((self.queue_depth + 1) / self.max_batch)
        return max(1, math.ceil(batches_ahead * self._last_batch_s))

    async def submit(self, item: Any) -> Any:
        """Queue `item`, wait for its batch, return its result (or raise what `run_batch` raised).

        Raises:
            QueueFullError: `max_queue` items are already waiting.
        """
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.submit before start()")
        future = asyncio.get_running_loop().create_future()
        if self.queue_depth >= self.max_queue:
            raise QueueFullError(self._retry_after_s())
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise QueueFullError(self._retry_after_s()) from None
        return await future

    async def run_exclusive(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` alone on the model thread (between batches); counts towards the queue bound.

        Raises:
            QueueFullError: `max_queue` items are already waiting.
        """
        if self.queue_depth >= self.max_queue:
            raise QueueFullError(self._retry_after_s())
        self._exclusive_waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self._exclusive_waiting -= 1

    async def _next_batch(self) -> list[tuple[Any, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _gather_and_run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [(item, future) for item, future in batch if not future.cancelled()]  # clients gone: skip
            try:
                if live:
                    self.running = len(live)
                    started = time.monotonic()
                    try:
                        results = await loop.run_in_executor(self.executor, self.run_batch, [i for i, _ in live])
                    except Exception as error:  # noqa: BLE001 - handed to every waiting request
                        for _, future in live:
                            if not future.done():
                                future.set_exception(error)
                    else:
                        for (_, future), result in zip(live, results):
                            if not future.done():
                                future.set_result(result)
                    finally:
                        self.running = 0
                    self._last_batch_s = time.monotonic() - started
                    self.batches_formed += 1
                    self.items_done += len(live)
                    self.batch_sizes[len(live)] += 1
            finally:
                for _ in batch:
                    self._queue.task_done()
