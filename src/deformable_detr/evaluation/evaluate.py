"""COCO box AP of a model on a dataset: `evaluate(model, loader, ...)` and `evaluate_checkpoint(path, data)`."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.coco import CocoDetection, DatasetError, collate
from ..data.transforms import make_transforms
from ..models.categories import category_key, category_mapping, duplicate_names
from ..pipeline.categories import default_categories
from ..pipeline.detections import boxes_xyxy_to_xywh
from ..pipeline.run import forward_unpadded
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
            boxes_xywh = boxes_xyxy_to_xywh(detections["boxes"].cpu())  # (N, 4) COCO's [x, y, w, h]
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
    from ..inference.load import load

    model = load(checkpoint_path, device)
    preprocess = model.preprocess
    transforms = make_transforms(
        False, max_size=preprocess.max_size, val_size=preprocess.min_size, mean=preprocess.mean, std=preprocess.std
    )
    dataset = CocoDetection(images_dir, annotations_file, transforms)
    label_to_category_id = match_categories(model.categories, dataset.categories, str(annotations_file))
    ground_truth = _ground_truth_of(dataset.coco, {cid for cid in label_to_category_id if cid is not None})
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers)
    return evaluate(model, loader, ground_truth, label_to_category_id, device, amp, progress)


def match_categories(
    model_categories: list[dict], data_categories: list[dict], source: str = "data"
) -> list[int | None]:
    """Model label -> the data's category id, matched by name as `train --init` matches (case and spaces ignored).

    Ids may differ: a model trained with circle = 1 scores the data's circle whatever its id. The data's
    classes the model does not know are left out of the AP (a warning lists them); the model's classes
    the data does not have are dropped (None). A model without class names (`default_categories`:
    "class_1".."class_K", e.g. an HF folder without id2label) is matched by id, with a warning.

    Args:
        model_categories: [{"id", "name"}] in the model's label order.
        data_categories: the dataset's [{"id", "name"}].
        source: how messages name the data (its annotations file).

    Returns:
        One entry per model label: the data's category id, or None.

    Raises:
        DatasetError: no class is shared, or a shared name is held by two categories of one side.
    """
    model_names = ", ".join(_names(model_categories))
    data_names = ", ".join(_names(data_categories))
    sides = (("model", model_categories, data_categories), ("data", data_categories, model_categories))
    for side, categories, other in sides:
        other_keys = {category_key(category.get("name")) for category in other}
        for key, group in duplicate_names(categories).items():
            if key in other_keys:
                raise DatasetError(
                    f"{source}: the {side} has {len(group)} classes named {key!r} once case and spaces are ignored "
                    f"(ids {[c['id'] for c in group]}: {[c.get('name') for c in group]}), so that name matches "
                    "no single class; give each class a distinct name"
                )
    mapping = category_mapping(model_categories, data_categories)  # {data label: model label}
    label_to_category_id: list[int | None] = [None] * len(model_categories)
    for data_label, model_label in mapping.items():
        label_to_category_id[model_label] = data_categories[data_label]["id"]
    nameless = len(model_categories) != 91 and list(model_categories) == default_categories(len(model_categories))
    if not mapping and nameless:
        data_ids = {category["id"] for category in data_categories}
        label_to_category_id = [c["id"] if c["id"] in data_ids else None for c in model_categories]
        if any(cid is not None for cid in label_to_category_id):
            warnings.warn(
                f"{source}: the model's {len(model_categories)} classes carry no names (class_1..class_"
                f"{len(model_categories)}); they were matched to the data's categories by id",
                stacklevel=3,
            )
    matched = {cid for cid in label_to_category_id if cid is not None}
    if not matched:
        raise DatasetError(
            f"{source}: no class of the data is one of the model's (matched by "
            f"{'id, the model having no class names' if nameless else 'name, ignoring case'}): the model "
            f"predicts {len(model_categories)} classes ({model_names}), the data has {len(data_categories)} "
            f"({data_names}); evaluate on data annotated with the model's classes, or fine-tune on this data "
            "first (train --init CHECKPOINT)"
        )
    unknown = [category for category in data_categories if category["id"] not in matched]
    if unknown:
        warnings.warn(
            f"{source}: {len(unknown)} of the data's {len(data_categories)} classes are not among the model's "
            f"and are left out of the AP ({', '.join(_names(unknown))}); the AP is over the {len(matched)} "
            "shared classes",
            stacklevel=3,
        )
    return label_to_category_id


def _names(categories: list[dict], limit: int = 8) -> list[str]:
    """The first `limit` names, then "... (N more)"."""
    names = [str(category.get("name")) for category in categories[:limit]]
    return names + ([f"... ({len(categories) - limit} more)"] if len(categories) > limit else [])


def _ground_truth_of(coco: dict, category_ids: set[int]) -> dict:
    """The instances dict restricted to `category_ids` (categories and their annotations)."""
    return {
        **coco,
        "categories": [c for c in coco["categories"] if c["id"] in category_ids],
        "annotations": [a for a in coco["annotations"] if a.get("category_id") in category_ids],
    }
