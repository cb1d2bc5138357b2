"""COCO box AP of a model on a dataset: `evaluate(model, loader, ...)` and `evaluate_checkpoint(path, data)`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.coco import CocoDetection, DatasetError, collate
from ..data.transforms import make_transforms
from ..models.predict import forward_unpadded
from .coco_eval import evaluate_detections


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data_loader: DataLoader,
    ground_truth,
    label_to_category_id: list[int | None],
    device: torch.device | str = "cpu",
    amp: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """COCO box AP of `model` on every image of `data_loader`.

    Every image is evaluated as if alone: the collated batch is cut back to each image's own size and run
    as `model.predict` runs it (`forward_unpadded`), because the backbone and the input projections'
    GroupNorm see a padded batch's zeros. AP therefore does not depend on the batch size or on which
    images share a batch, and equals `predict --threshold 0` + `eval --predictions` on the same images.

    Args:
        model: the detector (unwrapped, not DDP); put in eval mode here and left in eval mode.
        data_loader: yields `collate` batches of a `CocoDetection`.
        ground_truth: COCO instances dict or path (for pycocotools).
        label_to_category_id: contiguous label -> COCO category id; None drops that label's detections
            (a class the ground truth does not have, e.g. COCO's unused ids of a 91-class model).
        amp: bf16 autocast for the forward pass.

    Returns:
        dict with AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (0..1; -1 where undefined).
    """
    device = torch.device(device)
    model.eval()
    results = []
    for images, padding_mask, targets in tqdm(data_loader, desc="eval", leave=False, disable=not progress):
        valid = ~padding_mask  # (B, H, W)
        heights, widths = valid.any(2).sum(1).tolist(), valid.any(1).sum(1).tolist()
        tensors = [image[:, :height, :width] for image, height, width in zip(images, heights, widths)]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = forward_unpadded(model, tensors)
        outputs = {k: v.float() for k, v in outputs.items() if k in ("pred_logits", "pred_boxes")}
        target_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)  # (B, 2) (h, w)
        for target, detections in zip(targets, model.postprocess(outputs, target_sizes)):
            boxes_xyxy = detections["boxes"].cpu()
            boxes_xywh = torch.cat([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], dim=1)  # (N, 4)
            for score, label, box in zip(
                detections["scores"].tolist(), detections["labels"].tolist(), boxes_xywh.tolist()
            ):
                if label_to_category_id[label] is None:
                    continue
                results.append(
                    {
                        "image_id": target["image_id"],
                        "category_id": label_to_category_id[label],
                        "bbox": [round(x, 2) for x in box],
                        "score": round(score, 5),
                    }
                )
    return evaluate_detections(ground_truth, results)


def dataset_split(data_dir: str | Path, annotations_file: str | Path | None = None) -> tuple[Path, Path]:
    """(images_dir, annotations_file) of a dataset folder: DIR/val/ if it has one, else DIR itself.

    With `annotations_file` given, the images are the `images/` folder beside it.

    Raises:
        DatasetError: DIR is a YOLO or Pascal VOC dataset (COCO is read here): the message gives the
            `deformable-detr convert` command that makes a COCO copy.
    """
    if annotations_file is not None:
        return Path(annotations_file).parent / "images", Path(annotations_file)
    data_dir = Path(data_dir)
    split = data_dir / "val" if (data_dir / "val" / "annotations.json").is_file() else data_dir
    if not (split / "annotations.json").is_file():
        _refuse_other_formats(data_dir)
    return split / "images", split / "annotations.json"


def _refuse_other_formats(data_dir: Path) -> None:
    """Raise, with the convert command, when `data_dir` is a YOLO or Pascal VOC dataset."""
    from ..data.formats import detect_format

    try:
        found = detect_format(data_dir)
    except DatasetError:
        return  # not a dataset at all: the missing annotations file is reported where it is opened
    if found in ("yolo", "voc"):
        name = {"yolo": "YOLO", "voc": "Pascal VOC"}[found]
        named = data_dir if data_dir.name else data_dir.resolve()  # "." has no name
        converted = named.with_name(f"{named.name}_coco")
        raise DatasetError(
            f"{data_dir}: is a {name} dataset; eval --checkpoint reads COCO: convert it first with "
            f"`deformable-detr convert {data_dir} --to coco {converted}`, then pass --data {converted}"
        )


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    images_dir: str | Path,
    annotations_file: str | Path,
    device: str = "cpu",
    batch_size: int = 8,
    workers: int = 0,
    progress: bool = True,
    amp: bool = False,
) -> dict[str, float]:
    """COCO AP of a model on a COCO-format dataset, at the model's own preprocessing sizes.

    Args:
        checkpoint_path: anything `deformable_detr.load` reads (training checkpoint or run folder,
            save_pretrained folder, official .pth, Hugging Face folder).
        amp: bf16 autocast for the forward pass.

    Returns:
        dict with AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl.
    """
    from ..inference.loader import load

    model = load(checkpoint_path, device)
    preprocess = model.preprocess
    transforms = make_transforms(
        False, max_size=preprocess.max_size, val_size=preprocess.min_size, mean=preprocess.mean, std=preprocess.std
    )
    dataset = CocoDetection(images_dir, annotations_file, transforms)
    model_ids = [category["id"] for category in model.categories]
    dataset_ids = {category["id"] for category in dataset.categories}
    unknown = sorted(dataset_ids - set(model_ids))
    if unknown:
        raise DatasetError(
            f"{annotations_file}: category ids {unknown[:10]} are not among the {len(model_ids)} "
            f"categories the model predicts; evaluate on data with the model's categories"
        )
    label_to_category_id = [cid if cid in dataset_ids else None for cid in model_ids]
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers)
    return evaluate(model, loader, str(annotations_file), label_to_category_id, device, amp, progress)
