"""COCO box evaluation (pycocotools) of detections against a COCO-format ground truth.

Metrics are pycocotools' `COCOeval(iouType="bbox")` summary, unchanged: AP averaged over IoU
0.50:0.05:0.95 with 101-point interpolated precision, at most 100 detections per image, size
buckets by the ground truth's `area` field (small < 32^2, medium, large > 96^2 px^2). A metric
is -1 where it is undefined (no ground truth in that bucket), as in pycocotools.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from numbers import Real
from pathlib import Path

import torch

from deformable_detr.errors import DatasetError
from deformable_detr.pipeline.detections import boxes_xyxy_to_xywh

# Order of COCOeval.stats for iouType="bbox".
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_METRIC_DESCRIPTIONS = {
    "AP": "IoU 0.50:0.95, all sizes",
    "AP50": "IoU 0.50",
    "AP75": "IoU 0.75",
    "APs": "small (< 32^2 px)",
    "APm": "medium",
    "APl": "large (> 96^2 px)",
    "AR1": "1 detection per image",
    "AR10": "10 detections per image",
    "AR100": "100 detections per image",
    "ARs": "small, 100 dets",
    "ARm": "medium, 100 dets",
    "ARl": "large, 100 dets",
}


def evaluate_detections(
    ground_truth: str | Path | dict,
    detections: str | Path | list[dict],
    verbose: bool = False,
) -> dict[str, float]:
    """COCO box AP/AR of `detections` against `ground_truth`.

    Args:
        ground_truth: COCO instances dict or path to its JSON (`images`, `annotations`,
            `categories`; `iscrowd` defaults to 0 and `area` to the box area where missing).
        detections: COCO results, a list of {"image_id": int, "category_id": int,
            "bbox": [x, y, w, h] pixels, "score": float}, or the path of such a JSON list.
            An empty list is valid: every defined metric is then 0. `deformable-detr predict`'s
            `detections.json` ({"images": [{"file_name", "detections": [{"box_xyxy", "label", ...}]}], ...},
            label = category id) is read too: its images are matched to the ground truth's by file name (the path's tail that equals a ground-truth `file_name`).
        verbose: print pycocotools' own progress and summary (silenced otherwise).

    Returns:
        {name: float} for the names in `METRIC_NAMES` (AP, AP50, AP75, APs, APm, APl, AR1, AR10,
        AR100, ARs, ARm, ARl), each in [0, 1], or -1 where undefined.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: malformed JSON or a detection with an unknown image_id/category_id, a bbox that
            is not 4 finite numbers with w, h >= 0, or a non-finite score (the message names its index).
    """
    from pycocotools.coco import COCO  # imported here: pycocotools is only needed to evaluate
    from pycocotools.cocoeval import COCOeval

    gt = _prepared_ground_truth(
        _load_json(ground_truth, "ground truth") if not isinstance(ground_truth, dict) else ground_truth
    )
    results = _load_json(detections, "detections") if isinstance(detections, (str, Path)) else detections
    if isinstance(results, dict) and "images" in results:
        results = _with_ground_truth_image_ids(results, gt["images"])
    results = _checked_detections(results, {im["id"] for im in gt["images"]}, {c["id"] for c in gt["categories"]})
    output = io.StringIO()
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(output):
        coco_gt = _coco_from_dict(COCO, gt)
        coco_dt = _coco_from_dict(
            COCO, {"images": gt["images"], "categories": gt["categories"], "annotations": results}
        )
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats)}


def format_metrics_table(metrics: dict[str, float]) -> str:
    """Metrics as an aligned text table: one row per metric, value in percent (n/a where -1)."""
    lines = [f"{'metric':<7} {'%':>6}  meaning (values in percent)", f"{'-' * 7} {'-' * 6}  {'-' * 24}"]
    for name, value in metrics.items():
        shown = "n/a" if value < 0 else f"{100 * value:.1f}"
        lines.append(f"{name:<7} {shown:>6}  {_METRIC_DESCRIPTIONS.get(name, '')}".rstrip())
    return "\n".join(lines)


def _load_json(path: str | Path, what: str):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} file not found; check the path") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error}); fix or regenerate the {what} file") from None


def _prepared_ground_truth(gt: dict) -> dict:
    """A copy of the instances dict with the fields COCOeval needs (`iscrowd`, `area`) filled in."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise DatasetError(
                f"ground truth: missing list '{key}'; a COCO instances dict needs images, annotations, categories"
            )
    annotations = []
    for index, ann in enumerate(gt["annotations"]):
        if not _is_box(ann.get("bbox")):
            raise DatasetError(
                f"ground truth: annotations[{index}].bbox = {ann.get('bbox')!r} is not 4 numbers [x, y, w, h]; run check-data"
            )
        filled = {"iscrowd": 0, "area": float(ann["bbox"][2] * ann["bbox"][3]), **ann, "id": ann.get("id", index + 1)}
        annotations.append(filled)
    return {**gt, "annotations": annotations}


def _with_ground_truth_image_ids(predicted: dict, gt_images: list[dict]) -> list[dict]:
    """The detections of a `predict` output file with image ids replaced by the ground truth's, matched by file
    name: a predicted image's path matches the ground-truth image whose `file_name` is its longest tail, and
    where both record width and height they must agree (else it is another image of the same name)."""
    by_name = {str(Path(image["file_name"]).as_posix()): image for image in gt_images}
    ids = {}
    for index, image in enumerate(predicted["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DatasetError(f"detections: images[{index}] needs 'id' and 'file_name' (a predict output file)")
        parts = Path(image["file_name"]).parts
        tails = ("/".join(parts[start:]) for start in range(len(parts)))
        match = next((by_name[tail] for tail in tails if tail in by_name), None)
        if match is None:
            raise DatasetError(
                f"detections: image {image['file_name']!r} is not in the ground truth (no file_name is a tail of its "
                "path); predict the annotated images, or pass COCO results with the annotations' image ids"
            )
        predicted_size = (image.get("width"), image.get("height"))
        annotated_size = (match.get("width"), match.get("height"))
        if None not in predicted_size + annotated_size and predicted_size != annotated_size:
            raise DatasetError(
                f"detections: image {image['file_name']!r} is {predicted_size[0]}x{predicted_size[1]} px but the "
                f"ground truth's {match['file_name']!r} is {annotated_size[0]}x{annotated_size[1]}: a different image "
                "with the same name; predict the annotated images"
            )
        ids[image["id"]] = match["id"]
    results = []
    for index, image in enumerate(predicted["images"]):
        items = image.get("detections")
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and _is_box(item.get("box_xyxy")) and "label" in item and "score" in item
            for item in items
        ):
            raise DatasetError(
                f"detections: images[{index}].detections must be a list of {{'box_xyxy': [x0, y0, x1, y1], 'label', "
                "'score'}} (a predict output file)"
            )
        if not items:
            continue
        boxes_xywh = boxes_xyxy_to_xywh(torch.tensor([item["box_xyxy"] for item in items], dtype=torch.float64))
        results.extend(
            {"image_id": ids[image["id"]], "category_id": item["label"], "bbox": box, "score": item["score"]}
            for item, box in zip(items, boxes_xywh.tolist())
        )
    return results


def _checked_detections(detections, image_ids: set, category_ids: set) -> list[dict]:
    """Validated copies of COCO result dicts, with the fields pycocotools' loadRes would add."""
    if not isinstance(detections, list):
        raise DatasetError(f"detections: expected a list of result dicts, got {type(detections).__name__}")
    checked = []
    for index, det in enumerate(detections):
        where = f"detections[{index}]"
        if not isinstance(det, dict):
            raise DatasetError(
                f"{where}: expected a dict with image_id, category_id, bbox, score; got {type(det).__name__}"
            )
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in det:
                raise DatasetError(f"{where}: missing '{key}'; each detection needs image_id, category_id, bbox, score")
        if det["image_id"] not in image_ids:
            raise DatasetError(
                f"{where}: image_id {det['image_id']!r} is not in the ground truth; match the annotations' image ids"
            )
        if det["category_id"] not in category_ids:
            raise DatasetError(
                f"{where}: category_id {det['category_id']!r} is not in the ground truth (known: {sorted(category_ids)}); "
                "map labels to COCO category ids"
            )
        bbox = det["bbox"]
        if not _is_box(bbox) or bbox[2] < 0 or bbox[3] < 0:
            raise DatasetError(f"{where}: bbox {bbox!r} must be 4 finite numbers [x, y, w, h] with w, h >= 0")
        if not isinstance(det["score"], Real) or not math.isfinite(det["score"]):
            raise DatasetError(f"{where}: score {det['score']!r} must be a finite number")
        x, y, w, h = (float(v) for v in bbox)
        checked.append(
            {
                "id": index + 1,
                "image_id": det["image_id"],
                "category_id": det["category_id"],
                "bbox": [x, y, w, h],
                "score": float(det["score"]),
                "area": w * h,
                "iscrowd": 0,
            }
        )
    return checked


def _is_box(bbox) -> bool:
    return (
        isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    )


def _coco_from_dict(coco_class, dataset: dict):
    """A pycocotools COCO object indexing `dataset` (a deep copy; COCO never mutates our input)."""
    coco = coco_class()
    coco.dataset = copy.deepcopy(dataset)
    coco.createIndex()
    return coco
