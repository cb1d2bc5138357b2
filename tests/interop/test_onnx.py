"""ONNX export: every variant exports with standard ops only and onnxruntime matches PyTorch at other sizes."""

from __future__ import annotations

import json
import re

import pytest
import torch

from deformable_detr.cli import main
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.preprocess import PreprocessConfig
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
    out = tmp_path / "model.onnx"
    status = main(
        [
            "export",
            "onnx",
            "--checkpoint",
            str(tmp_path / "weights"),
            "--out",
            str(out),
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
        (["--opset", "11"], "opset 11 is not supported; choose 14..20"),
        ([], "already exists; choose another --out or pass --overwrite"),
    ],
)
def test_cli_refuses_bad_requests_in_one_line(tmp_path, capsys, extra, message):
    tiny_model("single-scale").save_pretrained(tmp_path / "weights")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    status = main(["export", "onnx", "--checkpoint", str(tmp_path / "weights"), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == b"an earlier export"
