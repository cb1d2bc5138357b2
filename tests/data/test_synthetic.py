"""Synthetic shapes dataset writer: determinism, COCO validity, options and size buckets."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from deformable_detr.data import synthetic
from deformable_detr.data.check import check_dataset
from deformable_detr.data.synthetic import make_dataset
from deformable_detr.data.synthetic_render import MAX_OBJECTS
from deformable_detr.data.synthetic_shapes import CATEGORIES


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 train + 2 val images, 160 px: big enough for large (> 96^2) objects."""
    return make_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=2, image_size=160, seed=3)


def _load(paths):
    return json.loads(paths.annotations_file.read_text())


def test_layout_and_coco_fields(dataset):
    assert set(dataset) == {"train", "val"}
    train = _load(dataset["train"])
    assert len(train["images"]) == 8 and len(_load(dataset["val"])["images"]) == 2
    assert [c["id"] for c in train["categories"]] == list(range(1, len(CATEGORIES) + 1))
    assert [c["name"] for c in train["categories"]] == list(CATEGORIES)
    assert len({a["id"] for a in train["annotations"]}) == len(train["annotations"])
    for image in train["images"]:
        assert (dataset["train"].images_dir / image["file_name"]).is_file()
    for ann in train["annotations"]:
        assert ann["iscrowd"] == 0 and ann["area"] == ann["bbox"][2] * ann["bbox"][3]


def test_same_seed_gives_identical_bytes_and_other_seed_differs(dataset, tmp_path):
    again = make_dataset(tmp_path / "again", num_train=8, num_val=2, image_size=160, seed=3)
    assert again["train"].annotations_file.read_bytes() == dataset["train"].annotations_file.read_bytes()
    assert again["val"].annotations_file.read_bytes() == dataset["val"].annotations_file.read_bytes()
    for path in dataset["train"].images_dir.iterdir():
        assert (again["train"].images_dir / path.name).read_bytes() == path.read_bytes()
    other = make_dataset(tmp_path / "other", num_train=8, num_val=0, image_size=160, seed=4)
    assert other["train"].annotations_file.read_bytes() != dataset["train"].annotations_file.read_bytes()


def test_process_pool_gives_the_same_output(tmp_path, monkeypatch):
    serial = make_dataset(tmp_path / "serial", num_train=4, num_val=0, image_size=96, seed=1, num_workers=1)
    monkeypatch.setattr(synthetic, "_PARALLEL_MIN_IMAGES", 0)
    ticks = []
    pooled = make_dataset(tmp_path / "pooled", 4, 0, 96, 1, num_workers=2, progress=ticks.append)
    assert sum(ticks) == 4
    assert pooled["train"].annotations_file.read_bytes() == serial["train"].annotations_file.read_bytes()
    for path in serial["train"].images_dir.iterdir():
        assert (pooled["train"].images_dir / path.name).read_bytes() == path.read_bytes()


def test_loads_in_pycocotools(dataset):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(dataset["train"].annotations_file))
    assert len(coco.getImgIds()) == 8 and len(coco.getCatIds()) == len(CATEGORIES)


def test_boxes_inside_images_and_image_sizes_match(dataset):
    train = _load(dataset["train"])
    images = {im["id"]: im for im in train["images"]}
    for image in train["images"]:
        with Image.open(dataset["train"].images_dir / image["file_name"]) as decoded:
            assert decoded.size == (image["width"], image["height"])
            assert max(decoded.size) == 160 and min(decoded.size) >= 0.75 * 160 - 1
    for ann in train["annotations"]:
        x, y, w, h = ann["bbox"]
        image = images[ann["image_id"]]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]
    assert len({(im["width"], im["height"]) for im in train["images"]}) > 1  # varied aspect ratios


def test_all_size_buckets_and_many_small_objects(dataset):
    areas = np.array([a["area"] for a in _load(dataset["train"])["annotations"]])
    small, large = (areas < 32**2).sum(), (areas > 96**2).sum()
    medium = len(areas) - small - large
    assert small > 0 and medium > 0 and large > 0
    assert small >= 0.3 * len(areas)


def test_check_data_passes(dataset):
    for split in dataset.values():
        report = check_dataset(split.images_dir, split.annotations_file)
        assert report.ok, report.format()
        assert not report.warnings


def test_bad_arguments_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="image_size=32"):
        make_dataset(tmp_path, 1, 1, image_size=32, seed=0)
    with pytest.raises(ValueError, match="num_train=-1"):
        make_dataset(tmp_path, -1, 1, image_size=128, seed=0)


def test_transfer_class_set_has_new_shapes_only(tmp_path):
    split = make_dataset(tmp_path, num_train=6, num_val=0, image_size=96, seed=1, classes="transfer")["train"]
    data = json.loads(split.annotations_file.read_text())
    names = [c["name"] for c in data["categories"]]
    assert names == list(synthetic.CLASS_SETS["transfer"]) and not set(names) & set(CATEGORIES) and len(names) >= 3
    assert {a["category_id"] for a in data["annotations"]} <= set(range(1, len(names) + 1))
    assert check_dataset(split.images_dir, split.annotations_file).ok
    with pytest.raises(ValueError, match="shape names"):
        make_dataset(tmp_path, 1, 0, image_size=96, classes="circle,blob")
    assert synthetic.resolve_classes("ring, star") == ("ring", "star")


def test_fewer_larger_objects_and_fewer_classes(tmp_path):
    """objects_per_image=(1, 2), object_size=(30, 70), 3 classes: the easy set DETR's convergence study needs."""
    split = make_dataset(
        tmp_path,
        num_train=12,
        num_val=0,
        image_size=128,
        seed=2,
        num_workers=1,
        classes="circle,square,triangle",
        objects_per_image=(1, 2),
        object_size=(30, 70),
    )["train"]
    data = json.loads(split.annotations_file.read_text())
    assert data["info"]["objects_per_image"] == [1, 2] and data["info"]["object_size"] == [30.0, 70.0]
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=13)[1:]
    assert per_image.min() >= 1 and per_image.max() == 2
    # sqrt(box area): the nominal side, enlarged up to 1.38x by a 30-degree rotation at aspect 4/3, minus anti-aliasing
    sides = np.sqrt([a["area"] for a in data["annotations"]])
    assert sides.min() >= 28 and sides.max() <= 1.38 * 70 + 2
    assert {a["category_id"] for a in data["annotations"]} <= {1, 2, 3}
    assert check_dataset(split.images_dir, split.annotations_file).ok


def test_default_options_leave_the_output_unchanged(tmp_path):
    """Passing the defaults explicitly gives the same bytes as not passing them (and no extra "info" keys)."""
    plain = make_dataset(tmp_path / "plain", 3, 0, 96, seed=5, num_workers=1)["train"]
    explicit = make_dataset(tmp_path / "explicit", 3, 0, 96, seed=5, num_workers=1, objects_per_image=(1, MAX_OBJECTS))[
        "train"
    ]
    assert plain.annotations_file.read_bytes() == explicit.annotations_file.read_bytes()
    assert set(json.loads(plain.annotations_file.read_text())["info"]) == {"description", "image_size", "seed"}


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(objects_per_image=(0, 2)), "objects_per_image=\\(0, 2\\)"),
        (dict(objects_per_image=(3, 2)), "1 <= min <= max <= 12"),
        (dict(objects_per_image=(1, 13)), "1 <= min <= max <= 12"),
        (dict(object_size=(70, 30)), "object_size=\\(70, 30\\)"),
        (dict(object_size=(2, 30)), "4 <= min <= max"),
    ],
)
def test_bad_object_options_name_the_field(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(tmp_path, 1, 0, image_size=96, seed=0, **options)
