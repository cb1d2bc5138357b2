"""DETR transforms: box bookkeeping under flip/resize/crop checked against hand-worked numbers."""

import random

import torch
from PIL import Image

from deformable_detr.data.transforms import IMAGENET_MEAN, ToTensorNormalize, crop, hflip, make_transforms, resize


def _sample(width=100, height=50):
    image = Image.new("RGB", (width, height), (255, 0, 0))
    target = {
        "boxes": torch.tensor([[10.0, 5.0, 30.0, 25.0], [60.0, 10.0, 100.0, 50.0]]),
        "labels": torch.tensor([0, 1]),
        "size": torch.tensor([height, width]),
        "image_id": 3,
    }
    return image, target


def test_hflip_mirrors_boxes():
    image, target = _sample()
    _, flipped = hflip(image, target)
    torch.testing.assert_close(flipped["boxes"], torch.tensor([[70.0, 5.0, 90.0, 25.0], [0.0, 10.0, 40.0, 50.0]]))


def test_resize_short_side_and_max_size():
    image, target = _sample()
    resized_image, resized = resize(image, target, 100)
    assert resized_image.size == (200, 100)
    torch.testing.assert_close(resized["boxes"][0], torch.tensor([20.0, 10.0, 60.0, 50.0]))
    capped_image, _ = resize(image, target, 100, max_size=150)
    assert capped_image.size == (150, 75)


def test_crop_clips_and_drops_boxes():
    image, target = _sample()
    cropped_image, cropped = crop(image, target, (0, 50, 50, 50))  # right half
    assert cropped_image.size == (50, 50)
    torch.testing.assert_close(cropped["boxes"], torch.tensor([[10.0, 10.0, 50.0, 50.0]]))
    assert cropped["labels"].tolist() == [1]
    assert cropped["size"].tolist() == [50, 50]


def test_to_tensor_normalize_and_cxcywh():
    image, target = _sample()
    tensor, out = ToTensorNormalize()(image, target)
    assert tensor.shape == (3, 50, 100)
    assert abs(float(tensor[0, 0, 0]) - (1.0 - IMAGENET_MEAN[0]) / 0.229) < 1e-5
    torch.testing.assert_close(out["boxes"][0], torch.tensor([0.2, 0.3, 0.2, 0.4]))


def test_train_pipeline_keeps_boxes_valid():
    random.seed(0)
    transforms = make_transforms(True, scales=(64, 80), max_size=120, crop_resize=(60, 70), crop_size=(40, 60))
    for _ in range(20):
        tensor, out = transforms(*_sample())
        assert max(tensor.shape[1:]) <= 120
        boxes = out["boxes"]
        assert ((boxes >= 0) & (boxes <= 1)).all()
        assert (boxes[:, 2:] > 0).all()
        assert out["size"].tolist() == list(tensor.shape[1:])
