"""Concurrent clients: dynamic batching gives the answers sequential requests get; a full queue says 503;
shutting down finishes the requests in flight."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from serve_helpers import HeldRunner, encode, running_server, scene, wait_for


def detect(url: str, data: bytes, name: str = "x.png") -> httpx.Response:
    return httpx.post(
        url + "/v1/detect", files={"image": (name, data, "image/png")}, data={"threshold": "0"}, timeout=120
    )


@pytest.mark.slow  # ~30 s on 2 busy cores
def test_64_requests_at_concurrency_8_match_sequential_ones_and_form_batches(runner):
    # Eight images: five of one size (they can share a forward) and three of other sizes.
    sizes = [(120, 90)] * 5 + [(90, 120), (64, 64), (200, 50)]
    images = [encode(scene(w, h, seed=i), "PNG") for i, (w, h) in enumerate(sizes)]
    with running_server(runner, batch_size=8, max_wait_ms=50) as (url, _):
        sequential = [detect(url, data).json()["detections"] for data in images]
        before = httpx.get(url + "/health").json()
        assert set(before["batch_sizes"]) <= {"1"}  # one at a time so far (plus the warm-up)
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: detect(url, images[i % 8]), range(64)))
        health = httpx.get(url + "/health").json()
        metrics = httpx.get(url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * 64
    for index, response in enumerate(responses):
        expected = sequential[index % 8]
        got = response.json()["detections"]
        assert [d["label"] for d in got] == [d["label"] for d in expected]
        # A forward of B images equals B forwards of one up to float32 rounding of the batched kernels.
        torch.testing.assert_close(
            torch.tensor([d["score"] for d in got]), torch.tensor([d["score"] for d in expected]), rtol=0, atol=1e-5
        )
        torch.testing.assert_close(
            torch.tensor([d["box_xyxy"] for d in got]),
            torch.tensor([d["box_xyxy"] for d in expected]),
            rtol=0,
            atol=1e-3,
        )
    assert max(int(size) for size in health["batch_sizes"]) > 1, health
    assert health["images_done"] == before["images_done"] + 64
    assert max(r.json()["timing"]["batch_size"] for r in responses) > 1
    count_line = next(line for line in metrics.splitlines() if line.startswith("deformable_detr_batch_size_count"))
    assert int(count_line.split()[-1]) == health["batches_formed"]
    assert 'deformable_detr_requests_total{endpoint="/v1/detect",status="200"} 72' in metrics


def test_a_full_queue_answers_503_with_retry_after_and_recovers(runner):
    held = HeldRunner(runner)
    data = encode(scene(64, 48), "PNG")
    with running_server(held, batch_size=1, max_wait_ms=0, max_queue=2) as (url, _), ThreadPoolExecutor(3) as pool:
        held.release.clear()
        first = pool.submit(detect, url, data)
        wait_for(url, "running", 1)
        queued = [pool.submit(detect, url, data) for _ in range(2)]
        wait_for(url, "queue_depth", 2)
        refused = detect(url, data)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) >= 1 and "queue full" in refused.json()["detail"]
        held.release.set()
        assert [f.result().status_code for f in [first, *queued]] == [200] * 3
        assert detect(url, data).status_code == 200
        assert 'endpoint="/v1/detect",status="503"} 1' in httpx.get(url + "/metrics").text


def test_shutdown_finishes_requests_in_flight(runner):
    held = HeldRunner(runner)
    data = encode(scene(64, 48), "PNG")
    with running_server(held) as (url, server), ThreadPoolExecutor(1) as pool:
        held.release.clear()
        in_flight = pool.submit(detect, url, data)
        wait_for(url, "running", 1)
        server.should_exit = True  # what SIGTERM / Ctrl-C does
        time.sleep(0.3)
        held.release.set()
        response = in_flight.result(timeout=60)
    assert response.status_code == 200 and len(response.json()["detections"]) == 100
