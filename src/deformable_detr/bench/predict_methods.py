"""The methods `bench predict` times: ours (the pipeline, eager or compiled), onnxruntime and HF's.

Each is a `Method`: `run(paths)` end to end, `prepare(paths)` -> the model alone on inputs decoded and
preprocessed once. Ours and onnxruntime share the pipeline's decode, preprocessing and postprocess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deformable_detr.pipeline.decode import to_rgb_image
from deformable_detr.pipeline.processor import Processor
from deformable_detr.pipeline.run import model_outputs, predict


def _onnx_inputs(model, paths: list[str]) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
    """decode -> our preprocessing -> ({"images", "padding_mask"} padded batch, original (h, w) per image)."""
    processor = Processor(model.preprocess)
    pictures = [to_rgb_image(path) for path in paths]
    tensors = [processor.preprocess(picture).numpy() for picture in pictures]  # (3, h_i, w_i)
    height, width = max(t.shape[1] for t in tensors), max(t.shape[2] for t in tensors)
    images = np.zeros((len(tensors), 3, height, width), np.float32)
    padding_mask = np.ones((len(tensors), height, width), bool)
    for index, tensor in enumerate(tensors):
        images[index, :, : tensor.shape[1], : tensor.shape[2]] = tensor
        padding_mask[index, : tensor.shape[1], : tensor.shape[2]] = False
    return {"images": images, "padding_mask": padding_mask}, [(p.height, p.width) for p in pictures]


def _onnx_predict(session, model, paths: list[str], threshold: float) -> list[dict[str, torch.Tensor]]:
    """decode -> our preprocessing -> padded batch + padding_mask -> onnxruntime -> our postprocess."""
    inputs, sizes = _onnx_inputs(model, paths)
    logits, boxes = session.run(None, inputs)
    out = {"pred_logits": torch.from_numpy(logits), "pred_boxes": torch.from_numpy(boxes)}
    return model.postprocess(out, torch.tensor(sizes), score_threshold=threshold)  # sizes: (B, 2) (h, w)


@dataclass
class Method:
    """One way to detect: `run(paths)` end to end; `prepare(paths)` decodes and preprocesses once and returns
    a callable that runs the model alone on those inputs."""

    run: Callable[[list[str]], object]
    prepare: Callable[[list[str]], Callable[[], object]]


def _ours(model, threshold: float, amp: bool) -> Method:
    """`model.predict`, and `model_outputs` (what predict runs between preprocessing and postprocessing)."""
    processor = Processor(model.preprocess)

    def prepare(paths):
        tensors = [processor.preprocess(to_rgb_image(path)) for path in paths]  # (3, h, w) each

        @torch.inference_mode()
        def forward():
            return model_outputs(model, tensors, amp)

        return forward

    return Method(lambda paths: predict(model, paths, threshold=threshold, batch_size=len(paths), amp=amp), prepare)


def _onnxruntime(onnx_path: str, model, threads: int, threshold: float) -> Method:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])

    def prepare(paths):
        inputs, _ = _onnx_inputs(model, paths)
        return lambda: session.run(None, inputs)

    return Method(lambda paths: _onnx_predict(session, model, paths, threshold), prepare)


def _hf(directory: str, preprocess, device: str, threshold: float) -> Method:
    from PIL import Image
    from transformers import DeformableDetrForObjectDetection, DeformableDetrImageProcessor

    hf_model = DeformableDetrForObjectDetection.from_pretrained(directory).eval().to(device)
    processor = DeformableDetrImageProcessor(
        size={"shortest_edge": preprocess.min_size, "longest_edge": preprocess.max_size},
        image_mean=list(preprocess.mean),
        image_std=list(preprocess.std),
    )

    @torch.inference_mode()
    def hf_predict(paths):
        pictures = [Image.open(path).convert("RGB") for path in paths]
        inputs = processor(images=pictures, return_tensors="pt").to(device)
        outputs = hf_model(**inputs)
        return processor.post_process_object_detection(
            outputs, threshold=threshold, target_sizes=[(p.height, p.width) for p in pictures]
        )

    def prepare(paths):
        inputs = processor(images=[Image.open(path).convert("RGB") for path in paths], return_tensors="pt").to(device)
        return torch.inference_mode()(lambda: hf_model(**inputs))

    return Method(hf_predict, prepare)


def methods_for(
    directory: str,
    onnx_path: str,
    models: dict[str, Any],
    threads: int,
    threshold: float,
    methods: tuple[str, ...],
    device: str,
) -> dict[str, Method]:
    """name -> `Method`; `models` holds "eager" and (for the compiled methods) "compiled", our two loaded models."""
    runs: dict[str, Method] = {}
    for name, key, amp in (
        ("ours-fp32", "eager", False),
        ("ours-bf16", "eager", True),
        ("ours-compile", "compiled", False),
        ("ours-compile-bf16", "compiled", True),
    ):
        if name in methods:
            runs[name] = _ours(models[key], threshold, amp)
    if "onnxruntime" in methods:
        runs["onnxruntime"] = _onnxruntime(onnx_path, models["eager"], threads, threshold)
    if "hf" in methods:
        runs["hf"] = _hf(directory, models["eager"].preprocess, device, threshold)
    return runs
