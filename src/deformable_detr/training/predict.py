"""Detections on image files with a trained checkpoint: COCO-style records and drawn images."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.coco import collate, load_rgb_image
from ..data.transforms import make_transforms
from ..viz.detections import draw_detections


@torch.no_grad()
def predict_images(model, config, categories: list[dict], image_paths: list[str | Path], score_threshold: float = 0.3,
                   device: str | torch.device = "cpu") -> tuple[list[dict], list]:
    """Run `model` on each image at the training config's validation size.

    Args:
        model: a DeformableDETR in eval mode; config: its TrainConfig; categories: label-ordered
            COCO categories (`id`, `name`).
        image_paths: image files (EXIF orientation applied, converted to RGB).
        score_threshold: keep detections scoring at least this.

    Returns:
        records: one dict per image: `file`, `width`, `height`, `detections` (list of
        {"category_id", "category", "score", "bbox_xyxy" (pixels of the original image)});
        drawn: PIL images with the kept detections drawn.
    """
    transforms = make_transforms(False, config.train_scales, config.max_size, val_size=config.val_size)
    names = [c["name"] for c in categories]
    records, drawn = [], []
    for path in image_paths:
        image = load_rgb_image(Path(path))
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                 "size": torch.tensor([image.height, image.width])}
        images, padding_mask, _ = collate([transforms(image, empty)])
        outputs = model(images.to(device), padding_mask.to(device))
        target_sizes = torch.tensor([[image.height, image.width]], device=images.device)
        detections = model.postprocess(outputs, target_sizes, score_threshold=score_threshold)[0]
        boxes, labels, scores = detections["boxes"].tolist(), detections["labels"].tolist(), detections["scores"].tolist()
        records.append({
            "file": str(path), "width": image.width, "height": image.height,
            "detections": [{"category_id": categories[l]["id"], "category": names[l], "score": round(s, 4),
                            "bbox_xyxy": [round(v, 1) for v in b]} for b, l, s in zip(boxes, labels, scores)],
        })
        drawn.append(draw_detections(image, boxes, labels, scores, names))
    return records, drawn
