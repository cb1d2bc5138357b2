"""DETR baseline: shapes, config round trip and dispatch, parameter parity with the Deformable presets, postprocess."""

import math

import pytest
import torch

from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.detr import DETR, detr_postprocess
from deformable_detr.models.detr_config import DetrConfig
from deformable_detr.registry import build_model, model_config_from_dict, model_preset

TINY_DETR = dict(
    backbone="resnet18",
    backbone_depths=(1, 1, 1, 1),
    backbone_base_width=16,
    d_model=32,
    n_heads=2,
    num_encoder_layers=1,
    num_decoder_layers=3,
    dim_feedforward=64,
    num_queries=7,
    num_classes=5,
    dropout=0.0,
)


@pytest.mark.parametrize("dilation", [False, True])
def test_forward_shapes_and_padding(dilation):
    torch.manual_seed(0)
    config = DetrConfig(**TINY_DETR, dilation=dilation)
    model = DETR(config).eval()
    images = torch.randn(2, 3, 70, 90)
    padding_mask = torch.zeros(2, 70, 90, dtype=torch.bool)
    padding_mask[1, :, 60:] = True
    out = model(images, padding_mask)
    assert out["pred_logits"].shape == (2, 7, 6)  # K + 1: no-object last
    assert out["pred_boxes"].shape == (2, 7, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    assert len(out["aux_outputs"]) == 2
    assert all(a["pred_logits"].shape == (2, 7, 6) for a in out["aux_outputs"])


def test_transformer_ignores_padded_tokens():
    """The encoder and decoder never attend to padding: the features under the padding do not matter."""
    torch.manual_seed(0)
    model = DETR(DetrConfig(**TINY_DETR)).eval()
    source = torch.randn(1, 32, 4, 5)
    padding_mask = torch.zeros(1, 4, 5, dtype=torch.bool)
    padding_mask[:, :, 3:] = True
    pos = torch.randn(1, 32, 4, 5)
    changed = source.clone()
    changed[..., 3:] = 100.0
    hidden = model.transformer(source, padding_mask, pos, model.query_embed.weight)
    hidden_changed = model.transformer(changed, padding_mask, pos, model.query_embed.weight)
    torch.testing.assert_close(hidden, hidden_changed, rtol=1e-5, atol=1e-5)


def test_config_round_trip_and_dispatch():
    config = DetrConfig(**TINY_DETR)
    values = config.to_dict()
    assert values["architecture"] == "detr"
    assert model_config_from_dict(values) == config
    assert isinstance(model_config_from_dict(ModelConfig().to_dict()), ModelConfig)
    assert isinstance(build_model(values), DETR)
    assert isinstance(build_model(ModelConfig.preset("tiny", num_classes=3)), DeformableDETR)
    with pytest.raises(ValueError, match="architecture='yolo' is unknown"):
        model_config_from_dict({"architecture": "yolo"})
    with pytest.raises(ValueError, match="unknown DetrConfig field"):
        model_config_from_dict({**values, "two_stage": True})
    with pytest.raises(ValueError, match="unknown model preset"):
        model_preset("detr-r18")


@pytest.mark.parametrize("deformable, detr", [("tiny", "detr-tiny"), ("demo", "detr-demo")])
def test_small_presets_match_deformable_presets(deformable, detr):
    """Same width, depth and backbone as the Deformable preset, parameter count within 10 %."""
    a, b = ModelConfig.preset(deformable), DetrConfig.preset(detr)
    for field in (
        "backbone",
        "backbone_depths",
        "backbone_base_width",
        "d_model",
        "n_heads",
        "num_encoder_layers",
        "num_decoder_layers",
        "num_queries",
        "num_classes",
    ):
        assert getattr(a, field) == getattr(b, field), field
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    ratio = count(DETR(b)) / count(DeformableDETR(a))
    assert 0.9 <= ratio <= 1.1


def test_r50_preset_parameter_count():
    """DETR R50 has 41.3M parameters (DETR's model zoo): ResNet-50 without fc, 6+6 layers, FFN 2048, 91+1 classes."""
    count = sum(p.numel() for p in DETR(DetrConfig.preset("detr-r50")).parameters())
    assert count == pytest.approx(41.3e6, rel=0.01)


def test_postprocess_softmax_without_no_object():
    logits = torch.tensor(
        [
            [
                [math.log(6.0), math.log(1.0), math.log(3.0)],  # p = 0.6, 0.1 | no-object 0.3
                [math.log(1.0), math.log(1.0), math.log(8.0)],  # p = 0.1, 0.1 | 0.8
                [math.log(2.0), math.log(7.0), math.log(1.0)],
            ]
        ]
    )  # p = 0.2, 0.7 | 0.1
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.5, 0.5]]])
    (detections,) = detr_postprocess({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]))
    torch.testing.assert_close(detections["scores"], torch.tensor([0.7, 0.6, 0.1]))
    assert detections["labels"].tolist() == [1, 0, 0]
    torch.testing.assert_close(detections["boxes"][0], torch.tensor([0.0, 50.0, 100.0, 100.0]))  # xyxy: (w 200, h 100)
    torch.testing.assert_close(detections["boxes"][1], torch.tensor([80.0, 30.0, 120.0, 70.0]))
    (top,) = detr_postprocess(
        {"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]), score_threshold=0.5, top_k=2
    )
    assert top["labels"].tolist() == [1, 0]


def test_predict_equals_forward_and_postprocess():
    """`predict` (backbone per image, padded features) gives the detections of a plain forward on each image."""
    from PIL import Image

    from deformable_detr.pipeline.processor import PreprocessConfig, Processor

    torch.manual_seed(0)
    model = DETR(DetrConfig(**TINY_DETR), preprocess=PreprocessConfig(min_size=64, max_size=96)).eval()
    pictures = [
        Image.fromarray((torch.rand(50, 70, 3) * 255).byte().numpy()),
        Image.fromarray((torch.rand(80, 60, 3) * 255).byte().numpy()),
    ]
    found = model.predict(pictures, threshold=0.0)
    for picture, detections in zip(pictures, found):
        tensor = Processor(model.preprocess).preprocess(picture)[None]
        with torch.no_grad():
            expected = model.postprocess(
                model(tensor), torch.tensor([[picture.height, picture.width]]), score_threshold=0.0
            )[0]
        torch.testing.assert_close(detections.scores, expected["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(detections.boxes, expected["boxes"], rtol=1e-4, atol=1e-3)
        assert detections.names == [model.categories[k]["name"] for k in expected["labels"].tolist()]
