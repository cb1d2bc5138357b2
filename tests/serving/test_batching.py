"""DynamicBatcher alone, with a recording function in place of the model."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from deformable_detr.serving.batching import DynamicBatcher, QueueFullError


class Recorder:
    """run_batch stand-in: remembers each batch and the thread it ran on; can be held by an event."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.release.wait(30)
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        return [item * 10 for item in items]


def test_concurrent_items_form_bounded_batches_with_results_in_order():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch=4, max_wait_s=0.05, max_queue=100)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return batcher, results

    batcher, results = asyncio.run(scenario())
    assert results == [i * 10 for i in range(10)]
    assert sorted(i for batch in recorder.batches for i in batch) == list(range(10))
    assert max(len(batch) for batch in recorder.batches) == 4 and len(recorder.batches) == 3
    assert batcher.batches_formed == 3 and batcher.items_done == 10
    assert sum(size * count for size, count in batcher.batch_sizes.items()) == 10
    assert len(recorder.threads) == 1 and threading.main_thread().name not in recorder.threads


def test_a_lone_item_waits_at_most_max_wait():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch=8, max_wait_s=0.05, max_queue=10)
        await batcher.start()
        started = time.monotonic()
        result = await batcher.submit(7)
        elapsed = time.monotonic() - started
        await batcher.stop()
        return result, elapsed

    result, elapsed = asyncio.run(scenario())
    assert result == 70 and recorder.batches == [[7]]
    assert elapsed >= 0.05  # it waited for company (no upper bound asserted: the machine may be busy)


def test_a_full_queue_refuses_and_a_held_model_keeps_the_loop_free():
    recorder = Recorder()
    recorder.release.clear()  # the model thread blocks: nothing leaves the queue

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch=1, max_wait_s=0.0, max_queue=2)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.1)  # item 1 is on the (held) model thread
        waiting = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0.05)  # the event loop still runs while the model is held
        assert batcher.queue_depth == 2 and batcher.running == 1
        with pytest.raises(QueueFullError) as refused:
            await batcher.submit(4)
        recorder.release.set()
        results = await asyncio.gather(first, *waiting)
        await batcher.stop()
        return refused.value, results

    refused, results = asyncio.run(scenario())
    assert refused.retry_after_s >= 1 and results == [10, 20, 30]


def test_an_error_reaches_every_request_of_its_batch_only():
    def run(items):
        if 13 in items:
            raise RuntimeError("unlucky batch")
        return items

    async def scenario():
        batcher = DynamicBatcher(run, max_batch=2, max_wait_s=0.05, max_queue=10)
        await batcher.start()
        outcomes = await asyncio.gather(batcher.submit(13), batcher.submit(1), return_exceptions=True)
        later = await batcher.submit(2)
        await batcher.stop()
        return outcomes, later

    outcomes, later = asyncio.run(scenario())
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes) and later == 2


def test_stop_finishes_queued_items():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch=2, max_wait_s=0.01, max_queue=10)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.stop()
        return [task.result() for task in tasks]

    assert asyncio.run(scenario()) == [0, 10, 20, 30, 40]
