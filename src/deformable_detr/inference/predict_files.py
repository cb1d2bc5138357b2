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
from typing import TYPE_CHECKING, Any

import torch.distributed as dist
from tqdm import tqdm

from deformable_detr.checkpoint.files import write_atomic
from deformable_detr.data.images import load_rgb_image
from deformable_detr.errors import DatasetError
from deformable_detr.inference.inputs import ImageFiles, check_output_folder, collect_image_files
from deformable_detr.models.predict import check_threshold
from deformable_detr.util import distributed
from deformable_detr.viz.detections import draw_detections

if TYPE_CHECKING:
    from deformable_detr.models.detector import DeformableDETR

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


def _round(values: list[float], digits: int) -> list[float]:
    return [round(v, digits) for v in values]


def _process_batch(
    model: DeformableDETR, files: ImageFiles, indices: list[int], out: Path, threshold: float, amp: bool, draw: bool
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
    found = model.predict(pictures, threshold=threshold, batch_size=len(pictures), amp=amp)
    for index, picture, detections in zip(good, pictures, found):
        height, width = detections.image_size
        record = {
            "index": index,
            "image": {"file_name": str(files.files[index]), "width": width, "height": height},
            "detections": [
                {
                    "category_id": category_id,
                    "category_name": name,
                    "bbox": _round([x0, y0, x1 - x0, y1 - y0], 2),
                    "score": round(score, 5),
                }
                for (x0, y0, x1, y1), score, category_id, name in zip(
                    detections.boxes.tolist(), detections.scores.tolist(), detections.category_ids, detections.names
                )
            ],
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
    model: DeformableDETR,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    threshold: float = 0.5,
    batch_size: int = 8,
    amp: bool = False,
    draw: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> PredictSummary:
    """Run `model.predict` over image files, folders and globs; write detections.json and drawings.

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

    Returns:
        `PredictSummary`. `detections.json` holds {"categories", "images" [{"id", "file_name", "width",
        "height", "drawing"}], "detections" [COCO results {"image_id", "category_id", "category_name",
        "bbox" [x, y, w, h], "score"}], "errors" [{"file", "error"}], "skipped", "threshold"};
        image ids are 1.. in input order. Under torchrun every rank returns the whole summary and
        rank 0 writes the file.

    Raises:
        DatasetError: the inputs name no image at all ("no images found", naming each input); nothing is written.
    """
    threshold = check_threshold(threshold)
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
            records.extend(_process_batch(model, files, indices, out, threshold, amp, draw))
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
    images, detections = [], []
    for image_id, record in enumerate((r for r in records if "image" in r), start=1):
        images.append({"id": image_id, **record["image"]})
        detections.extend({"image_id": image_id, **d} for d in record["detections"])
    summary.images, summary.detections = len(images), len(detections)
    result = {
        "threshold": threshold,
        "categories": model.categories,
        "images": images,
        "detections": detections,
        "errors": summary.errors,
        "skipped": summary.skipped,
    }
    if rank == 0:
        write_atomic(summary.detections_file, lambda path: path.write_text(json.dumps(result, indent=1) + "\n"))
    if world > 1:
        dist.barrier()  # the file exists when any rank returns
    return summary
