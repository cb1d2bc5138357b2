"""`DeformableDETR.predict`: input types, batching, scaling to original pixels, thresholds, devices."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from deformable_detr.errors import ConfigError, DatasetError, ModelInputError
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline.detections import Detections
from deformable_detr.pipeline.processor import PreprocessConfig, Processor
from deformable_detr.pipeline.run import pad_levels

SIZES = [(50, 70), (80, 60), (50, 70), (33, 90), (64, 64), (120, 41)]  # (H, W); two share a size


def _model(config, min_size=96, max_size=160):
    torch.manual_seed(0)
    return DeformableDETR(config, preprocess=PreprocessConfig(min_size=min_size, max_size=max_size)).eval()


def _noise_images(sizes=SIZES):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def _shapes_image(width=120, height=90):
    """A smooth picture (flat shapes), so a resized copy looks the same to the model."""
    image = Image.new("RGB", (width, height), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.15, height * 0.2, width * 0.5, height * 0.8), fill=(240, 200, 30))
    draw.rectangle((width * 0.6, height * 0.1, width * 0.9, height * 0.55), fill=(200, 30, 60))
    return image


def _assert_same(actual: Detections, expected: Detections, box_atol=0.0, score_atol=0.0):
    assert actual.image_size == expected.image_size
    assert actual.labels.tolist() == expected.labels.tolist()
    assert actual.names == expected.names and actual.category_ids == expected.category_ids
    torch.testing.assert_close(actual.scores, expected.scores, rtol=0, atol=score_atol)
    torch.testing.assert_close(actual.boxes, expected.boxes, rtol=0, atol=box_atol)


def test_path_pil_numpy_and_tensor_inputs_give_identical_detections(make_config, tmp_path):
    model = _model(make_config())
    array = _noise_images([(50, 70)])[0]
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    uint8_tensor = torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W)
    inputs = [
        str(path),
        path,
        Image.fromarray(array),
        array,
        uint8_tensor,
        uint8_tensor.float() / 255,
        Image.fromarray(array).convert("RGBA"),
    ]
    results = model.predict(inputs, threshold=0.0, batch_size=1)
    assert len(results) == len(inputs) and len(results[0]) == 40  # 8 queries x 5 classes, all kept at 0
    for result in results[1:]:
        _assert_same(result, results[0])  # bit for bit: the same pixels reach the model
    # A single image (not in a list) gives a list of one.
    _assert_same(model.predict(array, threshold=0.0)[0], results[0])


def test_preprocessing_equals_the_validation_transform_of_training(make_config):
    from deformable_detr.data.transforms import make_transforms

    config = PreprocessConfig(min_size=96, max_size=160)
    transform = make_transforms(False, (96,), max_size=160, val_size=96)
    for array in _noise_images():
        image = Image.fromarray(array)
        empty = {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "size": torch.tensor([image.height, image.width]),
        }
        expected, _ = transform(image, empty)
        torch.testing.assert_close(Processor(config).preprocess(image), expected, rtol=0, atol=0)
        assert min(expected.shape[-2:]) == 96 or max(expected.shape[-2:]) <= 160


def test_one_by_one_equals_batched_for_every_variant(variant_config):
    """Mixed sizes in one batch: the backbone never sees padding, the transformer is padding-invariant,
    so the only difference is float rounding (observed <= 2e-5 px on boxes, 1e-7 on scores)."""
    model = _model(variant_config)
    images = _noise_images()
    alone = [model.predict(image, threshold=0.0)[0] for image in images]
    for batch_size in (2, 8):
        batched = model.predict(images, threshold=0.0, batch_size=batch_size)
        for a, b in zip(alone, batched):
            _assert_same(b, a, box_atol=1e-3, score_atol=1e-6)


def test_a_padded_forward_would_not_be_batch_invariant(make_config):
    """Why predict pads after the backbone: the plain padded forward changes an image's scores."""
    from deformable_detr.data.coco import collate

    model = _model(make_config())
    config = model.preprocess
    tensors = [Processor(config).preprocess(Image.fromarray(a)) for a in _noise_images([(50, 70), (120, 41)])]
    images, padding_mask, _ = collate([(t, {}) for t in tensors])
    with torch.no_grad():
        padded = model(images, padding_mask)["pred_logits"][0]
        alone = model(tensors[0][None])["pred_logits"][0]
    assert (padded - alone).abs().max() > 1e-3


def test_an_image_and_its_2x_upscaled_copy_give_boxes_2x_apart(make_config):
    model = _model(make_config())
    small = _shapes_image(120, 90)
    large = small.resize((240, 180), Image.BILINEAR)
    a, b = model.predict([small, large], threshold=0.0)
    assert a.image_size == (90, 120) and b.image_size == (180, 240)
    # Random weights give near-tied scores, so match each detection to the same label's nearest box.
    for box, label in zip(a.boxes, a.labels):
        same_label = b.boxes[b.labels == label]
        distance = (same_label - 2 * box).abs().max(-1).values.min()
        assert distance <= 2.0, f"no box in the 2x image within 2 px of 2 x {box.tolist()}"
    assert b.boxes[:, 2].max() > 120  # in the large image's pixels, not the resized or small one's


def test_boxes_are_scaled_by_width_along_x_and_height_along_y(make_config):
    """Against the model's own forward and boxes scaled by hand: a wide image (40 x 100) makes an (h, w)/(w, h)
    mix-up in predict's sizes visible (x would be scaled by 40 instead of 100)."""
    model = _model(make_config(), min_size=64, max_size=200)
    image = _noise_images([(40, 100)])[0]
    (found,) = model.predict(image, threshold=0.0, top_k=12)
    with torch.inference_mode():
        out = model(Processor(model.preprocess).preprocess(Image.fromarray(image))[None])
    num_classes = out["pred_logits"].shape[-1]
    scores, indices = out["pred_logits"][0].sigmoid().flatten().topk(12)  # over (query, class) pairs
    cx, cy, w, h = out["pred_boxes"][0][indices // num_classes].unbind(-1)  # (12,) each, in [0, 1]
    expected = torch.stack(((cx - w / 2) * 100, (cy - h / 2) * 40, (cx + w / 2) * 100, (cy + h / 2) * 40), -1)
    assert found.image_size == (40, 100)
    torch.testing.assert_close(found.scores, scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(found.boxes, expected, rtol=0, atol=1e-3)


def test_threshold_and_top_k_may_be_given_per_image(make_config):
    model = _model(make_config())
    images = _noise_images()[:2]
    everything = model.predict(images, threshold=0.0, top_k=100)
    cut = float(everything[1].scores[3])
    first, second = model.predict(images, threshold=[0.0, cut], top_k=[7, 100])
    torch.testing.assert_close(first.boxes, everything[0].boxes[:7])
    assert len(second) == int((everything[1].scores >= cut).sum())
    with pytest.raises(ConfigError, match="threshold has 1 values for 2 images"):
        model.predict(images, threshold=[0.5])
    with pytest.raises(ConfigError, match="top_k must be an integer >= 1, got 0"):
        model.predict(images, top_k=0)


def test_detections_are_thresholded_sorted_and_named_by_model_categories(make_config):
    model = _model(make_config())
    model.categories = [{"id": 10 + k, "name": f"thing{k}"} for k in range(5)]
    everything = model.predict(_noise_images()[:1], threshold=0.0)[0]
    cut = float(everything.scores[5])
    kept = model.predict(_noise_images()[:1], threshold=cut)[0]
    assert len(kept) == int((everything.scores >= cut).sum()) >= 6
    assert torch.all(kept.scores[:-1] >= kept.scores[1:])
    assert kept.category_ids == [10 + k for k in kept.labels.tolist()]
    assert kept.names == [f"thing{k}" for k in kept.labels.tolist()]
    assert len(model.predict(_noise_images()[:1], threshold=1.0)[0]) == 0
    height, width = everything.image_size
    assert everything.boxes[:, 0::2].min() >= 0 and everything.boxes[:, 0::2].max() <= width
    assert everything.boxes[:, 1::2].min() >= 0 and everything.boxes[:, 1::2].max() <= height


def test_to_coco_and_to_dict():
    detections = Detections(
        boxes=torch.tensor([[10.0, 20.0, 40.0, 60.0]]),
        scores=torch.tensor([0.75]),
        labels=torch.tensor([2]),
        category_ids=[7],
        names=["cat"],
        image_size=(100, 200),
    )
    assert detections.to_coco(42) == [
        {"image_id": 42, "category_id": 7, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.75}
    ]
    assert detections.to_dict() == {
        "detections": [{"box_xyxy": [10.0, 20.0, 40.0, 60.0], "label": 7, "name": "cat", "score": 0.75}]
    }
    assert len(detections) == 1


@pytest.mark.parametrize("threshold", [math.nan, 5, -0.1, math.inf, "high"])
def test_bad_thresholds_are_refused(make_config, threshold):
    model = _model(make_config())
    with pytest.raises(ConfigError, match="threshold"):
        model.predict(_noise_images()[:1], threshold=threshold)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((20, 30, 3), dtype=np.float32), "uint8"),
        (np.zeros((20, 30, 4), dtype=np.uint8), r"\(H, W, 3\)"),
        (np.zeros((0, 30, 3), dtype=np.uint8), "empty"),
        (torch.zeros(1, 3, 20, 30), "list"),
        (torch.full((3, 20, 30), 2.0), r"\[0, 1\]"),
        (torch.full((3, 20, 30), math.nan), "non-finite"),
        (torch.zeros(3, 20, 30, dtype=torch.int32), "uint8"),
        (42, "cannot use a int"),
    ],
)
def test_bad_images_are_refused_with_one_clear_error(make_config, image, message):
    model = _model(make_config())
    with pytest.raises(ModelInputError, match=message):
        model.predict(image)


def test_a_missing_file_names_the_file(make_config, tmp_path):
    with pytest.raises(DatasetError, match="missing.jpg"):
        _model(make_config()).predict(tmp_path / "missing.jpg")


def test_batch_size_is_validated_and_training_mode_is_restored(make_config):
    model = _model(make_config())
    with pytest.raises(ConfigError, match="batch_size"):
        model.predict(_noise_images()[:1], batch_size=0)
    model.train()
    model.predict(_noise_images()[:1])
    assert model.training


def test_pad_levels_masks_exactly_the_padding():
    maps = [[torch.ones(2, 3, 4)], [torch.ones(2, 5, 2)]]
    (source,), (mask,) = pad_levels(maps)
    assert source.shape == (2, 2, 5, 4)
    expected = torch.ones(2, 5, 4, dtype=torch.bool)
    expected[0, :3, :4] = False
    expected[1, :5, :2] = False
    assert torch.equal(mask, expected)
    assert torch.equal(source[:, 0] == 1, ~expected)


def test_bfloat16_autocast_stays_close_to_float32(make_config):
    model = _model(make_config())
    images = _noise_images()[:2]
    full = model.predict(images, threshold=0.0)
    half = model.predict(images, threshold=0.0, amp=True)
    for f, h in zip(full, half):
        assert len(h) == len(f)
        # bf16 has 8 mantissa bits: scores of a random model (~0.01) move by ~1e-3 relative.
        torch.testing.assert_close(h.scores.sort().values, f.scores.sort().values, rtol=0.05, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_matches_cpu(make_config, amp, no_tf32):
    model = _model(make_config())
    images = _noise_images()
    on_cpu = model.predict(images, threshold=0.0)
    on_gpu = model.cuda().predict(images, threshold=0.0, batch_size=4, amp=amp)
    for c, g in zip(on_cpu, on_gpu):
        assert g.boxes.device.type == "cpu"
        torch.testing.assert_close(
            g.scores.sort().values, c.scores.sort().values, rtol=0.05 if amp else 1e-4, atol=1e-3 if amp else 1e-5
        )


@pytest.mark.gpu
def test_cuda_matches_cpu_default_config(no_tf32):
    """The paper's R50 model (random weights, the zero-initialised heads perturbed so every path matters):
    raw outputs and detections on CUDA equal the CPU's. fp32 on both sides (TF32 off); only summation orders
    differ, ~1e-6 relative per layer over ~70 layers: logits within 1e-4, boxes within 1e-5."""
    from deformable_detr.models.config import ModelConfig

    model = _model(ModelConfig(), min_size=128, max_size=160)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.startswith("backbone."):
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    images = _noise_images([(100, 140), (120, 90)])
    batch = torch.randn(2, 3, 96, 128, generator=generator)  # (B, 3, H, W) normalized
    with torch.no_grad():
        on_cpu, cpu_detections = model(batch), model.predict(images, threshold=0.0)
        model.cuda()
        on_gpu, gpu_detections = model(batch.cuda()), model.predict(images, threshold=0.0)
    torch.testing.assert_close(on_gpu["pred_logits"].cpu(), on_cpu["pred_logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(on_gpu["pred_boxes"].cpu(), on_cpu["pred_boxes"], rtol=1e-4, atol=1e-5)
    for c, g in zip(cpu_detections, gpu_detections):
        assert g.boxes.device.type == "cpu" and len(g) == len(c)
        torch.testing.assert_close(g.scores.sort().values, c.scores.sort().values, rtol=1e-4, atol=1e-5)
