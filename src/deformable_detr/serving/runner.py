"""The model side of the server: load a checkpoint, detect objects in a batch of images, explain one image.

Every method of `ModelRunner` runs on the server's one model thread (see `batching.py`), never on the
event loop, and never on two threads at once.

    runner = load_runner(ServeConfig(checkpoint="run/best.pth"))   # or ModelRunner(model)
    per_image = runner.detect([pil_a, pil_b], threshold=[0.5, 0.3], top_k=[100, 10])
    explained = runner.explain(pil_a, top_k=5, threshold=0.5)

    service = BatchedRunner(runner)        # the runner behind the app's dynamic batcher
    await service.start(config)            # (loads config.checkpoint when no runner was given) ... stop()

Detections are `Detections.to_dict()` items ({"box_xyxy", "label", "name", "score"}), as everywhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool

from deformable_detr.pipeline.run import DEFAULT_THRESHOLD, DEFAULT_TOP_K, predict
from deformable_detr.serving.batching import DynamicBatcher
from deformable_detr.serving.config import ServeConfig

logger = logging.getLogger("deformable_detr.serving")

TOP_K = DEFAULT_TOP_K  # the most detections a request may ask for, as the reference PostProcess


class ModelRunner:
    """A detector in eval mode, with the preprocessing and categories it carries.

    Args:
        model: a `Detector` (`DeformableDETR` or `DETR`) in eval mode, on its device.
        amp: run the forward under bfloat16 autocast.
    """

    def __init__(self, model, amp: bool = False):
        self.model = model
        self.amp = amp

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def info(self) -> dict[str, Any]:
        """What GET /v1/model reports: variant, architecture, categories, preprocessing, device, source
        (attention_backend None for DETR, which has no deformable attention)."""
        config = self.model.config
        source = self.model.checkpoint_info
        compiled = getattr(self.model, "compiled_inference", None)
        return {
            "variant": config.describe(),
            "config": config.to_dict(),
            "num_classes": config.num_classes,
            "categories": self.model.categories,
            "preprocess": self.model.preprocess.to_dict(),
            "device": str(self.device),
            "amp": self.amp,
            "attention_backend": self.model.attention_backend,
            "compiled": None if compiled is None else {"buckets": compiled.buckets, "compiles": compiled.compiles},
            "source": {"format": source.format, "description": source.description} if source else None,
        }

    def warm_up(self, batch_size: int) -> str | None:
        """Pay the one-time costs before the first request: one forward of a small image (it loads or builds
        the attention kernel) or, for a compiled model, compiling (and recording CUDA graphs for) the common
        image shape at batch 1 and, with batch_size > 1, batch 2 (one compile serves every batch >= 2).

        Returns:
            the compiled model's one-line summary (shapes and seconds), or None for an eager model.
        """
        compiled = getattr(self.model, "compiled_inference", None)
        if compiled is None:
            self.detect([Image.new("RGB", (64, 64), (128, 128, 128))])
            return None
        compiled.warm_up(batch_sizes=(1, 2) if batch_size > 1 else (1,), amp=self.amp)
        return compiled.summary()

    def detect(
        self,
        images: list[Image.Image],
        threshold: float | Sequence[float] = DEFAULT_THRESHOLD,
        top_k: int | Sequence[int] = DEFAULT_TOP_K,
    ) -> list[list[dict]]:
        """Detect objects in each image, all in one `pipeline.run.predict` call (equal to one image at a time
        up to float rounding: see `DeformableDETR.predict`).

        Args:
            images: RGB PIL images of any sizes.
            threshold, top_k: one value, or one per image (each request of a batch keeps its own).

        Returns:
            per image, its detections, best first: `Detections.to_dict()["detections"]` ({"box_xyxy":
            [x0, y0, x1, y1] in the original image's pixels, "label" category id, "name", "score"}).
        """
        found = predict(self.model, images, threshold, batch_size=max(1, len(images)), amp=self.amp, top_k=top_k)
        return [detections.to_dict()["detections"] for detections in found]

    def explain(
        self, image: Image.Image, top_k: int, threshold: float, pixel: tuple[float, float] | None = None
    ) -> dict[str, Any]:
        """Where the last decoder layer looked for each of the `top_k` best queries scoring >= threshold
        (`deformable_detr.inference.explain`).

        Returns:
            {"width", "height", "levels": [{"level": l, "height": H_l, "width": W_l}, ...],
             "detections": [{"box_xyxy", "label", "name", "score", "query",
             "reference_point": [x, y], "sampling": [{"level": l, "points": [[x, y], ...],
             "weights": [...], "heads": [...]}, ...]}, ...], "pixel": None or the encoder's points
             at `pixel`}; every coordinate in the original image's pixels; one detection per query
             (its best class); M * P points per level, each head's weights summing to 1.
        """
        from deformable_detr.inference.explain import explain

        result = explain(self.model, image, top_k=top_k, threshold=threshold, pixel=pixel)
        height, width = result["image_size"]
        return {
            "width": width,
            "height": height,
            "levels": [
                {"level": level["level"], "height": level["size"][0], "width": level["size"][1]}
                for level in result["levels"]
            ],
            "detections": result["detections"],
            "pixel": result["pixel"],
        }


def load_runner(config: ServeConfig) -> ModelRunner:
    """Load `config.checkpoint` (any format `deformable_detr.load` reads) onto `config.device`."""
    from deformable_detr.inference.load import load

    model = load(
        config.checkpoint, device=config.device, attention_backend=config.attention_backend, compile=config.compile
    )
    return ModelRunner(model, amp=config.amp)


class BatchedRunner:
    """The model runner behind the app's `DynamicBatcher`: started with the app (loading the checkpoint when no
    runner was given, then a warm-up before the first connection), stopped after the last request.

    Attributes:
        runner: the `ModelRunner` (or an injected runner with `detect`, `explain`, `info`); None until started.
        batcher: the `DynamicBatcher` whose batches run `run_batch`; None until started.
    """

    def __init__(self, runner: ModelRunner | None = None):
        self.runner = runner
        self.batcher: DynamicBatcher | None = None

    def run_batch(
        self, items: list[tuple[Image.Image, float, float, int]]
    ) -> list[tuple[list[dict], dict[str, float]]]:
        """items: (image, time queued, threshold, top_k) per request; each keeps its own threshold and top_k."""
        started = time.perf_counter()
        images, queued_at, thresholds, top_ks = (list(column) for column in zip(*items))
        per_image = self.runner.detect(images, threshold=thresholds, top_k=top_ks)
        model_ms = (time.perf_counter() - started) * 1e3
        return [
            (detections, {"queue_ms": (started - queued) * 1e3, "model_ms": model_ms, "batch_size": len(items)})
            for detections, queued in zip(per_image, queued_at)
        ]

    async def start(self, config: ServeConfig) -> None:
        """Load the model if needed, start the batcher, and warm up on the model thread."""
        if self.runner is None:
            self.runner = await run_in_threadpool(load_runner, config)
            logger.info("loaded %s on %s", config.checkpoint, config.device)
        batcher = DynamicBatcher(self.run_batch, config.batch_size, config.max_wait_ms / 1e3, config.max_queue)
        await batcher.start()
        # The first forward loads (or compiles) the attention kernel, and a compiled model compiles its common
        # shape: pay both here, on the model thread, before uvicorn accepts the first connection.
        warm_up = getattr(self.runner, "warm_up", None)  # a ModelRunner has it; an injected runner may not
        if warm_up is None:
            await batcher.run_exclusive(self.runner.detect, [Image.new("RGB", (64, 64), (128, 128, 128))])
        elif (summary := await batcher.run_exclusive(warm_up, config.batch_size)) is not None:
            logging.getLogger("uvicorn.error").info("%s (warm-up before serving)", summary)  # uvicorn's console
        self.batcher = batcher

    async def stop(self) -> None:
        """Finish everything already queued, then stop the model thread."""
        await self.batcher.stop()
