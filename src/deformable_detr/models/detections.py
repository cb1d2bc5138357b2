"""`Detections`: what `DeformableDETR.predict` returns for one image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Detections:
    """The detections of one image, highest score first, in the pixels of the image as given.

    boxes: (N, 4) float32 (x0, y0, x1, y1) in pixels of the original image (before any resizing).
    scores: (N,) float32 in (0, 1].
    labels: (N,) int64, the model's class index 0..K-1.
    category_ids: N dataset category ids (`model.categories[label]["id"]`).
    names: N category names (`model.categories[label]["name"]`).
    image_size: (height, width) of the original image in pixels.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    category_ids: list[int]
    names: list[str]
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_coco(self, image_id: int | str) -> list[dict[str, Any]]:
        """COCO results: one {"image_id", "category_id", "bbox" [x, y, w, h] pixels, "score"} per detection."""
        records = []
        for box, score, category_id in zip(self.boxes.tolist(), self.scores.tolist(), self.category_ids):
            x0, y0, x1, y1 = box
            records.append(
                {"image_id": image_id, "category_id": category_id, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
            )
        return records

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: {"image_size": [h, w], "detections": [{"box_xyxy", "score", "label",
        "category_id", "name"}, ...]}."""
        return {
            "image_size": list(self.image_size),
            "detections": [
                {"box_xyxy": box, "score": score, "label": label, "category_id": category_id, "name": name}
                for box, score, label, category_id, name in zip(
                    self.boxes.tolist(), self.scores.tolist(), self.labels.tolist(), self.category_ids, self.names
                )
            ],
        }
