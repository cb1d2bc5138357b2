"""`explain`: sampling points and weights in image pixels, checked against the attention's known initialisation."""

import json
import math

import pytest
import torch
from inference_helpers import VARIANTS, tiny_model, write_image
from PIL import Image

from deformable_detr.cli import main
from deformable_detr.errors import ConfigError
from deformable_detr.inference.explain import explain
from deformable_detr.viz.sampling_points import PANEL_SIDE, draw_sampling_points, visible_points

WIDTH, HEIGHT = 120, 90


@pytest.fixture
def image(tmp_path):
    return Image.open(write_image(tmp_path / "in" / "image.png", HEIGHT, WIDTH)).convert("RGB")


def _ring_offsets(n_heads, n_points):
    """The paper's initial sampling offsets in feature pixels: point i of head m at (i + 1) * direction_m,
    directions at angles 2 pi m / M scaled so that max(|dx|, |dy|) = 1 (worked out by hand)."""
    offsets = []
    for m in range(n_heads):
        dx, dy = math.cos(2 * math.pi * m / n_heads), math.sin(2 * math.pi * m / n_heads)
        norm = max(abs(dx), abs(dy))
        offsets.extend(((i + 1) * dx / norm, (i + 1) * dy / norm) for i in range(n_points))
    return torch.tensor(offsets)  # (M * P, 2)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_explains_detections_and_a_pixel(variant, image):
    model = tiny_model(**VARIANTS[variant])
    result = explain(model, image, top_k=3, threshold=0.0, pixel=(61.0, 40.0))
    json.dumps(result)  # plain data
    levels = model.config.num_feature_levels
    assert result["image_size"] == [HEIGHT, WIDTH] and len(result["levels"]) == levels
    assert len(result["detections"]) == 3
    scores = [d["score"] for d in result["detections"]]
    assert scores == sorted(scores, reverse=True)
    for entry in result["detections"] + [result["pixel"]]:
        assert [s["level"] for s in entry["sampling"]] == list(range(levels))
        weights = torch.tensor([w for s in entry["sampling"] for w in s["weights"]])
        heads = torch.tensor([h for s in entry["sampling"] for h in s["heads"]])
        assert weights.numel() == levels * 2 * 2  # levels x heads x points
        for head in (0, 1):  # each head's softmax runs over levels x points
            torch.testing.assert_close(weights[heads == head].sum(), torch.tensor(1.0))
        drawing = draw_sampling_points(image, entry, [lv["size"] for lv in result["levels"]])
        assert drawing.width >= (levels + 1) * PANEL_SIDE
        for x, y, _ in visible_points(entry, image.size):
            assert 0 <= x < WIDTH and 0 <= y < HEIGHT
    # At initialisation (offsets on a ring, uniform weights) the pixel's points are known exactly.
    pixel = result["pixel"]
    level_height, level_width = result["levels"][0]["size"]
    column, row = int(61.0 / WIDTH * level_width), int(40.0 / HEIGHT * level_height)
    expected_reference = torch.tensor([(column + 0.5) / level_width * WIDTH, (row + 0.5) / level_height * HEIGHT])
    torch.testing.assert_close(torch.tensor(pixel["reference_point"]), expected_reference)
    for sampling, level in zip(pixel["sampling"], result["levels"]):
        h_l, w_l = level["size"]
        expected = expected_reference + _ring_offsets(2, 2) * torch.tensor([WIDTH / w_l, HEIGHT / h_l])
        torch.testing.assert_close(torch.tensor(sampling["points"]), expected, rtol=0, atol=1e-3)
        torch.testing.assert_close(torch.tensor(sampling["weights"]), torch.full((4,), 1 / (2 * levels)))


def test_decoder_points_are_the_ring_around_the_reference_point(image):
    """Learned queries (2-d reference points): point = reference + ring offset in level-l pixels."""
    model = tiny_model()
    result = explain(model, image, top_k=8, threshold=0.0)
    for detection in result["detections"]:
        reference = torch.tensor(detection["reference_point"])
        for sampling, level in zip(detection["sampling"], result["levels"]):
            h_l, w_l = level["size"]
            expected = reference + _ring_offsets(2, 2) * torch.tensor([WIDTH / w_l, HEIGHT / h_l])
            torch.testing.assert_close(torch.tensor(sampling["points"]), expected, rtol=0, atol=1e-3)


def test_amp_runs_the_forward_in_bfloat16_and_moves_points_by_bf16_rounding_only(image):
    """explain(amp=True) (explain --amp): the encoder's sampling points at one pixel (a fixed query, no reordering)
    equal float32's to bf16 precision (8 bits of mantissa: < 1 px on a 120 px image), and are not bit-identical."""
    model = tiny_model()
    torch.manual_seed(0)
    with torch.no_grad():  # off the initialisation, whose ring offsets and uniform weights bf16 holds exactly
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    exact = explain(model, image, top_k=1, threshold=0.0, pixel=(40, 30))["pixel"]
    half = explain(model, image, top_k=1, threshold=0.0, pixel=(40, 30), amp=True)["pixel"]
    exact_points = torch.tensor([p for level in exact["sampling"] for p in level["points"]])
    half_points = torch.tensor([p for level in half["sampling"] for p in level["points"]])
    torch.testing.assert_close(half_points, exact_points, rtol=0, atol=1.0)
    assert not torch.equal(half_points, exact_points)
    exact_weights = torch.tensor([w for level in exact["sampling"] for w in level["weights"]])
    half_weights = torch.tensor([w for level in half["sampling"] for w in level["weights"]])
    torch.testing.assert_close(half_weights, exact_weights, rtol=0, atol=1e-2)


def test_detections_match_predict(image):
    model = tiny_model()
    result = explain(model, image, top_k=8, threshold=0.3)
    predicted = model.predict(image, threshold=0.3)[0]
    best = {}  # predict may list a query twice (two classes); explain keeps a query's best class
    for box, score, label in zip(predicted.boxes.tolist(), predicted.scores.tolist(), predicted.category_ids):
        best.setdefault(tuple(round(v, 3) for v in box), (score, label))
    assert len(result["detections"]) == len(best)
    for detection in result["detections"]:
        score, label = best[tuple(round(v, 3) for v in detection["box_xyxy"])]
        assert detection["label"] == label and detection["score"] == pytest.approx(score, abs=1e-6)


@pytest.mark.parametrize("pixel", [(-1, 5), (WIDTH, 5), (5, HEIGHT)])
def test_a_pixel_outside_the_image_is_refused(image, pixel):
    with pytest.raises(ConfigError, match="outside"):
        explain(tiny_model(), image, pixel=pixel)


def test_cli_writes_pngs_and_an_index(capsys, model_dir, tmp_path):
    path = write_image(tmp_path / "in" / "photo.jpg", HEIGHT, WIDTH)
    out = tmp_path / "explained"
    status = main(
        [
            "explain",
            str(path),
            "--checkpoint",
            str(model_dir),
            "--out",
            str(out),
            "--top-k",
            "2",
            "--threshold",
            "0",
            "--pixel",
            "10,20",
        ]
    )
    assert status == 0, capsys.readouterr().err
    page = (out / "index.html").read_text()
    for name in ("detection_1.png", "detection_2.png", "pixel.png"):
        assert f'src="{name}"' in page and Image.open(out / name).size[0] > 0
    assert len(json.loads((out / "explain.json").read_text())["detections"]) == 2
    assert "open" in capsys.readouterr().out


def test_cli_keeps_a_non_empty_out_unless_overwrite_and_then_leaves_no_stale_drawing(capsys, model_dir, tmp_path):
    path = write_image(tmp_path / "in" / "photo.jpg", HEIGHT, WIDTH)
    out = tmp_path / "explained"
    base = ["explain", str(path), "--checkpoint", str(model_dir), "--out", str(out)]
    assert main([*base, "--top-k", "2", "--threshold", "0", "--pixel", "10,20"]) == 0
    (out / "notes.txt").write_text("mine")
    before = (out / "index.html").read_bytes()
    assert main([*base, "--top-k", "1"]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "index.html").read_bytes() == before
    assert main([*base, "--top-k", "1", "--threshold", "0", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["detection_1.png", "explain.json", "index.html", "notes.txt"]
    (tmp_path / "file").write_text("x")
    assert main([*base[:-1], str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pixel", "abc"], "x,y"),
        (["--pixel", "500,5"], "outside"),
        (["--top-k", "-1"], "--top-k"),
        (["--threshold", "nan"], "--threshold"),
    ],
)
def test_cli_bad_options(capsys, model_dir, tmp_path, argv, message):
    path = write_image(tmp_path / "in" / "photo.jpg", HEIGHT, WIDTH)
    try:
        status = main(["explain", str(path), "--checkpoint", str(model_dir), "--out", str(tmp_path / "o"), *argv])
    except SystemExit as exit_:  # argparse usage errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("top", [0, -1])
def test_nothing_to_explain_is_refused(capsys, model_dir, tmp_path, top):
    path = write_image(tmp_path / "in" / "photo.jpg", HEIGHT, WIDTH)
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as usage_error:  # argparse refuses it, before anything loads
        main(["explain", str(path), "--checkpoint", str(model_dir), "--out", str(out), "--top-k", str(top)])
    err = capsys.readouterr().err
    assert usage_error.value.code == 2 and err.count("\n") == 1 and f"argument --top-k: {top} must be >= 1" in err
    assert not out.exists()
    with pytest.raises(ConfigError, match="top_k must be an integer >= 1"):
        explain(tiny_model(), path, top_k=top)


def test_cli_on_a_folder_says_explain_takes_one_image_file(capsys, tmp_path):
    folder = tmp_path / "photos"
    write_image(folder / "photo.jpg", HEIGHT, WIDTH)
    status = main(["explain", str(folder), "--checkpoint", str(tmp_path / "unused"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert f"{folder}: is a folder; explain takes one image file" in err and "JPEG" not in err, err
