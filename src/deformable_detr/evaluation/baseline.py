"""A trivial, honest baseline: the floor any trained detector must beat on a COCO-format dataset.

It looks at no pixels. For every image it predicts, for each category, that category's mean box
from the training set (centre and size relative to the image), scored by the category's share
of the training annotations.
"""

from __future__ import annotations

from collections import defaultdict


def mean_box_detections(train: dict, images: list[dict]) -> list[dict]:
    """COCO results predicting each category's mean training box on every image.

    Args:
        train: COCO instances dict of the training split (`images`, `annotations`, `categories`).
        images: image entries (`id`, `width`, `height`) to predict on, e.g. the val split's `images`.

    Returns:
        COCO result dicts {"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score" in (0, 1]},
        one per (image, category with training boxes).
    """
    sizes = {im["id"]: (im["width"], im["height"]) for im in train["images"]}
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])  # category -> sum of cx, cy, w, h
    counts: dict[int, int] = defaultdict(int)
    for ann in train["annotations"]:
        width, height = sizes[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        box_cxcywh = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)  # normalized to the image
        sums[ann["category_id"]] = [s + v for s, v in zip(sums[ann["category_id"]], box_cxcywh)]
        counts[ann["category_id"]] += 1
    total = sum(counts.values())
    detections = []
    for image in images:
        for category_id in sorted(counts):
            cx, cy, w, h = (s / counts[category_id] for s in sums[category_id])
            box = [
                (cx - w / 2) * image["width"],
                (cy - h / 2) * image["height"],
                w * image["width"],
                h * image["height"],
            ]
            detections.append(
                {"image_id": image["id"], "category_id": category_id, "bbox": box, "score": counts[category_id] / total}
            )
    return detections
