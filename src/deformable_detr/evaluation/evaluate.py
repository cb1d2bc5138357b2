"""COCO box AP of a model on a dataset: `evaluate(model, loader, ...)` and `evaluate_checkpoint(path, data)`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.coco import CocoDetection, DatasetError, collate
from ..data.transforms import make_transforms
from .coco_eval import evaluate_detections


@torch.no_grad()
def evaluate(model: torch.nn.Module, data_loader: DataLoader, ground_truth, label_to_category_id: list[int],
             device: torch.device | str = "cpu", amp: bool = False, progress: bool = False) -> dict[str, float]:
    """COCO box AP of `model` on every image of `data_loader`.

    Args:
        model: the detector (unwrapped, not DDP); put in eval mode here and left in eval mode.
        data_loader: yields `collate` batches of a `CocoDetection`.
        ground_truth: COCO instances dict or path (for pycocotools).
        label_to_category_id: contiguous label -> COCO category id.
        amp: bf16 autocast for the forward pass.

    Returns:
        dict with AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (0..1; -1 where undefined).
    """
    device = torch.device(device)
    model.eval()
    results = []
    for images, padding_mask, targets in tqdm(data_loader, desc="eval", leave=False, disable=not progress):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = model(images.to(device), padding_mask.to(device))
        outputs = {k: v.float() for k, v in outputs.items() if k in ("pred_logits", "pred_boxes")}
        target_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)  # (B, 2) (h, w)
        for target, detections in zip(targets, model.postprocess(outputs, target_sizes)):
            boxes_xyxy = detections["boxes"].cpu()
            boxes_xywh = torch.cat([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], dim=1)  # (N, 4)
            for score, label, box in zip(detections["scores"].tolist(), detections["labels"].tolist(), boxes_xywh.tolist()):
                results.append({"image_id": target["image_id"], "category_id": label_to_category_id[label],
                                "bbox": [round(x, 2) for x in box], "score": round(score, 5)})
    return evaluate_detections(ground_truth, results)


def dataset_split(data_dir: str | Path, annotations_file: str | Path | None = None) -> tuple[Path, Path]:
    """(images_dir, annotations_file) of a dataset folder: DIR/val/ if it has one, else DIR itself.

    With `annotations_file` given, the images are the `images/` folder beside it.
    """
    if annotations_file is not None:
        return Path(annotations_file).parent / "images", Path(annotations_file)
    data_dir = Path(data_dir)
    split = data_dir / "val" if (data_dir / "val" / "annotations.json").is_file() else data_dir
    return split / "images", split / "annotations.json"


def evaluate_checkpoint(checkpoint_path: str | Path, images_dir: str | Path, annotations_file: str | Path,
                        device: str = "cpu", batch_size: int = 8, workers: int = 0, progress: bool = True) -> dict[str, float]:
    """COCO AP of a trained checkpoint (file or run folder) on a COCO-format dataset, at its validation size.

    Returns:
        dict with AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl.
    """
    from ..training.checkpoint import load_trained_model

    model, config, _ = load_trained_model(checkpoint_path, device)
    transforms = make_transforms(False, config.train_scales, config.max_size, val_size=config.val_size)
    dataset = CocoDetection(images_dir, annotations_file, transforms)
    if dataset.num_classes != config.model.num_classes:
        raise DatasetError(f"{annotations_file}: {dataset.num_classes} categories, but the checkpoint predicts "
                           f"{config.model.num_classes}; evaluate on data with the training categories")
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers)
    return evaluate(model, loader, str(annotations_file), dataset.label_to_category_id, device, config.amp, progress)
