"""Fuzz tests (hypothesis): the annotation loaders (COCO, YOLO, VOC), `check-data` and image decoding
raise nothing but the project's own errors (`DeformableDetrError`) on arbitrary input, and `convert`'s
output of any YOLO labels or VOC boxes passes `check-data`.

Example counts (`max_examples`) are fixed so the suite's cost is known: 300 COCO structures, 200 COCO
files of raw bytes, 200 YOLO label files, 100 YOLO yaml files, 200 VOC XML files, 300 image byte
strings (random and mutated PNG/JPEG/GIF/BMP/TIFF/WebP, 16-bit and CMYK), 50 YOLO and 50 VOC
datasets converted: 1,400 in all. About 0.1-0.3 s
per example on a busy 2-core machine, so they are `slow` (run by `make test-slow`).
"""

import io
import json
import tempfile
from pathlib import Path

import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from deformable_detr.data.check import check_dataset, check_split  # noqa: E402
from deformable_detr.data.coco import CocoDetection  # noqa: E402
from deformable_detr.data.formats import convert_dataset, dataset_splits, read_split  # noqa: E402
from deformable_detr.data.split import DatasetSplit  # noqa: E402
from deformable_detr.errors import DeformableDetrError  # noqa: E402
from deformable_detr.pipeline.decode import image_size, load_rgb_image  # noqa: E402

pytestmark = pytest.mark.slow
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KEYS = [
    "id",
    "image_id",
    "category_id",
    "bbox",
    "file_name",
    "width",
    "height",
    "name",
    "iscrowd",
    "area",
    "images",
    "annotations",
    "categories",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["a.png", "", "x", "../../etc/passwd", "\x00"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=25,
)
entry = st.dictionaries(st.sampled_from(KEYS), values, max_size=7)
coco_like = st.one_of(
    values,
    st.fixed_dictionaries(
        {
            "images": st.lists(entry, max_size=4),
            "annotations": st.lists(entry, max_size=6),
            "categories": st.lists(entry, max_size=3),
        }
    ),
)


def _workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="fuzz"))
    (root / "images").mkdir()
    Image.new("RGB", (20, 10)).save(root / "images" / "a.png")
    return root


@settings(max_examples=300, **SETTINGS)
@given(coco_like)
def test_coco_structures(data):
    root = _workspace()
    if not isinstance(data, dict):  # other JSON values reach the loader through a file: test_coco_files_of_any_bytes
        data = {"images": data}
    try:
        dataset = CocoDetection(root / "images", data)
        for index in range(len(dataset)):
            dataset[index]
    except DeformableDetrError:
        pass
    try:
        check_split(DatasetSplit("fuzz", "coco", root / "images", data, root / "annotations.json"), num_threads=1)
    except DeformableDetrError:
        pass


@settings(max_examples=200, **SETTINGS)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        coco_like.map(lambda d: json.dumps(d, allow_nan=True).encode()),
    )
)
def test_coco_files_of_any_bytes(content):
    root = _workspace()
    (root / "annotations.json").write_bytes(content)
    for call in (
        lambda: check_dataset(root / "images", root / "annotations.json", num_threads=1),
        lambda: CocoDetection(root / "images", root / "annotations.json"),
    ):
        try:
            call()
        except DeformableDetrError:
            pass


label_line = st.one_of(
    st.text(alphabet="0123456789.- e+naif\t", max_size=40),
    st.lists(
        st.one_of(st.integers(-3, 5).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr)), max_size=9
    ).map(" ".join),
)


@settings(max_examples=200, **SETTINGS)
@given(st.lists(label_line, max_size=6), st.binary(max_size=40))
def test_yolo_label_files(lines, junk):
    root = _workspace()
    (root / "images" / "train").mkdir()
    Image.new("RGB", (20, 10)).save(root / "images" / "train" / "a.png")
    (root / "images" / "train" / "b.jpg").write_bytes(junk)  # an image file that may not decode
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("\n".join(lines))
    (root / "labels" / "train" / "b.txt").write_bytes(junk)
    (root / "classes.txt").write_text("x\ny\n")
    try:
        check_split(read_split(root, "train", "yolo"), num_threads=1)
    except DeformableDetrError:
        pass


@settings(max_examples=100, **SETTINGS)
@given(
    st.one_of(
        st.text(max_size=200),
        st.dictionaries(st.sampled_from(["names", "train", "val", "path", "nc"]), values, max_size=4).map(json.dumps),
    )
)
def test_yolo_yaml_files(text):
    root = _workspace()
    (root / "images" / "train").mkdir()
    Image.new("RGB", (20, 10)).save(root / "images" / "train" / "a.png")
    (root / "data.yaml").write_text(text)
    try:
        check_split(read_split(root, "train", "yolo"), num_threads=1)
    except DeformableDetrError:
        pass


VALID_XML = (
    "<annotation><filename>a.png</filename><size><width>20</width><height>10</height></size><object><name>x</name>"
    "<difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"
)


@settings(max_examples=200, **SETTINGS)
@given(
    st.one_of(
        st.text(max_size=300),
        st.tuples(st.integers(0, len(VALID_XML)), st.integers(0, len(VALID_XML)), st.text(max_size=12)).map(
            lambda t: VALID_XML[: t[0]] + t[2] + VALID_XML[t[1] :]
        ),
    )
)
def test_voc_xml_files(xml):
    root = _workspace()
    (root / "JPEGImages").mkdir()
    Image.new("RGB", (20, 10)).save(root / "JPEGImages" / "a.png")
    (root / "Annotations").mkdir()
    (root / "Annotations" / "a.xml").write_text(xml)
    try:
        check_split(read_split(root, "train", "voc"), num_threads=1)
    except DeformableDetrError:
        pass


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (23, 17), 120).save(buffer, fmt)
    return buffer.getvalue()


SEEDS = [
    _encoded("PNG"),
    _encoded("JPEG"),
    _encoded("GIF", "P"),
    _encoded("BMP"),
    _encoded("TIFF"),
    _encoded("PNG", "I;16"),
    _encoded("JPEG", "CMYK"),
    _encoded("WEBP"),
]


def _mutate(seed: bytes, position: int, length: int, replacement: bytes, truncate: bool) -> bytes:
    position %= len(seed) + 1
    data = seed[:position] + replacement + seed[position + length :]
    return data[:position] if truncate else data


@settings(max_examples=300, **SETTINGS)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            _mutate,
            st.sampled_from(SEEDS),
            st.integers(0, 2000),
            st.integers(0, 8),
            st.binary(max_size=8),
            st.booleans(),
        ),
    )
)
def test_image_decoding(content):
    for call in (lambda: load_rgb_image(content, name="fuzz"), lambda: image_size(io.BytesIO(content), name="fuzz")):
        try:
            image = call()
        except DeformableDetrError:
            continue
        if isinstance(image, Image.Image):
            assert image.mode == "RGB"


# `convert` leaves out whatever has a problem, so check-data on its output is always clean (50 + 50 examples).
coordinate = st.floats(-0.2, 1.2, allow_nan=False)
yolo_box_line = st.tuples(st.integers(-1, 3), coordinate, coordinate, st.floats(-0.1, 1.3), st.floats(-0.1, 1.3)).map(
    lambda v: " ".join(map(str, v))
)


def _converted_output_is_clean(root: Path) -> None:
    out = Path(tempfile.mkdtemp(prefix="fuzzout")) / "coco"
    try:
        convert_dataset(root, out)
    except DeformableDetrError:
        return
    for split in dataset_splits(out):
        report = check_split(read_split(out, split), num_threads=1)
        assert report.ok, report.format()


@settings(max_examples=50, **SETTINGS)
@given(
    st.lists(st.one_of(yolo_box_line, label_line), max_size=6),
    st.integers(1, 2100),
    st.integers(1, 40),
    st.binary(max_size=40),
)
def test_convert_of_any_yolo_labels_passes_check_data(lines, width, height, junk):
    root = _workspace()
    (root / "images" / "train").mkdir()
    Image.new("RGB", (width, height)).save(root / "images" / "train" / "a.png")
    (root / "images" / "train" / "b.jpg").write_bytes(junk)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("\n".join(lines))
    (root / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0.5 0.5")
    (root / "classes.txt").write_text("x\ny\n")
    _converted_output_is_clean(root)


voc_corner = st.one_of(st.integers(-3, 45), st.floats(-3, 45, allow_nan=False), st.sampled_from(["", "a", "1e400"]))


@settings(max_examples=50, **SETTINGS)
@given(
    st.lists(
        st.tuples(st.sampled_from(["x", " x", "y", ""]), st.lists(voc_corner, min_size=4, max_size=4)), max_size=5
    ),
    st.tuples(st.integers(-1, 45), st.integers(-1, 45)),
    st.sampled_from(["a.png", "b.png", "missing.png"]),
)
def test_convert_of_any_voc_boxes_passes_check_data(objects, size, file_name):
    root = _workspace()
    (root / "JPEGImages").mkdir()
    Image.new("RGB", (40, 30)).save(root / "JPEGImages" / "a.png")
    (root / "JPEGImages" / "b.png").write_bytes(b"\x89PNG not really")
    (root / "Annotations").mkdir()
    boxes = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{c[0]}</xmin><ymin>{c[1]}</ymin><xmax>{c[2]}</xmax>"
        f"<ymax>{c[3]}</ymax></bndbox></object>"
        for name, c in objects
    )
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation><filename>{file_name}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"</size>{boxes}<object><name>x</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
        "</bndbox></object></annotation>"
    )
    _converted_output_is_clean(root)
