"""ONNX export of a `DeformableDETR` in eval mode, and its check against PyTorch with onnxruntime.

    export_onnx(model, "model.onnx", dynamic=True)          # images (B, 3, H, W) [+ padding_mask] -> logits, boxes
    verify_onnx(model, "model.onnx", sizes=[(800, 1066), (640, 480)])   # max |onnxruntime - PyTorch| per output

The graph holds standard ONNX ops only: the deformable-attention operator is exported through its
`gather` backend (bilinear sampling as index arithmetic, Gather and MatMul; no `GridSample`). It is
traced with the TorchScript-based exporter, whose traced sizes stay symbolic: with `dynamic=True`
batch, height and width are free (two-stage's top-k included). The exported model is the eval()
forward: no dropout and no training-only branch. The file's metadata carries the preprocessing
(`preprocess`: mean, std, min_size, max_size as JSON), the `categories`, the `model_config` and the
`input_shape` (the fixed (B, 3, H, W) of `images`, or null with `dynamic=True`).

Running the file gives `predict`'s detections with the package's own pre- and postprocessing:

    meta = session.get_modelmeta().custom_metadata_map
    images, size = onnx_inputs("photo.jpg", meta)     # (1, 3, h, w) as predict decodes, rotates and resizes it
    logits, boxes = session.run(None, {"images": images, "padding_mask": np.zeros((1, *images.shape[2:]), bool)})
    detections = onnx_detections(logits[0], boxes[0], size, meta, threshold=0.5)   # a `Detections`
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deformable_detr.checkpoint.files import write_atomic
from deformable_detr.errors import ConfigError
from deformable_detr.models.deformable_attention import MultiScaleDeformableAttention
from deformable_detr.models.detr import detr_postprocess
from deformable_detr.models.detr_config import ARCHITECTURE as DETR_ARCHITECTURE
from deformable_detr.pipeline.decode import ImageInput, to_rgb_image
from deformable_detr.pipeline.detections import Detections
from deformable_detr.pipeline.processor import PreprocessConfig, Processor, check_threshold, postprocess
from deformable_detr.pipeline.run import DEFAULT_THRESHOLD, DEFAULT_TOP_K, check_top_k

INPUT_NAMES = ("images", "padding_mask")
OUTPUT_NAMES = ("pred_logits", "pred_boxes")
MIN_OPSET, MAX_OPSET = 14, 20  # 14: scaled_dot_product_attention; 20: the TorchScript exporter's last


class _ExportedDetector(nn.Module):
    """The detector's eval() forward as a graph: (images, [padding_mask]) -> (pred_logits, pred_boxes)."""

    def __init__(self, model: nn.Module, with_padding_mask: bool):
        super().__init__()
        self.model = model
        self.with_padding_mask = with_padding_mask

    def forward(
        self, images: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) float32 normalized; padding_mask (B, H, W) bool True = padding ->
        pred_logits (B, Lq, K), pred_boxes (B, Lq, 4) (cx, cy, w, h) in [0, 1] of each image's valid region."""
        out = self.model(images, padding_mask if self.with_padding_mask else None)
        return out["pred_logits"], out["pred_boxes"]


def _export_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU eval() copy of `model` whose attention layers all use the `gather` backend."""
    exported = copy.deepcopy(model).float().cpu().eval()
    for module in exported.modules():
        if isinstance(module, MultiScaleDeformableAttention):
            module.backend = "gather"
    return exported


def _example_inputs(
    batch_size: int, height: int, width: int, with_padding_mask: bool, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random normalized images (B, 3, H, W) and, if asked, a padding mask (B, H, W) whose images after
    the first are padded on the right and bottom (so the traced graph sees real padding)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, height, width, generator=generator)
    if not with_padding_mask:
        return (images,)
    padding_mask = torch.zeros(batch_size, height, width, dtype=torch.bool)
    for index in range(1, batch_size):
        padding_mask[index, (height * 3) // 4 :, :] = True
        padding_mask[index, :, (width * 3) // 4 :] = True
    images = images.masked_fill(padding_mask[:, None], 0.0)
    return images, padding_mask


def _metadata(model: nn.Module, input_shape: list[int] | None) -> dict[str, str]:
    """The file's metadata; `input_shape` is the fixed (B, 3, H, W) of `images`, None (null) when dynamic."""
    return {
        "preprocess": json.dumps(model.preprocess.to_dict()),
        "categories": json.dumps(list(model.categories)),
        "model_config": json.dumps(model.config.to_dict()),
        "input_shape": json.dumps(input_shape),
        "producer": "deformable-detr",
    }


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = 17,
    dynamic: bool = False,
    batch_size: int = 1,
    height: int = 800,
    width: int = 1066,
    padding_mask: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write `model`'s eval() forward as an ONNX file (standard ops only) and check it with onnx.checker.

    Args:
        model: a `DeformableDETR` (any variant, any device and dtype; exported as float32 on the CPU;
            `model` itself is not changed).
        path: the .onnx file to write (through a temporary file, renamed when complete).
        opset: ONNX opset, MIN_OPSET..MAX_OPSET.
        dynamic: free batch, height and width; otherwise the graph is fixed to (batch_size, 3, height, width).
        batch_size, height, width: the example input traced (and the fixed input shape without `dynamic`).
        padding_mask: the graph takes a second input `padding_mask` (B, H, W) bool, True = padding;
            without it every pixel is valid.
        overwrite: replace an existing file at `path`.

    Returns:
        The written path. Inputs "images" (B, 3, H, W) float32 normalized [+ "padding_mask"], outputs
        "pred_logits" (B, Lq, K) and "pred_boxes" (B, Lq, 4) (cx, cy, w, h) in [0, 1].

    Raises:
        ConfigError: a bad opset or size, or `path` exists and `overwrite` is False.
    """
    import onnx

    path = Path(path)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset {opset} is not supported; choose {MIN_OPSET}..{MAX_OPSET} (default 17)")
    if batch_size < 1 or height < 32 or width < 32:
        raise ConfigError(f"example input {batch_size}x3x{height}x{width}: need batch >= 1 and height, width >= 32")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: already exists; choose another --out or pass --overwrite")
    if path.suffix != ".onnx":
        raise ConfigError(f"{path}: the output file name must end in .onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _ExportedDetector(_export_copy(model), padding_mask)
    inputs = _example_inputs(batch_size, height, width, padding_mask)
    input_names = list(INPUT_NAMES[: len(inputs)])
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {
            "images": {0: "batch", 2: "height", 3: "width"},
            "pred_logits": {0: "batch"},
            "pred_boxes": {0: "batch"},
        }
        if padding_mask:
            dynamic_axes["padding_mask"] = {0: "batch", 1: "height", 2: "width"}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            # Python-side checks on traced sizes warn; the sizes themselves stay symbolic (verify_onnx checks).
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            torch.onnx.export(
                wrapper,
                inputs,
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        fixed_shape = None if dynamic else [batch_size, 3, height, width]
        for key, value in _metadata(model, fixed_shape).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)

    return write_atomic(path, write)


def graph_op_types(path: str | os.PathLike) -> set[str]:
    """Every op type in the ONNX file's graph (and its subgraphs)."""
    import onnx

    def walk(graph) -> set[str]:
        ops = set()
        for node in graph.node:
            ops.add(node.op_type)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    ops |= walk(attribute.g)
        return ops

    return walk(onnx.load(str(path)).graph)


def verification_sizes(height: int, width: int, dynamic: bool) -> list[tuple[int, int]]:
    """The (height, width) sizes `--verify` tries: the traced size, and with `dynamic` a second one of
    another aspect ratio (3/4 of the height, 5/4 of the width)."""
    if not dynamic:
        return [(height, width)]
    return [(height, width), (max(32, height * 3 // 4), width * 5 // 4)]


def verify_onnx(
    model: nn.Module, path: str | os.PathLike, sizes: list[tuple[int, int]], batch_size: int = 2, seed: int = 1
) -> list[dict[str, Any]]:
    """Run the ONNX file with onnxruntime (CPU) and `model` with PyTorch on the same random batches.

    Args:
        model: the model that was exported (run as it is configured, in eval mode, float32).
        path: the .onnx file.
        sizes: (height, width) of each batch tried; the file must accept them (dynamic, or its fixed size).
        batch_size: images per batch; with a padding_mask input, images after the first are padded.
        seed: of the random images.

    Returns:
        per size, {"height", "width", "batch_size", "pred_logits" and "pred_boxes": max |onnxruntime - PyTorch|}.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [entry.name for entry in session.get_inputs()]
    with_padding_mask = "padding_mask" in names
    reference = model if next(model.parameters()).dtype == torch.float32 else copy.deepcopy(model).float()
    was_training = reference.training
    reference.eval()
    results = []
    for height, width in sizes:
        inputs = _example_inputs(batch_size, height, width, with_padding_mask, seed=seed)
        device = next(reference.parameters()).device
        with torch.no_grad():
            out = reference(*(t.to(device) for t in inputs))
        feeds = {name: tensor.numpy() for name, tensor in zip(names, inputs)}
        logits, boxes = session.run(list(OUTPUT_NAMES), feeds)
        results.append(
            {
                "height": height,
                "width": width,
                "batch_size": batch_size,
                "pred_logits": float((torch.from_numpy(logits) - out["pred_logits"].float().cpu()).abs().max()),
                "pred_boxes": float((torch.from_numpy(boxes) - out["pred_boxes"].float().cpu()).abs().max()),
            }
        )
    reference.train(was_training)
    return results


def _metadata_entry(metadata: Mapping[str, Any], key: str) -> Any:
    """One JSON entry of an ONNX file's metadata map (`session.get_modelmeta().custom_metadata_map`)."""
    if key not in metadata:
        raise ConfigError(
            f"ONNX metadata has no {key!r} entry (keys: {sorted(metadata)}); "
            "give the metadata of a file written by `deformable-detr export onnx`, or the model itself"
        )
    value = metadata[key]
    return json.loads(value) if isinstance(value, str) else value


def _preprocess_config(source: nn.Module | PreprocessConfig | Mapping[str, Any]) -> PreprocessConfig:
    if isinstance(source, PreprocessConfig):
        return source
    if isinstance(source, nn.Module):
        return source.preprocess
    return PreprocessConfig.from_dict(_metadata_entry(source, "preprocess"))


def onnx_inputs(
    image: ImageInput, source: nn.Module | PreprocessConfig | Mapping[str, Any]
) -> tuple[np.ndarray, tuple[int, int]]:
    """An image as the exported graph's `images` input, decoded and resized exactly as `predict` does it.

    Args:
        image: a path (EXIF orientation applied, any mode -> RGB, as `predict`), PIL image, array or tensor;
            see `to_rgb_image`.
        source: where the preprocessing comes from: the ONNX file's metadata map
            (`session.get_modelmeta().custom_metadata_map`), the model, or its `PreprocessConfig`.

    Returns:
        images: (1, 3, h, w) float32, normalized, with (h, w) = `resized_size` of the displayed image;
        image_size: (height, width) of the image as given (the displayed file's pixels), which
            `onnx_detections` maps the boxes to.

    Raises:
        ConfigError: the metadata says the graph is fixed (exported without `dynamic`) to another shape than
            (1, 3, h, w). Padding the image up to it would not give `predict`'s detections (the backbone's
            features near the padding change), so this refuses instead of padding or resizing.
    """
    picture = to_rgb_image(image)
    images = Processor(_preprocess_config(source)).preprocess(picture)[None].numpy()  # (1, 3, h, w)
    width, height = picture.info.get("original_size", picture.size)  # a side over 10k px was downscaled on decode
    _check_fixed_shape(source, images.shape)
    return images, (height, width)


def _check_fixed_shape(source: nn.Module | PreprocessConfig | Mapping[str, Any], shape: tuple[int, ...]) -> None:
    """Refuse `images` of `shape` (1, 3, h, w) for a graph whose metadata fixes another input shape."""
    if isinstance(source, (nn.Module, PreprocessConfig)) or source.get("input_shape") is None:
        return  # a model, a dynamic graph, or a file written before `input_shape` was stored
    fixed = tuple(_metadata_entry(source, "input_shape") or ())
    if fixed and fixed != tuple(shape):
        raise ConfigError(
            f"the ONNX graph is fixed to images {'x'.join(map(str, fixed))} but this image resizes to "
            f"{'x'.join(map(str, shape))}; export it with `deformable-detr export onnx --dynamic` to run any image size"
        )


def onnx_detections(
    pred_logits: np.ndarray,
    pred_boxes: np.ndarray,
    image_size: tuple[int, int],
    source: nn.Module | Mapping[str, Any],
    threshold: float = DEFAULT_THRESHOLD,
    top_k: int = DEFAULT_TOP_K,
) -> Detections:
    """One image's graph outputs as the `Detections` that `predict` returns (the same postprocessing).

    Args:
        pred_logits: (Lq, K) (K + 1 for DETR) of one image, as the graph returns it for batch index 0.
        pred_boxes: (Lq, 4) (cx, cy, w, h) in [0, 1] of the image's valid region.
        image_size: (height, width) from `onnx_inputs`.
        source: the ONNX file's metadata map (categories and model config) or the model.
        threshold: keep detections with score >= this, in [0, 1].
        top_k: detections before the threshold (as `predict`).

    Returns:
        boxes (N, 4) (x0, y0, x1, y1) in pixels of the image as given, scores, labels, category ids and names.
    """
    threshold, top_k = check_threshold(threshold), check_top_k(top_k)
    if isinstance(source, nn.Module):
        categories = source.categories
        detr = getattr(source.config, "architecture", None) == DETR_ARCHITECTURE
    else:
        categories = _metadata_entry(source, "categories")
        detr = _metadata_entry(source, "model_config").get("architecture") == DETR_ARCHITECTURE
    logits, boxes = np.asarray(pred_logits), np.asarray(pred_boxes)
    if logits.ndim != 2 or boxes.ndim != 2 or boxes.shape != (logits.shape[0], 4):
        raise ConfigError(
            f"pred_logits {logits.shape} and pred_boxes {boxes.shape}: expected one image's (Lq, K) and (Lq, 4); "
            "pass logits[0], boxes[0] of the session's outputs"
        )
    out = {"pred_logits": torch.from_numpy(logits)[None], "pred_boxes": torch.from_numpy(boxes)[None]}
    target_sizes = torch.tensor([list(image_size)])  # (1, 2) (height, width)
    found = (detr_postprocess if detr else postprocess)(out, target_sizes, score_threshold=threshold, top_k=top_k)
    return Detections.from_postprocessed(found[0], tuple(image_size), categories)
