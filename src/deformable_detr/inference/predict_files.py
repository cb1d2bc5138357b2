"""Detect objects in many image files: `DIR/detections.json`, one drawing per image, bad files listed.

Under `torchrun` the files are shared out by batches (batch k to rank k mod world size), so every
image is computed in the same batch as in a single process; rank 0 gathers the records and writes
one `detections.json` identical to a single-process run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from deformable_detr.checkpoint.files import write_atomic
from deformable_detr.errors import DatasetError
from deformable_detr.inference.inputs import ImageFiles, check_output_folder, collect_image_files
from deformable_detr.pipeline.decode import load_rgb_image
from deformable_detr.pipeline.processor import check_threshold
from deformable_detr.pipeline.run import DEFAULT_THRESHOLD, DEFAULT_TOP_K, check_top_k, predict
from deformable_detr.util import distributed
from deformable_detr.viz.detections import draw_detections

DRAW_MIN_SIDE = 480  # px; smaller images are enlarged for drawing so captions stay readable


@dataclass
class PredictSummary:
    """What `predict_files` did.

    out_dir: the output folder; detections_file: its `detections.json`.
    images: images processed; detections: detections written (score >= threshold).
    errors: {"file", "error"} per input that could not be used; skipped: non-image files in folders.
    """

    out_dir: Path
    detections_file: Path
    images: int = 0
    detections: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _rounded(item: dict[str, Any]) -> dict[str, Any]:
    """A `Detections.to_dict()` item with the box to 0.01 px and the score to 5 digits (a smaller file)."""
    return {**item, "box_xyxy": [round(v, 2) for v in item["box_xyxy"]], "score": round(item["score"], 5)}


def _process_batch(
    model: nn.Module,
    files: ImageFiles,
    indices: list[int],
    out: Path,
    threshold: float,
    top_k: int,
    amp: bool,
    draw: bool,
) -> list[dict[str, Any]]:
    """Decode, detect and draw the files at `indices`: one record per file ({"index", "image" | "error"})."""
    records, pictures, good = [], [], []
    for index in indices:
        try:
            pictures.append(load_rgb_image(files.files[index], hint="the file is skipped"))
            good.append(index)
        except DatasetError as error:
            message = str(error).removeprefix(f"{files.files[index]}: ")  # the record names the file already
            records.append({"index": index, "error": message})
    if not pictures:
        return records
    found = predict(model, pictures, threshold=threshold, batch_size=len(pictures), amp=amp, top_k=top_k)
    for index, picture, detections in zip(good, pictures, found):
        height, width = detections.image_size
        items = [_rounded(item) for item in detections.to_dict()["detections"]]
        record = {
            "index": index,
            "image": {"file_name": str(files.files[index]), "width": width, "height": height, "detections": items},
        }
        if draw:
            drawing = out / files.outputs[index]
            drawing.parent.mkdir(parents=True, exist_ok=True)
            shown = picture if picture.size == (width, height) else picture.resize((width, height))
            canvas = draw_detections(
                shown,
                detections.boxes.tolist(),
                detections.labels.tolist(),
                detections.scores.tolist(),
                [c["name"] for c in model.categories],
                min_side=DRAW_MIN_SIDE,
            )
            write_atomic(drawing, lambda path, canvas=canvas: canvas.save(path, format="PNG"))
            record["image"]["drawing"] = str(files.outputs[index])
        records.append(record)
    return records


def predict_files(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 8,
    amp: bool = False,
    draw: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    top_k: int = DEFAULT_TOP_K,
) -> PredictSummary:
    """Run `deformable_detr.pipeline.run.predict` over image files, folders and globs; write detections.json and drawings.

    Args:
        model: the detector (on the device to use).
        inputs: files, folders (recursive, image extensions) and glob patterns.
        out_dir: output folder; created; must not contain any input; an earlier detections.json,
            or any file a drawing would replace, is replaced only with `overwrite`.
        threshold: keep detections scoring >= this, in [0, 1].
        batch_size: images per forward pass (results do not depend on it beyond float rounding).
        amp: bfloat16 autocast.
        draw: write one PNG per image (boxes, names, scores) mirroring the inputs' paths.
        progress: show a tqdm bar (rank 0).
        top_k: at most this many detections per image, the best.

    Returns:
        `PredictSummary`. `detections.json` holds {"threshold", "top_k", "categories", "images" [{"id",
        "file_name", "width", "height", "drawing", "detections": [`Detections.to_dict()` items {"box_xyxy",
        "label", "name", "score"}]}], "errors" [{"file", "error"}], "skipped"}; image ids are 1.. in input
        order (`eval --predictions` reads this file). Under torchrun every rank returns the whole summary and
        rank 0 writes the file.

    Raises:
        DatasetError: the inputs name no image at all ("no images found", naming each input); nothing is written.
    """
    threshold, top_k = check_threshold(threshold), check_top_k(top_k)
    files = collect_image_files(inputs)
    if not files.files:  # nothing to do: refuse before writing anything
        named = "; ".join(f"{m['file']}: {m['error']}" for m in files.missing) or "no input given"
        raise DatasetError(
            f"no images found ({named}); give image files, folders holding images, or globs that match them"
        )
    out = check_output_folder(out_dir, files.files, overwrite, files.outputs if draw else ())
    rank, world = distributed.rank(), distributed.world_size()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    batches = [
        list(range(start, min(start + batch_size, len(files.files))))
        for start in range(0, len(files.files), batch_size)
    ]
    mine = batches[rank::world]
    records = []
    with tqdm(
        total=sum(map(len, mine)), unit="img", desc="predict", disable=not (progress and rank == 0), delay=0.5
    ) as bar:
        for indices in mine:
            records.extend(_process_batch(model, files, indices, out, threshold, top_k, amp, draw))
            bar.update(len(indices))
    if world > 1:
        gathered: list[list[dict[str, Any]] | None] = [None] * world
        dist.all_gather_object(gathered, records)
        records = [record for part in gathered for record in part]
    summary = PredictSummary(out, out / "detections.json", skipped=files.skipped)
    records.sort(key=lambda record: record["index"])
    summary.errors = files.missing + [
        {"file": str(files.files[r["index"]]), "error": r["error"]} for r in records if "error" in r
    ]
    images = [{"id": image_id, **r["image"]} for image_id, r in enumerate((r for r in records if "image" in r), 1)]
    summary.images, summary.detections = len(images), sum(len(image["detections"]) for image in images)
    result = {
        "threshold": threshold,
        "top_k": top_k,
        "categories": model.categories,
        "images": images,
        "errors": summary.errors,
        "skipped": summary.skipped,
    }
    if rank == 0:
        write_atomic(summary.detections_file, lambda path: path.write_text(json.dumps(result, indent=1) + "\n"))
    if world > 1:
        dist.barrier()  # the file exists when any rank returns
    return summary
