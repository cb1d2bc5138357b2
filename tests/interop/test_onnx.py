"""ONNX export: every variant exports with standard ops only and onnxruntime matches PyTorch at other sizes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deformable_detr.cli import main
from deformable_detr.errors import ConfigError
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.processor import PreprocessConfig
from tiny_models import TINY as TINY_SIZES

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from deformable_detr.interop.onnx import export_onnx, graph_op_types, verify_onnx  # noqa: E402

TINY = dict(TINY_SIZES, num_classes=3)
VARIANTS = {
    "single-scale": dict(num_feature_levels=1),
    "single-scale-dc5": dict(num_feature_levels=1, dilation=True),
    "multi-scale": dict(),
    "refine": dict(with_box_refine=True),
    "two-stage": dict(two_stage=True),
    "two-stage-refine": dict(with_box_refine=True, two_stage=True),
}
TOLERANCE = 1e-3  # the bound on max |onnxruntime - PyTorch|; float32 paths differ by ~1e-6 here


def tiny_model(variant: str) -> DeformableDETR:
    torch.manual_seed(0)
    model = DeformableDETR(
        ModelConfig(**{**TINY, **VARIANTS[variant]}),
        preprocess=PreprocessConfig(min_size=96, max_size=160),
        categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 7, "name": "c"}],
    )
    with torch.no_grad():  # spread the scores so that a wrong logit would show
        for head in model.class_heads:
            head.bias.normal_(0.0, 2.0)
    return model.eval()


@pytest.mark.slow  # ~5-30 s each; the CLI test below exports two-stage + refine in the default suite
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_exports_and_matches_pytorch_at_other_sizes(variant, tmp_path):
    model = tiny_model(variant)
    path = export_onnx(model, tmp_path / "model.onnx", dynamic=True, batch_size=2, height=64, width=80)
    onnx.checker.check_model(str(path), full_check=True)
    assert "GridSample" not in graph_op_types(path)
    # The traced size, a larger one of another aspect, and another batch size: one file for all.
    rows = verify_onnx(model, path, [(64, 80), (112, 72)], batch_size=2) + verify_onnx(model, path, [(96, 96)], 3)
    assert [(r["height"], r["width"], r["batch_size"]) for r in rows] == [(64, 80, 2), (112, 72, 2), (96, 96, 3)]
    for row in rows:
        assert row["pred_logits"] <= TOLERANCE and row["pred_boxes"] <= TOLERANCE, row


@pytest.mark.slow
def test_static_export_without_padding_mask_has_one_fixed_input(tmp_path):
    model = tiny_model("single-scale")
    path = export_onnx(model, tmp_path / "model.onnx", batch_size=1, height=64, width=96, padding_mask=False, opset=14)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (entry,) = session.get_inputs()
    assert (entry.name, entry.shape) == ("images", [1, 3, 64, 96])
    images = torch.randn(1, 3, 64, 96)
    logits, boxes = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(torch.from_numpy(logits), expected["pred_logits"], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(torch.from_numpy(boxes), expected["pred_boxes"], rtol=0, atol=TOLERANCE)


def test_cli_exports_a_checkpoint_verifies_and_stores_preprocessing(tmp_path, capsys):
    model = tiny_model("two-stage-refine")
    model.save_pretrained(tmp_path / "weights")
    out = tmp_path / "export" / "model.onnx"  # --out is the folder
    status = main(
        [
            "export",
            "onnx",
            "--checkpoint",
            str(tmp_path / "weights"),
            "--out",
            str(out.parent),
            "--dynamic",
            "--height",
            "64",
            "--width",
            "80",
            "--verify",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0, printed
    differences = [float(v) for v in re.findall(r"pred_(?:logits|boxes) ([0-9.e+-]+)", printed)]
    assert re.findall(r"verify (\S+):", printed) == ["2x3x64x80", "2x3x48x100"]
    assert len(differences) == 4 and max(differences) <= TOLERANCE, printed
    metadata = {entry.key: entry.value for entry in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["preprocess"]) == PreprocessConfig(min_size=96, max_size=160).to_dict()
    assert json.loads(metadata["categories"]) == model.categories
    assert ModelConfig.from_dict(json.loads(metadata["model_config"])) == model.config


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--opset", "11", "--overwrite"], "opset 11 is not supported; choose 14..20"),
        ([], "model.onnx exists; choose another folder or pass --overwrite"),
        (["--out", "{out}"], "is a file; --out is a folder (this command writes OUT/model.onnx)"),
    ],
)
def test_cli_refuses_bad_requests_in_one_line(tmp_path, capsys, extra, message):
    tiny_model("single-scale").save_pretrained(tmp_path / "weights")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    extra = [argument.format(out=out) for argument in extra]
    status = main(["export", "onnx", "--checkpoint", str(tmp_path / "weights"), "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == b"an earlier export"


# --- The README's onnxruntime recipe gives `predict`'s detections --------------------------------------------


def _readme_recipe() -> str:
    """The README's ```python block that runs the exported file with onnxruntime."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "onnxruntime.InferenceSession" in b]
    return block


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """A picture with a few bright rectangles on noise, so a random model's scores depend on its orientation."""
    generator = np.random.default_rng(seed)
    pixels = generator.integers(0, 90, (height, width, 3), dtype=np.uint8)
    for _ in range(4):
        x0, y0 = int(generator.integers(0, width - 20)), int(generator.integers(0, height - 20))
        pixels[y0 : y0 + int(generator.integers(10, 30)), x0 : x0 + int(generator.integers(10, 40))] = (
            generator.integers(120, 256, 3)
        )
    return Image.fromarray(pixels)


def _run_recipe(folder: Path, photo: Path, monkeypatch, capsys) -> list[tuple[str, float, list[float]]]:
    """Run the README recipe in `folder` (which holds exported/model.onnx) on `photo`; its printed (name, score, box) rows."""
    shutil.copy(photo, folder / "photo1.jpg")
    monkeypatch.chdir(folder)
    capsys.readouterr()
    exec(compile(_readme_recipe(), "README.md (onnxruntime recipe)", "exec"), {"__name__": "__readme__"})  # noqa: S102
    rows = []
    for line in capsys.readouterr().out.strip().splitlines():
        name, score, box = re.fullmatch(r"(.+) ([0-9.]+) \[(.*)\]", line).groups()
        rows.append((name, float(score), [float(v) for v in box.split(",")]))
    return rows


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny multi-scale model (min_size 96, max_size 160) and its dynamic export in a folder of its own."""
    folder = tmp_path_factory.mktemp("recipe")
    model = tiny_model("multi-scale")
    export_onnx(model, folder / "exported" / "model.onnx", dynamic=True, height=64, width=80)  # the README's --out
    return model, folder


def _assert_recipe_matches_predict(model, folder, photo, monkeypatch, capsys):
    expected = model.predict(str(photo), threshold=0.5)[0]
    assert len(expected) > 0  # the spread class biases give a few detections over 0.5
    rows = _run_recipe(folder, photo, monkeypatch, capsys)
    assert [name for name, _, _ in rows] == expected.names
    # The recipe prints scores to 3 decimals and boxes to whole pixels; onnxruntime differs from PyTorch by ~1e-6.
    for (_, score, box), expected_score, expected_box in zip(rows, expected.scores.tolist(), expected.boxes.tolist()):
        assert abs(score - expected_score) <= 5e-4 + 1e-5, (score, expected_score)
        assert max(abs(a - b) for a, b in zip(box, expected_box)) <= 0.5 + 1e-3, (box, expected_box)


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_readme_recipe_equals_predict_on_exif_rotated_jpeg(exported, orientation, tmp_path, monkeypatch, capsys):
    model, folder = exported
    exif = Image.Exif()
    exif[0x0112] = orientation  # 2..8: mirrored and/or rotated by 90/180/270 degrees for display
    photo = tmp_path / f"exif{orientation}.jpg"
    _photo(150, 100, seed=orientation).save(photo, exif=exif, quality=95)
    _assert_recipe_matches_predict(model, folder, photo, monkeypatch, capsys)


@pytest.mark.parametrize("size", [(190, 110), (110, 190)])
def test_readme_recipe_equals_predict_on_max_size_limited_odd_aspect(exported, size, tmp_path, monkeypatch, capsys):
    # 190x110 under min_size 96 / max_size 160: the shorter side is 160 * 110 / 190 = 92.63 px, which the model
    # rounds to 93 (and truncating it would give 92).
    model, folder = exported
    photo = tmp_path / "odd.png"
    _photo(*size, seed=11).save(photo)
    _assert_recipe_matches_predict(model, folder, photo, monkeypatch, capsys)


def test_onnx_inputs_sizes_are_hand_worked(tmp_path):
    from deformable_detr.interop.onnx import onnx_inputs

    config = PreprocessConfig(min_size=96, max_size=160)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 150x100, displayed 100 wide x 150 tall: short side 96, long 96 * 1.5 = 144
    _photo(150, 100, seed=0).save(tmp_path / "rotated.jpg", exif=exif)
    images, size = onnx_inputs(tmp_path / "rotated.jpg", config)
    assert (images.shape, images.dtype, size) == ((1, 3, 144, 96), np.float32, (150, 100))
    # 6000x4000 under max_size 256: short side 256 * 4000 / 6000 = 170.67 -> 171 (not 170), long int(171 * 1.5)
    images, size = onnx_inputs(Image.new("RGB", (6000, 4000)), PreprocessConfig(min_size=200, max_size=256))
    assert (images.shape, size) == ((1, 3, 171, 256), (4000, 6000))


def test_onnx_detections_refuses_a_batch_in_one_line():
    from deformable_detr.interop.onnx import onnx_detections

    model = tiny_model("single-scale")
    with pytest.raises(ConfigError, match=r"expected one image's \(Lq, K\) and \(Lq, 4\); pass logits\[0\]"):
        onnx_detections(np.zeros((1, 8, 3), np.float32), np.zeros((1, 8, 4), np.float32), (10, 10), model)


@pytest.fixture(scope="module")
def exported_fixed(tmp_path_factory):
    """The tiny multi-scale model exported without --dynamic: images fixed to 1x3x96x128 (a 4:3 landscape photo)."""
    folder = tmp_path_factory.mktemp("recipe-fixed")
    model = tiny_model("multi-scale")
    export_onnx(model, folder / "exported" / "model.onnx", height=96, width=128)
    return model, folder


def test_readme_recipe_on_a_fixed_graph_equals_predict_at_its_size(exported_fixed, tmp_path, monkeypatch, capsys):
    model, folder = exported_fixed
    photo = tmp_path / "landscape.png"
    _photo(200, 150, seed=3).save(photo)  # short side 150 -> 96, long side 200 * 96 / 150 = 128: the graph's size
    _assert_recipe_matches_predict(model, folder, photo, monkeypatch, capsys)


def test_readme_recipe_on_a_fixed_graph_refuses_another_size_in_one_line(exported_fixed, tmp_path, monkeypatch, capsys):
    # Padding 96x144 up to 96x128 cannot work, and padding a smaller image moves its logits (by ~0.27 in this tiny
    # model: the backbone sees the padding), so onnx_inputs refuses rather than onnxruntime's INVALID_ARGUMENT.
    model, folder = exported_fixed
    photo = tmp_path / "portrait.png"
    _photo(100, 150, seed=4).save(photo)  # displayed 100 wide x 150 tall -> 144x96
    message = (
        "the ONNX graph is fixed to images 1x3x96x128 but this image resizes to 1x3x144x96; "
        "export it with `deformable-detr export onnx --dynamic` to run any image size"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        _run_recipe(folder, photo, monkeypatch, capsys)
