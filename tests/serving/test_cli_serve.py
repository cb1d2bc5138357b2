"""`deformable-detr serve` as a user runs it: a subprocess on a free loopback port, stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import torch
from serve_helpers import encode, free_port, scene, tiny_model

from deformable_detr.cli import main
from deformable_detr.errors import ConfigError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("serve") / "model"
    tiny_model().save_pretrained(directory)
    return directory


@contextlib.contextmanager
def serve(*arguments: str):
    """`deformable-detr serve ...` in a subprocess; yields (process, base_url) once /health answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deformable_detr.cli", "serve", "--port", str(port), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # the first forward may compile the CPU kernel
        while True:
            assert process.poll() is None, f"server exited: {process.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "server did not answer /health"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow  # a server process: ~15 s of imports and start-up on 2 busy cores
def test_serve_answers_like_model_predict_and_stops_cleanly_on_sigterm(checkpoint):
    model = tiny_model()
    image = scene(100, 70)
    with serve("--checkpoint", str(checkpoint), "--batch-size", "4") as (process, url):
        response = httpx.post(
            url + "/v1/detect",
            files={"image": ("a.png", encode(image, "PNG"), "image/png")},
            data={"threshold": "0.2"},
            timeout=60,
        )
        info = httpx.get(url + "/v1/model").json()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    # uvicorn shuts down cleanly, then re-raises the signal: the status a shell sees is 143 (128 + SIGTERM).
    assert process.returncode in (0, -signal.SIGTERM), stderr[-2000:]
    assert "Application shutdown complete" in stderr
    assert "no API key" in stderr and "Traceback" not in stderr
    assert info["source"]["format"] and info["categories"] == model.categories
    assert response.status_code == 200, response.text
    expected = model.predict(image, threshold=0.2)[0]
    detections = response.json()["detections"]
    assert [d["name"] for d in detections] == expected.names
    torch.testing.assert_close(
        torch.tensor([d["box_xyxy"] for d in detections]).reshape(-1, 4), expected.boxes, rtol=0, atol=1e-3
    )


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["--checkpoint", "does/not/exist"], "does/not/exist: no such file or folder; expected a training checkpoint"),
        (["--checkpoint", "{checkpoint}", "--batch-size", "0"], "argument --batch-size: 0 must be >= 1"),
        (["--checkpoint", "{checkpoint}", "--max-wait-ms", "nan"], "max_wait_ms"),
        (["--checkpoint", "{checkpoint}", "--workers", "0"], "--workers"),
        (["--checkpoint", "{checkpoint}", "--port", "70000"], "--port"),
        (["--checkpoint", "{checkpoint}", "--device", "tpu"], "tpu"),
        (["--checkpoint", "{junk}"], "junk.pth"),
    ],
)
def test_bad_options_are_one_line_errors(checkpoint, tmp_path, capsys, arguments, words):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    try:
        status = main(["serve", *[a.format(checkpoint=checkpoint, junk=junk) for a in arguments]])
    except SystemExit as usage_error:  # argparse's own checks (--batch-size 0)
        status = usage_error.code
    stderr = capsys.readouterr().err
    assert status == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1 and words in stderr, stderr


def test_a_port_in_use_is_one_line_error_before_the_model_loads(checkpoint, capsys, monkeypatch):
    import socket

    from deformable_detr.serving import runner

    monkeypatch.setattr(runner, "load_runner", lambda config: pytest.fail("loaded the model"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["serve", "--checkpoint", str(checkpoint), "--port", str(port)])
    stderr = capsys.readouterr().err
    assert status == 2 and stderr.count("\n") == 1 and f"--port {port}: cannot listen" in stderr, stderr


def test_compile_flag_reaches_the_loaded_model(checkpoint, capsys, monkeypatch):
    from deformable_detr.pipeline import compiled
    from deformable_detr.serving import runner

    monkeypatch.setattr(compiled, "_compile", lambda function, **options: function)  # no real compile here
    loaded = []
    original = runner.load_runner

    def load_and_stop(config):
        loaded.append(original(config))
        raise ConfigError("stop before serving")

    monkeypatch.setattr(runner, "load_runner", load_and_stop)
    assert main(["serve", "--checkpoint", str(checkpoint), "--port", str(free_port()), "--compile", "--amp"]) == 2
    assert "stop before serving" in capsys.readouterr().err
    assert loaded[0].amp and loaded[0].model.compiled_inference is not None


@pytest.mark.slow  # two model processes
def test_workers_start_separate_processes_that_all_answer(checkpoint):
    data = encode(scene(64, 48), "PNG")
    with serve("--checkpoint", str(checkpoint), "--workers", "2", "--api-key", "k") as (process, url):
        pids = set()
        deadline = time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline:  # new connections land on either worker
            with httpx.Client() as client:
                pids.add(client.get(url + "/health").json()["pid"])
        codes = [
            httpx.post(
                url + "/v1/detect",
                files={"image": ("a.png", data, "image/png")},
                headers={"Authorization": "Bearer k"},
                timeout=60,
            ).status_code
            for _ in range(4)
        ]
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert codes == [200] * 4
    assert len(pids) == 2 and process.pid not in pids
