"""Helpers of the server tests: a tiny model, real servers on free loopback ports, test images, an oracle.

Servers run uvicorn in a thread of the test process (`running_server`), so a test can inject a
model runner (a slow or failing one) and still talk to it over real HTTP with httpx.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
import zlib

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image, ImageDraw

from deformable_detr import DeformableDETR, ModelConfig
from deformable_detr.pipeline.processor import PreprocessConfig
from deformable_detr.serving import ServeConfig, create_app

# Small inputs keep a forward of the demo-sized model at a few tens of milliseconds on 2 cores.
PREPROCESS = PreprocessConfig(min_size=96, max_size=128)
CATEGORIES = [
    {"id": i + 1, "name": name} for i, name in enumerate(["circle", "square", "triangle", "star", "ring", "cross"])
]


def tiny_model() -> DeformableDETR:
    """The demo-preset detector (two-stage, box refinement, 6 classes) with random weights; the class
    biases are zeroed so scores spread around 0.5 and every image has detections above 0.3."""
    torch.manual_seed(0)
    model = DeformableDETR(ModelConfig.preset("demo"), preprocess=PREPROCESS, categories=CATEGORIES).eval()
    with torch.no_grad():
        for head in model.class_heads:
            head.bias.zero_()
    return model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(runner, **settings):
    """A uvicorn server for `create_app(ServeConfig(...settings), runner)` on a free loopback port,
    in a thread; yields (base_url, server). Stops it (gracefully) on exit."""
    config = ServeConfig(checkpoint="<injected>", **settings)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, runner),
            host="127.0.0.1",
            port=free_port(),
            log_level="warning",
            timeout_graceful_shutdown=30,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 600  # the first forward may compile the CPU kernel
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=60)


class HeldRunner:
    """Wraps a runner; `detect` waits for `release` (a model busy for as long as the test wants)."""

    def __init__(self, runner):
        self.runner = runner
        self.release = threading.Event()
        self.release.set()

    def info(self):
        return self.runner.info()

    def detect(self, images, **options):
        assert self.release.wait(60), "test never released the model"
        return self.runner.detect(images, **options)

    def explain(self, *args):
        return self.runner.explain(*args)


def wait_for(url: str, key: str, value: int) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(url + "/health").json()[key] != value:
        assert time.monotonic() < deadline, f"/health never reported {key} = {value}"
        time.sleep(0.02)


def scene(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image with a gradient and a few filled shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 90)], -1).astype(
        np.uint8
    )
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.integers(0, max(width - 8, 1)), rng.integers(0, max(height - 8, 1))
        size = int(rng.integers(6, max(7, min(width, height) // 2)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = [x0, y0, x0 + size, y0 + size]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=colour)
    return image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (the data is one short row): what a
    decompression bomb looks like to a decoder that trusts the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def single_image_detections(model, image: Image.Image, preprocess: PreprocessConfig = PREPROCESS) -> dict:
    """The oracle: `image` alone through resize (shorter side min_size, longer at most max_size, as
    DETR), normalisation, one forward and postprocess, written here independently of the server."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    size = preprocess.min_size
    if long / short * size > preprocess.max_size:
        size = int(round(preprocess.max_size * short / long))
    new_w, new_h = (size, int(size * height / width)) if width < height else (int(size * width / height), size)
    pixels = np.asarray(image.resize((new_w, new_h), Image.BILINEAR), dtype=np.float32) / 255.0
    pixels = (pixels - np.array(preprocess.mean, dtype=np.float32)) / np.array(preprocess.std, dtype=np.float32)
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()  # (1, 3, h, w)
    with torch.inference_mode():
        out = model(tensor)
        return model.postprocess(out, torch.tensor([[height, width]]))[0]
