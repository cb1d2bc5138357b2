"""CocoDetection: id mapping, crowd boxes, EXIF/grayscale/RGBA/palette images, clear errors, collate."""

import json
import warnings

import pytest
import torch
from PIL import Image

from deformable_detr.data.coco import CocoDetection, DatasetError, collate


def _write(tmp_path, images, annotations, categories=({"id": 3, "name": "a"}, {"id": 7, "name": "b"})):
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}))
    return tmp_path / "images", path


def _ann(i, image_id, bbox, category_id=3, iscrowd=0):
    return {
        "id": i,
        "image_id": image_id,
        "bbox": bbox,
        "category_id": category_id,
        "iscrowd": iscrowd,
        "area": bbox[2] * bbox[3],
    }


def test_modes_exif_crowd_and_ids(tmp_path):
    images_dir, ann_path = _write(tmp_path, [], [])
    Image.new("L", (40, 20), 128).save(images_dir / "gray.png")
    Image.new("RGBA", (40, 20), (10, 20, 30, 0)).save(images_dir / "rgba.png")
    Image.new("P", (40, 20), 5).save(images_dir / "palette.png")
    rotated = Image.new("RGB", (40, 20), (0, 255, 0))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display -> 20 wide, 40 tall
    rotated.save(images_dir / "exif.jpg", exif=exif)
    images = [
        {"id": i + 1, "file_name": name, "width": 40, "height": 20}
        for i, name in enumerate(["gray.png", "rgba.png", "palette.png", "exif.jpg"])
    ]
    images[3].update(width=20, height=40)  # the JSON gives the displayed (EXIF-rotated) size
    anns = [_ann(1, 1, [0, 0, 10, 10], 7), _ann(2, 1, [5, 5, 10, 10], 3, iscrowd=1), _ann(3, 4, [2, 4, 10, 20], 3)]
    images_dir, ann_path = _write(tmp_path, images, anns)
    dataset = CocoDetection(images_dir, ann_path)
    assert dataset.label_to_category_id == [3, 7] and dataset.num_classes == 2
    for index in range(4):
        image, target = dataset[index]
        assert image.shape[0] == 3 and image.dtype == torch.float32
    _, target = dataset[0]
    assert target["labels"].tolist() == [1]  # crowd box ignored; category 7 -> label 1
    torch.testing.assert_close(target["boxes"], torch.tensor([[5 / 40, 5 / 20, 10 / 40, 10 / 20]]))
    image, target = dataset[3]
    assert image.shape[1:] == (40, 20)  # EXIF orientation applied
    assert target["orig_size"].tolist() == [40, 20]


def test_degenerate_boxes_dropped_with_one_warning(tmp_path):
    images_dir, ann_path = _write(
        tmp_path,
        [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}],
        [_ann(1, 1, [0, 0, 0, 5]), _ann(2, 2, [50, 0, 5, 5]), _ann(3, 2, [1, 1, 5, 5])],
    )
    Image.new("RGB", (20, 20)).save(images_dir / "a.png")
    dataset = CocoDetection(images_dir, ann_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(dataset[0][1]["boxes"]) == 0
        assert len(dataset[1][1]["boxes"]) == 1
    assert len(caught) == 1 and "zero width or height" in str(caught[0].message)


def test_missing_and_corrupt_images_give_one_line_errors(tmp_path):
    images_dir, ann_path = _write(
        tmp_path, [{"id": 1, "file_name": "missing.jpg"}, {"id": 2, "file_name": "bad.jpg"}], []
    )
    (images_dir / "bad.jpg").write_bytes(b"not a jpeg")
    dataset = CocoDetection(images_dir, ann_path)
    with pytest.raises(DatasetError, match=r"missing\.jpg: image file not found"):
        dataset[0]
    with pytest.raises(DatasetError, match=r"bad\.jpg: not an image file") as info:
        dataset[1]
    assert "\n" not in str(info.value)


def test_unknown_category_and_bad_json(tmp_path):
    images_dir, ann_path = _write(tmp_path, [{"id": 1, "file_name": "a.png"}], [_ann(1, 1, [0, 0, 5, 5], 99)])
    with pytest.raises(DatasetError, match="category_id 99"):
        CocoDetection(images_dir, ann_path)
    ann_path.write_text("{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        CocoDetection(images_dir, ann_path)


def test_collate_pads_and_masks():
    batch = [(torch.ones(3, 4, 6), {"id": 0}), (torch.ones(3, 5, 3), {"id": 1})]
    images, padding_mask, targets = collate(batch)
    assert images.shape == (2, 3, 5, 6) and padding_mask.shape == (2, 5, 6)
    assert padding_mask[0, 4].all() and not padding_mask[0, :4].any()
    assert padding_mask[1, :, 3:].all() and not padding_mask[1, :, :3].any()
    assert float(images[1, :, :, 3:].abs().sum()) == 0.0
    assert [t["id"] for t in targets] == [0, 1]


def test_collate_rounds_the_padded_size_up_to_a_multiple():
    batch = [(torch.ones(3, 70, 100), {}), (torch.ones(3, 64, 129), {})]
    images, padding_mask, _ = collate(batch, size_divisibility=64)
    assert images.shape == (2, 3, 128, 192) and padding_mask.shape == (2, 128, 192)
    assert int((~padding_mask[0]).sum()) == 70 * 100 and int((~padding_mask[1]).sum()) == 64 * 129
