"""COCO-format detection dataset and the batch collate function.

Layout: an images folder plus an instances JSON (`images`, `annotations`, `categories`). COCO
category ids (any integers) map to contiguous labels 0..K-1 in sorted id order, and back with
`label_to_category_id`. Crowd annotations (`iscrowd` = 1) are ignored, as DETR does for training.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import DatasetError
from ..pipeline.decode import load_rgb_image
from .split import DatasetSplit
from .transforms import ToTensorNormalize

__all__ = ["CocoDetection", "DatasetError", "collate", "load_rgb_image"]
_IMAGE_HINT = "replace the file or remove its entry from the annotations (`train --skip-bad` leaves such images out)"


class CocoDetection(torch.utils.data.Dataset):
    """(image, target) pairs from a COCO instances file.

    Args:
        images_dir: folder holding the files named by `images[*].file_name`.
        annotations_file: COCO instances JSON, or the instances dict itself (e.g. `DatasetSplit.coco`
            of a YOLO or VOC dataset read into COCO form).
        transforms: callable (PIL image, target with xyxy pixel boxes) -> (tensor, target), e.g.
            `make_transforms(train=True)`; None -> `ToTensorNormalize()` only.
        name: how messages name an instances dict (default "annotations").

    Item: image (3, H, W) float32 normalized; target dict with `boxes` (T, 4) float32 cxcywh
    normalized to the image, `labels` (T,) int64 contiguous, `image_id` int, `orig_size` (2,) int64
    (h, w) of the image file (its JSON size), `size` (2,) int64 (h, w) after the transforms.
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotations_file: str | Path | dict,
        transforms: Callable | None = None,
        name: str | None = None,
    ):
        self.images_dir = Path(images_dir)
        self.transforms = transforms if transforms is not None else ToTensorNormalize()
        if isinstance(annotations_file, dict):
            coco = annotations_file
            self.annotations_file = Path(name or "annotations")
        else:
            self.annotations_file = Path(annotations_file)
            coco = read_json(self.annotations_file)
        self.coco = coco
        try:
            self._index(coco)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, DatasetError):
                raise
            raise DatasetError(
                f"{self.annotations_file}: malformed COCO entry ({type(error).__name__}: {error}); "
                "`deformable-detr check-data` lists every problem"
            ) from None
        self._warned_degenerate = False

    def _index(self, coco: dict) -> None:
        if not isinstance(coco, dict):
            raise DatasetError(
                f"{self.annotations_file}: top level must be an object with images, annotations, categories"
            )
        for key in ("images", "annotations", "categories"):
            if not isinstance(coco.get(key), list):
                raise DatasetError(
                    f"{self.annotations_file}: missing top-level list '{key}'; a COCO instances file needs images, annotations, categories"
                )
        self.categories = sorted(coco["categories"], key=lambda c: c["id"])
        self.label_to_category_id = [c["id"] for c in self.categories]
        self.category_id_to_label = {cid: label for label, cid in enumerate(self.label_to_category_id)}
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        self.annotations_by_image: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for index, ann in enumerate(coco["annotations"]):
            if ann.get("iscrowd", 0):
                continue
            if ann["category_id"] not in self.category_id_to_label:
                raise DatasetError(
                    f"{self.annotations_file}: annotation {index} has category_id {ann['category_id']} not in categories "
                    f"{self.label_to_category_id}; add the category or fix the id"
                )
            self.annotations_by_image.setdefault(ann["image_id"], []).append(ann)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def __len__(self) -> int:
        return len(self.images)

    def load_target(self, index: int, width: int, height: int) -> dict:
        """Target of image `index` with boxes (T, 4) xyxy pixels clipped to (width, height)."""
        info = self.images[index]
        anns = self.annotations_by_image.get(info["id"], [])
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)  # (T, 4) xywh
        boxes[:, 2:] += boxes[:, :2]  # (T, 4) xyxy
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        labels = torch.tensor([self.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # (T,)
        if not bool(keep.all()) and not self._warned_degenerate:
            self._warned_degenerate = True
            warnings.warn(
                f"{self.annotations_file}: image {info['id']} has {int((~keep).sum())} box(es) of zero width or height "
                "after clipping; such boxes are dropped (warned once per dataset); fix the annotations to silence this",
                stacklevel=2,
            )
        size = torch.tensor([height, width], dtype=torch.int64)
        return {
            "boxes": boxes[keep],
            "labels": labels[keep],
            "image_id": int(info["id"]),
            "orig_size": size,
            "size": size.clone(),
        }

    def __getitem__(self, index: int):
        info = self.images[index]
        if not isinstance(info.get("file_name"), str) or not info["file_name"]:
            raise DatasetError(
                f"{self.annotations_file}: image {info.get('id')!r} has no file_name; "
                "`deformable-detr check-data` lists every problem"
            )
        image = load_rgb_image(self.images_dir / info["file_name"], hint=_IMAGE_HINT)
        file_width, file_height = image.info.get("original_size", image.size)
        if (info.get("width"), info.get("height")) not in ((None, None), (file_width, file_height)):
            raise DatasetError(
                f"{self.images_dir / info['file_name']}: image is {file_width}x{file_height} but {self.annotations_file} says "
                f"{info.get('width')}x{info.get('height')}, so its boxes would be wrong; fix the file or the JSON "
                "(`deformable-detr check-data` lists every such image)"
            )
        try:
            target = self.load_target(index, file_width, file_height)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:  # malformed annotation entries
            if isinstance(error, DatasetError):
                raise
            raise DatasetError(
                f"{self.annotations_file}: malformed annotation of image {info.get('id')!r} "
                f"({type(error).__name__}: {error}); `deformable-detr check-data` lists every problem"
            ) from None
        if image.size != (file_width, file_height):  # downscaled on decoding: boxes follow the pixels
            scale = torch.tensor([image.width / file_width, image.height / file_height] * 2)
            target["boxes"] = target["boxes"] * scale
            target["size"] = torch.tensor([image.height, image.width], dtype=torch.int64)
        return self.transforms(image, target)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotations file not found; pass the instances JSON") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error}); fix or regenerate the file") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error})") from None


def load_json_split(images_dir: str | Path, annotations_file: str | Path) -> DatasetSplit:
    """A COCO split given as an images folder and an instances JSON."""
    annotations_file = Path(annotations_file)
    if not Path(images_dir).is_dir():
        raise DatasetError(f"{images_dir}: images folder not found; pass the folder holding the image files")
    return DatasetSplit(annotations_file.stem, "coco", Path(images_dir), read_json(annotations_file), annotations_file)


def collate(batch: list, size_divisibility: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Pad images to the batch's largest height and width (bottom/right) and mark the padding.

    Args:
        batch: list of (image (3, H_i, W_i), target) pairs.
        size_divisibility: round the padded H and W up to a multiple of this (training uses the
            coarsest feature level's stride, see `training.dataloaders.padding_multiple`).

    Returns:
        images (B, 3, H_max, W_max) zero-padded; padding_mask (B, H_max, W_max) bool, True = padding;
        targets, the list of target dicts (unchanged).
    """
    images, targets = zip(*batch)
    multiple = max(1, size_divisibility)
    height = math.ceil(max(image.shape[1] for image in images) / multiple) * multiple
    width = math.ceil(max(image.shape[2] for image in images) / multiple) * multiple
    padded = images[0].new_zeros((len(images), 3, height, width))  # (B, 3, H_max, W_max)
    padding_mask = torch.ones((len(images), height, width), dtype=torch.bool)  # (B, H_max, W_max)
    for i, image in enumerate(images):
        padded[i, :, : image.shape[1], : image.shape[2]] = image
        padding_mask[i, : image.shape[1], : image.shape[2]] = False
    return padded, padding_mask, list(targets)
