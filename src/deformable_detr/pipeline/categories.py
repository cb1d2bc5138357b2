"""A model's categories: `{"id": int, "name": str}` per class, in label order (label k is `categories[k]`).

They travel with the weights (`categories.json` of `save_pretrained`), so detections carry names.
"""

from __future__ import annotations

from typing import Any

from deformable_detr.errors import ConfigError

# COCO 2017 detection categories (ids 1..90 with gaps), in id order: label k of a 91-class
# official/HF model is COCO id k (labels without a COCO category are named "N/A").
COCO_CATEGORY_NAMES = {
    1: "person",
    2: "bicycle",
    3: "car",
    4: "motorcycle",
    5: "airplane",
    6: "bus",
    7: "train",
    8: "truck",
    9: "boat",
    10: "traffic light",
    11: "fire hydrant",
    13: "stop sign",
    14: "parking meter",
    15: "bench",
    16: "bird",
    17: "cat",
    18: "dog",
    19: "horse",
    20: "sheep",
    21: "cow",
    22: "elephant",
    23: "bear",
    24: "zebra",
    25: "giraffe",
    27: "backpack",
    28: "umbrella",
    31: "handbag",
    32: "tie",
    33: "suitcase",
    34: "frisbee",
    35: "skis",
    36: "snowboard",
    37: "sports ball",
    38: "kite",
    39: "baseball bat",
    40: "baseball glove",
    41: "skateboard",
    42: "surfboard",
    43: "tennis racket",
    44: "bottle",
    46: "wine glass",
    47: "cup",
    48: "fork",
    49: "knife",
    50: "spoon",
    51: "bowl",
    52: "banana",
    53: "apple",
    54: "sandwich",
    55: "orange",
    56: "broccoli",
    57: "carrot",
    58: "hot dog",
    59: "pizza",
    60: "donut",
    61: "cake",
    62: "chair",
    63: "couch",
    64: "potted plant",
    65: "bed",
    67: "dining table",
    70: "toilet",
    72: "tv",
    73: "laptop",
    74: "mouse",
    75: "remote",
    76: "keyboard",
    77: "cell phone",
    78: "microwave",
    79: "oven",
    80: "toaster",
    81: "sink",
    82: "refrigerator",
    84: "book",
    85: "clock",
    86: "vase",
    87: "scissors",
    88: "teddy bear",
    89: "hair drier",
    90: "toothbrush",
}


def default_categories(num_classes: int) -> list[dict[str, Any]]:
    """Categories for a model whose files carry none: COCO's for 91 classes (label k = COCO id k,
    "N/A" for ids COCO does not use), otherwise ids 1..K named "class_1".."class_K"."""
    if num_classes == 91:
        return [{"id": k, "name": COCO_CATEGORY_NAMES.get(k, "N/A")} for k in range(91)]
    return [{"id": k + 1, "name": f"class_{k + 1}"} for k in range(num_classes)]


def check_categories(
    categories: list[dict[str, Any]], num_classes: int, source: str = "categories"
) -> list[dict[str, Any]]:
    """Validate a category list ({"id": int, "name": str} per label) against the model's class count."""
    if not isinstance(categories, list) or len(categories) != num_classes:
        count = len(categories) if isinstance(categories, list) else type(categories).__name__
        raise ConfigError(f"{source}: expected a list of {num_classes} categories (one per class), got {count}")
    checked = []
    for index, category in enumerate(categories):
        if (
            not isinstance(category, dict)
            or not isinstance(category.get("id"), int)
            or not isinstance(category.get("name"), str)
        ):
            raise ConfigError(f"{source}: entry {index} must be {{'id': int, 'name': str}}, got {category!r}")
        checked.append({"id": category["id"], "name": category["name"]})
    return checked
