"""DatasetReport: ok, counts and the human-readable text, on hand-built findings."""

from pathlib import Path

from deformable_detr.data.check_report import FORMAT_HINTS, PROBLEM_KINDS, WARNING_KINDS, DatasetReport


def _report(**fields):
    return DatasetReport(Path("data/images"), Path("data/labels.json"), 5, 7, 2, **fields)


def test_no_problem_is_ok_even_with_warnings():
    report = _report(warnings={"duplicate_file_name": ["a.jpg is named by 2 image entries"]})
    assert report.ok and report.counts() == {"duplicate_file_name": 1}
    assert report.format().splitlines()[0] == (
        "data/labels.json: 5 images, 7 annotations, 2 categories; 0 problems, 1 warnings"
    )


def test_format_lists_each_kind_with_count_fix_and_a_few_examples():
    messages = [f"image id {i}: not found" for i in range(5)]
    report = _report(problems={"missing_image": messages}, split="val")
    assert not report.ok and report.counts() == {"missing_image": 5}
    assert report.format(examples=2).splitlines() == [
        "data/labels.json (val split): 5 images, 7 annotations, 2 categories; 5 problems, 0 warnings",
        f"  problem missing_image: 5 ({PROBLEM_KINDS['missing_image']})",
        "    - image id 0: not found",
        "    - image id 1: not found",
        "    - ... and 3 more",
    ]


def test_hints_speak_the_dataset_formats_own_terms():
    report = _report(
        problems={"degenerate_box": ["labels/a.txt:3: w 0"]},
        warnings={"noncontiguous_category_ids": ["ids [0, 2]"]},
        dataset_format="yolo",
    )
    text = report.format()
    assert f"({FORMAT_HINTS['yolo']['degenerate_box']})" in text
    assert f"({WARNING_KINDS['noncontiguous_category_ids']})" in text  # no YOLO wording: the COCO hint
