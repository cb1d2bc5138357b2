"""`deformable-detr predict` and `predict_files`: outputs, bad files, safety of inputs, agreement with model.predict."""

import json
import math

import pytest
import torch
from inference_helpers import CATEGORIES, tiny_model, write_image

from deformable_detr.cli import main
from deformable_detr.errors import ConfigError, DatasetError
from deformable_detr.inference.inputs import check_output_folder, collect_image_files
from deformable_detr.inference.predict_files import predict_files


def _run(capsys, *argv):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as usage_error:  # argparse refuses a malformed option (exit 2) before anything loads
        status = usage_error.code
    out, err = capsys.readouterr()
    return status, out, err


def test_folder_with_bad_files_writes_the_good_lists_the_bad_and_exits_1(capsys, model_dir, image_folder, tmp_path):
    root, good, bad = image_folder
    out = tmp_path / "out"
    status, stdout, stderr = _run(capsys, "predict", root, "--checkpoint", model_dir, "--out", out, "--threshold", 0.3)
    assert status == 1
    assert "Traceback" not in stderr + stdout
    for path in bad:
        assert stderr.count(str(path)) == 1  # named once per failure, not twice
    assert "5 image(s)" in stdout and "3 failed" in stdout and "1 non-image file(s) skipped" in stdout
    result = json.loads((out / "detections.json").read_text())
    assert sorted(e["file"] for e in result["errors"]) == sorted(str(p) for p in bad)
    assert all(not e["error"].startswith(e["file"]) for e in result["errors"])
    assert result["skipped"] == [str(root / "bad" / "readme.txt")]
    assert [image["file_name"] for image in result["images"]] == sorted(str(p) for p in good)
    assert [image["id"] for image in result["images"]] == [1, 2, 3, 4, 5]
    # Drawings mirror the inputs' paths: two 000000.jpg and a 000000.png never overwrite each other.
    drawings = sorted(image["drawing"] for image in result["images"])
    assert drawings == ["a/000000.png", "a/000000_2.png", "b/000000.png", "b/gray.png", "c/deep/x.png"]
    for drawing in drawings:
        assert (out / drawing).is_file()
    assert result["categories"] == CATEGORIES


def test_detections_json_equals_model_predict(capsys, model_dir, image_folder, tmp_path):
    """The JSON is model.predict's output (the oracle: one image at a time, in memory) rounded."""
    root, good, _ = image_folder
    out = tmp_path / "out"
    _run(capsys, "predict", *good, "--checkpoint", model_dir, "--out", out, "--threshold", 0.2, "--batch-size", 3)
    result = json.loads((out / "detections.json").read_text())
    model = tiny_model()
    by_file = {image["file_name"]: image["detections"] for image in result["images"]}
    for path in good:
        expected = model.predict(path, threshold=0.2)[0]
        got = by_file[str(path.resolve())]
        assert len(got) == len(expected) > 0
        assert set(got[0]) == {"box_xyxy", "label", "name", "score"}  # `Detections.to_dict()`'s items
        torch.testing.assert_close(torch.tensor([d["score"] for d in got]), expected.scores, rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.tensor([d["box_xyxy"] for d in got]), expected.boxes, rtol=0, atol=0.01)
        assert [d["label"] for d in got] == expected.category_ids
        assert [d["name"] for d in got] == expected.names


def test_compile_flag_predicts_through_the_compiled_path(
    capsys, model_dir, image_folder, tmp_path, monkeypatch, one_thread
):
    """`--compile` reaches `compile_inference` (torch.compile replaced by the identity here; the real compile
    is tests/models/test_compiled.py's) and prints what compiled; detections equal the eager run's."""
    from deformable_detr.pipeline import compiled

    monkeypatch.setattr(compiled, "_compile", lambda function, **options: function)
    _, good, _ = image_folder
    results = {}
    for name, flags in (("eager", []), ("compiled", ["--compile"])):
        out = tmp_path / name
        status, _, err = _run(capsys, "predict", *good, "--checkpoint", model_dir, "--out", out, "--no-draw", *flags)
        assert status == 0
        images = json.loads((out / "detections.json").read_text())["images"]
        results[name] = [{"image_id": image["id"], **item} for image in images for item in image["detections"]]
    # one batch of 5 images resized to at most 160 px: one 192 px bucket (step 64)
    assert "torch.compile (default, cpu): 1 shape(s) [192x192 batch >=2], first calls" in err
    assert len(results["compiled"]) == len(results["eager"]) > 0
    for eager, fast in zip(results["eager"], results["compiled"]):
        assert fast["image_id"] == eager["image_id"] and fast["label"] == eager["label"]
        assert fast["score"] == pytest.approx(eager["score"], abs=2e-5)  # rounded to 1e-5
        assert fast["box_xyxy"] == pytest.approx(eager["box_xyxy"], abs=0.02)  # rounded to 0.01 px


def test_out_set_to_the_images_folder_is_refused_and_inputs_are_untouched(capsys, model_dir, image_folder):
    root, good, _ = image_folder
    before = {p: p.read_bytes() for p in good}
    status, _, stderr = _run(capsys, "predict", root, "--checkpoint", model_dir, "--out", root / "a")
    assert status == 2 and "contains input images" in stderr and "Traceback" not in stderr
    assert {p: p.read_bytes() for p in good} == before
    assert not (root / "a" / "detections.json").exists()


def test_an_earlier_output_inside_an_input_folder_is_not_searched(model_dir, image_folder):
    root, good, _ = image_folder
    out = root / "predictions"
    assert predict_files(tiny_model(), [root], out, threshold=0.9).images == len(good)
    assert (out / "a" / "000000.png").is_file()  # drawings of the first run ...
    summary = predict_files(tiny_model(), [root], out, threshold=0.9, overwrite=True)
    assert summary.images == len(good)  # ... are not inputs of the second
    assert str(out) in summary.skipped  # and the user is told so


def test_an_unrelated_file_a_drawing_would_replace_is_kept_unless_overwrite(capsys, model_dir, image_folder, tmp_path):
    _, good, _ = image_folder
    out = tmp_path / "mine"
    out.mkdir()
    drawing_name = good[0].with_suffix(".png").name
    (out / drawing_name).write_bytes(b"the user's own file")
    status, _, stderr = _run(capsys, "predict", good[0], "--checkpoint", model_dir, "--out", out)
    assert status == 2 and "a drawing would replace" in stderr and "--overwrite" in stderr
    assert (out / drawing_name).read_bytes() == b"the user's own file"
    assert _run(capsys, "predict", good[0], "--checkpoint", model_dir, "--out", out, "--no-draw")[0] == 0
    assert (out / drawing_name).read_bytes() == b"the user's own file"  # --no-draw writes no drawing


def test_an_earlier_result_is_replaced_only_with_overwrite(capsys, model_dir, image_folder, tmp_path):
    _, good, _ = image_folder
    out = tmp_path / "out"
    assert _run(capsys, "predict", good[0], "--checkpoint", model_dir, "--out", out)[0] == 0
    status, _, stderr = _run(capsys, "predict", good[0], "--checkpoint", model_dir, "--out", out)
    assert status == 2 and "--overwrite" in stderr
    assert _run(capsys, "predict", good[0], "--checkpoint", model_dir, "--out", out, "--overwrite")[0] == 0


@pytest.mark.parametrize("value", ["nan", "5", "-0.5", "inf"])
def test_threshold_outside_0_1_is_refused(capsys, model_dir, image_folder, tmp_path, value):
    _, good, _ = image_folder
    status, _, stderr = _run(
        capsys, "predict", good[0], "--checkpoint", model_dir, "--out", tmp_path / "o", "--threshold", value
    )
    assert status == 2 and "--threshold" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    "option, message", [(["--device", "bogus"], "not a device"), (["--batch-size", "0"], "--batch-size")]
)
def test_bad_options_are_one_line_errors(capsys, model_dir, image_folder, tmp_path, option, message):
    _, good, _ = image_folder
    status, _, stderr = _run(capsys, "predict", good[0], "--checkpoint", model_dir, "--out", tmp_path / "o", *option)
    assert status == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_globs_missing_files_and_duplicates(image_folder, tmp_path):
    root, good, _ = image_folder
    files = collect_image_files([str(root / "*" / "000000.*"), good[0], tmp_path / "nope.jpg", str(tmp_path / "*.gif")])
    assert files.files == sorted(p.resolve() for p in good[:3])  # good[0] is named twice, kept once
    assert [m["file"] for m in files.missing] == [str(tmp_path / "nope.jpg"), str(tmp_path / "*.gif")]


def test_check_output_folder_refuses_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output_folder(tmp_path / "file", [])


def test_large_images_are_drawn_at_their_size_and_tiny_ones_enlarged(image_folder, tmp_path):
    from PIL import Image

    big = write_image(tmp_path / "in" / "big.png", 900, 1200)
    small = write_image(tmp_path / "in" / "small.png", 30, 40)
    predict_files(tiny_model(), [big, small], tmp_path / "out", threshold=0.0)
    assert Image.open(tmp_path / "out" / "big.png").size == (1200, 900)
    assert Image.open(tmp_path / "out" / "small.png").size == (480, 360)  # x12 so captions are readable
    assert not math.isnan(json.loads((tmp_path / "out" / "detections.json").read_text())["threshold"])


def test_inputs_without_any_image_are_refused_and_nothing_is_written(capsys, model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("no image here\n")
    for inputs in ([tmp_path / "empty"], [str(tmp_path / "*.jpg")], [tmp_path / "texts", str(tmp_path / "x*.png")]):
        out = tmp_path / "out"
        status, stdout, stderr = _run(capsys, "predict", *inputs, "--checkpoint", model_dir, "--out", out)
        assert status == 2 and stdout == "" and stderr.count("\n") == 1
        assert stderr.startswith("error: no images found (") and all(str(i) in stderr for i in inputs)
        assert not out.exists()
    with pytest.raises(DatasetError, match=r"no images found \(no input given\)"):
        predict_files(tiny_model(), [], tmp_path / "out")
    assert not (tmp_path / "out").exists()
