"""YOLO and Pascal VOC readers against hand-written tiny datasets; detection; convert round trip; bad files.

Oracle: boxes worked out by hand from the label text (YOLO: x0 = (cx - w/2) * W; VOC: x0 = xmin - 1).
"""

import json

import pytest
from PIL import Image

from deformable_detr.cli import main
from deformable_detr.data.check import check_split, without_bad
from deformable_detr.data.coco import CocoDetection
from deformable_detr.data.formats import convert_dataset, dataset_splits, detect_format, read_split
from deformable_detr.errors import DatasetError


def _image(path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 90, 90)).save(path)


def _yolo(root, yaml=True):
    """Two splits as folders: train a.jpg (200x100) with 2 boxes, b.png (50x40) without labels; val c.jpg."""
    _image(root / "images/train/a.jpg", 200, 100)
    _image(root / "images/train/b.png", 50, 40)
    _image(root / "images/val/c.jpg", 64, 32)
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.2 0.4\n2 0.25 0.75 0.5 0.5\n")
    (root / "labels/val/c.txt").write_text("1 0.5 0.5 1.0 1.0\n")
    if yaml:
        (root / "data.yaml").write_text(
            "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n  2: bird\n"
        )
    else:
        (root / "classes.txt").write_text("cat\ndog\nbird\n")
    return root


def _voc(root, size=True):
    _image(root / "JPEGImages/x.jpg", 100, 80)
    _image(root / "JPEGImages/y.jpg", 60, 60)
    (root / "Annotations").mkdir(parents=True)
    size_xml = "<size><width>100</width><height>80</height><depth>3</depth></size>" if size else ""
    (root / "Annotations/x.xml").write_text(
        f"<annotation><filename>x.jpg</filename>{size_xml}"
        "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>11</ymin><xmax>50</xmax><ymax>80</ymax></bndbox></object>"
        "<object><name>person</name><difficult>1</difficult><bndbox><xmin>21</xmin><ymin>1</ymin><xmax>30</xmax><ymax>10</ymax></bndbox></object>"
        "</annotation>"
    )
    (root / "Annotations/y.xml").write_text(
        "<annotation><filename>y.jpg</filename><size><width>60</width><height>60</height></size>"
        "<object><name>cat</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>40</xmax><ymax>60</ymax></bndbox></object></annotation>"
    )
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("x\n")
    (root / "ImageSets/Main/val.txt").write_text("y\n")
    return root


@pytest.mark.parametrize("yaml", [True, False])
def test_yolo_reader_boxes_names_splits(tmp_path, yaml):
    root = _yolo(tmp_path / "yolo", yaml)
    assert detect_format(root) == "yolo" and dataset_splits(root) == ["train", "val"]
    train = read_split(root, "train")
    assert [c["name"] for c in train.categories] == ["cat", "dog", "bird"]
    assert [(im["file_name"], im["width"], im["height"]) for im in train.coco["images"]] == [
        ("images/train/a.jpg", 200, 100),
        ("images/train/b.png", 50, 40),
    ]
    boxes = [(a["image_id"], a["category_id"], a["bbox"]) for a in train.coco["annotations"]]
    # 0.5 0.5 0.2 0.4 on 200x100: x0 = (0.5 - 0.1) * 200 = 80, y0 = (0.5 - 0.2) * 100 = 30, w 40, h 40
    assert boxes == [(1, 1, pytest.approx([80, 30, 40, 40])), (1, 3, pytest.approx([0, 50, 100, 50]))]
    assert train.coco["annotations"][0]["source"] == "labels/train/a.txt:1"
    val = read_split(root, "valid")  # alias
    assert [a["bbox"] for a in val.coco["annotations"]] == [pytest.approx([0, 0, 64, 32])]
    assert check_split(train).ok and check_split(val).ok


def _roboflow(root, yaml_text):
    """A Roboflow export: {train,valid}/{images,labels}/p.*, one box each, and a data.yaml."""
    for split in ("train", "valid"):
        _image(root / split / "images/p.jpg", 10, 10)
        (root / split / "labels").mkdir(parents=True)
        (root / split / "labels/p.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml_text)
    return root


def test_yolo_roboflow_layout_and_list_splits(tmp_path):
    root = _roboflow(tmp_path / "rf", "train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['thing']\n")
    assert dataset_splits(root) == ["train", "val"]
    assert read_split(root, "val").coco["annotations"][0]["bbox"] == pytest.approx([4, 4, 2, 2])
    (root / "list.txt").write_text("train/images/p.jpg\nvalid/images/p.jpg\n")
    (root / "data.yaml").write_text("train: list.txt\nnames: ['thing']\n")
    assert len(read_split(root, "train").coco["images"]) == 2


def test_yolo_yaml_naming_a_test_split_that_is_not_there_still_reads(tmp_path, caplog):
    root = _roboflow(
        tmp_path / "rf", "train: ../train/images\nval: ../valid/images\ntest: ../test/images\nnames: [a]\n"
    )
    with caplog.at_level("WARNING"):
        assert dataset_splits(root) == ["train", "val"]
    assert "../test/images" in caplog.text and "left out" in caplog.text
    (root / "data.yaml").write_text("train: ../train/images\nval: ../nowhere/images\nnames: [a]\n")
    with pytest.raises(DatasetError, match="../nowhere/images"):  # a missing val split is still an error
        dataset_splits(root)


def test_voc_reader_boxes_difficult_splits(tmp_path):
    root = _voc(tmp_path / "voc")
    assert detect_format(root) == "voc" and dataset_splits(root) == ["train", "val"]
    train = read_split(root, "train")
    assert [c["name"] for c in train.categories] == ["cat", "dog", "person"]  # every XML's names, sorted
    anns = train.coco["annotations"]
    assert [a["bbox"] for a in anns] == [[0, 10, 50, 70], [20, 0, 10, 10]]  # xmin - 1, ymin - 1, xmax, ymax
    assert [a["category_id"] for a in anns] == [2, 3] and [a["iscrowd"] for a in anns] == [0, 1]
    val = read_split(root, "val")
    assert val.coco["images"] == [{"id": 1, "file_name": "y.jpg", "width": 60, "height": 60}]
    assert check_split(train).ok and check_split(val).ok
    dataset = CocoDetection(train.images_dir, train.coco)
    _, target = dataset[0]
    assert target["labels"].tolist() == [1]  # difficult (crowd) object not trained on


@pytest.mark.parametrize("make", [_yolo, _voc])
def test_convert_round_trip_keeps_boxes(tmp_path, make):
    root = make(tmp_path / "src")
    written = convert_dataset(root, tmp_path / "coco")
    assert set(written) == {"train", "val"} and detect_format(tmp_path / "coco") == "coco"
    for split in ("train", "val"):
        original = read_split(root, split)
        converted = read_split(tmp_path / "coco", split)
        assert converted.coco["categories"] == original.coco["categories"]
        assert [a["bbox"] for a in converted.coco["annotations"]] == [a["bbox"] for a in original.coco["annotations"]]
        assert [(im["width"], im["height"]) for im in converted.coco["images"]] == [
            (im["width"], im["height"]) for im in original.coco["images"]
        ]
        assert check_split(converted).ok
    with pytest.raises(DatasetError, match="not empty"):
        convert_dataset(root, tmp_path / "coco")


def test_convert_leaves_out_an_image_whose_file_is_missing_and_says_so(tmp_path):
    root = _voc(tmp_path / "src")
    (root / "JPEGImages/x.jpg").unlink()  # train's only image; its XML stays
    written = convert_dataset(root, tmp_path / "coco")
    train = written["train"]
    assert (train.images, train.boxes, train.left_out) == (0, 0, {"missing_image": 1})
    assert json.loads(train.annotations_file.read_text())["images"] == []
    assert (written["val"].images, written["val"].boxes, written["val"].problems) == (1, 1, 0)  # converts as before
    assert sorted(p.name for p in (tmp_path / "coco" / "val" / "images").iterdir()) == ["y.jpg"]


def _bad_line(tmp_path, text, kind, match):
    root = _yolo(tmp_path / "bad")
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.2 0.4\n" + text + "\n")
    report = check_split(read_split(root, "train"))
    assert report.counts() == {kind: 1}
    message = report.problems[kind][0]
    assert message.startswith("labels/train/a.txt:2: ") and "\n" not in message
    assert match in message
    return root, report


@pytest.mark.parametrize(
    "text, kind, match",
    [
        ("0 0.5 0.5 0.2", "malformed_entry", "4 numbers; expected 5"),
        ("7 0.5 0.5 0.2 0.2", "unknown_category_id", "class 7 is not in 0..2"),
        ("0 0.95 0.5 0.2 0.2", "out_of_bounds_box", "outside the image: 10 px past the border of the 200x100 image"),
        ("0 0.5 0.5 0 0.2", "malformed_entry", "must be > 0"),
        ("cat 0.5 0.5 0.2 0.2", "malformed_entry", "expected numbers"),
        ("0 nan 0.5 0.2 0.2", "malformed_entry", "non-finite"),
    ],
)
def test_bad_yolo_lines_name_file_and_line(tmp_path, text, kind, match):
    root, report = _bad_line(tmp_path, text, kind, match)
    clean, images, annotations = without_bad(read_split(root, "train"), report)
    assert images == 1 and [im["file_name"] for im in clean.coco["images"]] == ["images/train/b.png"]


def test_xml_without_size_and_broken_xml(tmp_path):
    root = _voc(tmp_path / "voc", size=False)
    report = check_split(read_split(root, "train"))
    assert report.counts() == {"malformed_entry": 1}
    assert report.problems["malformed_entry"][0].startswith("Annotations/x.xml: no valid <size>")
    (root / "Annotations/y.xml").write_text("<annotation><filename>y.jpg</filename>\n<size>")
    report = check_split(read_split(root, "val"))
    assert report.problems["malformed_entry"][0].startswith("Annotations/y.xml:2: not valid XML")


def test_voc_box_outside_and_unknown_class_listed(tmp_path):
    root = _voc(tmp_path / "voc")
    (root / "classes.txt").write_text("cat\ndog\n")
    xml = (root / "Annotations/x.xml").read_text().replace("<xmax>50</xmax>", "<xmax>150</xmax>")
    (root / "Annotations/x.xml").write_text(xml)
    report = check_split(read_split(root, "train"))
    assert report.counts() == {"unknown_category_id": 1, "out_of_bounds_box": 1}
    assert "Annotations/x.xml: object 1" in report.problems["unknown_category_id"][0]
    assert "Annotations/x.xml: object 0" in report.problems["out_of_bounds_box"][0]


def test_check_data_and_convert_cli_on_every_format(tmp_path, capsys):
    yolo, voc = _yolo(tmp_path / "yolo"), _voc(tmp_path / "voc")
    assert main(["check-data", str(yolo)]) == 0
    assert main(["check-data", str(voc), "--format", "voc"]) == 0
    out = capsys.readouterr().out
    assert "(train split)" in out and "(val split)" in out  # one folder for both splits: the line names it
    assert main(["convert", str(yolo), "--to", "coco", str(tmp_path / "out")]) == 0
    assert "train: 2 images, 2 boxes" in capsys.readouterr().out
    assert main(["check-data", str(tmp_path / "out")]) == 0
    (yolo / "labels/train/a.txt").write_text("0 0.5 0.5 0.2\n")
    assert main(["check-data", str(yolo)]) == 1
    assert "labels/train/a.txt:1" in capsys.readouterr().out
    assert main(["check-data", str(tmp_path / "nothing_here")]) == 2  # no dataset there: bad usage
    assert "dataset folder not found" in capsys.readouterr().err


def test_official_coco_layout(tmp_path):
    root = tmp_path / "coco"
    _image(root / "val2017/1.jpg", 20, 10)
    (root / "annotations").mkdir()
    (root / "annotations/instances_val2017.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "1.jpg", "width": 20, "height": 10}],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25}
                ],
                "categories": [{"id": 5, "name": "x"}],
            }
        )
    )
    assert detect_format(root) == "coco" and dataset_splits(root) == ["val"]
    assert check_split(read_split(root, "val")).ok


# --- convert: one rule for YOLO and VOC; its output always passes check-data ------------------------------------


def _broken_voc(root):
    """VOC with one instance of each mistake: a box past the border, an inverted box, a box 1 px out (VOC's
    0-based xmin), an XML size that is not the file's, a non-numeric corner, an undecodable image."""
    _voc(root)
    (root / "Annotations/x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>100</width><height>80</height></size>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>11</ymin><xmax>50</xmax><ymax>80</ymax></bndbox></object>"
        "<object><name>dog</name><bndbox><xmin>61</xmin><ymin>11</ymin><xmax>150</xmax><ymax>40</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>40</xmin><ymin>11</ymin><xmax>20</xmax><ymax>40</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>10</xmax><ymax>81</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>a</xmin><ymin>0</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>"
        "</annotation>"
    )
    (root / "Annotations/z.xml").write_text(  # the file is 100x80
        "<annotation><filename>z.jpg</filename><size><width>200</width><height>160</height></size>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>150</xmax><ymax>150</ymax></bndbox></object>"
        "</annotation>"
    )
    _image(root / "JPEGImages/z.jpg", 100, 80)
    (root / "Annotations/w.xml").write_text(
        "<annotation><filename>w.jpg</filename><size><width>10</width><height>10</height></size>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "</annotation>"
    )
    (root / "JPEGImages/w.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "ImageSets/Main/train.txt").write_text("x\nz\nw\n")
    return root


def _broken_yolo(root):
    """YOLO with one instance of each mistake on a 2000x100 image (1 px = 0.0005 of the width): a box past the
    border, a zero-width box (a malformed line), a box 1.6 px out (0.0008 normalised), one 0.6 px out, a
    4-number line, class 7, and an undecodable image."""
    _yolo(root)
    _image(root / "images/train/a.jpg", 2000, 100)
    (root / "labels/train/a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n"  # fine: (800, 30, 400, 40)
        "0 0.95 0.5 0.2 0.4\n"  # x1 = 1.05 * 2000: 100 px past the border
        "1 0.5 0.5 0 0.4\n"  # zero width
        "1 0.9 0.5 0.2016 0.4\n"  # x1 = 1.0008 * 2000 = 2001.6: 1.6 px out
        "2 0.9 0.5 0.2006 0.4\n"  # x1 = 1.0003 * 2000 = 2000.6: within rounding, clipped to 2000
        "0 0.5 0.5 0.2\n"  # 4 numbers
        "7 0.5 0.5 0.2 0.2\n"  # no class 7
    )
    (root / "images/train/d.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


EXPECTED_LEFT_OUT = {
    "voc": {
        "out_of_bounds_box": 1,
        "degenerate_box": 1,
        "malformed_entry": 1,
        "size_mismatch": 1,
        "unreadable_image": 1,
    },
    "yolo": {
        "out_of_bounds_box": 2,
        "malformed_entry": 2,
        "unknown_category_id": 1,
        "unreadable_image": 1,
    },
}


@pytest.mark.parametrize("make", [_broken_voc, _broken_yolo], ids=["voc", "yolo"])
def test_convert_of_a_broken_dataset_passes_check_data_and_counts_each_kind(tmp_path, capsys, make):
    root = make(tmp_path / "src")
    kind = detect_format(root)
    assert main(["convert", str(root), "--to", "coco", str(tmp_path / "out")]) == 0
    summary = capsys.readouterr().out
    assert main(["check-data", str(tmp_path / "out")]) == 0, capsys.readouterr().out
    assert "0 problems" in capsys.readouterr().out
    for problem, count in EXPECTED_LEFT_OUT[kind].items():
        assert f"{count} {problem}" in summary, summary
    assert "1 box clipped" in summary, summary
    written = convert_dataset(root, tmp_path / "again")
    assert written["train"].left_out == EXPECTED_LEFT_OUT[kind] and written["train"].clipped == 1
    assert written["val"].left_out == {} and written["val"].clipped == 0
    coco = json.loads(written["train"].annotations_file.read_text())
    boxes = [a["bbox"] for a in coco["annotations"]]
    if kind == "voc":  # x.jpg only: z (size) and w (undecodable) are left out with their boxes
        assert [im["file_name"] for im in coco["images"]] == ["x.jpg"]
        assert boxes == [[0, 10, 50, 70], [0, 0, 10, 80]]  # (xmin 0 -> -1, ymax 81) clipped to the 100x80 image
    else:
        assert [im["file_name"] for im in coco["images"]] == ["images__train__a.jpg", "images__train__b.png"]
        assert boxes == [pytest.approx([800, 30, 400, 40]), pytest.approx([1599.4, 30, 400.6, 40])]


def test_yolo_label_file_that_cannot_be_read_leaves_its_image_out(tmp_path):
    root = _yolo(tmp_path / "yolo")
    (root / "labels/train/a.txt").write_bytes(b"0 0.5 0.5 \xff\xfe 0.2\n")  # not UTF-8
    split = read_split(root, "train")
    assert [im["file_name"] for im in split.coco["images"]] == ["images/train/b.png"]  # not a.jpg without boxes
    ((kind, message, image_id),) = split.problems
    assert kind == "malformed_entry" and message.startswith("labels/train/a.txt: cannot read (UnicodeDecodeError")


# --- a YOLO label file without an image: counted and named by check-data, convert and train ---------------------


def _yolo_with_orphans(root, count):
    """`_yolo` plus `count` label files in labels/train/ whose image is not there, a LabelImg classes.txt there
    (not a label file), and one orphan in labels/val/."""
    _yolo(root)
    for index in range(count):
        (root / f"labels/train/gone{index}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels/train/classes.txt").write_text("cat\ndog\nbird\n")
    (root / "labels/val/lost.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    return root


def test_check_data_counts_and_names_yolo_labels_without_image(tmp_path, capsys):
    root = _yolo_with_orphans(tmp_path / "yolo", 5)
    assert main(["check-data", str(root)]) == 0  # a warning: the images that are there are fine
    out = capsys.readouterr().out
    assert "warning label_without_image: 5" in out and "warning label_without_image: 1" in out
    assert "labels/train/gone0.txt: no image" in out and "labels/val/lost.txt: no image" in out
    assert "... and 2 more" in out and "classes.txt" not in out
    report = check_split(read_split(root, "train"))
    assert report.ok and report.counts() == {"label_without_image": 5}


def test_convert_counts_and_names_yolo_labels_without_image(tmp_path, capsys):
    root = _yolo_with_orphans(tmp_path / "yolo", 2)
    assert main(["convert", str(root), "--to", "coco", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "2 label_without_image (labels/train/gone0.txt, labels/train/gone1.txt)" in out, out
    assert "1 label_without_image (labels/val/lost.txt)" in out, out


def test_train_summary_counts_and_names_yolo_labels_without_image(tmp_path, caplog):
    from deformable_detr.training.datasets import load_checked_split

    root = _yolo_with_orphans(tmp_path / "yolo", 4)
    with caplog.at_level("INFO"):
        load_checked_split(root, "train")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "4 label files without an image in the train split" in warned[0], warned
    assert "labels/train/gone0.txt, labels/train/gone1.txt, labels/train/gone2.txt, ..." in warned[0]


# --- messages speak the dataset's own format ------------------------------------------------------------------


def test_yolo_and_voc_problems_carry_hints_in_their_own_terms(tmp_path, capsys):
    yolo = _broken_yolo(tmp_path / "yolo")
    assert main(["check-data", str(yolo)]) == 1
    out = capsys.readouterr().out
    assert "COCO fields" not in out and "JSON" not in out and "annotation's category_id" not in out, out
    assert "problem malformed_entry: 2 (fix the label line: `class cx cy w h`" in out, out
    assert "problem unknown_category_id: 1 (fix the class index or add its name to data.yaml" in out, out
    assert "problem out_of_bounds_box: 2 (fix the label line (coordinates are 0..1 of the image)" in out, out
    voc = _broken_voc(tmp_path / "voc")
    assert main(["check-data", str(voc)]) == 1
    out = capsys.readouterr().out
    assert "COCO fields" not in out and "JSON" not in out and "annotation's category_id" not in out, out
    assert "problem size_mismatch: 1 (fix <size> in the XML or the image file)" in out, out
    assert "z.jpg): file is 100x80, Annotations/z.xml says 200x160" in out, out
    assert "problem malformed_entry: 1 (fix the XML:" in out, out
    assert "problem degenerate_box: 1 (fix the <bndbox>" in out, out


def test_voc_id_without_xml_is_a_missing_annotation_not_a_missing_image(tmp_path, capsys):
    root = _voc(tmp_path / "voc")
    (root / "ImageSets/Main/train.txt").write_text("x\nq\n")  # q.jpg may be there or not: its XML is not
    _image(root / "JPEGImages/q.jpg", 20, 20)
    report = check_split(read_split(root, "train"))
    assert report.counts() == {"missing_annotation_file": 1}
    (message,) = report.problems["missing_annotation_file"]
    assert message.startswith("Annotations/q.xml: not found (id q is listed in ImageSets/Main/train.txt)")
    assert main(["check-data", str(root)]) == 1
    out = capsys.readouterr().out
    assert "add Annotations/<id>.xml or remove the id from ImageSets/Main/" in out and "images folder" not in out


def test_voc_class_names_differing_in_case_or_spaces_are_one_class_with_a_warning(tmp_path):
    root = _voc(tmp_path / "voc")
    xml = (root / "Annotations/y.xml").read_text()
    (root / "Annotations/y.xml").write_text(xml.replace("<name>cat</name>", "<name> Dog </name>"))
    xml = (root / "Annotations/x.xml").read_text()
    (root / "Annotations/x.xml").write_text(xml.replace("<name>person</name>", "<name>dog\t</name>"))
    train, val = read_split(root, "train"), read_split(root, "val")
    # "dog" (x.xml, twice with the tab) and " Dog " (y.xml): one class, named by the most frequent spelling
    assert [c["name"] for c in train.categories] == ["dog"] == [c["name"] for c in val.categories]
    assert [a["category_id"] for a in val.coco["annotations"]] == [1]
    report = check_split(val)
    assert report.ok and report.counts() == {"class_names_merged": 1}
    assert "Annotations/: class names 'Dog', 'dog' are one class 'dog'" in report.warnings["class_names_merged"][0]


def test_train_warns_about_merged_voc_class_names(tmp_path, caplog):
    from deformable_detr.training.datasets import load_checked_split

    root = _voc(tmp_path / "voc")
    xml = (root / "Annotations/y.xml").read_text()
    (root / "Annotations/y.xml").write_text(xml.replace("<name>cat</name>", "<name>DOG</name>"))
    with caplog.at_level("INFO"):
        split = load_checked_split(root, "train")
    assert [c["name"] for c in split.categories] == ["DOG", "person"]  # "dog" once, "DOG" once: the sorted first
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "class names 'DOG', 'dog' are one class 'DOG' (1 and 1 objects)" in warned[0]


@pytest.mark.parametrize("make", ["missing", "empty folder", "file"])
def test_check_data_on_a_missing_path_or_non_dataset_is_bad_usage(tmp_path, capsys, make):
    path = tmp_path / "target"
    if make == "empty folder":
        path.mkdir()
    elif make == "file":
        path.write_text("not a dataset")
    assert main(["check-data", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, err
    assert main(["check-data", "--images", str(tmp_path), "--annotations", str(tmp_path / "none.json")]) == 2
    assert "none.json: annotations file not found" in capsys.readouterr().err


def test_yolo_list_naming_a_missing_image_is_a_missing_image_with_a_yolo_hint(tmp_path, capsys):
    root = _roboflow(tmp_path / "rf", "train: list.txt\nval: ../valid/images\nnames: ['thing']\n")
    (root / "list.txt").write_text("train/images/p.jpg\ntrain/images/gone.jpg\n")
    report = check_split(read_split(root, "train"))
    assert report.counts() == {"missing_image": 1}
    assert "train/images/gone.jpg: image file not found" in report.problems["missing_image"][0]
    assert "(add the image named in the split's list file or remove the line)" in report.format()
