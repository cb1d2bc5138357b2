"""`Detections`: what `predict` returns for one image, and the ONE JSON form of a detection.

`Detections.to_dict()` is the schema that every output uses (the Python API, `predict`'s detections.json,
`serve`'s /v1/detect and /v1/explain, `explain`'s JSON):

    {"detections": [{"box_xyxy": [x0, y0, x1, y1], "label": 18, "name": "dog", "score": 0.93}, ...]}

box_xyxy in pixels of the image as given (before any resizing); label the category id
(`model.categories[k]["id"]`, the id of the annotation files the model was trained on); name its name;
score in (0, 1]; best first. COCO's [x, y, w, h] appears only where COCO results are written
(evaluation), through `boxes_xyxy_to_xywh`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def boxes_xyxy_to_xywh(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """(N, 4) (x0, y0, x1, y1) -> (N, 4) (x0, y0, x1 - x0, y1 - y0): COCO's box format, same units."""
    x0, y0, x1, y1 = boxes_xyxy.unbind(-1)
    return torch.stack((x0, y0, x1 - x0, y1 - y0), -1)


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

    @classmethod
    def from_postprocessed(
        cls, found: dict[str, torch.Tensor], image_size: tuple[int, int], categories: list[dict[str, Any]]
    ) -> Detections:
        """One image's entry of `model.postprocess` (already thresholded there), named by `categories`.

        Args:
            found: "scores" (N,), "labels" (N,) in 0..K-1, "boxes" (N, 4) (x0, y0, x1, y1) in pixels.
            image_size: (height, width) of the image as given.
            categories: the model's categories, label order.
        """
        labels = found["labels"].cpu()
        return cls(
            boxes=found["boxes"].float().cpu(),
            scores=found["scores"].float().cpu(),
            labels=labels,
            category_ids=[categories[label]["id"] for label in labels.tolist()],
            names=[categories[label]["name"] for label in labels.tolist()],
            image_size=image_size,
        )

    def to_coco(self, image_id: int | str) -> list[dict[str, Any]]:
        """COCO results: one {"image_id", "category_id", "bbox" [x, y, w, h] pixels, "score"} per detection."""
        return [
            {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}
            for box, score, category_id in zip(
                boxes_xyxy_to_xywh(self.boxes).tolist(), self.scores.tolist(), self.category_ids
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (see the module docstring): {"detections": [{"box_xyxy", "label", "name", "score"}]}."""
        return {
            "detections": [
                {"box_xyxy": box, "label": category_id, "name": name, "score": score}
                for box, category_id, name, score in zip(
                    self.boxes.tolist(), self.category_ids, self.names, self.scores.tolist()
                )
            ]
        }
